import { ORPCError } from '@orpc/client'
import { StandardRPCJsonSerializer, StandardRPCSerializer } from '@orpc/client/standard'
import type { StandardHandler } from '@orpc/server/standard'
import { createServerPeerHandleRequestFn } from '@orpc/server/standard-peer'
import type { DecodedRequestMessage, EncodedMessage } from '@orpc/standard-server-peer'
import { decodeRequestMessage, encodeResponseMessage, experimental_ServerPeerWithoutCodec as ServerPeerWithoutCodec, MessageType } from '@orpc/standard-server-peer'
import type { Message, Peer } from 'crossws'
import type { RpcContext } from '../types'

/** WebSocket close codes nuxt-orpc uses; clients map them to typed errors. */
export const RpcCloseCode = {
  /** The server is shutting down: reconnect (to another instance). */
  GoingAway: 1001,
  /** The frame was not JSON (or not valid UTF-8). */
  MalformedFrame: 1007,
  /** Origin not allowed, or a frame that is JSON but not an oRPC message. */
  PolicyViolation: 1008,
  /** A frame larger than `maxMessageBytes`, or a fragment flood (sent by the WebSocket server itself). */
  MessageTooBig: 1009,
  /** The server failed unexpectedly (the context function threw a non-HTTP error). */
  InternalError: 1011,
  /** Too many connections (in all, or from this IP): try again later. */
  TryAgainLater: 1013,
  /** The context function refused the connection with 401, or the app closed the user's connections. */
  Unauthorized: 4401,
  /** The context function refused the connection with 403. */
  Forbidden: 4403,
} as const

/** Per-connection limits, resolved from the module options. */
export interface RpcSocketLimits {
  maxCallsInFlight: number
  rateLimit: { max: number, windowMs: number } | false
  maxBufferedBytes: number
}

/** What `closeRpcConnections` and other server code can see of a connection. */
export interface RpcConnectionInfo {
  /** crossws's peer id. */
  readonly id: string
  /** The context the context function returned for this connection. */
  readonly context: RpcContext
  readonly remoteAddress: string | undefined
}

const serializer = new StandardRPCSerializer(new StandardRPCJsonSerializer())

/** Every open connection of this process, for `closeRpcConnections` and shutdown. */
export const liveSockets = new Set<RpcSocket>()

/** A token bucket holding up to `capacity` tokens, refilled continuously with `ratePerWindow` per `windowMs`. */
export class TokenBucket {
  private tokens: number
  private updatedAt = Date.now()

  constructor(private readonly capacity: number, private readonly windowMs: number, private readonly ratePerWindow = capacity) {
    this.tokens = capacity
  }

  take(): boolean {
    const now = Date.now()
    this.tokens = Math.min(this.capacity, this.tokens + (now - this.updatedAt) * this.ratePerWindow / this.windowMs)
    this.updatedAt = now
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }
}

/**
 * One WebSocket connection: oRPC's server peer (the stock wire protocol, middleware, validation and errors)
 * behind the checks oRPC leaves to the transport. Frames are decoded here, once, so a malformed frame is told
 * apart from a failing call, and a new call can be refused (too many in flight, over the rate limit) with a
 * typed error before it reaches oRPC.
 */
export class RpcSocket implements RpcConnectionInfo {
  // oRPC's peer (four maps and queues) and the request handler are made on the first frame, not at open:
  // an idle connection then costs about 3 KB less heap.
  private peerInstance: ServerPeerWithoutCodec | undefined
  private handleRequest: ReturnType<typeof createServerPeerHandleRequestFn> | undefined
  private readonly budget: TokenBucket | undefined
  private callsInFlight = 0
  /** Calls not answered yet (a stream counts until its first response): what a graceful shutdown waits for. */
  private readonly unanswered = new Set<string>()
  private closed = false

  constructor(
    readonly connection: Peer,
    readonly context: RpcContext,
    private readonly standardHandler: StandardHandler<object>,
    private readonly limits: RpcSocketLimits,
  ) {
    this.budget = limits.rateLimit ? new TokenBucket(limits.rateLimit.max, limits.rateLimit.windowMs) : undefined
    liveSockets.add(this)
  }

  get id() {
    return this.connection.id
  }

  get remoteAddress() {
    return this.connection.remoteAddress
  }

  /** Calls running on this socket right now. */
  get inFlight() {
    return this.callsInFlight
  }

  /** Whether a call on this socket still waits for its response. */
  get answering() {
    return this.unanswered.size > 0
  }

