import type { ClientContext, ClientOptions } from '@orpc/client'
import { createORPCErrorFromJson, isORPCErrorJson, isORPCErrorStatus, ORPCError } from '@orpc/client'
import { getMalformedResponseErrorCode, StandardRPCJsonSerializer, StandardRPCSerializer, toHttpPath } from '@orpc/client/standard'
import { AbortError, isAsyncIteratorObject, isTypescriptObject, stringifyJSON } from '@orpc/shared'
import type { StandardResponse } from '@orpc/standard-server'
import { ErrorEvent, getEventMeta, isEventIteratorHeaders, withEventMeta } from '@orpc/standard-server'
import type { EventIteratorPayload } from '@orpc/standard-server-peer'
import { decodeResponseMessage, deserializeResponseMessage, MessageType, serializeRequestMessage } from '@orpc/standard-server-peer'
import { isPlainJson } from '../shared/plain-json'
import { binaryDelimiter } from '../shared/protocol'

const serializer = new StandardRPCSerializer(new StandardRPCJsonSerializer())
const textDecoder = new TextDecoder()

/**
 * Ids of plain calls start with `_`, which oRPC's own id generator (base-36 digits) never makes, so they never
 * meet the ids of the oRPC link that shares the socket.
 */
const idPrefix = '_'
/** How a plain call's id starts in a frame's JSON: a frame without it answers none of them. */
const quotedIdPrefix = `"${idPrefix}`

/**
 * A path's URL path, kept per path array when the array is frozen: nuxt-orpc's client (`createRpcClient`) hands
 * the link the same frozen array for every call to a procedure.
 */
const httpPaths = new WeakMap<readonly string[], string>()

function httpPathOf(path: readonly string[]): string {
  if (!Object.isFrozen(path)) return toHttpPath(path)
  let httpPath = httpPaths.get(path)
  if (httpPath === undefined) httpPaths.set(path, httpPath = toHttpPath(path))
  return httpPath
}

/**
 * The key under which oRPC's `getEventMeta` reads an event's meta (its id, its retry). oRPC keeps that symbol to
 * itself: its `withEventMeta` wraps each value in a Proxy that answers it, and every later read of the value's
 * properties (the app's, Vue's) then goes through the Proxy's trap. The key is learned once, from
 * `getEventMeta` itself; undefined if oRPC reads the meta some other way, and `withEventMeta` is used then.
 * (test/units.test.ts fails when that happens.)
 */
export const eventMetaKey: PropertyKey | undefined = (() => {
  let key: PropertyKey | undefined
  getEventMeta(new Proxy({}, {
    get(_target, property) {
      key = property
    },
  }))
  return typeof key === 'symbol' ? key : undefined
})()

/**
 * What oRPC's client makes of a stream event's serialized data: the value, with the event's id and retry on it
 * where `getEventMeta` finds them. The value is the frame's own (just parsed), so the meta is put on it, not
 * around it: one property that is not enumerable, hence not copied, listed or serialized, as with the Proxy.
 */
export function eventValue(data: unknown, meta: EventIteratorPayload['meta']): unknown {
  const value = deserialize(data)
  if (!meta || !isTypescriptObject(value) || (meta.id === undefined && meta.retry === undefined && !meta.comments?.length)) return value
  if (eventMetaKey === undefined || !Object.isExtensible(value)) return withEventMeta(value, meta)
  // Configurable: a Proxy over the value (Vue's `reactive` and `readonly`, which TanStack Vue Query applies to
  // its data) may then answer the key with a wrapped copy; for a non-configurable, read-only property it must
  // not, and `getEventMeta` through it would throw.
  Object.defineProperty(value, eventMetaKey, { value: meta, configurable: true })
  return value
}

/**
 * oRPC's serializer on a frame's data. A JSON object without `meta` (plain JSON: no Date, Map, BigInt, ...) gives
 * its `json` as it is, which is what the serializer gives for it too, without the objects it makes on the way.
 * Anything else (a file, a form) goes through the serializer.
 */
function deserialize(data: unknown): unknown {
  if (typeof data === 'object' && data !== null && Object.getPrototypeOf(data) === Object.prototype && (data as { meta?: unknown }).meta === undefined) return (data as { json?: unknown }).json
  return serializer.deserialize(data as Parameters<StandardRPCSerializer['deserialize']>[0])
}

