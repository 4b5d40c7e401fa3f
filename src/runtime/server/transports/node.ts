import type { IncomingMessage } from 'node:http'
import { ServerResponse } from 'node:http'
import type { AdapterOptions, Peer } from 'crossws'
import { H3Event } from 'h3'
import { WebSocketServer } from 'ws'
import type { RpcUpgradeRequest } from '../../types'
import type { RpcSocketProgress, RpcTransport } from './types'

// The one place that uses private internals of ws, crossws, Node and Nitro. Each is probed once, on the first
// connection (`probeNodeShapes`); where one is missing the transport uses the public API instead and says so
// once in the log. test/transport-shapes.test.ts asserts every shape against the installed versions, which
// package.json pins (ws, crossws), so an upgrade that changes one fails there rather than in production.

/** What nuxt-orpc uses of Node's TCP socket under ws. */
interface TcpSocket {
  write: (chunk: Uint8Array) => boolean
  cork: () => void
  uncork: () => void
  pause: () => void
  bytesRead: number
  bytesWritten: number
  writableLength: number
  writableNeedDrain: boolean
  once: (event: 'drain', listener: () => void) => void
  off: (event: 'drain', listener: () => void) => void
  remoteAddress?: string
  /** Node's own: the libuv handle (`getpeername` without Node's per-socket cache). */
  _handle?: { getpeername?: (out: { address?: string }) => number }
  /** Nitro's graceful shutdown (http-graceful-shutdown): sockets it may destroy at once. */
  _isIdle?: boolean
}

/** ws's WebSocket, with the private members nuxt-orpc reads. */
export interface NodeWebSocket {
  send: (data: string) => void
  protocol: string
  readyState: number
  bufferedAmount: number
  ping: () => void
  terminate: () => void
  pause: () => void
  resume: () => void
  listeners: (event: 'message') => Array<(...args: unknown[]) => void>
  off: (event: 'message', listener: (...args: unknown[]) => void) => void
  on: (event: 'message', listener: (data: Uint8Array | string) => void) => void
  /** ws's own: the TCP socket. */
  _socket?: TcpSocket
  /** ws's own: the frame writer; state 0 when nothing waits in its queue (it queues while compressing or reading a Blob). */
  _sender?: { _state?: number }
}

/** What crossws's Node adapter keeps on a peer (`_internal`). */
interface NodePeerInternals {
  ws?: NodeWebSocket
  nodeReq?: IncomingMessage | { socket?: unknown, _context?: unknown }
  request?: { url: string }
}

/** crossws's Node request proxy (`NodeReqProxy`) keeps the IncomingMessage as `_req`. */
type NodeUpgradeRequest = RpcUpgradeRequest & { _req?: IncomingMessage }

const internalsOf = (peer: Peer) => (peer as unknown as { _internal?: NodePeerInternals })._internal
const nodeRequestOf = (request: RpcUpgradeRequest) => (request as NodeUpgradeRequest)._req

/** Which private shapes the installed ws, crossws, Node and Nitro have; every one true on the tested versions. */
export interface NodeShapes {
  /** crossws keeps ws's WebSocket as `peer._internal.ws` (else `peer.websocket`, a Proxy made per connection). */
  peerWebSocket: boolean
  /** ws keeps the TCP socket as `_socket`, with cork, counters and drain (else: no corking, heartbeat by pong only). */
  tcpSocket: boolean
  /** ws's frame writer says whether its queue is empty (else ws frames every message). */
  senderState: boolean
  /** Node's handle answers `getpeername` (else `socket.remoteAddress`, which Node caches per socket). */
  peerName: boolean
  /** crossws keeps the upgrade's IncomingMessage and URL on the peer (else it is kept for the connection's life). */
  upgradeRequest: boolean
  /** crossws listens for ws's `message` with one listener (else frames go through crossws's hook). */
  messageListener: boolean
  /** Nitro's graceful shutdown marks idle sockets (else it may destroy an open socket at once). */
  idleFlag: boolean
}

let shapes: NodeShapes | undefined

/** Reads the private shapes on a live peer; the first connection's answer is kept for the process. */
export function probeNodeShapes(peer: Peer): NodeShapes {
  const internals = internalsOf(peer)
  const ws = internals?.ws
  const tcp = ws?._socket
  const found: NodeShapes = {
    peerWebSocket: typeof ws?.send === 'function' && typeof ws.ping === 'function',
    tcpSocket: !!tcp && typeof tcp.write === 'function' && typeof tcp.cork === 'function' && typeof tcp.bytesRead === 'number'
      && typeof tcp.bytesWritten === 'number' && typeof tcp.writableLength === 'number' && typeof tcp.writableNeedDrain === 'boolean',
    senderState: typeof ws?._sender?._state === 'number',
    peerName: typeof tcp?._handle?.getpeername === 'function',
    upgradeRequest: !!internals?.nodeReq && 'socket' in internals.nodeReq && typeof internals.request?.url === 'string',
    messageListener: typeof ws?.listeners === 'function' && ws.listeners('message').length === 1,
    idleFlag: typeof tcp?._isIdle === 'boolean',
  }
  if (!shapes) {
    shapes = found
    const missing = Object.entries(found).filter(([, present]) => !present).map(([name]) => name)
    if (missing.length) {
      console.warn(`[nuxt-orpc] This ws, crossws or Nitro version has changed what nuxt-orpc reads (${missing.join(', ')}); it uses their public API there instead. Pin the versions nuxt-orpc lists to keep its fast path.`)
    }
  }
  return shapes
}

