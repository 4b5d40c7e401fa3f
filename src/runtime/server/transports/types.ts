import type { Peer } from 'crossws'
import type { H3Event } from 'h3'
import type { RpcContext, RpcUpgradeRequest } from '../../types'

/** What the transport's counters say of a socket, for the heartbeat. */
export interface RpcSocketProgress {
  /** Bytes read from the peer so far. */
  read: number
  /** Bytes the peer has taken so far (passed on to the network). */
  flushed: number
  /** Bytes waiting to be sent. */
  waiting: number
}

/** What an open connection needs to go on after the server forgot it: what its upgrade decided. */
export interface RpcConnectionRecord {
  /** The context function's result (undefined without one). */
  context: RpcContext | undefined
  remoteAddress: string | undefined
}

/**
 * Where sockets outlive the server's memory of them (a Cloudflare Durable Object hibernates with its sockets
 * open and wakes without its objects), each connection's record, by crossws's peer id (which survives).
 */
export interface RpcConnectionStore {
  /** Keeps the record of a connection that just opened; rejects when it cannot be kept (too large, not cloneable). */
  save: (peer: Peer, record: RpcConnectionRecord) => Promise<void>
  /** Every record kept, by peer id: the connections open before a wake. */
  list: () => Promise<Map<string, RpcConnectionRecord>>
  /** Lets go of a closed connection's record. */
  drop: (peer: Peer) => void
  /**
   * Calls `listener` whenever the server woke with sockets open: every connection it may still hold is stale
   * (nothing can be sent through the objects it has for them), and the others are known only by their records.
   * A listener added after such a wake (a route loaded on first use) is called at once.
   */
  onWake: (listener: () => void) => void
}

/**
 * What nuxt-orpc's connection core needs of one runtime's WebSockets, as functions of the handle it keeps per
 * connection (`Socket`): one object per runtime, none per connection. The core (frames, calls, limits,
 * streams, backpressure, the registry, shutdown) talks to sockets only through this.
 *
 * Each member either does what it says or says it cannot (`undefined`, `false`), and the core then uses what
 * is left: a runtime without a drain event is waited on with a short timer, one that cannot pause reading
 * has a client that does not read closed instead.
 */
export interface RpcTransport<Socket = unknown> {
  /** For logs and the README's runtime table. */
  readonly name: string

  // At the upgrade.
  /** The Origin header of the upgrade request, or null. */
  originOf: (request: RpcUpgradeRequest) => string | null
  /** The client's IP address, where the upgrade already tells it. */
  upgradeAddressOf: (request: RpcUpgradeRequest) => string | undefined
  /** The H3 event the context function gets: a real one, so h3 helpers and session libraries work. */
  eventOf: (request: RpcUpgradeRequest) => H3Event
  /** Whether the upgrade hook must answer the subprotocol itself (in its response headers). */
  readonly answersSubprotocol: boolean
  /**
   * Whether a socket cannot be closed before the client has sent anything on it: a refused connection is
   * then told so by the refusal frame (clients with the ready signal) or at the handshake with its HTTP status
   * (others), instead of being closed with its close code as it opens.
   */
  readonly refusesByFrame: boolean

  /**
   * Whether the server sends every socket the heartbeat frame on a timer (and pings it, where `ping` can).
   * Where it does not (Cloudflare: a pending timer keeps a Durable Object from hibernating), the client's
   * pings are what keeps the connection watched: it sends the heartbeat frame after a silence and the
   * runtime answers with the same frame.
   */
  readonly serverHeartbeat: boolean
  /** Where connections are kept for after the server forgot them, on runtimes where it can forget them while they stay open. */
  readonly store?: RpcConnectionStore

  // Once open.
  /** The handle kept per connection. */
  socketOf: (peer: Peer) => Socket
  /** The client's IP address, once the socket is open. */
  remoteAddressOf: (peer: Peer) => string | undefined
  /**
   * Called once the connection is set up: hands every frame to `receive` from now on and returns true, or
   * returns false and frames keep coming through crossws's `message` hook. It also lets go of what the open
   * connection no longer needs and keeps the server's graceful shutdown from taking the socket for idle.
   */
  adopt: (peer: Peer, socket: Socket, receive: (data: string | Uint8Array) => void, sharedUrl: (url: string) => string) => boolean
  /** Whether the transport already refuses frames over `maxMessageBytes` while it reads them (else the core checks each one). */
  readonly limitsMessageSize: boolean

  /** Sends a text frame. */
  sendText: (peer: Peer, socket: Socket, text: string) => void
  /** Holds writes until the returned function is called (one write for a tick's frames), if the runtime can. */
  cork: (socket: Socket) => (() => void) | undefined
  /** Bytes sent but not yet taken by the network, if the runtime tells. */
  bufferedBytes: (socket: Socket) => number | undefined
  /** Stops reading the socket (true), or says it cannot (false). */
  pauseReading: (socket: Socket) => boolean
  resumeReading: (socket: Socket) => void
  /** Calls `listener` once when the send buffer has drained, and returns how to take it back; undefined: no such event. */
  onDrain: (socket: Socket, listener: () => void) => (() => void) | undefined
  /** Pings the peer, if the runtime can, and says where its counters stood; undefined: no heartbeat here. */
  ping: (socket: Socket) => RpcSocketProgress | undefined
  /** The counters now (see `ping`). */
  progressOf: (socket: Socket) => RpcSocketProgress | undefined
  /** Ends the connection at once, without a closing handshake. */
  terminate: (peer: Peer, socket: Socket) => void
}