/** What oRPC's client throws for a stream's error event: the typed error it carries, or an ErrorEvent. */
function eventError(data: unknown, meta: EventIteratorPayload['meta']): unknown {
  let received: unknown = new ErrorEvent({ data })
  if (meta) received = withEventMeta(received as ErrorEvent, meta)
  const deserialized = deserialize(data)
  const error: unknown = isORPCErrorJson(deserialized) ? createORPCErrorFromJson(deserialized, { cause: received }) : new ErrorEvent({ data: deserialized, cause: received })
  // oRPC reads the meta back from `received`, which is `meta` where there is any (`withEventMeta` leaves a
  // value without meta as it is).
  return meta && isTypescriptObject(error) ? withEventMeta(error, meta) : error
}

/** An event-stream frame's payload as it is on the wire (`p` of `{ i, t: 3, p }`); oRPC's reader names it `{ event, data, meta }`. */
interface WireEvent {
  e: EventIteratorPayload['event']
  d?: unknown
  m?: EventIteratorPayload['meta']
}

const doneResult: IteratorResult<unknown> = Object.freeze({ done: true, value: undefined })

type ResolveRead = (result: IteratorResult<unknown> | PromiseLike<IteratorResult<unknown>>) => void

const ignoreRead = () => {}

/** Takes a stream's events as they arrive, instead of reads: no promise per event. */
export interface StreamSink {
  /** An event's value, and its id if it has one. */
  event: (value: unknown, id: string | undefined) => void
  /** The stream ended (its return value), or was returned. */
  end: (value: unknown) => void
  /** The stream failed; nothing follows. */
  fail: (error: unknown) => void
}

/**
 * The method by which nuxt-orpc's connection streams give their events to a `StreamSink`
 * (`stream[listenToStream](sink)`); `startResumableSubscription` uses it where a stream has it.
 */
export const listenToStream: unique symbol = Symbol('nuxt-orpc.listenToStream')

/**
 * The event stream a plain call returns: its events as oRPC's client gives them (what `toEventIterator` and the
 * serializer's `mapEventIterator` make of the frames: values with their event meta, the return value, typed
 * errors), read one at a time. Written out because those are two iterator layers with a queue, a lock and
 * several promises each per event: with 10,000 streams getting one event each (a fan-out), the client's
 * JavaScript took 16 to 21 us per event through them (bench/client-fanout-js.ts). An event that arrives while
 * a `next` waits settles it at once: one promise per event, from the frame to the reader.
 *
 * The connection's resumable stream reads it without a layer of its own: it is told of a failure through
 * `onFailure` and answers the waiting read with the resumed stream's next result. Or it takes the events as
 * they arrive through `listen`, with no promise at all (startResumableSubscription).
 */
export class PlainStream implements AsyncIterator<unknown> {
  private readonly queued: WireEvent[] = []
  /** The read waiting for an event, and its promise (a `next` meanwhile waits for it). */
  private resolveRead: ResolveRead | undefined
  private rejectRead: ((error: unknown) => void) | undefined
  private read: Promise<IteratorResult<unknown>> | undefined
  /** Why it was closed from here (the call aborted, the socket closed), while that is not yet thrown. */
  private closedWith: { reason: unknown } | undefined
  private done = false
  /** Where events go instead of to reads, once `listen` was called. */
  private listener: StreamSink | undefined
  /** The id of the last event read (starting with the call's `lastEventId`). */
  lastEventId: string | undefined
  /**
   * Takes over a failure the reader would get (an error event, the socket closed): the reader gets what the
   * returned promise gives instead (the connection resumes the stream there, or throws the typed error).
   * `read` is that reader's promise, which other reads may wait for.
   */
  onFailure: ((error: unknown, read: Promise<IteratorResult<unknown>> | undefined) => Promise<IteratorResult<unknown>>) | undefined

  constructor(private readonly cleanup: (reason: 'next' | 'return') => void, lastEventId: string | undefined) {
    this.lastEventId = lastEventId
  }

  /** The read under way, if one waits (its reader must wait for it before reading again). */
  get pendingRead(): Promise<IteratorResult<unknown>> | undefined {
    return this.read
  }

  push(event: WireEvent) {
    if (this.done) return
    if (this.listener) {
      this.settle(event, ignoreRead, ignoreRead)
      return
    }
    const resolve = this.resolveRead
    // Behind events a read is about to take (see `drain`), in order.
    if (!resolve || this.queued.length > 0) {
      this.queued.push(event)
      return
    }
    const reject = this.rejectRead!
    const read = this.read
    this.resolveRead = this.rejectRead = this.read = undefined
    this.settle(event, resolve, reject, read)
  }

