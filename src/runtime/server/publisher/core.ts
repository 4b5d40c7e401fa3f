import { AsyncIteratorClass, ORPCError, withEventMeta } from '@orpc/server'
import type { RpcPublisherConfig } from './defaults'
import { publisherDefaults } from './defaults'

export { publisherDefaults }
export type { RpcPublisherConfig }

export interface RpcSubscribeOptions {
  /** Ends the subscription when aborted: pass the procedure's `signal`. */
  signal?: AbortSignal
  /**
   * Resume after this event: every event still retained that came after it is delivered first, then live
   * ones, each once. Pass the procedure's `lastEventId`. Ignored when `retention` is 0.
   */
  lastEventId?: string
  /**
   * Without a `lastEventId`, start with the events still retained (a chat room's recent messages) instead
   * of only those published from now on.
   * @default false
   */
  history?: boolean
}

/** An event as a driver hands it to its subscribers. */
export interface PublishedEvent {
  id: string
  payload: object
}

/**
 * Publishes events to channels and subscribes to them, across instances when the driver is `redis`.
 * Every event gets an id (`<ms>-<seq>`, increasing per channel), sent as the oRPC event id, so a client can
 * resume with `lastEventId`.
 */
export interface RpcPublisher<Channels extends object = Record<string, object>> {
  /**
   * Publishes `payload` to every subscriber of `channel` and resolves with the event's id. Rejects with
   * `PUBLISHER_UNAVAILABLE` (503) when Redis cannot be reached (then nothing was published, unless the
   * connection dropped after Redis had received the command).
   */
  publish: <K extends keyof Channels & string>(channel: K, payload: Channels[K]) => Promise<{ id: string }>
  /**
   * The events of `channel` from now on (or after `lastEventId`), as an async iterator a procedure can
   * `yield*` from. Each value carries its id as oRPC event metadata. While Redis is down the iterator waits;
   * it goes on where it was when Redis is back.
   */
  subscribe: <K extends keyof Channels & string>(channel: K, options?: RpcSubscribeOptions) => AsyncIteratorClass<Channels[K]>
  /** Ends every subscription and closes the driver's connections. */
  close: () => Promise<void>
}

/** Error codes of the publisher, as `ORPCError` codes. */
export const RpcPublisherErrorCode = {
  /** Redis could not be reached in time. The event was not published (unless the connection dropped mid-command). */
  Unavailable: 'PUBLISHER_UNAVAILABLE',
  /** A subscriber fell `maxBufferedEvents` behind. Resume with `lastEventId` to catch up from the retention window. */
  SubscriberOverflow: 'SUBSCRIBER_OVERFLOW',
} as const

/**
 * The error a caller gets when Redis cannot take a command. Deliberately generic: Redis's own messages name
 * hosts, ports and internals, so the driver logs them and callers get only what they can act on.
 */
export function publisherUnavailable() {
  return new ORPCError(RpcPublisherErrorCode.Unavailable, {
    status: 503,
    message: 'The publisher is unavailable; the event was most likely not published. Try again shortly.',
  })
}

/**
 * What subscribers get when the publisher closes (the server is shutting down): a retryable error rather
 * than a normal end, so clients resume elsewhere instead of taking the stream for finished.
 */
export function publisherClosed() {
  return new ORPCError(RpcPublisherErrorCode.Unavailable, {
    status: 503,
    message: 'The publisher closed (the server is shutting down); resume with lastEventId.',
  })
}

const eventIdPattern = /^(\d+)-(\d+)$/

/**
 * Compares two event ids (`<ms>-<seq>`, the shape of Redis stream ids) in publication order. Ids are checked
 * where they come in (`resumeIdOf`, the drivers make the others); this runs per event and subscriber, so it
 * splits at the dash instead of matching a pattern.
 */
export function compareEventIds(a: string, b: string): number {
  const aDash = a.indexOf('-')
  const bDash = b.indexOf('-')
  return Number(a.slice(0, aDash)) - Number(b.slice(0, bDash)) || Number(a.slice(aDash + 1)) - Number(b.slice(bDash + 1))
}