/** The shapes the first connection found, or undefined before it (for health checks and the shape test). */
export const foundNodeShapes = (): Readonly<NodeShapes> | undefined => shapes

const tcpOf = (ws: NodeWebSocket) => shapes?.tcpSocket ? ws._socket : undefined

/**
 * A TCP socket's peer address, asked of its handle as Node's `socket.remoteAddress` does, but without Node's
 * cache: that keeps an object with the address, family and port on the socket for the connection's life
 * (about 0.1 KB), for an address read once. Undefined when the socket is closed.
 */
function peerAddressOf(socket: TcpSocket | undefined): string | undefined {
  const getpeername = socket?._handle?.getpeername
  if (!getpeername) return socket?.remoteAddress
  const name: { address?: string } = {}
  return getpeername.call(socket!._handle, name) === 0 ? name.address : undefined
}

/** The largest payload `writeTextFrame` frames itself (a 16-bit length); longer frames are left to ws. */
const maxOwnFramePayload = 0xFFFF

/**
 * Writes `text` to ws's TCP socket as one WebSocket text frame (RFC 6455 5.2: FIN, opcode 1, unmasked, a 7- or
 * 16-bit length), in a single `write`. ws frames a message as a header buffer and a payload, written together
 * with `writev` under a cork, and that JavaScript around the system call cost about a tenth of the server's
 * CPU per reply under load (docs/benchmarks.md). It goes to the same socket as ws's own writes, so frames stay
 * in order, and `bufferedAmount` counts it. False, and nothing written, when ws must write it: socket not
 * open, ws's queue in use, or a payload over 64 KiB.
 */
function writeTextFrame(ws: NodeWebSocket, text: string): boolean {
  const tcp = ws._socket
  if (!tcp || !shapes?.senderState || ws.readyState !== 1 || ws._sender!._state !== 0) return false
  const length = Buffer.byteLength(text)
  if (length > maxOwnFramePayload) return false
  const headerLength = length < 126 ? 2 : 4
  const frame = Buffer.allocUnsafe(headerLength + length)
  frame[0] = 0x81
  if (headerLength === 2) {
    frame[1] = length
  }
  else {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  }
  frame.write(text, headerLength)
  tcp.write(frame)
  return true
}

/**
 * The upgrade request as an open peer keeps it once the IncomingMessage is let go: its URL, nothing else.
 * Code that still asks for its headers after the upgrade gets an empty `Headers`, made on each read.
 */
class OpenedUpgradeRequest {
  constructor(readonly url: string) {}

  get headers(): Headers {
    return new Headers()
  }
}

/**
 * Lets the upgrade's IncomingMessage go once the connection is open. crossws's Node adapter keeps it on the
 * peer for the connection's life: its raw and parsed headers, its stream state, and two request proxies that
 * each built the URL (about 1 KB per idle connection in all). After the upgrade crossws reads three things
 * from it: the context (`nodeReq._context`), the TCP socket (`peer.remoteAddress`) and, through h3, the URL
 * (every hook's route is resolved from `peer.request.url`). The peer keeps those three, and nothing else.
 */
function releaseUpgradeRequest(peer: Peer, sharedUrl: (url: string) => string) {
  const internals = internalsOf(peer)
  const nodeReq = internals?.nodeReq as { socket?: unknown, _context?: unknown } | undefined
  if (!internals || !nodeReq || !internals.request) return
  internals.nodeReq = { socket: nodeReq.socket, _context: nodeReq._context }
  internals.request = new OpenedUpgradeRequest(sharedUrl(internals.request.url))
}

function progressOf(ws: NodeWebSocket): RpcSocketProgress | undefined {
  const tcp = tcpOf(ws)
  if (!tcp) return undefined
  return { read: tcp.bytesRead, flushed: tcp.bytesWritten - tcp.writableLength, waiting: tcp.writableLength }
}

/**
 * Node, through crossws's Node adapter and ws: frames are read straight from ws, text replies framed and
 * written in one write, a tick's replies corked together, backpressure and the heartbeat read off the TCP
 * socket, and the upgrade's IncomingMessage let go once the socket is open.
 */
