import type { AnyRouter } from '@orpc/server'
import type { StandardRPCHandlerOptions } from '@orpc/server/standard'
import { StandardRPCHandler } from '@orpc/server/standard'
import type { IncomingMessage } from 'node:http'
import type { Hooks, Peer } from 'crossws'
import { defineWebSocketHandler } from 'h3'
import type { RpcContext, RpcContextFunction, RpcUpgradeRequest } from '../types'
import type { RpcRefusal } from './context'
import { PlainCallHandler } from './plain-call'
import { contextInputFromUpgrade, refusalFromError, toCloseReason } from './context'
import type { RpcRoute, RpcSocketLimits } from './socket'
import { isShuttingDown, liveSockets, releaseUpgradeRequest, remoteAddressOf, RpcCloseCode, RpcSocket, TokenBucket } from './socket'

export { RpcCloseCode }

/** Limits and timers of the server half; every one is a module option with the same name. */
export interface RpcServerLimits extends RpcSocketLimits {
  maxHandshakesPerSecond: number
  maxConnections: number
  maxConnectionsPerIp: number
  heartbeatInterval: number
  heartbeatTimeout: number
}

export const defaultServerLimits: RpcServerLimits = {
  maxCallsInFlight: 128,
  rateLimit: false,
  maxBufferedBytes: 1024 * 1024,
  maxHandshakesPerSecond: 1000,
  maxConnections: 10_000,
  maxConnectionsPerIp: 100,
  heartbeatInterval: 25_000,
  heartbeatTimeout: 20_000,
}

export interface RpcWebSocketHandlerOptions extends Partial<RpcServerLimits> {
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
  /** Options for oRPC's RPC handler (plugins, interceptors). */
  handlerOptions?: StandardRPCHandlerOptions<object>
}

/** What the upgrade decided for a connection (`context` undefined: no context function, `{}` made on use). */
type Decision
  = | { context: object | undefined, refusal?: undefined }
    | { context?: undefined, refusal: RpcRefusal }

/**
 * What the crossws peer context holds for a connection: the upgrade's decision, replaced by the connection
 * itself once it is open (the decision is then garbage: an idle connection keeps no extra object).
 */
type ConnectionState = Decision | RpcSocket

/** The decision of every accepted upgrade when there is no context function. */
const acceptedWithoutContext: Decision = { context: undefined }

const connectionStateKey = Symbol.for('nuxt-orpc.connection')

type PeerContext = Record<PropertyKey, unknown> & { [connectionStateKey]?: ConnectionState }

const stateOf = (peer: Peer): ConnectionState | undefined => (peer.context as PeerContext)[connectionStateKey]

/**
 * The heartbeat frame: oRPC's abort message for id -1, a call that never exists. Every oRPC client (ours or
 * the stock `RPCLink`) ignores it; nuxt-orpc's client counts it as a sign of life, so it notices a server that
 * went silent without closing. Sent once right after a connection is accepted, it is also the "ready" signal.
 */
export const heartbeatFrame = '{"i":-1,"t":4}'

/**
 * The WebSocket subprotocols nuxt-orpc's client offers, in this order: a server that just takes the first
 * (ws's default, a stock oRPC server) gets plain oRPC; nuxt-orpc's server picks `nuxt-orpc`, which adds the
 * ready signal: the client sends nothing until it arrives, so a connection refused right after the handshake
 * (caps, origin, auth) has never carried a call.
 */
export const rpcSubprotocols = ['orpc', 'nuxt-orpc'] as const

/**
 * ws `handleProtocols` (one WebSocket server serves every route of the app): `nuxt-orpc` only for a route
 * served by these hooks, which send the ready frame; elsewhere (a bare oRPC route, any other socket) what ws
 * would pick by itself, the first offered. Such a route is recognized by the state its upgrade hook left in
 * the connection's context, which crossws's Node adapter keeps on the IncomingMessage as `_context`.
 */
export function selectSubprotocol(protocols: Set<string>, request?: object): string | false {
  const context = (request as { _context?: PeerContext } | undefined)?._context
  if (protocols.has('nuxt-orpc') && context?.[connectionStateKey]) return 'nuxt-orpc'
  return protocols.values().next().value ?? false
}

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