/**
 * Runs a fan-out once the I/O already waiting has been handled (setImmediate where there is one), in the order
 * asked: the publish's own answer (Redis's acknowledgement, the publishing call's response) goes out before the
 * instance writes to its subscribers.
 */
export const afterPendingIo: (task: () => void) => void = typeof setImmediate === 'function'
  ? task => void setImmediate(task)
  : task => queueMicrotask(task)

/** The id before every event. */
const originId = '0-0'

/** Both parts of a Redis stream id are unsigned 64-bit integers (a call, not a literal: the build targets ES2019). */
const maxIdPart = BigInt('18446744073709551615')

/**
 * Whether Redis can read after `id`: each part fits in 64 bits, and it is not the largest id, after which
 * Redis refuses to read. Redis answers any other id with an error that retrying cannot fix.
 */
function isReadableId(id: string) {
  const [, ms, seq] = eventIdPattern.exec(id)!
  // 2^64 - 1 has 20 digits; a longer part (leading zeros aside) is out of range, without parsing it whole.
  if (ms!.replace(/^0+/, '').length > 20 || seq!.replace(/^0+/, '').length > 20) return false
  const msValue = BigInt(ms!)
  const seqValue = BigInt(seq!)
  return msValue <= maxIdPart && seqValue <= maxIdPart && !(msValue === maxIdPart && seqValue === maxIdPart)
}

/** The id to resume after, or undefined to start live; an id this publisher never makes is a BAD_REQUEST. */
export function resumeIdOf({ lastEventId, history }: RpcSubscribeOptions, retention: number): string | undefined {
  if (retention <= 0) return undefined
  if (lastEventId === undefined || lastEventId === '') return history ? originId : undefined
  if (!eventIdPattern.test(lastEventId) || !isReadableId(lastEventId)) {
    throw new ORPCError('BAD_REQUEST', { message: `lastEventId "${lastEventId.slice(0, 40)}" is not an event id of this publisher (<ms>-<seq>, each part below 2^64).` })
  }
  return lastEventId
}

/**
 * Refuses a channel name longer than `maxLength`: names often come from input (`chat:${input.room}`), and
 * each one costs memory (and a Redis key) for as long as the channel lives.
 */
export function assertChannelName(name: string, maxLength: number = publisherDefaults.maxChannelNameLength) {
  if (typeof name !== 'string' || name.length > maxLength) {
    throw new ORPCError('BAD_REQUEST', {
      message: `A channel name may have at most ${maxLength} characters. Use a short id or a hash of the input as the name, or raise orpc.publisher.maxChannelNameLength.`,
    })
  }
}

/**
 * Makes increasing ids shaped like Redis stream ids: the clock in ms and a sequence within that ms. Built on
 * the clock rather than a counter so ids keep increasing across a restart of the process.
 */
export function createEventIdGenerator(now: () => number = Date.now) {
  let lastMs = 0
  let seq = 0
  return () => {
    const ms = Math.max(now(), lastMs)
    seq = ms === lastMs ? seq + 1 : 0
    lastMs = ms
    return `${ms}-${seq}`
  }
}

export function assertPayload(payload: unknown): asserts payload is object {
  if (typeof payload !== 'object' || payload === null) {
    throw new TypeError('[nuxt-orpc] A published payload must be an object: the event id travels as oRPC event metadata, which needs an object to hold it.')
  }
}

/** One page of retained events; `next` is the id to read the following page after, undefined after the last page. */
export interface CatchUpPage {
  events: PublishedEvent[]
  next: string | undefined
}

/** Reads the page of retained events after `after`; undefined when the subscription ended meanwhile. */
export type CatchUpReader = (after: string) => Promise<CatchUpPage | undefined>

/** How a socket writes a subscriber's live events itself (see `Subscriber.deliverDirectly`). */
export interface DirectWriter {
  /** Writes the event's frame now; false when it cannot (the socket's send buffer is full, or it closed). */
  write: (event: PublishedEvent) => boolean
}

const subscriberKey = Symbol('nuxt-orpc subscriber')
const liveKey = Symbol('nuxt-orpc subscription live')

