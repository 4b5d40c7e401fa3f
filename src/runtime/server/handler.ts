import type { AnyRouter } from '@orpc/server'
import type { StandardRPCHandlerOptions } from '@orpc/server/standard'
import { StandardRPCHandler } from '@orpc/server/standard'
import type { IncomingMessage } from 'node:http'
import type { Hooks, Peer } from 'crossws'
import { defineWebSocketHandler } from 'h3'
import type { RpcContext, RpcContextFunction, RpcUpgradeRequest } from '../types'
import type { AdmissionLimits, AdmissionSlot } from './admission'
import { Admission, isOriginAllowed, isRefusal, normalizeHosts, normalizeOrigins } from './admission'
import type { RpcRefusal } from './context'
import { contextInputFromUpgrade, refusalFromError } from './context'
import { PlainCallHandler } from './plain-call'
import type { RpcRoute, RpcSocketLimits } from './socket'
import { isShuttingDown, liveSockets, peerAddressOf, PendingConnection, pendingConnections, releaseUpgradeRequest, remoteAddressOf, RpcCloseCode, RpcSocket, toCloseReason } from './socket'

export { isOriginAllowed, RpcCloseCode }

/** Limits and timers of the server half; every one is a module option with the same name. */
export interface RpcServerLimits extends RpcSocketLimits, AdmissionLimits {
  heartbeatInterval: number
  heartbeatTimeout: number
}

export const defaultServerLimits: RpcServerLimits = {
  maxCallsInFlight: 128,
  rateLimit: false,
  maxBufferedBytes: 1024 * 1024,
  maxBufferedInputBytes: 4 * 1024 * 1024,
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
  /**
   * Host names the app is served under, e.g. `['app.example.com']` (`.example.com` for it and its
   * subdomains). When set, a same-origin handshake is allowed only with a Host in this list, which stops DNS
   * rebinding; `allowedOrigins` are allowed either way. Empty: any Host.
   * @default []
   */
  allowedHosts?: readonly string[]
  /** Options for oRPC's RPC handler (plugins, interceptors). */
  handlerOptions?: StandardRPCHandlerOptions<object>
}

/** A refused upgrade: the socket is accepted, then closed from `open` with the refusal's code and reason. */
interface Refused {
  refusal: RpcRefusal
}

/** An accepted upgrade, until its socket opens: its context (`undefined`: no context function) and slot. */
class AcceptedUpgrade extends PendingConnection {
  /** A handshake whose socket never opened (the client left during the upgrade) frees its slot after this. */
  static readonly openTimeout = 10_000

  readonly slot: AdmissionSlot
  private readonly expiry: ReturnType<typeof setTimeout>

  constructor(context: RpcContext | undefined, remoteAddress: string | undefined, slot: AdmissionSlot, admission: Admission) {
    super(context, remoteAddress)
    this.slot = slot
    pendingConnections.add(this)
    this.expiry = setTimeout(() => {
      pendingConnections.delete(this)
      admission.release(slot)
    }, AcceptedUpgrade.openTimeout)
    ;(this.expiry as { unref?: () => void }).unref?.()
  }

  /** Its socket opened: it is no longer pending. */
  settle() {
    clearTimeout(this.expiry)
    pendingConnections.delete(this)
  }
}

/**
 * What the crossws peer context holds for a connection: the upgrade's decision, replaced by the connection
 * itself once it is open (the decision is then garbage: an idle connection keeps no extra object).
 */
type ConnectionState = Refused | AcceptedUpgrade | RpcSocket

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

/** The upgrade request as crossws's Node adapter gives it: `_req` is the IncomingMessage. */
type UpgradeRequest = RpcUpgradeRequest & { _req?: IncomingMessage }

/**
 * The crossws hooks that serve `router` over one WebSocket: origin check, connection caps and connection
 * context at the upgrade, in that order (a flood of handshakes is capped before the context function, and
 * the database it may ask, runs); per-connection limits, oRPC's RPC protocol and a heartbeat on the socket;
 * every call aborted when the socket closes.
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
  const allowedHosts = normalizeHosts(options.allowedHosts ?? [])
  const createContext = options.createContext
  const admission = new Admission(limits)
  const sockets = new Set<RpcSocket>()
  let heartbeat: ReturnType<typeof setInterval> | undefined
  // The URL of the last connection opened: most connections to a route have the same one, kept once.
  let lastUrl = ''
  const sharedUrl = (url: string) => url === lastUrl ? lastUrl : (lastUrl = url)

  async function decide(request: UpgradeRequest): Promise<Refused | AcceptedUpgrade> {
    // On Node the raw header: crossws would build a `Headers` from every header of the request for it.
    const origin = request._req ? (request._req.headers.origin ?? null) : request.headers.get('origin')
    if (!isOriginAllowed(origin, request.url, allowedOrigins, allowedHosts)) {
      return { refusal: { status: 403, closeCode: RpcCloseCode.PolicyViolation, reason: toCloseReason(`Origin ${origin} is not allowed`) } }
    }
    // Known here on Node; elsewhere when the socket opens.
    const address = request._req ? peerAddressOf(request._req.socket) : undefined
    const slot = admission.reserve(address)
    if (isRefusal(slot)) return { refusal: slot }
    let context: RpcContext | undefined
    if (createContext) {
      try {
        // The context function's result is what `RpcContext` describes (the generated declaration says so).
        context = (await createContext(contextInputFromUpgrade(request)) ?? {}) as RpcContext
      }
      catch (error) {
        admission.release(slot)
        return { refusal: refusalFromError(error) }
      }
    }
    return new AcceptedUpgrade(context, address, slot, admission)
  }

  /** Why an accepted upgrade's socket must still be closed as it opens, if it must. */
  function lateRefusal(accepted: AcceptedUpgrade, address: string | undefined): { closeCode: number, reason: string } | undefined {
    if (accepted.revoked) return { closeCode: accepted.revoked.code, reason: accepted.revoked.reason }
    if (isShuttingDown()) return { closeCode: RpcCloseCode.GoingAway, reason: 'Server shutting down' }
    return admission.opened(accepted.slot, address)
  }

  /** Pings every socket; one that looks dead `heartbeatTimeout` later (`RpcSocket.unresponsive`) is terminated. */
  function beat() {
    for (const socket of sockets) {
      socket.ping()
      socket.connection.send(heartbeatFrame)
    }
    const check = setTimeout(() => {
      for (const socket of sockets) {
        if (socket.unresponsive) socket.websocket.terminate?.()
      }
    }, limits.heartbeatTimeout)
    ;(check as { unref?: () => void }).unref?.()
  }

  function forget(peer: Peer) {
    const socket = stateOf(peer)
    if (!(socket instanceof RpcSocket) || !sockets.delete(socket)) return
    socket.dispose()
    admission.closed(socket.ipKey)
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
      if (!(state instanceof AcceptedUpgrade)) {
        const refusal = state instanceof RpcSocket ? undefined : state?.refusal
        peer.close(refusal?.closeCode ?? RpcCloseCode.InternalError, refusal?.reason ?? 'No connection state')
        return
      }
      state.settle()
      const address = state.remoteAddress ?? remoteAddressOf(peer)
      const refusal = lateRefusal(state, address)
      if (refusal) {
        admission.release(state.slot)
        peer.close(refusal.closeCode, refusal.reason)
        return
      }
      const socket = new RpcSocket(peer, state.contextValue, address, state.slot.ipKey, route)
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
