import type { AnyRouter } from '@orpc/server'
import { experimental_RPCHandler as RPCHandler } from '@orpc/server/crossws'
import type { Hooks, Peer } from 'crossws'
import { defineWebSocketHandler } from 'h3'
import type { RpcContextFunction, RpcUpgradeRequest } from '../types'
import type { RpcRefusal } from './context'
import { contextInputFromUpgrade, refusalFromError, toCloseReason } from './context'

export interface RpcWebSocketHandlerOptions {
  /** The oRPC router to serve. */
  router: AnyRouter
  /** Runs once per connection during the upgrade; its result is the context of every call on the socket. */
  createContext?: RpcContextFunction
  /**
   * Origins allowed to open the socket besides the request's own host, e.g. `['https://app.example.com']`.
   * A handshake without an Origin header (a non-browser client) is always allowed.
   * @default []
   */
  allowedOrigins?: readonly string[]
}

/** What the upgrade decided for a connection, kept on the crossws peer context. */
type ConnectionState = { context: object, refusal?: undefined } | { context?: undefined, refusal: RpcRefusal }

const connectionStateKey = Symbol.for('nuxt-orpc.connection')

type PeerContext = Record<PropertyKey, unknown> & { [connectionStateKey]?: ConnectionState }

const stateOf = (peer: Peer): ConnectionState | undefined => (peer.context as PeerContext)[connectionStateKey]

/** WebSocket close codes nuxt-orpc uses; clients map them to typed errors. */
export const RpcCloseCode = {
  /** The frame was not JSON (or not valid UTF-8). */
  MalformedFrame: 1007,
  /** Origin not allowed, or a frame that is JSON but not an oRPC message. */
  PolicyViolation: 1008,
  /** A frame larger than `maxMessageBytes` (sent by the WebSocket server itself). */
  MessageTooBig: 1009,
  /** The server failed unexpectedly (the context function threw a non-HTTP error). */
  InternalError: 1011,
  /** The context function refused the connection with 401. */
  Unauthorized: 4401,
  /** The context function refused the connection with 403. */
  Forbidden: 4403,
} as const

/**
 * Same-origin means the Origin's host equals the Host the request was made to (as Phoenix checks it); the
 * scheme is not compared, so TLS terminated at a proxy still counts as same origin.
 */
export function isOriginAllowed(origin: string | null, requestUrl: string, allowedOrigins: ReadonlySet<string>): boolean {
  if (origin === null) return true
  if (allowedOrigins.has(origin)) return true
  try {
    return new URL(origin).host === new URL(requestUrl).host
  }
  catch {
    return false
  }
}

function normalizeOrigins(origins: readonly string[]): Set<string> {
  return new Set(origins.map((origin) => {
    if (origin === 'null') return origin
    try {
      return new URL(origin).origin
    }
    catch {
      throw new TypeError(`[nuxt-orpc] allowedOrigins: "${origin}" is not an origin such as "https://app.example.com".`)
    }
  }))
}

/**
 * A malformed frame makes oRPC's handler reject while decoding it. Not JSON is 1007; JSON of the wrong shape
 * (`null`, missing fields, a bad URL) surfaces as a TypeError and is 1008.
 */
function closeForRejectedMessage(peer: Peer, error: unknown) {
  if (error instanceof SyntaxError) {
    peer.close(RpcCloseCode.MalformedFrame, 'Malformed frame: not JSON')
  }
  else if (error instanceof TypeError || error instanceof RangeError) {
    peer.close(RpcCloseCode.PolicyViolation, 'Malformed frame: not an oRPC message')
  }
  else {
    console.error('[nuxt-orpc] A message failed outside any procedure; closing the socket.', error)
    peer.close(RpcCloseCode.InternalError, 'Internal error')
  }
}

/**
 * The crossws hooks that serve `router` over one WebSocket: origin check and connection context at the
 * upgrade, oRPC's RPC handler for messages, every call aborted when the socket closes.
 *
 * A refused connection is accepted and then closed from `open` with a close code and reason, instead of
 * answering the handshake with an HTTP error: browsers hide a refused handshake's status from scripts (the
 * client could not tell "log in again" from "server down"), and nitropack's dev proxy crashes `nuxt dev` on a
 * refused upgrade (its `proxy.ws()` promise is never caught). No message of a refused peer reaches oRPC.
 */
export function createRpcWebSocketHooks(options: RpcWebSocketHandlerOptions): Partial<Hooks> {
  const handler = new RPCHandler(options.router)
  const allowedOrigins = normalizeOrigins(options.allowedOrigins ?? [])
  const createContext = options.createContext

  async function decide(request: RpcUpgradeRequest): Promise<ConnectionState> {
    const origin = request.headers.get('origin')
    if (!isOriginAllowed(origin, request.url, allowedOrigins)) {
      return { refusal: { status: 403, closeCode: RpcCloseCode.PolicyViolation, reason: toCloseReason(`Origin ${origin} is not allowed`) } }
    }
    if (!createContext) return { context: {} }
    try {
      return { context: await createContext(contextInputFromUpgrade(request)) ?? {} }
    }
    catch (error) {
      return { refusal: refusalFromError(error) }
    }
  }

  return {
    async upgrade(request) {
      const upgradeRequest = request as unknown as RpcUpgradeRequest
      ;(upgradeRequest.context as PeerContext)[connectionStateKey] = await decide(upgradeRequest)
    },
    open(peer) {
      const refusal = stateOf(peer)?.refusal
      if (refusal) peer.close(refusal.closeCode, refusal.reason)
    },
    message(peer, message) {
      const state = stateOf(peer)
      if (!state?.context) return
      // Handed over before any await: oRPC needs the frames of one socket in order.
      handler.message(peer, message, { context: state.context }).catch(error => closeForRejectedMessage(peer, error))
    },
    close(peer) {
      handler.close(peer)
    },
    error(peer) {
      handler.close(peer)
    },
  }
}

/** An h3 event handler serving `router` over WebSocket: mount it on any route of an h3 or Nitro app. */
export function defineRpcWebSocketHandler(options: RpcWebSocketHandlerOptions) {
  return defineWebSocketHandler(createRpcWebSocketHooks(options))
}