/** Marks `iterator` as live (it gets every event published from now on) once `live` resolves. */
export function setLiveWhen<T extends object>(iterator: T, live: Promise<void>): T {
  return Object.defineProperty(iterator, liveKey, { value: live })
}

/**
 * Resolves once a subscription `subscribe` returned gets every event published from then on. At once with the
 * memory driver; with Redis, once its instance follows the channel (a first subscriber there waits for its
 * read of where the stream is). What is published before may or may not reach it.
 */
export function subscriptionLive(iterator: object): Promise<void> {
  return (iterator as { [liveKey]?: Promise<void> })[liveKey] ?? Promise.resolve()
}

/**
 * The subscription behind a procedure's output, when the procedure returned `subscribe(...)` itself. The
 * procedure client wraps the output in oRPC's `overlayProxy`, which reads what its own layer lacks from the
 * output: the key is found through it. A stream that went through anything else (a generator, `.output()`
 * validation, a middleware's mapping) is a new iterator without the key.
 */
export function subscriberOf(output: unknown): Subscriber | undefined {
  return typeof output === 'object' && output !== null ? (output as { [subscriberKey]?: Subscriber })[subscriberKey] : undefined
}

/**
 * One subscription: a queue between the driver, which pushes events, and the procedure, which pulls them.
 * Events at or before the last one queued are dropped, so a catch-up read that overlaps live delivery
 * never yields an event twice. While catching up, live events wait aside and follow the catch-up.
 */
export class Subscriber {
  private readonly queue: PublishedEvent[] = []
  private waiting: { resolve: () => void } | undefined
  private held: PublishedEvent[] | undefined
  private lastId: string | undefined
  /** Catch-up events still queued: they do not count against `maxBufferedEvents`. */
  private catchUpQueued = 0
  /** Where a paged catch-up goes on; a page is read only once the queue is empty and the procedure pulls. */
  private pager: { read: CatchUpReader, after: string, reading: boolean } | undefined
  private failure: unknown
  private ended = false
  private readonly endListeners: Array<() => void> = []
  /** While set, live events are written to the socket as they come (see `deliverDirectly`). */
  private direct: { writer: DirectWriter, release: () => void } | undefined

  constructor(private readonly maxBufferedEvents: number, resumeAfter?: string) {
    this.lastId = resumeAfter
  }

  get isEnded() {
    return this.ended
  }

  /** Events waiting to be pulled, held live events included: what this subscription holds in memory. */
  get queuedCount() {
    return this.queue.length + (this.held?.length ?? 0)
  }

  /** Holds live events aside until {@link finishCatchUp}. */
  startCatchUp() {
    this.held = []
  }

  /** Queues retained events (beyond the buffer limit: they are bounded by the retention), then the held live ones. */
  finishCatchUp(events: Iterable<PublishedEvent>) {
    for (const event of events) this.enqueue(event, true)
    const held = this.held ?? []
    this.held = undefined
    for (const event of held) this.push(event)
  }

  /**
   * Catches up from `after` a page at a time, as the procedure pulls: a subscriber that does not read holds
   * at most one page, however much is retained. Live events wait aside until the last page.
   */
  startPagedCatchUp(read: CatchUpReader, after: string) {
    this.startCatchUp()
    this.pager = { read, after, reading: false }
  }

  /** Whether `deliverDirectly` can take over: nothing is queued, held or left to page in, and it has not ended. */
  get canDeliverDirectly(): boolean {
    return !this.ended && !this.queue.length && !this.held && !this.pager
  }

