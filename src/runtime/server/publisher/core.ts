import { AsyncIteratorClass, ORPCError, withEventMeta } from '@orpc/server'
import type { RpcPublisherConfig } from './defaults'

export { publisherDefaults } from './defaults'
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

export function publisherUnavailable(reason: string, cause?: unknown) {
  return new ORPCError(RpcPublisherErrorCode.Unavailable, {
    status: 503,
    message: `The publisher is unavailable (${reason}); the event was most likely not published. Try again shortly.`,
    cause,
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

/** Compares two event ids (`<ms>-<seq>`, the shape of Redis stream ids) in publication order. */
export function compareEventIds(a: string, b: string): number {
  const [, aMs, aSeq] = eventIdPattern.exec(a)!
  const [, bMs, bSeq] = eventIdPattern.exec(b)!
  return Number(aMs) - Number(bMs) || Number(aSeq) - Number(bSeq)
}

/** The id before every event. */
const originId = '0-0'

/** The id to resume after, or undefined to start live; an id this publisher never makes is a BAD_REQUEST. */
export function resumeIdOf({ lastEventId, history }: RpcSubscribeOptions, retention: number): string | undefined {
  if (retention <= 0) return undefined
  if (lastEventId === undefined || lastEventId === '') return history ? originId : undefined
  if (!eventIdPattern.test(lastEventId)) {
    throw new ORPCError('BAD_REQUEST', { message: `lastEventId "${lastEventId.slice(0, 40)}" is not an event id of this publisher (<ms>-<seq>).` })
  }
  return lastEventId
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
  private failure: unknown
  private ended = false
  private readonly endListeners: Array<() => void> = []

  constructor(private readonly maxBufferedEvents: number, resumeAfter?: string) {
    this.lastId = resumeAfter
  }

  get isEnded() {
    return this.ended
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

  /** A live event. */
  push(event: PublishedEvent) {
    if (this.ended) return
    if (this.held) {
      this.held.push(event)
      if (this.held.length > this.maxBufferedEvents) this.overflow()
      return
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

    return new AsyncIteratorClass<T>(async () => {
      while (!this.queue.length && !this.ended) {
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
