import { ORPCError } from '@orpc/client'
import type { StandardHandler } from '@orpc/server/standard'
import { createServerPeerHandleRequestFn } from '@orpc/server/standard-peer'
import type { DecodedRequestMessage, EventIteratorPayload } from '@orpc/standard-server-peer'
import { decodeRequestMessage, deserializeRequestMessage, encodeResponseMessage, experimental_ServerPeerWithoutCodec as ServerPeerWithoutCodec, MessageType, serializeResponseMessage, toEventIterator } from '@orpc/standard-server-peer'
import { AbortError, isAsyncIteratorObject, stringifyJSON } from '@orpc/shared'
import type { StandardRequest, StandardResponse } from '@orpc/standard-server'
import { ErrorEvent, getEventMeta, HibernationEventIterator, isEventIteratorHeaders } from '@orpc/standard-server'
import type { Peer } from 'crossws'
import type { RpcContext } from '../types'
import { binaryDelimiter, RpcCloseCode } from '../shared/protocol'
import type { RpcTransport } from './transports'
import { ConnectionOutput } from './output'
import { InputEventQueue } from './input-queue'
import type { RpcSocketLimits } from './limits'
import { TokenBucket } from './limits'
import type { RegisteredConnection } from './registry'
import { callSettled, liveSockets } from './registry'
import type { PlainCallFrame, PlainCallHandler } from './plain-call'
import { asPlainCall, isPlainBody } from './plain-call'

export { RpcCloseCode }

/**
 * A call in flight. A plain call: its abort controller, wrapped as `{ streaming }` once its response has gone
 * out and its stream runs. A call oRPC's peer runs: whether its response went out. A call whose response has
 * not gone out holds up a graceful shutdown; a stream that has begun does not.
 */
type CallInFlight = AbortController | { streaming: AbortController } | 'unanswered' | 'answered'

const controllerOf = (call: CallInFlight | undefined): AbortController | undefined =>
  call instanceof AbortController ? call : typeof call === 'object' ? call.streaming : undefined

/** What every connection of one route shares: oRPC's handler, the plain-call path, the limits and the runtime's transport. */
export interface RpcRoute {
  readonly standardHandler: StandardHandler<object>
  readonly plainCalls: PlainCallHandler
  readonly limits: RpcSocketLimits
  /** Known from the first upgrade (one process runs one runtime). */
  transport: RpcTransport
}

const textDecoder = new TextDecoder()
const textEncoder = new TextEncoder()