  /** Must be called synchronously from the message hook: decoding starts in frame order. */
  async receive(message: Message): Promise<void> {
    let decoded: DecodedRequestMessage
    try {
      decoded = await decodeRequestMessage(typeof message.rawData === 'string' ? message.rawData : message.uint8Array())
    }
    catch (error) {
      // Not JSON (or a body that does not decode) is 1007; JSON of the wrong shape is a TypeError: 1008.
      if (error instanceof SyntaxError) this.close(RpcCloseCode.MalformedFrame, 'Malformed frame: not JSON')
      else this.close(RpcCloseCode.PolicyViolation, 'Malformed frame: not an oRPC message')
      return
    }

    const [id, type] = decoded
    if (type !== MessageType.REQUEST) {
      await this.dispatch(decoded)
      return
    }
    if (this.callsInFlight >= this.limits.maxCallsInFlight) {
      return this.refuseCall(id, new ORPCError('TOO_MANY_REQUESTS', {
        status: 429,
        message: `Too many calls in flight on this connection (limit ${this.limits.maxCallsInFlight}); wait for some to finish.`,
        data: { limit: 'maxCallsInFlight', max: this.limits.maxCallsInFlight },
      }))
    }
    if (this.budget && !this.budget.take()) {
      const { max, windowMs } = this.limits.rateLimit as { max: number, windowMs: number }
      return this.refuseCall(id, new ORPCError('TOO_MANY_REQUESTS', {
        status: 429,
        message: `Rate limit exceeded on this connection (${max} calls per ${windowMs} ms); slow down.`,
        data: { limit: 'rateLimit', max, windowMs },
      }))
    }
    this.callsInFlight++
    this.unanswered.add(id)
    try {
      await this.dispatch(decoded)
    }
    finally {
      this.callsInFlight--
      this.unanswered.delete(id)
    }
  }

  /** Aborts every call still running; called when the socket closed. */
  dispose() {
    if (this.closed && !liveSockets.has(this)) return
    this.closed = true
    liveSockets.delete(this)
    this.peerInstance?.close()
  }

  close(code: number, reason: string) {
    this.closed = true
    this.connection.close(code, reason)
  }

  private get peer(): ServerPeerWithoutCodec {
    return this.peerInstance ??= new ServerPeerWithoutCodec(async ([id, type, payload]) => {
      const encoded = await encodeResponseMessage(id, type, payload)
      if (type === MessageType.EVENT_ITERATOR) await this.drain()
      else if (type === MessageType.RESPONSE) this.unanswered.delete(id)
      this.send(encoded)
    })
  }

  private async dispatch(decoded: DecodedRequestMessage) {
    this.handleRequest ??= createServerPeerHandleRequestFn(this.standardHandler, { context: this.context })
    try {
      await this.peer.message(decoded, this.handleRequest)
    }
    catch (error) {
      // The call failed outside its procedure: the socket closed under it, or its output cannot be encoded.
      if (!this.closed) console.error('[nuxt-orpc] A call failed outside its procedure.', error)
    }
  }

  private async refuseCall(id: string, error: ORPCError<string, unknown>) {
    const body = serializer.serialize(error.toJSON())
    this.send(await encodeResponseMessage(id, MessageType.RESPONSE, { status: error.status, headers: {}, body }))
  }

  private send(encoded: EncodedMessage) {
    if (!this.closed) this.connection.send(encoded)
  }

  /**
   * Backpressure for streams: while the socket holds more than `maxBufferedBytes` unsent, the stream waits
   * (oRPC awaits this send before pulling the next event), so a slow reader cannot make the server buffer
   * without bound.
   */
  private async drain() {
    const websocket = this.connection.websocket as { bufferedAmount?: number }
    while (!this.closed && (websocket.bufferedAmount ?? 0) > this.limits.maxBufferedBytes) {
      await new Promise(resolve => setTimeout(resolve, 10))
    }
  }
}

/**
 * Closes every open connection whose info matches `filter` (all of them without one), e.g. a user's sockets
 * on logout: `closeRpcConnections(connection => connection.context.user?.id === userId)`. Their calls in
 * flight are aborted; clients get `UNAUTHORIZED` (code 4401) by default. Returns how many were closed.
 * Connections on other server instances are not reached.
 */
export function closeRpcConnections(
  filter?: (connection: RpcConnectionInfo) => boolean,
  { code = RpcCloseCode.Unauthorized, reason = 'Session ended' }: { code?: number, reason?: string } = {},
): number {
  let count = 0
  for (const socket of [...liveSockets]) {
    if (filter && !filter(socket)) continue
    socket.close(code, reason)
    socket.dispose()
    count++
  }
  return count
}

let shuttingDown: Promise<void> | undefined

/**
 * Graceful shutdown: waits (up to `timeout` ms) until no call waits for its response, then closes every
 * connection with 1001 so clients reconnect elsewhere. Streams are not waited for: they end with the socket.
 */
export function shutdownRpcConnections(timeout: number): Promise<void> {
  return shuttingDown ??= (async () => {
    const deadline = Date.now() + timeout
    while (Date.now() < deadline && [...liveSockets].some(socket => socket.answering)) {
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    closeRpcConnections(undefined, { code: RpcCloseCode.GoingAway, reason: 'Server shutting down' })
  })()
}

/** True once a shutdown began: new connections are refused with 1001. */
export const isShuttingDown = () => shuttingDown !== undefined