  /**
   * Ends it with `reason`, which the reader gets (or `onFailure`, or the listener): after the events already
   * queued (the socket closed: they did arrive), or at once when `dropQueued` (the caller aborted).
   */
  close(reason: unknown, dropQueued = false) {
    if (this.done || this.closedWith) return
    this.closedWith = { reason }
    if (dropQueued) this.queued.length = 0
    if (this.listener) {
      this.fail(reason, ignoreRead, ignoreRead)
      return
    }
    const resolve = this.resolveRead
    // A read about to take a queued event gets it; the next one gets `reason`.
    if (!resolve || this.queued.length > 0) return
    const reject = this.rejectRead!
    const read = this.read
    this.resolveRead = this.rejectRead = this.read = undefined
    this.fail(reason, resolve, reject, read)
  }

  /**
   * From now on its events go to `listener` as they arrive (the ones already here first, at once), and no
   * longer to reads. Only while no read waits.
   */
  listen(listener: StreamSink) {
    if (this.done) {
      listener.end(undefined)
      return
    }
    this.listener = listener
    while (this.queued.length > 0 && !this.done) this.settle(this.queued.shift()!, ignoreRead, ignoreRead)
    if (this.done) return
    if (this.closedWith) this.fail(this.closedWith.reason, ignoreRead, ignoreRead)
  }

  next(): Promise<IteratorResult<unknown>> {
    if (this.listener) return Promise.reject(new TypeError('This stream gives its events to a listener: it cannot be read as well'))
    if (this.done) return Promise.resolve(doneResult)
    // One read at a time: a second one waits for the first.
    if (this.read) return this.read.then(() => this.next(), () => this.next())
    const read = this.read = new Promise<IteratorResult<unknown>>((resolve, reject) => {
      this.resolveRead = resolve
      this.rejectRead = reject
    })
    // What is here already is read a microtask later, not now: the call's signal, aborted right after `next`,
    // still wins over an event that had arrived (the abort drops the queue and fails the read).
    if (this.queued.length > 0 || this.closedWith) queueMicrotask(this.drain)
    return read
  }

  private readonly drain = () => {
    const resolve = this.resolveRead
    if (!resolve) return
    const reject = this.rejectRead!
    const queued = this.queued.length > 0
    if (!queued && !this.closedWith) return
    const read = this.read
    this.resolveRead = this.rejectRead = this.read = undefined
    if (queued) this.settle(this.queued.shift()!, resolve, reject, read)
    else this.fail(this.closedWith!.reason, resolve, reject, read)
  }

  async return(value?: unknown): Promise<IteratorResult<unknown>> {
    if (!this.done) {
      this.done = true
      this.queued.length = 0
      // A read waiting meanwhile ends too, instead of waiting for ever.
      const resolve = this.resolveRead
      this.resolveRead = this.rejectRead = this.read = undefined
      resolve?.(doneResult)
      this.listener?.end(undefined)
      this.cleanup('return')
    }
    return { done: true, value }
  }

  [Symbol.asyncIterator]() {
    return this
  }

  /** Settles the read `read` (resolve, reject), or tells the listener, with what `event` makes of the stream. */
  private settle(event: WireEvent, resolve: ResolveRead, reject: (error: unknown) => void, read?: Promise<IteratorResult<unknown>>) {
    let failure: unknown
    try {
      if (event.e === 'message') {
        const meta = event.m
        const value = eventValue(event.d, meta)
        const id = meta?.id
        if (id !== undefined) this.lastEventId = id
        if (this.listener) this.listener.event(value, id)
        else resolve({ done: false, value })
        return
      }
      this.finish()
      if (event.e === 'done') {
        const value = eventValue(event.d, event.m)
        if (this.listener) this.listener.end(value)
        else resolve({ done: true, value })
        return
      }
      failure = eventError(event.d, event.m)
    }
    catch (error) {
      // Data the serializer cannot read, or a frame without an event (`p` missing): the stream fails with the
      // error, as oRPC's reader does; the socket and its other calls go on.
      this.finish()
      failure = error
    }
    this.fail(failure, resolve, reject, read)
  }

  private fail(reason: unknown, resolve: ResolveRead, reject: (error: unknown) => void, read?: Promise<IteratorResult<unknown>>) {
    this.finish()
    if (this.listener) this.listener.fail(reason)
    else if (this.onFailure) resolve(this.onFailure(reason, read))
    else reject(reason)
  }

  private finish() {
    if (this.done) return
    this.done = true
    this.queued.length = 0
    this.cleanup('next')
  }
}

