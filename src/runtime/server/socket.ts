import type { StandardHandler } from '@orpc/server/standard'
import type { DecodedRequestMessage } from '@orpc/standard-server-peer'
import { decodeRequestMessage, deserializeRequestMessage, MessageType, serializeResponseMessage } from '@orpc/standard-server-peer'
import { AbortError, isAsyncIteratorObject, stringifyJSON } from '@orpc/shared'
import type { StandardResponse } from '@orpc/standard-server'
import { HibernationEventIterator } from '@orpc/standard-server'
import type { Peer } from 'crossws'
import type { RpcContext } from '../types'
import { binaryDelimiter, heartbeatFrame, RpcCloseCode } from '../shared/protocol'
import type { CallInFlight } from './calls'
import { controllerOf, isUnanswered, refusalOf } from './calls'
import { sendEventStream } from './event-stream'
import type { RpcTransport } from './transports'
import { ConnectionOutput } from './output'
import type { RpcSocketLimits } from './limits'
import { TokenBucket } from './limits'
import type { RegisteredConnection } from './registry'
import { callSettled, liveSockets } from './registry'
import type { PlainCallFrame, PlainCallHandler } from './plain-call'
import { asPlainCall, isPlainBody } from './plain-call'
import type { PublishedEvent } from './publisher/core'
import { StockCalls } from './stock-calls'
import { inspector } from './devtools/inspector'

export { RpcCloseCode }

/** What every connection of one route shares: oRPC's handler, the plain-call path, the limits and the runtime's transport. */
export interface RpcRoute {
  readonly standardHandler: StandardHandler<object>
  readonly plainCalls: PlainCallHandler
  readonly limits: RpcSocketLimits
  /** Known from the first upgrade (one process runs one runtime). */
  transport: RpcTransport
}

const textDecoder = new TextDecoder()
const heartbeatBytes = new TextEncoder().encode(heartbeatFrame)

/** Whether a frame is the heartbeat (the client's ping), as text or as the bytes ws hands over on Node. */
function isHeartbeat(data: string | Uint8Array): boolean {
  if (typeof data === 'string') return data === heartbeatFrame
  if (data.length !== heartbeatBytes.length) return false
  for (let index = 0; index < heartbeatBytes.length; index++) {
    if (data[index] !== heartbeatBytes[index]) return false
  }
  return true
}

/**
 * One WebSocket connection. Frames are decoded here, once, so a malformed frame is told apart from a failing
 * call, and a new call can be refused (too many in flight, over the rate limit) with a typed error before any
 * procedure runs.
 *
 * A plain call (see `asPlainCall`) runs on `PlainCallHandler`: oRPC's own matcher, procedure client and
 * serializer with none of the per-call transport machinery. An event stream it returns is sent from here
 * (`sendEventStream`); a file or a form it returns is handed to oRPC's stock server peer for its response.
 * Everything else (streamed input, files and forms going in, calls with headers, aborts of those) goes
 * through that peer. The wire format is oRPC's in every case.
 */
export class RpcSocket extends ConnectionOutput implements RegisteredConnection {
  // Fields are `declare`d and assigned in the constructors (see ConnectionOutput).
  readonly declare remoteAddress: string | undefined
  /** The key the route's per-IP cap counts it under (see `ipKeyOf`), for when it closes. */
  readonly declare ipKey: string | undefined
  /** The connection's context; `{}` is made on first use when the context function is off. */
  private declare contextValue: RpcContext | undefined
  private declare budget: TokenBucket | undefined
  /** The calls oRPC's stock peer runs, made on the first one. */
  private declare stockCalls: StockCalls | undefined
  /** Every call in flight by id; made on the first call (an idle connection holds no map). */
  private declare callsById: Map<string, CallInFlight> | undefined
  /** The decoding of the frame that later frames wait behind, if one is still being decoded. */
  private declare decoding: Promise<void> | undefined

