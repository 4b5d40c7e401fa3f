import { getEventMeta, ORPCError } from '@orpc/client'
import { reconnectDelay, RpcClientErrorCode } from './connection'
import type { StreamSink } from './plain-calls'
import { listenToStream } from './plain-calls'

/**
 * Where a subscription is:
 * - `'idle'`: not started (during SSR it stays so);
 * - `'connecting'`: the first call is on its way;
 * - `'open'`: the server's stream is running;
 * - `'reconnecting'`: the stream dropped (socket closed, publisher unavailable); it is called again, with the
 *   last event id, after a backoff;
 * - `'closed'`: stopped, or the server ended the stream;
 * - `'error'`: the call failed with an error retrying cannot fix (UNAUTHORIZED, BAD_REQUEST, ...); see `error`.
 */
export type RpcSubscriptionStatus = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' | 'error'

/** What a subscription's source gets, and must give to its call: `(options) => client.chat.live(input, options)`. */
export interface RpcSubscriptionCallOptions {
  signal: AbortSignal
  /** The id of the last event delivered, when resuming. */
  lastEventId: string | undefined
}

/** A call that returns an event iterator and passes it the options: `options => client.chat.live({ room }, options)`. */
export type RpcSubscriptionSource<T> = (options: RpcSubscriptionCallOptions) => Promise<AsyncIterable<T>>

export interface ResumableSubscriptionOptions<T> {
  onEvent: (value: T, id: string | undefined) => void
  onStatus?: (status: RpcSubscriptionStatus, error: unknown) => void
  /** Resume after this event id instead of starting live. */
  lastEventId?: string
  /** Whether resuming after `lastEventId` is the first start (after a server render), not a reconnect. */
  continues?: boolean
  /** First wait before calling again (ms); doubles per failed attempt. @default 500 */
  retryBaseDelay?: number
  /** Longest wait before calling again (ms). @default 10000 */
  retryMaxDelay?: number
}

export interface ResumableSubscription {
  readonly lastEventId: string | undefined
  readonly status: RpcSubscriptionStatus
  stop: () => void
}

/** Error codes after which calling again (with the last event id) can succeed. */
const retryableCodes = new Set<string>([
  RpcClientErrorCode.ConnectionClosed,
  RpcClientErrorCode.ConnectionTimeout,
  'PUBLISHER_UNAVAILABLE',
  'SUBSCRIBER_OVERFLOW',
  'SERVICE_UNAVAILABLE',
])

export function isRetryableSubscriptionError(error: unknown): boolean {
  return error instanceof ORPCError && retryableCodes.has(error.code)
}

/**
 * Calls `source` and delivers its events; when the stream drops, calls it again with `lastEventId` set to the
 * last event delivered (a new call: frames are never replayed), with backoff, until stopped. The server
 * (nuxt-orpc's publisher) then sends what was missed and nothing twice.
 *
 * Two layers resume, each its own case. The connection (`RpcConnection`) carries a stream whose events have
 * ids across a dropped socket by itself: its iterator goes on, and this loop sees nothing. This loop calls
 * again after what ends a stream: a drop of a stream without ids (`CONNECTION_CLOSED`), a socket that did not
 * open in time, the publisher's `PUBLISHER_UNAVAILABLE` or `SUBSCRIBER_OVERFLOW`.
 * The first call to `source` happens synchronously inside this function, so a caller can track what it reads.
 */
export function startResumableSubscription<T>(source: RpcSubscriptionSource<T>, options: ResumableSubscriptionOptions<T>): ResumableSubscription {
  const baseDelay = options.retryBaseDelay ?? 500
  const maxDelay = options.retryMaxDelay ?? 10_000
  let lastEventId = options.lastEventId
  let status: RpcSubscriptionStatus = 'idle'
  let stopped = false
  let controller: AbortController | undefined
  let wakeFromWait: (() => void) | undefined
  let currentIterator: AsyncIterator<T> | undefined

  const setStatus = (next: RpcSubscriptionStatus, error?: unknown) => {
    status = next
    options.onStatus?.(next, error)
  }

  function call(): Promise<AsyncIterable<T>> {
    controller = new AbortController()
    const callOptions = { signal: controller.signal, lastEventId }
    try {
      return source(callOptions)
    }
    catch (error) {
      return Promise.reject(error)
    }
  }

  async function run(first: Promise<AsyncIterable<T>>) {
    let pending: Promise<AsyncIterable<T>> | undefined = first
    for (let attempt = 0; !stopped;) {
      const calling = pending ?? call()
      pending = undefined
      currentIterator = undefined
      const signal = controller!.signal
      try {
        const iterator = (await calling)[Symbol.asyncIterator]()
        if (stopped) {
          await iterator.return?.()
          return
        }
        currentIterator = iterator
        setStatus('open')
        const onEvent = (value: T, id: string | undefined) => {
          attempt = 0
          if (id !== undefined) lastEventId = id
          options.onEvent(value, id)
        }
        const listen = (iterator as { [listenToStream]?: (sink: StreamSink) => void })[listenToStream]
        if (listen) {
          // A stream of nuxt-orpc's connection calls this as each event arrives: no promise per event.
          await new Promise<void>((resolve, reject) => listen.call(iterator, { event: onEvent as StreamSink['event'], end: () => resolve(), fail: reject }))
        }
        else {
          while (!stopped) {
            const result = await iterator.next()
            if (result.done) break
            onEvent(result.value, getEventMeta(result.value)?.id)
          }
        }
        if (!stopped) setStatus('closed')
        return
      }
      catch (error) {
        if (stopped || signal.aborted) return
        if (!isRetryableSubscriptionError(error)) {
          setStatus('error', error)
          return
        }
        setStatus('reconnecting', error)
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, reconnectDelay(attempt++, baseDelay, maxDelay))
          wakeFromWait = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        wakeFromWait = undefined
      }
    }
  }

  setStatus(lastEventId === undefined || options.continues ? 'connecting' : 'reconnecting')
  void run(call())

  return {
    get lastEventId() {
      return lastEventId
    },
    get status() {
      return status
    },
    stop() {
      if (stopped) return
      stopped = true
      // Both send oRPC's abort frame (the server's `signal` fires). A running stream is ended through its
      // iterator, not its signal: oRPC's abort listener stays on the signal for the stream's life and throws
      // out of the event listener if the socket closes before it has sent its frame.
      if (currentIterator) currentIterator.return?.().catch(() => {})
      else controller?.abort()
      wakeFromWait?.()
      setStatus('closed')
    },
  }
}
