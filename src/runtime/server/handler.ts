import type { AnyRouter } from '@orpc/server'
import type { StandardRPCHandlerOptions } from '@orpc/server/standard'
import { StandardRPCHandler } from '@orpc/server/standard'
import type { IncomingMessage } from 'node:http'
import type { Hooks, Peer } from 'crossws'
import { defineWebSocketHandler } from 'h3'
import type { RpcServerLimits } from '../shared/options'
import { defaultMaxMessageBytes, serverLimitDefaults } from '../shared/options'
import { heartbeatFrame, readySubprotocol, refusalFrame, RpcCloseCode, rpcSubprotocols } from '../shared/protocol'
import type { RpcContext, RpcContextFunction, RpcUpgradeRequest } from '../types'
import type { AdmissionSlot } from './admission'
import { Admission, isOriginAllowed, isRefusal, normalizeHosts, normalizeOrigins } from './admission'
import type { RpcRefusal } from './context'
import { contextInputFromUpgrade, refusalFromError } from './context'
import { PlainCallHandler } from './plain-call'
import { isShuttingDown, liveSockets, PendingConnection, pendingConnections, toCloseReason } from './registry'
import type { RpcRoute } from './socket'
import { RpcSocket } from './socket'
import type { RpcConnectionRecord, RpcTransport } from './transports/types'
import { transportOf, webTransport } from './transports'
import { cloudflareTransport, isCloudflareWorker } from './transports/cloudflare'
import { upgradeContextOf } from './transports/node'
import { inspector } from './devtools/inspector'

export { heartbeatFrame, isOriginAllowed, RpcCloseCode, rpcSubprotocols }

export type { RpcServerLimits }

/** The limits' defaults (the module's options share them). */
export const defaultServerLimits: RpcServerLimits = serverLimitDefaults

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
  /**
   * The largest message read, in bytes. On Node the WebSocket server enforces it while it reads a frame (the
   * module option of the same name sets it there, for every route); on other runtimes these hooks close a
   * socket whose frame is larger with 1009 once it has arrived.
   * @default 1048576 (1 MiB)
   */
  maxMessageBytes?: number
  /** Options for oRPC's RPC handler (plugins, interceptors). */
  handlerOptions?: StandardRPCHandlerOptions<object>
}

/** A refused upgrade: the socket is accepted, then closed from `open` with the refusal's code and reason. */
interface Refused {
  refusal: RpcRefusal
}

/**
 * An accepted upgrade, until its socket opens: its context (`undefined`: no context function), slot, and
 * whether the client offered the ready signal's subprotocol (then the server picks it and sends the signal).
 */
class AcceptedUpgrade extends PendingConnection {
  /** A handshake whose socket never opened (the client left during the upgrade) frees its slot after this. */
  static readonly openTimeout = 10_000

  readonly slot: AdmissionSlot
  readonly readySignal: boolean
  private readonly expiry: ReturnType<typeof setTimeout>