interface PendingCall {
  resolve: (output: unknown) => void
  reject: (error: unknown) => void
  path: readonly string[]
  input: unknown
  options: ClientOptions<ClientContext>
  onAbort: (() => void) | undefined
  /** Whether an event stream it returns goes through `wrapStream` (a stream resuming another does not). */
  wrap: boolean
}

/** What becomes of a call's event stream before the caller gets it (the connection makes it resumable). */
export type StreamWrapper = (iterator: AsyncIterator<unknown>, path: readonly string[], input: unknown, options: ClientOptions<ClientContext>) => unknown

/**
 * The browser side of nuxt-orpc's hot path: a call whose input serializes to plain JSON is sent and answered
 * here, with oRPC's serializer, message format and error mapping, and events read as oRPC's reader reads them
 * (`PlainStream`), but without the link's
 * per-call layers (spans, interceptors, three queues and two AbortErrors per completed call). The answer may
 * be anything oRPC sends: a value, a typed error, a file, an event stream.
 *
 * Calls with files, forms or streamed input go through oRPC's `RPCLink` on the same socket instead; `call`
 * returns undefined for them. A call resuming a stream (`lastEventId`) carries oRPC's `last-event-id` header.
 *
 * The promise `call` returns is the caller's own: it settles with the output (an event stream passed through
 * `wrapStream`), the server's typed error, the signal's reason, or the error `close` makes.
 */
export class PlainCallClient {
  private lastId = 0
  private readonly pending = new Map<string, PendingCall>()
  private readonly streams = new Map<string, PlainStream>()
  /** The ids of the streams not yet cut by `cutStreams`. */
  private readonly streamIds = new Set<string>()
  private closedWith: (() => Error) | undefined

  constructor(private readonly send: (frame: string) => void, private readonly wrapStream: StreamWrapper) {}