export const nodeTransport: RpcTransport<NodeWebSocket> = {
  name: 'node',

  // On Node the raw header: crossws would build a `Headers` from every header of the request for it.
  originOf: request => nodeRequestOf(request)?.headers.origin ?? request.headers.get('origin'),
  upgradeAddressOf: request => peerAddressOf(nodeRequestOf(request)?.socket as TcpSocket | undefined),
  eventOf(request) {
    const nodeRequest = nodeRequestOf(request)!
    // A detached response nobody reads: h3 helpers and session libraries need one.
    const event = new H3Event(nodeRequest, new ServerResponse(nodeRequest))
    // What Nitro's request hook sets up; `useRuntimeConfig(event)` (and session libraries) read it.
    event.context.nitro = { errors: [] }
    return event
  },
  // ws's `handleProtocols` answers it (see `createNodeAdapterOptions`).
  answersSubprotocol: false,
  refusesByFrame: false,
  serverHeartbeat: true,

  // `peer.websocket` would make (and keep, per connection) a Proxy around ws's object, with a trap on every read.
  // Probed on the first connection only; later ones read the kept answer.
  socketOf: peer => (shapes ?? probeNodeShapes(peer)).peerWebSocket ? internalsOf(peer)!.ws! : peer.websocket as unknown as NodeWebSocket,
  remoteAddressOf(peer) {
    const socket = shapes?.upgradeRequest ? (internalsOf(peer)?.nodeReq as { socket?: TcpSocket } | undefined)?.socket : undefined
    return socket ? peerAddressOf(socket) : peer.remoteAddress
  },
  adopt(peer, ws, receive, sharedUrl) {
    if (shapes?.upgradeRequest) releaseUpgradeRequest(peer, sharedUrl)
    // Nitro's graceful shutdown destroys "idle" sockets at once, and an upgraded socket looks idle to it. Marked
    // busy, it waits for nuxt-orpc's own drain (`shutdownRpcConnections`).
    const tcp = ws._socket
    if (shapes?.idleFlag && tcp) tcp._isIdle = false
    // crossws's own listener would, for every frame, have h3 resolve the route again and build a Message, then
    // call the hook a few microtask turns later (about 5% of the server's CPU under load). It does nothing
    // else, so it is replaced. Open, close and error still go through crossws's hooks.
    if (!shapes?.messageListener) return false
    for (const listener of ws.listeners('message')) ws.off('message', listener)
    ws.on('message', receive)
    return true
  },
  limitsMessageSize: true,

  sendText(peer, ws, text) {
    if (!writeTextFrame(ws, text)) peer.send(text)
  },
  cork(ws) {
    const tcp = tcpOf(ws)
    if (!tcp) return undefined
    tcp.cork()
    return () => tcp.uncork()
  },
  bufferedBytes: ws => ws.bufferedAmount,
  pauseReading(ws) {
    ws.pause()
    return true
  },
  resumeReading: ws => ws.resume(),
  onDrain(ws, listener) {
    const tcp = tcpOf(ws)
    // No drain comes unless a write has filled the buffer.
    if (!tcp?.writableNeedDrain) return undefined
    tcp.once('drain', listener)
    return () => tcp.off('drain', listener)
  },
  ping(ws) {
    const progress = progressOf(ws)
    if (progress) ws.ping()
    return progress
  },
  progressOf,
  terminate: (_peer, ws) => ws.terminate(),
}

/** Options of the WebSocket server Nitro builds, with each setting's reason. */
export interface NodeServerOptions {
  maxMessageBytes: number
  handleProtocols: (protocols: Set<string>, request: IncomingMessage) => string | false
}

/**
 * crossws's Node adapter options: a ready WebSocket server (`wss`) from the current ws. Nitro 2's crossws
 * (0.3.x) bundles ws 8.18, which has no limit on message fragments (GHSA-96hv-2xvq-fx4p: 300k one-byte
 * fragments pin ~31 MiB on a socket that is never closed); ws >= 8.21 closes such a flood with 1008/1009.
 * `maxPayload` is checked while ws reads a frame. It serves every WebSocket route of the app.
 */
export function createNodeAdapterOptions({ maxMessageBytes, handleProtocols }: NodeServerOptions): AdapterOptions & { wss?: WebSocketServer } {
  // Built for a worker (Cloudflare), `ws` resolves to its browser entry, which has no server; no Node adapter
  // runs there either.
  if (typeof WebSocketServer !== 'function') return {}
  return { wss: new WebSocketServer({ noServer: true, maxPayload: maxMessageBytes, handleProtocols }) }
}

/**
 * The state an upgrade hook left in the connection's context, as ws's `handleProtocols` sees the request:
 * crossws's Node adapter keeps that context on the IncomingMessage as `_context`.
 */
export function upgradeContextOf(request: IncomingMessage | undefined): Record<PropertyKey, unknown> | undefined {
  return (request as { _context?: Record<PropertyKey, unknown> } | undefined)?._context
}

/** Whether this upgrade came through crossws's Node adapter. */
export const isNodeUpgrade = (request: RpcUpgradeRequest) => nodeRequestOf(request) !== undefined