  constructor(context: RpcContext | undefined, remoteAddress: string | undefined, slot: AdmissionSlot, readySignal: boolean, admission: Admission) {
    super(context, remoteAddress)
    this.slot = slot
    this.readySignal = readySignal
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

/** How long a socket refused by frame may stay open before the server closes it (see `refuse`). */
const refusalGraceMs = 5000

type PeerContext = Record<PropertyKey, unknown> & { [connectionStateKey]?: ConnectionState }

/**
 * The connection's state. crossws 0.3.5's Cloudflare Durable Object adapter drops the context the upgrade hook
 * filled (it keeps only the hook's headers and refusal; 0.4.8 still does): there the peer's request is the
 * upgrade's request itself, context and all, as long as the object lives.
 */
const stateOf = (peer: Peer): ConnectionState | undefined =>
  (peer.context as PeerContext)[connectionStateKey] ?? ((peer.request as { context?: PeerContext } | undefined)?.context)?.[connectionStateKey]

/**
 * ws `handleProtocols` (one WebSocket server serves every route of the app): `nuxt-orpc` only for a route
 * served by these hooks, which send the ready frame; elsewhere (a bare oRPC route, any other socket) what ws
 * would pick by itself, the first offered. Such a route is recognized by the state its upgrade hook left in
 * the connection's context, which crossws's Node adapter keeps on the IncomingMessage as `_context`.
 */
export function selectSubprotocol(protocols: Set<string>, request: IncomingMessage): string | false {
  if (protocols.has(readySubprotocol) && upgradeContextOf(request)?.[connectionStateKey]) return readySubprotocol
  return protocols.values().next().value ?? false
}

/** The subprotocols a handshake offers (`Sec-WebSocket-Protocol`). */
function offeredSubprotocols(request: RpcUpgradeRequest): string[] {
  return request.headers.get('sec-websocket-protocol')?.split(',').map(protocol => protocol.trim()).filter(Boolean) ?? []
}

/** Closes a peer that may be closed already. */
function closeQuietly(peer: Peer, code: number, reason: string) {
  try {
    peer.close(code, reason)
  }
  catch {
    // Closed already.
  }
}

/** Refuses limits that would switch a guard off or lock everyone out without a word (0, negative, NaN). */
function assertLimits(limits: RpcServerLimits) {
  const positive = (name: string, value: number) => {
    if (!(value > 0)) throw new TypeError(`[nuxt-orpc] ${name} must be a number above 0 (got ${value}).`)
  }
  for (const [name, value] of Object.entries(limits)) {
    if (typeof value === 'number') positive(name, value)
  }
  if (limits.rateLimit) {
    positive('rateLimit.max', limits.rateLimit.max)
    positive('rateLimit.windowMs', limits.rateLimit.windowMs)
  }
}

/**
 * Why a context cannot be kept for after a hibernation (the Durable Object's storage keeps what
 * `structuredClone` copies: no functions, no class instances such as an H3 event), or undefined if it can.
 */
function unkeptContext(context: RpcContext): RpcRefusal | undefined {
  try {
    structuredClone(context)
  }
  catch (error) {
    console.error('[nuxt-orpc] The context function returned a value that cannot be kept while the Durable Object hibernates: return plain data (strings, numbers, arrays, plain objects, Dates), not functions or class instances.', error)
    return { status: 500, closeCode: RpcCloseCode.InternalError, reason: 'Connection context cannot be kept' }
  }
}

/** Whether a message is over `max` bytes, for transports that did not bound it while reading. */
function isLargerThan(data: string | Uint8Array, max: number): boolean {
  if (typeof data !== 'string') return data.byteLength > max
  // A UTF-16 unit is 1 to 3 bytes of UTF-8: encode only when the answer depends on it.
  if (data.length > max) return true
  return data.length * 3 > max && new TextEncoder().encode(data).byteLength > max
}

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
  assertLimits(limits)
  // One options object for both: oRPC's handler lets its plugins add interceptors to it, and the plain-call
  // path must see them (it steps aside when there are any).
  const handlerOptions: StandardRPCHandlerOptions<object> = { ...options.handlerOptions }
  const route: RpcRoute = {
    standardHandler: new StandardRPCHandler(options.router, handlerOptions),
    plainCalls: new PlainCallHandler(options.router, handlerOptions),
    limits,
    // Until the first upgrade says which runtime this is (a Durable Object may wake to a frame before any upgrade).
    transport: isCloudflareWorker ? cloudflareTransport as RpcTransport : webTransport,
  }
  const maxMessageBytes = options.maxMessageBytes ?? defaultMaxMessageBytes
  const allowedOrigins = normalizeOrigins(options.allowedOrigins ?? [])
  const allowedHosts = normalizeHosts(options.allowedHosts ?? [])
  const createContext = options.createContext
  if (import.meta.dev) inspector.route({ ...limits, maxMessageBytes, allowedOrigins: [...allowedOrigins], allowedHosts })
  const admission = new Admission(limits)
  const sockets = new Set<RpcSocket>()
  let heartbeat: ReturnType<typeof setInterval> | undefined
  /** Frames of sockets being restored (see `restore`), by peer id, in arrival order. */
  const restoring = new Map<string, Array<string | Uint8Array>>()
  /**
   * After a wake: the records of the connections open before it, each counted under the caps (from its
   * address) until it speaks (and is restored) or closes.
   */
  let dormant: Promise<Map<string, { record: RpcConnectionRecord, ipKey: string | undefined }>> | undefined
  const store = route.transport.store
  // The objects that served connections before the wake belong to the Durable Object as it was: workerd
  // refuses any I/O of theirs from the new one ("Cannot perform I/O on behalf of a different Durable Object"),
  // aborting their calls included, and cancels their procedures' continuations itself. They are forgotten,
  // and the connections counted again from their records. (Called at once when the object woke before this
  // route was made: everything it uses is declared above.)
  store?.onWake(() => {
    for (const socket of sockets) socket.abandon()
    sockets.clear()
    restoring.clear()
    admission.reset()
    clearInterval(heartbeat)
    heartbeat = undefined
    dormant = store.list().then(
      records => new Map([...records].map(([id, record]) => [id, { record, ipKey: admission.adopt(record.remoteAddress) }])),
      (error: unknown) => {
        console.error('[nuxt-orpc] Could not read the connections\' records after the Durable Object woke up; they will reconnect:', error)
        return new Map()
      },
    )
  })
  // The URL of the last connection opened: most connections to a route have the same one, kept once.
  let lastUrl = ''
  const sharedUrl = (url: string) => url === lastUrl ? lastUrl : (lastUrl = url)

  async function decide(request: RpcUpgradeRequest, readySignal: boolean): Promise<Refused | AcceptedUpgrade> {
    const transport = route.transport
    const origin = transport.originOf(request)
    if (!isOriginAllowed(origin, request.url, allowedOrigins, allowedHosts)) {
      return { refusal: { status: 403, closeCode: RpcCloseCode.PolicyViolation, reason: toCloseReason(`Origin ${origin} is not allowed`) } }
    }
    // Known here on Node; elsewhere when the socket opens.
    const address = transport.upgradeAddressOf(request)
    const slot = admission.reserve(address)
    if (isRefusal(slot)) return { refusal: slot }
    let context: RpcContext | undefined
    if (createContext) {
      // A context function that never settles (a hung session store) must not hold the slot for good.
      let expiry: ReturnType<typeof setTimeout> | undefined
      const deadline = new Promise<never>((_, reject) => {
        expiry = setTimeout(() => reject(new Error(`The context function did not settle within ${AcceptedUpgrade.openTimeout} ms`)), AcceptedUpgrade.openTimeout)
      })
      try {
        // The context function's result is what `RpcContext` describes (the generated declaration says so).
        context = (await Promise.race([createContext(contextInputFromUpgrade(request, transport)), deadline]) ?? {}) as RpcContext
      }
      catch (error) {
        admission.release(slot)
        return { refusal: refusalFromError(error) }
      }
      finally {
        clearTimeout(expiry)
      }
      const unkept = transport.store && unkeptContext(context)
      if (unkept) {
        admission.release(slot)
        return { refusal: unkept }
      }
    }
    return new AcceptedUpgrade(context, address, slot, readySignal, admission)
  }

  /** Why an accepted upgrade's socket must still be closed as it opens, if it must. */
  function lateRefusal(accepted: AcceptedUpgrade, address: string | undefined): { closeCode: number, reason: string } | undefined {
    if (accepted.revoked) return { closeCode: accepted.revoked.code, reason: accepted.revoked.reason }
    if (isShuttingDown()) return { closeCode: RpcCloseCode.GoingAway, reason: 'Server shutting down' }
    return admission.opened(accepted.slot, address)
  }

  // Whether a check of the last ping is still due: no new ping resets the counters it compares against.
  let checkPending = false

  /**
   * Sends every socket the heartbeat frame and pings it; one that looks dead `heartbeatTimeout` later
   * (`RpcSocket.unresponsive`) is terminated. With a timeout as long as the interval or longer, a beat that
   * comes while a check is due sends the frame only.
   */
  function beat() {
    for (const socket of sockets) socket.connection.send(heartbeatFrame)
    if (checkPending) return
    checkPending = true
    for (const socket of sockets) socket.ping()
    const check = setTimeout(() => {
      checkPending = false
      for (const socket of sockets) {
        if (socket.unresponsive) socket.terminate()
      }
    }, limits.heartbeatTimeout)
    ;(check as { unref?: () => void }).unref?.()
  }

  /**
   * Closes a refused socket as it opens. Where the transport cannot close a socket the client has not spoken
   * on (Cloudflare), a client with the ready signal gets the refusal frame instead and closes the socket
   * itself; one that does not is closed after `refusalGraceMs`.
   */
  function refuse(peer: Peer, closeCode: number, reason: string, readySignal: boolean) {
    if (!readySignal || !route.transport.refusesByFrame) {
      peer.close(closeCode, reason)
      return
    }
    peer.send(refusalFrame(closeCode, reason))
    const timer = setTimeout(() => {
      try {
        peer.close(closeCode, reason)
      }
      catch {
        // Closed by the client already.
      }
    }, refusalGraceMs)
    ;(timer as { unref?: () => void }).unref?.()
  }

  /** Sets up an open connection: registered, given its frames, watched by the heartbeat. */
  function start(peer: Peer, context: RpcContext | undefined, address: string | undefined, ipKey: string | undefined): RpcSocket {
    const socket = new RpcSocket(peer, context, address, ipKey, route)
    ;(peer.context as PeerContext)[connectionStateKey] = socket
    // Registered first: if anything below throws, the close hook still finds and releases it.
    sockets.add(socket)
    if (import.meta.dev) {
      // In development the socket comes through the dev server's proxy: where the socket does not know the
      // client's address, the proxy's header says it.
      const headers = peer.request?.headers
      inspector.opened(peer.id, headers?.get('origin') ?? undefined, address ?? headers?.get('x-forwarded-for') ?? undefined)
    }
    // Bound rather than a closure: no scope object kept per connection.
    route.transport.adopt(peer, socket.websocket, socket.receive.bind(socket), sharedUrl)
    if (route.transport.serverHeartbeat) {
      heartbeat ??= setInterval(beat, limits.heartbeatInterval)
      // A server with only idle sockets must still be able to exit.
      ;(heartbeat as { unref?: () => void }).unref?.()
    }
    return socket
  }

  /**
   * A frame came on a socket the server does not know: it woke with it (a Durable Object after hibernation).
   * The connection goes on from its record, with the frames that came meanwhile in order. Without one (or
   * without a store) it is closed with 1012, so the client reconnects and resumes its streams: no frame of it
   * is dropped silently.
   */
  function restore(peer: Peer, data: string | Uint8Array) {
    const waiting = restoring.get(peer.id)
    if (waiting) {
      waiting.push(data)
      return
    }
    const frames = [data]
    restoring.set(peer.id, frames)
    Promise.resolve(dormant).then((records) => {
      // Closed meanwhile, or another wake came.
      if (restoring.get(peer.id) !== frames) return
      restoring.delete(peer.id)
      const kept = records?.get(peer.id)
      if (!kept) {
        closeQuietly(peer, RpcCloseCode.ServiceRestart, 'Connection state lost: reconnect')
        return
      }
      records!.delete(peer.id)
      const socket = start(peer, kept.record.context, kept.record.remoteAddress, kept.ipKey)
      for (const frame of frames) receive(socket, frame)
    }).catch((error: unknown) => {
      console.error('[nuxt-orpc] Could not restore a connection after the Durable Object woke up:', error)
      closeQuietly(peer, RpcCloseCode.ServiceRestart, 'Connection state lost: reconnect')
    })
  }

  /** Hands a frame to its socket, after the size check where the transport did not make it. */
  function receive(socket: RpcSocket, data: string | Uint8Array) {
    if (!route.transport.limitsMessageSize && isLargerThan(data, maxMessageBytes)) {
      socket.close(RpcCloseCode.MessageTooBig, `Message over ${maxMessageBytes} bytes`)
      return
    }
    socket.receive(data)
  }

  /** The peer's socket closed. */
  function forget(peer: Peer) {
    store?.drop(peer)
    const socket = stateOf(peer)
    if (socket instanceof RpcSocket) {
      release(socket)
      return
    }
    // One from before a wake that never spoke again: no longer counted.
    restoring.delete(peer.id)
    void dormant?.then((records) => {
      const kept = records.get(peer.id)
      if (!kept) return
      records.delete(peer.id)
      admission.closed(kept.ipKey)
    })
  }

  /** Lets go of a connection: its calls aborted, its place under the caps freed. */
  function release(socket: RpcSocket) {
    if (!sockets.delete(socket)) return
    socket.dispose()
    admission.closed(socket.ipKey)
    if (sockets.size === 0 && heartbeat) {
      clearInterval(heartbeat)
      heartbeat = undefined
    }
  }

  return {
    async upgrade(request) {
      const upgradeRequest = request as unknown as RpcUpgradeRequest
      const transport = route.transport = transportOf(upgradeRequest)
      const offered = offeredSubprotocols(upgradeRequest)
      const readySignal = offered.includes(readySubprotocol)
      const decision = await decide(upgradeRequest, readySignal)
      // Where a refusal goes in a frame (see `refuse`), a client that does not read one learns it here.
      if (transport.refusesByFrame && !readySignal && !(decision instanceof AcceptedUpgrade)) {
        const { status, reason } = decision.refusal
        return new Response(reason, { status })
      }
      ;(upgradeRequest.context as PeerContext)[connectionStateKey] = decision
      // On Node, ws's `handleProtocols` (selectSubprotocol) answers; elsewhere the upgrade's response does.
      if (!transport.answersSubprotocol) return
      const protocol = readySignal ? readySubprotocol : offered[0]
      if (protocol) return { headers: { 'sec-websocket-protocol': protocol } }
    },
    open(peer) {
      const state = stateOf(peer)
      if (!(state instanceof AcceptedUpgrade)) {
        const refusal = state instanceof RpcSocket ? undefined : state?.refusal
        // A refusal kept until now went to a client with the ready signal (see `upgrade`).
        refuse(peer, refusal?.closeCode ?? RpcCloseCode.InternalError, refusal?.reason ?? 'No connection state', refusal !== undefined)
        return
      }
      state.settle()
      const transport = route.transport
      const address = state.remoteAddress ?? transport.remoteAddressOf(peer)
      const refusal = lateRefusal(state, address)
      if (refusal) {
        admission.release(state.slot)
        refuse(peer, refusal.closeCode, refusal.reason, state.readySignal)
        return
      }
      start(peer, state.contextValue, address, state.slot.ipKey)
      if (state.readySignal) peer.send(heartbeatFrame)
      transport.store?.save(peer, { context: state.contextValue, remoteAddress: address }).catch((error: unknown) => {
        console.error('[nuxt-orpc] The connection\'s context could not be kept in the Durable Object\'s storage, so the connection is closed (it would not survive hibernation):', error)
        closeQuietly(peer, RpcCloseCode.InternalError, 'Connection context could not be kept')
      })
    },
    message(peer, message) {
      // Only where the transport does not take frames itself (`adopt`). Handed over before any await: frames
      // of one socket are decoded in order.
      const socket = stateOf(peer)
      const data = typeof message.rawData === 'string' ? message.rawData : message.uint8Array()
      if (socket instanceof RpcSocket) receive(socket, data)
      // A socket that outlived the server's memory of it (a Durable Object woke from hibernation with it).
      else if (socket === undefined) restore(peer, data)
    },
    close(peer, details) {
      // Here, not from `error`: a socket's close follows its error, with the code.
      if (import.meta.dev) inspector.closed(peer.id, details.code, details.reason)
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