/**
 * One WebSocket connection. Frames are decoded here, once, so a malformed frame is told apart from a failing
 * call, and a new call can be refused (too many in flight, over the rate limit) with a typed error before any
 * procedure runs.
 *
 * A plain call (see `asPlainCall`) runs on `PlainCallHandler`: oRPC's own matcher, procedure client and
 * serializer with none of the per-call transport machinery. An event stream it returns is sent from here
 * (`sendStream`); a file or a form it returns is handed to oRPC's stock server peer for its response.
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
  /** oRPC's peer (four maps and queues), made on the first call that needs it. */
  private declare peerInstance: ServerPeerWithoutCodec | undefined
  /** Every call in flight by id; made on the first call (an idle connection holds no map). */
  private declare callsById: Map<string, CallInFlight> | undefined
  /** The decoding of the frame that later frames wait behind, if one is still being decoded. */
  private declare decoding: Promise<void> | undefined
  /** Events of streamed inputs not yet pulled; made on the first call with streamed input. */
  private declare inputs: InputEventQueue | undefined

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
    this.peerInstance = undefined
    this.callsById = undefined
    this.decoding = undefined
    this.inputs = undefined
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
      if (call instanceof AbortController || call === 'unanswered') return true
    }
    return false
  }

  private get calls() {
    return this.callsById ??= new Map()
  }

  /**
   * Must be called synchronously from the message hook. Frames are taken in the order they arrived: most are
   * decoded at once; while one waits on oRPC's asynchronous decoder (a file, a form, a call with headers),
   * the frames after it wait too. Otherwise the first events of a streamed input, sent right behind their
   * call, would reach the peer before the call is open there and be dropped.
   */
  receive(data: string | Uint8Array): void {
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
    void this.accept(decoded, raw)
  }

  private async decodeThenAccept(raw: string | Uint8Array) {
    const decoded = await this.decode(raw)
    if (decoded && !this.closed) void this.accept(decoded, raw)
  }

  /** Aborts every call still running; called when the socket closes (or is being closed from here). */
  dispose() {
    if (this.closed && !liveSockets.has(this)) return
    this.closed = true
    liveSockets.delete(this)
    for (const call of this.callsById?.values() ?? []) controllerOf(call)?.abort()
    this.peerInstance?.close()
    this.inputs?.close()
    this.wakeDrainWaiters()
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
   * A frame the plain path does not take: a request for oRPC's stock peer, an abort, or an event of a call's
   * streamed input (`raw`: the frame, whose bytes count against `maxBufferedInputBytes`).
   */
  private async accept(decoded: DecodedRequestMessage, raw: string | Uint8Array) {
    const [id, type] = decoded
    if (type === MessageType.EVENT_ITERATOR) {
      this.queueInputEvent(id, decoded[2], raw)
      return
    }
    if (type === MessageType.ABORT_SIGNAL) {
      const controller = controllerOf(this.calls.get(id))
      if (controller) {
        controller.abort(new AbortError('Client aborted the request'))
        return
      }
      this.inputs?.close({ id, reason: new AbortError('Client aborted the request') })
      await this.dispatch(decoded)
      return
    }
    if (this.calls.has(id) || this.refused(id)) return
    this.calls.set(id, 'unanswered')
    try {
      await this.dispatch(isEventIteratorHeaders(decoded[2].headers) ? [id, type, this.withStreamedInput(id, decoded[2])] : decoded)
    }
    finally {
      this.calls.delete(id)
      this.inputs?.close({ id })
      callSettled(this)
    }
  }

  /**
   * The request with its streamed input read from this socket's bounded queue. Without the event-stream
   * content type, oRPC's peer takes the body as it is instead of opening its own queue for it.
   */
  private withStreamedInput(id: string, request: Omit<StandardRequest, 'signal'>): Omit<StandardRequest, 'signal'> {
    const inputs = this.inputs ??= new InputEventQueue()
    inputs.open(id)
    const { 'content-type': _eventStream, ...headers } = request.headers
    // As oRPC's peer does: a procedure that stops reading its input early tells the client to stop sending.
    // The cast: @orpc/standard-server-peer's declarations inline a copy of AsyncIdQueue's type (private members
    // make it nominal), while its code takes @orpc/shared's class, which InputEventQueue extends.
    const body = toEventIterator(inputs as unknown as Parameters<typeof toEventIterator>[0], id, async (reason) => {
      if (reason === 'next') return
      // Nothing reads this input any more: what still arrives for it is dropped, not counted against the bound.
      inputs.close({ id })
      if (this.callsById?.has(id)) this.send(stringifyJSON(serializeResponseMessage(id, MessageType.ABORT_SIGNAL, undefined)))
    })
    return { ...request, headers, body }
  }

  /**
   * An event of a streamed input, for the call it belongs to. Ignored unless that call is running and declared
   * streamed input (as frames for unknown calls are). Past `maxBufferedInputBytes` waiting on this socket, the
   * client is sending faster than its procedures read: the socket is closed with 1008.
   */
  private queueInputEvent(id: string, event: EventIteratorPayload, raw: string | Uint8Array) {
    const inputs = this.inputs
    if (!inputs?.isOpen(id)) return
    inputs.pushEvent(id, event, typeof raw === 'string' ? textEncoder.encode(raw).byteLength : raw.byteLength)
    const { maxBufferedInputBytes } = this.route.limits
    if (inputs.bytes > maxBufferedInputBytes) {
      this.close(RpcCloseCode.PolicyViolation, `Streamed input over ${maxBufferedInputBytes} bytes waiting to be read`)
    }
  }

  private async runPlainCall({ id, url, body }: PlainCallFrame) {
    const controller = new AbortController()
    this.calls.set(id, controller)
    try {
      const response = await this.route.plainCalls.call(url, body, this.context, controller.signal)
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
        await this.sendStream(id, response, response.body, controller)
        return
      }
      // A file, a form or a ReadableStream: oRPC's peer encodes and sends it. From here on the call is the
      // peer's; its abort (client abort, socket closed) reaches the procedure's signal.
      this.calls.set(id, 'unanswered')
      const peerSignal = this.peer.open(id).signal
      peerSignal.addEventListener('abort', () => controller.abort(peerSignal.reason), { once: true })
      await this.peer.response(id, response)
    }
    catch (error) {
      if (!this.closed) console.error('[nuxt-orpc] A call failed outside its procedure.', error)
    }
    finally {
      this.calls.delete(id)
      callSettled(this)
    }
  }

  /**
   * The event stream answering a plain call, sent as oRPC's server peer sends one: the response, then a
   * `message` frame per event, then a `done` or an `error` frame; encoded by oRPC's own functions, without the
   * peer's promise layers around every event. An abort (an abort frame, the socket closing) stops it and
   * returns the iterator; nothing is sent after that, as with the peer.
   */
  private async sendStream(id: string, response: StandardResponse, iterator: AsyncIterator<unknown>, controller: AbortController) {
    const { signal } = controller
    // Until the iterator has ended by itself, leaving this function (an abort, a closed socket, a failed send)
    // returns it, so the procedure's generator runs its cleanup.
    let ended = false
    try {
      const head = await encodeResponseMessage(id, MessageType.RESPONSE, response)
      if (signal.aborted || this.closed) return
      this.send(head)
      this.calls.set(id, { streaming: controller })
      callSettled(this)
      while (true) {
        let event: EventIteratorPayload
        try {
          const { done, value } = await iterator.next()
          ended = done === true
          event = { event: done ? 'done' : 'message', data: value, meta: getEventMeta(value) }
        }
        catch (error) {
          ended = true
          if (signal.aborted || this.closed) return
          // oRPC's serializer turns every error of a stream into an ErrorEvent; anything else is a failure of
          // the stream itself, which the peer reports the same way.
          if (!(error instanceof ErrorEvent)) {
            this.sendEvent(id, { event: 'error', data: undefined })
            throw error
          }
          event = { event: 'error', data: error.data, meta: getEventMeta(error) }
        }
        await this.drained(signal)
        if (signal.aborted || this.closed) return
        this.sendEvent(id, event)
        if (event.event !== 'message') return
      }
    }
    finally {
      if (!ended) await iterator.return?.()
    }
  }

  private sendEvent(id: string, event: EventIteratorPayload) {
    this.send(stringifyJSON(serializeResponseMessage(id, MessageType.EVENT_ITERATOR, event)))
  }

  /** Refuses a new call over the connection's limits with TOO_MANY_REQUESTS; true when it did. */
  private refused(id: string): boolean {
    const { limits, plainCalls } = this.route
    if (this.calls.size >= limits.maxCallsInFlight) {
      this.sendResponse(id, plainCalls.encodeError(new ORPCError('TOO_MANY_REQUESTS', {
        status: 429,
        message: `Too many calls in flight on this connection (limit ${limits.maxCallsInFlight}); wait for some to finish.`,
        data: { limit: 'maxCallsInFlight', max: limits.maxCallsInFlight },
      })))
      return true
    }
    if (this.budget && !this.budget.take()) {
      const { max, windowMs } = limits.rateLimit as { max: number, windowMs: number }
      this.sendResponse(id, plainCalls.encodeError(new ORPCError('TOO_MANY_REQUESTS', {
        status: 429,
        message: `Rate limit exceeded on this connection (${max} calls per ${windowMs} ms); slow down.`,
        data: { limit: 'rateLimit', max, windowMs },
      })))
      return true
    }
    return false
  }

  private get peer(): ServerPeerWithoutCodec {
    return this.peerInstance ??= new ServerPeerWithoutCodec(async ([id, type, payload]) => {
      const encoded = await encodeResponseMessage(id, type, payload)
      if (type === MessageType.EVENT_ITERATOR) await this.drained()
      else if (type === MessageType.RESPONSE && this.callsById?.has(id)) {
        this.callsById.set(id, 'answered')
        callSettled(this)
      }
      this.send(encoded)
    })
  }

  private async dispatch(decoded: DecodedRequestMessage) {
    try {
      // Made per request: this path is for files, headers and streamed input, where it is a small part of the
      // cost. Aborts and input events need none.
      const handleRequest = decoded[1] === MessageType.REQUEST
        ? createServerPeerHandleRequestFn(this.route.standardHandler, { context: this.context })
        : undefined
      await this.peer.message(decoded, handleRequest)
    }
    catch (error) {
      // The call failed outside its procedure: the socket closed under it, or its output cannot be encoded.
      if (!this.closed) console.error('[nuxt-orpc] A call failed outside its procedure.', error)
    }
  }

  /** A response whose body is plain JSON, in oRPC's message format. */
  private sendResponse(id: string, response: StandardResponse, alone = false) {
    this.send(stringifyJSON(serializeResponseMessage(id, MessageType.RESPONSE, response)), alone)
  }
}