  /**
   * Has `writer` write each live event to the socket as the driver pushes it: no queue, no promise, no
   * iterator layer per event, and the event's frame encoded once for all its subscribers on the instance.
   * Resolves when an event cannot be written now (the socket's buffer is full: it is queued, and the caller
   * reads the queue through the iterator, waiting for the socket to drain) or the subscription ends (the
   * iterator then gives its end or error). The caller may call it again once `canDeliverDirectly`.
   */
  deliverDirectly(writer: DirectWriter, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const direct = {
        writer,
        release: () => {
          signal.removeEventListener('abort', direct.release)
          if (this.direct === direct) this.direct = undefined
          resolve()
        },
      }
      this.direct = direct
      // The call ended (the client aborted it, the socket closed): the caller returns the iterator, which ends
      // this subscription, whether or not the procedure passed its signal to `subscribe`.
      signal.addEventListener('abort', direct.release, { once: true })
      if (!this.canDeliverDirectly || signal.aborted) direct.release()
    })
  }

  /**
   * Live events read together (a burst), in order. A driver's fan-out goes subscriber by subscriber: a socket's
   * frames of the burst are written one after the other, and leave in one write with its cork group (see
   * `ConnectionOutput.send`), instead of one write per event.
   */
  pushAll(events: readonly PublishedEvent[]) {
    for (const event of events) this.push(event)
  }

  /** A live event. */
  push(event: PublishedEvent) {
    if (this.ended) return
    if (this.held) {
      this.held.push(event)
      if (this.held.length > this.maxBufferedEvents) this.overflow()
      return
    }
    const direct = this.direct
    if (direct) {
      if (this.lastId !== undefined && compareEventIds(event.id, this.lastId) <= 0) return
      let written = false
      try {
        written = direct.writer.write(event)
      }
      catch {
        // A payload this call cannot encode: the event is queued, and the call's own stream reports the error,
        // as the iterator would have; the other subscribers of the fan-out go on.
      }
      if (written) {
        this.lastId = event.id
        return
      }
      direct.release()
    }
    this.enqueue(event, false)
  }

  fail(error: unknown) {
    if (this.ended) return
    this.failure = error
    this.end()
  }

  end() {
    if (this.ended) return
    this.ended = true
    this.held = undefined
    this.pager = undefined
    this.direct?.release()
    this.wake()
    for (const listener of this.endListeners.splice(0)) listener()
  }

  onEnd(listener: () => void) {
    if (this.ended) listener()
    else this.endListeners.push(listener)
  }

  /** The iterator a procedure yields from; each value carries its event id. */
  iterator<T>(signal: AbortSignal | undefined): AsyncIteratorClass<T> {
    const onAbort = () => this.end()
    if (signal?.aborted) this.end()
    else signal?.addEventListener('abort', onAbort, { once: true })
    this.onEnd(() => signal?.removeEventListener('abort', onAbort))

    const iterator = new AsyncIteratorClass<T>(async () => {
      while (!this.queue.length && !this.ended) {
        this.readNextPage()
        await new Promise<void>((resolve) => {
          this.waiting = { resolve }
        })
      }
      const event = this.queue.shift()
      if (this.catchUpQueued > 0) this.catchUpQueued--
      if (event) return { done: false, value: withEventMeta(event.payload, { id: event.id }) as T }
      if (this.failure) throw this.failure
      return { done: true, value: undefined as never }
    }, async () => {
      this.end()
    })
    Object.defineProperty(iterator, subscriberKey, { value: this })
    return iterator
  }

  private readNextPage() {
    const pager = this.pager
    if (!pager || pager.reading) return
    pager.reading = true
    pager.read(pager.after).then((page) => {
      if (this.ended || !page) return
      pager.reading = false
      if (page.next === undefined) {
        this.pager = undefined
        this.finishCatchUp(page.events)
      }
      else {
        pager.after = page.next
        for (const event of page.events) this.enqueue(event, true)
      }
      // A page whose entries were all skipped queues nothing: the pull loop must still go on to the next.
      this.wake()
    }, error => this.fail(error))
  }

  private enqueue(event: PublishedEvent, catchUp: boolean) {
    if (this.lastId !== undefined && compareEventIds(event.id, this.lastId) <= 0) return
    this.lastId = event.id
    this.queue.push(event)
    if (catchUp) this.catchUpQueued++
    else if (this.queue.length > this.maxBufferedEvents + this.catchUpQueued) {
      this.overflow()
      return
    }
    this.wake()
  }

  private overflow() {
    this.queue.length = 0
    this.fail(new ORPCError(RpcPublisherErrorCode.SubscriberOverflow, {
      status: 503,
      message: `The subscriber fell more than ${this.maxBufferedEvents} events behind; resume with lastEventId.`,
    }))
  }

  private wake() {
    const waiting = this.waiting
    this.waiting = undefined
    waiting?.resolve()
  }
}