  /**
   * Frames reach `receive`: through the transport (`adopt`), or from crossws's `message` hook where it does
   * not take them itself.
   */
  constructor(connection: Peer, context: RpcContext | undefined, remoteAddress: string | undefined, ipKey: string | undefined, route: RpcRoute) {
    super(connection, route)
    this.remoteAddress = remoteAddress
    this.ipKey = ipKey
    this.contextValue = context
    const { rateLimit } = route.limits
    this.budget = rateLimit ? new TokenBucket(rateLimit.max, rateLimit.windowMs) : undefined
    this.stockCalls = undefined
    this.callsById = undefined
    this.decoding = undefined
    liveSockets.add(this)
  }

  get id() {
    return this.connection.id
  }

  get context(): RpcContext {
    return this.contextValue ??= {} as RpcContext
  }

  /** Whether a call on this socket still waits for its response. */
  get answering() {
    for (const call of this.callsById?.values() ?? []) {
      if (isUnanswered(call)) return true
    }
    return false
  }

  /** Every call in flight by id. */
  get calls(): Map<string, CallInFlight> {
    return this.callsById ??= new Map()
  }

  /**
   * Must be called synchronously from the message hook. Frames are taken in the order they arrived: most are
   * decoded at once; while one waits on oRPC's asynchronous decoder (a file, a form, a call with headers),
   * the frames after it wait too. Otherwise the first events of a streamed input, sent right behind their
   * call, would reach the peer before the call is open there and be dropped.
   */
  receive(data: string | Uint8Array): void {
    // The client's ping (it has heard nothing for a while): answered at once, ahead of any decoding.
    if (isHeartbeat(data)) {
      if (!this.closed) this.connection.send(heartbeatFrame)
      return
    }
    if (import.meta.dev) inspector.received(this.connection.id, data)
    const before = this.decoding
    const taken = before ? before.then(() => this.take(data)) : this.take(data)
    if (!taken) return
    this.decoding = taken
    void taken.then(() => {
      if (this.decoding === taken) this.decoding = undefined
    })
  }

  /** Decodes one frame and starts what it asks for; a promise only while decoding is not done. */
  private take(raw: string | Uint8Array): Promise<void> | undefined {
    if (this.closed) return
    if (typeof raw !== 'string' && raw.includes(binaryDelimiter)) return this.decodeThenAccept(raw)
    let frame: unknown
    try {
      frame = JSON.parse(typeof raw === 'string' ? raw : textDecoder.decode(raw))
    }
    catch {
      this.close(RpcCloseCode.MalformedFrame, 'Malformed frame: not JSON')
      return
    }
    const plainCall = this.route.plainCalls.enabled ? asPlainCall(frame) : undefined
    if (plainCall) {
      if (!this.calls.has(plainCall.id) && !this.refused(plainCall.id)) void this.runPlainCall(plainCall)
      return
    }
    const type = (frame as { t?: unknown } | null)?.t
    // A request may carry headers that change how its body decodes (files, forms, event streams): oRPC's
    // decoder, asynchronous. An abort or an input event decodes at once.
    if (type === undefined || type === MessageType.REQUEST) return this.decodeThenAccept(raw)
    let decoded: DecodedRequestMessage
    try {
      decoded = deserializeRequestMessage(frame as Parameters<typeof deserializeRequestMessage>[0])
    }
    catch {
      this.close(RpcCloseCode.PolicyViolation, 'Malformed frame: not an oRPC message')
      return
    }
    this.accept(decoded, raw)
  }

  private async decodeThenAccept(raw: string | Uint8Array) {
    const decoded = await this.decode(raw)
    if (decoded && !this.closed) this.accept(decoded, raw)
  }

  /** Aborts every call still running; called when the socket closes (or is being closed from here). */
  dispose() {
    if (this.closed && !liveSockets.has(this)) return
    this.closed = true
    liveSockets.delete(this)
    for (const call of this.callsById?.values() ?? []) controllerOf(call)?.abort()
    this.stockCalls?.close()
    this.wakeDrainWaiters()
  }

  /**
   * Forgets the connection without touching anything of it (see the route's wake handling): it counts as
   * closed, nothing more is sent, and its calls are left to the runtime.
   */
  abandon() {
    this.closed = true
    liveSockets.delete(this)
  }

  /** Closes the socket; its calls are aborted at once, not when the closing handshake ends. */
  close(code: number, reason: string) {
    try {
      this.connection.close(code, reason)
    }
    finally {
      this.dispose()
    }
  }