/** The upgrade request as crossws's Node adapter gives it: `_req` is the IncomingMessage. */
type UpgradeRequest = RpcUpgradeRequest & { _req?: IncomingMessage }

/**
 * The crossws hooks that serve `router` over one WebSocket: origin check, connection caps and connection
 * context at the upgrade; per-connection limits, oRPC's RPC protocol and a heartbeat on the socket; every call
 * aborted when the socket closes.
 *
 * A refused connection is accepted and then closed from `open` with a close code and reason, instead of
 * answering the handshake with an HTTP error: browsers hide a refused handshake's status from scripts (the
 * client could not tell "log in again" from "server down"), and nitropack's dev proxy crashes `nuxt dev` on a
 * refused upgrade (its `proxy.ws()` promise is never caught). No message of a refused peer reaches oRPC.
 */
export function createRpcWebSocketHooks(options: RpcWebSocketHandlerOptions): Partial<Hooks> {
  const limits: RpcServerLimits = { ...defaultServerLimits }
  for (const key of Object.keys(defaultServerLimits) as Array<keyof RpcServerLimits>) {
    if (options[key] !== undefined) (limits as unknown as Record<string, unknown>)[key] = options[key]
  }
  // One options object for both: oRPC's handler lets its plugins add interceptors to it, and the plain-call
  // path must see them (it steps aside when there are any).
  const handlerOptions: StandardRPCHandlerOptions<object> = { ...options.handlerOptions }
  const route: RpcRoute = {
    standardHandler: new StandardRPCHandler(options.router, handlerOptions),
    plainCalls: new PlainCallHandler(options.router, handlerOptions),
    limits,
  }
  const allowedOrigins = normalizeOrigins(options.allowedOrigins ?? [])
  const createContext = options.createContext
  // Per address, its open connections; the entry's `address` is the one string every connection from there keeps.
  const connectionsPerIp = new Map<string, { address: string, count: number }>()
  // A small burst (a tenth of a second's worth), so no one-second window sees much more than the cap.
  const handshakes = new TokenBucket(Math.max(1, Math.ceil(limits.maxHandshakesPerSecond / 10)), 1000, limits.maxHandshakesPerSecond)
  const sockets = new Set<RpcSocket>()
  let heartbeat: ReturnType<typeof setInterval> | undefined
  // The URL of the last connection opened: most connections to a route have the same one, kept once.
  let lastUrl = ''
  const sharedUrl = (url: string) => url === lastUrl ? lastUrl : (lastUrl = url)

  async function decide(request: UpgradeRequest): Promise<Decision> {
    // On Node the raw header: crossws would build a `Headers` from every header of the request for it.
    const origin = request._req ? (request._req.headers.origin ?? null) : request.headers.get('origin')
    if (!isOriginAllowed(origin, request.url, allowedOrigins)) {
      return { refusal: { status: 403, closeCode: RpcCloseCode.PolicyViolation, reason: toCloseReason(`Origin ${origin} is not allowed`) } }
    }
    if (!createContext) return acceptedWithoutContext
    try {
      return { context: await createContext(contextInputFromUpgrade(request)) ?? {} }
    }
    catch (error) {
      return { refusal: refusalFromError(error) }
    }
  }

  /** Connection caps, checked synchronously in `open` so concurrent handshakes cannot overshoot them. */
  function capRefusal(openFromAddress: number): RpcRefusal | undefined {
    if (isShuttingDown()) {
      return { status: 503, closeCode: RpcCloseCode.GoingAway, reason: 'Server shutting down' }
    }
    if (sockets.size >= limits.maxConnections) {
      return { status: 503, closeCode: RpcCloseCode.TryAgainLater, reason: 'Too many connections' }
    }
    if (openFromAddress >= limits.maxConnectionsPerIp) {
      return { status: 429, closeCode: RpcCloseCode.TryAgainLater, reason: 'Too many connections from this address' }
    }
    // Last, so refused sockets do not use up the budget: a reconnect storm is let in at a steady rate.
    if (!handshakes.take()) {
      return { status: 503, closeCode: RpcCloseCode.TryAgainLater, reason: 'Too many new connections' }
    }
  }

  /**
   * Pings every socket; one from which nothing at all (no pong, no frame) has arrived `heartbeatTimeout`
   * later is terminated. Counting the TCP socket's bytes needs no listener or timestamp per connection.
   */
  function beat() {
    for (const socket of sockets) {
      const tcp = socket.websocket._socket
      if (tcp?.bytesRead !== undefined && socket.websocket.ping) {
        socket.bytesReadAtPing = tcp.bytesRead
        socket.websocket.ping()
      }
      socket.connection.send(heartbeatFrame)
    }
    const check = setTimeout(() => {
      for (const socket of sockets) {
        if (socket.websocket._socket?.bytesRead === socket.bytesReadAtPing) socket.websocket.terminate?.()
      }
    }, limits.heartbeatTimeout)
    ;(check as { unref?: () => void }).unref?.()
  }

  function forget(peer: Peer) {
    const socket = stateOf(peer)
    if (!(socket instanceof RpcSocket) || !sockets.delete(socket)) return
    socket.dispose()
    const address = socket.remoteAddress
    const entry = address === undefined ? undefined : connectionsPerIp.get(address)
    if (entry && --entry.count === 0) connectionsPerIp.delete(entry.address)
    if (sockets.size === 0 && heartbeat) {
      clearInterval(heartbeat)
      heartbeat = undefined
    }
  }

  return {
    async upgrade(request) {
      const upgradeRequest = request as unknown as UpgradeRequest
      ;(upgradeRequest.context as PeerContext)[connectionStateKey] = await decide(upgradeRequest)
    },
    open(peer) {
      const state = stateOf(peer)
      if (!state || state instanceof RpcSocket || state.refusal) {
        const refusal = state instanceof RpcSocket ? undefined : state?.refusal
        peer.close(refusal?.closeCode ?? RpcCloseCode.InternalError, refusal?.reason ?? 'No connection state')
        return
      }
      const address = remoteAddressOf(peer)
      const entry = address === undefined ? undefined : connectionsPerIp.get(address)
      const capped = capRefusal(entry?.count ?? 0)
      if (capped) {
        peer.close(capped.closeCode, capped.reason)
        return
      }
      // The context function's result is what `RpcContext` describes (the generated declaration says so).
      const socket = new RpcSocket(peer, state.context as RpcContext | undefined, entry?.address ?? address, route)
      if (entry) entry.count++
      else if (address !== undefined) connectionsPerIp.set(address, { address, count: 1 })
      ;(peer.context as PeerContext)[connectionStateKey] = socket
      releaseUpgradeRequest(peer, sharedUrl)
      sockets.add(socket)
      const websocket = socket.websocket
      // Nitro's graceful shutdown destroys "idle" sockets at once, and an upgraded socket looks idle to it
      // (http-graceful-shutdown in nitropack/runtime). Marked busy, it waits for nuxt-orpc's own drain.
      if (websocket._socket) websocket._socket._isIdle = false
      if (websocket.protocol === 'nuxt-orpc') peer.send(heartbeatFrame)
      heartbeat ??= setInterval(beat, limits.heartbeatInterval)
      // A server with only idle sockets must still be able to exit.
      ;(heartbeat as { unref?: () => void }).unref?.()
    },
    message(peer, message) {
      // Handed over before any await: frames of one socket are decoded in order.
      const socket = stateOf(peer)
      if (socket instanceof RpcSocket) socket.receive(typeof message.rawData === 'string' ? message.rawData : message.uint8Array())
    },
    close(peer) {
      forget(peer)
    },
    error(peer) {
      forget(peer)
    },
  }
}

/** An h3 event handler serving `router` over WebSocket: mount it on any route of an h3 or Nitro app. */
export function defineRpcWebSocketHandler(options: RpcWebSocketHandlerOptions) {
  return defineWebSocketHandler(createRpcWebSocketHooks(options))
}

/** Open connections of this process (all handlers), for metrics and tests. */
export function countRpcConnections(): number {
  return liveSockets.size
}