  call(path: readonly string[], input: unknown, options: ClientOptions<ClientContext>, wrap = true): Promise<unknown> | undefined {
    const body = isPlainJson(input) ? { json: input } : serializer.serialize(input)
    if (body instanceof FormData || isAsyncIteratorObject(body)) return undefined
    const signal = options.signal
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.closedWith) return Promise.reject(this.closedWith())
    const id = `${idPrefix}${(++this.lastId).toString(36)}`
    // oRPC's request message, written out: its serializer wants a URL object per call. Made before the call is
    // registered: if it throws, nothing is left behind.
    const lastEventId = options.lastEventId
    const frame = stringifyJSON({ i: id, p: lastEventId === undefined ? { u: httpPathOf(path), b: body } : { u: httpPathOf(path), b: body, h: { 'last-event-id': lastEventId } } })
    return new Promise((resolve, reject) => {
      const call: PendingCall = { resolve, reject, path, input, options, onAbort: undefined, wrap }
      if (signal) {
        // As oRPC's client does: tell the server, and reject with the signal's reason.
        call.onAbort = () => {
          this.settle(id, call)
          this.sendAbort(id)
          if (this.streams.has(id)) this.closeStream(id, signal.reason, true)
          else reject(signal.reason)
        }
        signal.addEventListener('abort', call.onAbort, { once: true })
      }
      this.pending.set(id, call)
      this.send(frame)
    })
  }

  /** Calls waiting for their answer (streams not counted). */
  get callsInFlight(): number {
    return this.pending.size
  }

  /** Takes a frame that answers one of its calls; false (and the frame untouched) when it is not one of them. */
  receive(data: unknown): boolean {
    if (this.pending.size === 0 && this.streams.size === 0) return false
    if (typeof data === 'string') {
      if (!data.includes(quotedIdPrefix)) return false
      let message: { i?: unknown, t?: unknown }
      try {
        message = JSON.parse(data)
      }
      catch {
        return false
      }
      const id = message?.i
      if (typeof id !== 'string' || !id.startsWith(idPrefix)) return false
      // An event of a stream, the frame a fan-out sends most: read as oRPC's `deserializeResponseMessage` reads
      // it, without the tuple and object it makes.
      if (message.t === MessageType.EVENT_ITERATOR) this.streams.get(id)?.push((message as { p: WireEvent }).p)
      else this.take(deserializeResponseMessage(message as Parameters<typeof deserializeResponseMessage>[0]))
      return true
    }
    if (!(data instanceof ArrayBuffer)) return false
    // A file or a form: JSON, 0xFF, bytes. oRPC's decoder reads it; the id is in the JSON part.
    const bytes = new Uint8Array(data)
    const end = bytes.indexOf(binaryDelimiter)
    const head = textDecoder.decode(end === -1 ? bytes : bytes.subarray(0, end))
    if (!head.includes(quotedIdPrefix)) return false
    try {
      const id = (JSON.parse(head) as { i?: unknown }).i
      if (typeof id !== 'string' || !id.startsWith(idPrefix)) return false
    }
    catch {
      return false
    }
    void decodeResponseMessage(data).then(decoded => this.take(decoded), () => undefined)
    return true
  }

  /** The socket closed: every call in flight, every stream and every later call fails with an error of `makeError`. */
  close(makeError: () => Error) {
    this.closedWith = makeError
    for (const [id, call] of this.pending) {
      this.settle(id, call)
      call.reject(makeError())
    }
    const error = makeError()
    for (const stream of [...this.streams.values()]) stream.close(error)
    this.streams.clear()
    this.streamIds.clear()
  }

  /**
   * The server lost its streams but the socket stays (see `restartFrame`): each stream of this socket ends with
   * the error of `makeError` after the events that arrived before, which are still read; calls go on.
   */
  cutStreams(makeError: () => ORPCError<string, unknown>) {
    for (const id of this.streamIds) {
      // The stream fails with an error event's data as the error (see `eventError`), after the queued events.
      this.streams.get(id)?.push({ e: 'error', d: { json: makeError().toJSON() } })
    }
    this.streamIds.clear()
  }

  private take([id, type, payload]: ReturnType<typeof deserializeResponseMessage>) {
    if (type === MessageType.EVENT_ITERATOR) {
      const event = payload as EventIteratorPayload
      this.streams.get(id)?.push({ e: event.event, d: event.data, m: event.meta })
      return
    }
    // An abort from the server only concerns streamed input, which never takes this path.
    if (type !== MessageType.RESPONSE) return
    const call = this.pending.get(id)
    if (!call) return
    const response = payload as StandardResponse
    if (!isEventIteratorHeaders(response.headers)) {
      this.settle(id, call)
      let output: unknown
      try {
        output = this.decode(response.status, response.body)
      }
      catch (error) {
        call.reject(error)
        return
      }
      call.resolve(output)
      return
    }
    // An event stream: a PlainStream this client fills. The call's signal still stops it, until the stream ends.
    this.pending.delete(id)
    if (isORPCErrorStatus(response.status)) {
      // What oRPC's codec makes of a stream under an error status: a malformed response.
      if (call.onAbort) call.options.signal?.removeEventListener('abort', call.onAbort)
      this.sendAbort(id)
      call.reject(new ORPCError(getMalformedResponseErrorCode(response.status), { status: response.status, data: { status: response.status, headers: {}, body: undefined } }))
      return
    }
    const signal = call.options.signal
    const stream = new PlainStream((reason) => {
      if (call.onAbort) signal?.removeEventListener('abort', call.onAbort)
      if (reason !== 'next' && this.streams.get(id) === stream) this.sendAbort(id)
      this.forgetStream(id, stream)
    }, call.options.lastEventId)
    this.streams.set(id, stream)
    this.streamIds.add(id)
    call.resolve(call.wrap ? this.wrapStream(stream, call.path, call.input, call.options) : stream)
  }

  /** Ends stream `id` with `reason` and forgets it. */
  private closeStream(id: string, reason: unknown, dropQueued: boolean) {
    const stream = this.streams.get(id)
    this.streams.delete(id)
    this.streamIds.delete(id)
    stream?.close(reason ?? new AbortError(`The stream ${id} was closed`), dropQueued)
  }

  private forgetStream(id: string, stream: PlainStream) {
    if (this.streams.get(id) !== stream) return
    this.streams.delete(id)
    this.streamIds.delete(id)
  }

  /** oRPC's abort message: the server stops the call (and its stream). */
  private sendAbort(id: string) {
    this.send(stringifyJSON(serializeRequestMessage(id, MessageType.ABORT_SIGNAL, undefined)))
  }

  private settle(id: string, call: PendingCall) {
    this.pending.delete(id)
    if (call.onAbort) call.options.signal?.removeEventListener('abort', call.onAbort)
  }

  /** What oRPC's `StandardRPCLinkCodec.decode` does with a response (synchronously: no await is needed). */
  private decode(status: number, body: unknown): unknown {
    let deserialized: unknown
    try {
      deserialized = deserialize(body)
    }
    catch (error) {
      throw new Error('Invalid RPC response format.', { cause: error })
    }
    if (!isORPCErrorStatus(status)) return deserialized
    if (isORPCErrorJson(deserialized)) throw createORPCErrorFromJson(deserialized)
    throw new ORPCError(getMalformedResponseErrorCode(status), { status, data: { status, headers: {}, body: deserialized } })
  }
}