  /** oRPC's decoder, for frames the plain path does not take; undefined (and the socket closed) when malformed. */
  private async decode(raw: string | Uint8Array): Promise<DecodedRequestMessage | undefined> {
    try {
      return await decodeRequestMessage(raw)
    }
    catch (error) {
      // Not JSON (or a body that does not decode) is 1007; JSON of the wrong shape is a TypeError: 1008.
      if (error instanceof SyntaxError) this.close(RpcCloseCode.MalformedFrame, 'Malformed frame: not JSON')
      else this.close(RpcCloseCode.PolicyViolation, 'Malformed frame: not an oRPC message')
    }
  }

  /**
   * A frame the plain path does not take: an event of a call's streamed input (`raw`: the frame, whose bytes
   * count against `maxBufferedInputBytes`), an abort, or a request for oRPC's stock peer.
   */
  private accept(decoded: DecodedRequestMessage, raw: string | Uint8Array) {
    const id = decoded[0]
    if (decoded[1] === MessageType.EVENT_ITERATOR) {
      this.stockCalls?.queueInputEvent(id, decoded[2], raw)
    }
    else if (decoded[1] === MessageType.ABORT_SIGNAL) {
      const controller = controllerOf(this.calls.get(id))
      if (controller) controller.abort(new AbortError('Client aborted the request'))
      else void this.stockCalls?.abort(decoded)
    }
    else if (!this.calls.has(id) && !this.refused(id)) {
      void (this.stockCalls ??= new StockCalls(this)).run(decoded)
    }
  }

  private async runPlainCall({ id, url, body, lastEventId }: PlainCallFrame) {
    const controller = new AbortController()
    this.calls.set(id, controller)
    try {
      const { plainCalls } = this.route
      const response = await plainCalls.call(url, body, this.context, controller.signal, lastEventId)
      // As oRPC's peer does: an aborted call gets no response (the client has stopped waiting for it). A
      // stream that will not be read is ended here.
      if (controller.signal.aborted || this.closed) {
        if (isAsyncIteratorObject(response.body)) void response.body.return?.()?.catch(() => {})
        return
      }
      if (isPlainBody(response.body)) {
        // The answer to the only call in flight: no other reply can join it in this tick.
        const alone = this.calls.size === 1
        try {
          this.sendResponse(id, response, alone)
        }
        catch (error) {
          // Output JSON.stringify cannot take (a getter that turns into a BigInt, say): the caller gets oRPC's
          // typed error, not silence.
          this.sendResponse(id, this.route.plainCalls.encodeError(error), alone)
        }
        return
      }
      if (isAsyncIteratorObject(response.body) && !(response.body instanceof HibernationEventIterator)) {
        // A subscription the procedure returned itself: its live events are written here as they come.
        const { subscriber } = response
        const direct = subscriber && { subscriber, encode: (event: PublishedEvent) => plainCalls.encodeEvent(event) }
        await sendEventStream(this, id, response, response.body, controller, direct)
        return
      }
      // A file, a form or a ReadableStream: oRPC's peer encodes and sends it.
      await (this.stockCalls ??= new StockCalls(this)).respond(id, response, controller)
    }
    catch (error) {
      if (!this.closed) console.error('[nuxt-orpc] A call failed outside its procedure.', error)
    }
    finally {
      this.calls.delete(id)
      callSettled(this)
    }
  }

  /** Refuses a new call over the connection's limits with TOO_MANY_REQUESTS; true when it did. */
  private refused(id: string): boolean {
    const { limits, plainCalls } = this.route
    const refusal = refusalOf(this.calls.size, this.budget, limits, plainCalls)
    if (refusal) this.sendResponse(id, refusal)
    return refusal !== undefined
  }

  /** The stream of call `id` has sent its response: it no longer holds up a graceful shutdown. */
  streaming(id: string, controller: AbortController) {
    this.calls.set(id, { streaming: controller })
    callSettled(this)
  }

  /** A response whose body is plain JSON, in oRPC's message format. */
  private sendResponse(id: string, response: StandardResponse, alone = false) {
    this.send(stringifyJSON(serializeResponseMessage(id, MessageType.RESPONSE, response)), alone)
  }
}
