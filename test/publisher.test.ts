import { ORPCError, withEventMeta } from '@orpc/server'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { RpcSubscriptionStatus } from '../src/runtime/client/resumable'
import { isRetryableSubscriptionError, startResumableSubscription } from '../src/runtime/client/resumable'
import type { CatchUpPage, PublishedEvent, RpcPublisher } from '../src/runtime/server/publisher/core'
import { compareEventIds, createEventIdGenerator, publisherDefaults, Subscriber } from '../src/runtime/server/publisher/core'
import type { MemoryChannel } from '../src/runtime/server/publisher/memory'
import { createMemoryPublisher } from '../src/runtime/server/publisher/memory'
import { rejectionOf, take, waitFor } from './helpers'

const publishers: RpcPublisher[] = []

function memory(config: Partial<typeof publisherDefaults> = {}, channels?: Map<string, MemoryChannel>) {
  const publisher = createMemoryPublisher({ ...publisherDefaults, ...config }, channels)
  publishers.push(publisher)
  return publisher
}

afterEach(async () => {
  vi.restoreAllMocks()
  await Promise.all(publishers.splice(0).map(publisher => publisher.close()))
})

describe('event ids', () => {
  it('increase within a millisecond and across a clock that goes back', () => {
    let now = 1000
    const nextId = createEventIdGenerator(() => now)
    const first = nextId()
    const second = nextId()
    now = 900
    const third = nextId()
    now = 2000
    const fourth = nextId()
    expect([first, second, third, fourth]).toEqual(['1000-0', '1000-1', '1000-2', '2000-0'])
    expect(compareEventIds('999-5', '1000-0')).toBeLessThan(0)
    expect(compareEventIds('1000-10', '1000-9')).toBeGreaterThan(0)
    expect(compareEventIds('1000-1', '1000-1')).toBe(0)
  })
})

describe('memory publisher', () => {
  it('answers a publish before writing to subscribers, and writes them in publish order to the subscribers of publish time', async () => {
    const publisher = memory()
    const early = publisher.subscribe('a')
    const seen: number[] = []
    const reading = (async () => {
      for await (const event of early) {
        seen.push((event as { n: number }).n)
        if (seen.length === 3) break
      }
    })()
    const pushes = vi.spyOn(Subscriber.prototype, 'push')
    await publisher.publish('a', { n: 1 })
    // Answered; the subscriber has nothing yet: it is written to after the I/O waiting now.
    expect(pushes).not.toHaveBeenCalled()
    await new Promise(resolve => setImmediate(resolve))
    expect(pushes).toHaveBeenCalledTimes(1)
    const late = publisher.subscribe('a')
    await publisher.publish('a', { n: 2 })
    await publisher.publish('a', { n: 3 })
    await reading
    expect(seen).toEqual([1, 2, 3])
    // The later subscriber did not get what was published before it subscribed.
    expect((await take(late, 2)).map(event => event.value.n)).toEqual([2, 3])
  })

  it('delivers each event to every subscriber of its channel, with the id as event metadata', async () => {
    const publisher = memory()
    const one = publisher.subscribe('a')
    const two = publisher.subscribe('a')
    const other = publisher.subscribe('b')
    const { id } = await publisher.publish('a', { n: 1 })
    expect(await take(one, 1)).toEqual([{ id, value: { n: 1 } }])
    expect(await take(two, 1)).toEqual([{ id, value: { n: 1 } }])
    await publisher.publish('b', { n: 2 })
    expect((await take(other, 1))[0]!.value).toEqual({ n: 2 })
  })

  it('resumes after lastEventId with what was missed, then live events, each once', async () => {
    const publisher = memory()
    const ids: string[] = []
    for (let n = 1; n <= 5; n++) ids.push((await publisher.publish('a', { n })).id)
    const resumed = publisher.subscribe('a', { lastEventId: ids[1] })
    await publisher.publish('a', { n: 6 })
    expect((await take(resumed, 4)).map(event => event.value.n)).toEqual([3, 4, 5, 6])
  })

  it('starts with the retained history when asked, and live otherwise', async () => {
    const publisher = memory()
    await publisher.publish('a', { n: 1 })
    const withHistory = publisher.subscribe('a', { history: true })
    const live = publisher.subscribe('a')
    await publisher.publish('a', { n: 2 })
    expect((await take(withHistory, 2)).map(event => event.value.n)).toEqual([1, 2])
    expect((await take(live, 1)).map(event => event.value.n)).toEqual([2])
  })

  it('keeps at most maxEventsPerChannel events, and none when retention is 0', async () => {
    const bounded = memory({ maxEventsPerChannel: 3 })
    for (let n = 1; n <= 6; n++) await bounded.publish('a', { n })
    expect((await take(bounded.subscribe('a', { history: true }), 3)).map(event => event.value.n)).toEqual([4, 5, 6])

    const noRetention = memory({ retention: 0 })
    const { id } = await noRetention.publish('a', { n: 1 })
    await noRetention.publish('a', { n: 2 })
    const resumed = noRetention.subscribe('a', { lastEventId: id })
    await noRetention.publish('a', { n: 3 })
    expect((await take(resumed, 1)).map(event => event.value.n)).toEqual([3])
  })

  it('drops events older than the retention window', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    try {
      const publisher = memory({ retention: 10 })
      const { id } = await publisher.publish('a', { n: 1 })
      await publisher.publish('a', { n: 2 })
      vi.setSystemTime(Date.now() + 11_000)
      await publisher.publish('a', { n: 3 })
      expect((await take(publisher.subscribe('a', { lastEventId: id }), 1)).map(event => event.value.n)).toEqual([3])
    }
    finally {
      vi.useRealTimers()
    }
  })

  it('ends the iterator when the signal aborts, and stops delivering to it', async () => {
    const publisher = memory()
    const controller = new AbortController()
    const iterator = publisher.subscribe('a', { signal: controller.signal })
    const next = iterator.next()
    controller.abort()
    expect(await next).toEqual({ done: true, value: undefined })
    await publisher.publish('a', { n: 1 })
    expect(await iterator.next()).toEqual({ done: true, value: undefined })
  })

  it('fails open subscriptions with a retryable PUBLISHER_UNAVAILABLE when it closes (server shutdown)', async () => {
    const publisher = memory()
    const iterator = publisher.subscribe('a')
    const next = iterator.next()
    await publisher.close()
    expect(await rejectionOf(next)).toMatchObject({ code: 'PUBLISHER_UNAVAILABLE', status: 503 })
    expect(isRetryableSubscriptionError(new ORPCError('PUBLISHER_UNAVAILABLE'))).toBe(true)
  })

  it('fails a subscriber that falls maxBufferedEvents behind with SUBSCRIBER_OVERFLOW', async () => {
    const publisher = memory({ maxBufferedEvents: 3 })
    const slow = publisher.subscribe('a')
    for (let n = 1; n <= 4; n++) await publisher.publish('a', { n })
    // Subscribers are written to once the publish has answered, after the I/O waiting then.
    await new Promise(resolve => setImmediate(resolve))
    const error = await rejectionOf(slow.next())
    expect(error).toBeInstanceOf(ORPCError)
    expect(error).toMatchObject({ code: 'SUBSCRIBER_OVERFLOW', status: 503 })
  })

  it('does not count a catch-up against maxBufferedEvents', async () => {
    const publisher = memory({ maxBufferedEvents: 2 })
    const { id } = await publisher.publish('a', { n: 0 })
    for (let n = 1; n <= 5; n++) await publisher.publish('a', { n })
    const resumed = publisher.subscribe('a', { lastEventId: id })
    await publisher.publish('a', { n: 6 })
    expect((await take(resumed, 6)).map(event => event.value.n)).toEqual([1, 2, 3, 4, 5, 6])
  })

  it('refuses payloads that cannot carry an id, and lastEventIds it never made', async () => {
    const publisher = memory()
    await expect(publisher.publish('a', 'text' as never)).rejects.toThrow(/must be an object/)
    expect(() => publisher.subscribe('a', { lastEventId: 'abc' })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }))
  })

  it('refuses lastEventIds outside the range of stream ids with BAD_REQUEST', async () => {
    const publisher = memory()
    const { id } = await publisher.publish('a', { n: 1 })
    for (const lastEventId of ['1-99999999999999999999999', '18446744073709551616-0', '18446744073709551615-18446744073709551615']) {
      expect(() => publisher.subscribe('a', { lastEventId })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST', message: expect.stringContaining('2^64') }))
    }
    // The largest ids that Redis can still read after are accepted (and are after every event).
    publisher.subscribe('a', { lastEventId: '18446744073709551615-0' })
    const resumed = publisher.subscribe('a', { lastEventId: id.replace(/-\d+$/, '-18446744073709551614') })
    // In a later millisecond: an event of the same one would come at or before that lastEventId.
    await new Promise(resolve => setTimeout(resolve, 5))
    await publisher.publish('a', { n: 2 })
    expect((await take(resumed, 1)).map(event => event.value.n)).toEqual([2])
  })

  it('deletes a channel with its last subscriber: subscribe-and-abort with names from input leaves nothing', async () => {
    const channels = new Map<string, MemoryChannel>()
    const publisher = memory({}, channels)
    const live = publisher.subscribe('kept')
    for (let n = 0; n < 20_000; n++) {
      const controller = new AbortController()
      const room = `chat:${String(n).padStart(200, 'x')}`
      const iterator = publisher.subscribe(room, { signal: controller.signal, history: n % 2 === 0 })
      if (n % 3 === 0) void iterator.next()
      controller.abort()
    }
    await new Promise(resolve => setTimeout(resolve, 0))
    expect([...channels.keys()]).toEqual(['kept'])

    // Without retention, publishing to channels nobody listens to keeps nothing either.
    const unretained = new Map<string, MemoryChannel>()
    const noRetention = memory({ retention: 0 }, unretained)
    for (let n = 0; n < 1000; n++) await noRetention.publish(`chat:${n}`, { n })
    expect(unretained.size).toBe(0)

    // A channel that still retains events stays for subscribers that resume, and the one still subscribed works.
    await publisher.publish('retained', { n: 1 })
    const controller = new AbortController()
    publisher.subscribe('retained', { signal: controller.signal })
    controller.abort()
    expect([...channels.keys()].sort()).toEqual(['kept', 'retained'])
    await publisher.publish('kept', { n: 2 })
    expect((await take(live, 1)).map(event => event.value.n)).toEqual([2])
  })

  it('refuses channel names longer than maxChannelNameLength with BAD_REQUEST', async () => {
    const publisher = memory({ maxChannelNameLength: 10 })
    const error = await rejectionOf(publisher.publish('x'.repeat(11), { n: 1 }))
    expect(error).toBeInstanceOf(ORPCError)
    expect(error).toMatchObject({ code: 'BAD_REQUEST', status: 400, message: expect.stringContaining('at most 10 characters') })
    expect(() => publisher.subscribe('x'.repeat(11))).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }))
    const atLimit = publisher.subscribe('x'.repeat(10))
    await publisher.publish('x'.repeat(10), { n: 1 })
    expect((await take(atLimit, 1)).map(event => event.value.n)).toEqual([1])

    // A config without the field (an app whose runtime config predates it) gets the default.
    const { maxChannelNameLength: _, ...withoutLimit } = publisherDefaults
    const fallback = createMemoryPublisher(withoutLimit as typeof publisherDefaults)
    publishers.push(fallback)
    expect(() => fallback.subscribe('x'.repeat(publisherDefaults.maxChannelNameLength + 1))).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }))
    fallback.subscribe('x'.repeat(publisherDefaults.maxChannelNameLength))
    expect(publisherDefaults.maxChannelNameLength).toBe(256)
  })
})

describe('paged catch-up (what the Redis driver runs)', () => {
  const eventAt = (n: number): PublishedEvent => ({ id: `${1000 + n}-0`, payload: { n } })

  /** Serves `retained` events a page of `size` at a time, as XRANGE does, and counts the reads. */
  function pagedSource(retained: PublishedEvent[], size: number) {
    const reads: string[] = []
    const read = async (after: string): Promise<CatchUpPage> => {
      reads.push(after)
      const start = retained.findIndex(event => compareEventIds(event.id, after) > 0)
      const page = start === -1 ? [] : retained.slice(start, start + size)
      return { events: page, next: page.length === size ? page.at(-1)!.id : undefined }
    }
    return { read, reads }
  }

  it('holds at most one page for a subscriber that reads slowly, then delivers all, then live events, once each', async () => {
    const retained = Array.from({ length: 1000 }, (_, n) => eventAt(n))
    const { read, reads } = pagedSource(retained, 100)
    const subscriber = new Subscriber(50, '0-0')
    subscriber.startPagedCatchUp(read, '0-0')
    const iterator = subscriber.iterator<{ n: number }>(undefined)
    await new Promise(resolve => setTimeout(resolve, 10))
    // Nothing is read before the procedure pulls.
    expect(reads).toEqual([])
    expect(subscriber.queuedCount).toBe(0)

    // Live events during the catch-up wait aside; one of them is also the last retained event.
    subscriber.push(eventAt(999))
    subscriber.push(eventAt(1000))
    const received = await take(iterator, 1)
    expect(reads).toHaveLength(1)
    expect(subscriber.queuedCount).toBe(99 + 2)

    let mostQueued = 0
    while (received.length < 1001) {
      received.push(...await take(iterator, 1))
      mostQueued = Math.max(mostQueued, subscriber.queuedCount)
    }
    subscriber.push(eventAt(1001))
    received.push(...await take(iterator, 1))
    expect(received.map(event => event.value.n)).toEqual(Array.from({ length: 1002 }, (_, n) => n))
    expect(received.map(event => event.id)).toEqual(Array.from({ length: 1002 }, (_, n) => eventAt(n).id))
    expect(mostQueued).toBeLessThanOrEqual(100 + 2)
    // Ten full pages and the empty one that ends the catch-up.
    expect(reads).toHaveLength(11)
  })

  it('fails with SUBSCRIBER_OVERFLOW when more than maxBufferedEvents live events arrive during the catch-up', async () => {
    const { read } = pagedSource(Array.from({ length: 300 }, (_, n) => eventAt(n)), 100)
    const subscriber = new Subscriber(3, '0-0')
    subscriber.startPagedCatchUp(read, '0-0')
    const iterator = subscriber.iterator<{ n: number }>(undefined)
    await take(iterator, 1)
    for (let n = 300; n < 304; n++) subscriber.push(eventAt(n))
    expect(subscriber.queuedCount).toBe(0)
    expect(await rejectionOf(iterator.next())).toMatchObject({ code: 'SUBSCRIBER_OVERFLOW' })
  })

  it('stops reading pages when the subscription ends', async () => {
    const { read, reads } = pagedSource(Array.from({ length: 300 }, (_, n) => eventAt(n)), 100)
    const controller = new AbortController()
    const subscriber = new Subscriber(10, '0-0')
    subscriber.startPagedCatchUp(read, '0-0')
    const iterator = subscriber.iterator<{ n: number }>(controller.signal)
    await take(iterator, 1)
    controller.abort()
    // What was already queued may still drain; nothing more is read.
    const rest = await take(iterator, 1000)
    expect(rest.length).toBeLessThanOrEqual(99)
    expect(await iterator.next()).toEqual({ done: true, value: undefined })
    expect(reads).toHaveLength(1)
  })
})

describe('direct delivery (what a socket writing a subscription\'s events runs)', () => {
  const eventAt = (n: number): PublishedEvent => ({ id: `${2000 + n}-0`, payload: { n } })

  /** A socket's writer: the events it wrote; it refuses once it wrote `room` of them (its buffer is full). */
  function writerWithRoom(room: number) {
    const log: number[] = []
    const writer = {
      write(event: PublishedEvent) {
        if (log.length >= room) return false
        log.push((event.payload as { n: number }).n)
        return true
      },
    }
    return { writer, log }
  }

  it('writes a burst in order, each event once', async () => {
    const subscriber = new Subscriber(10)
    const { writer, log } = writerWithRoom(100)
    const controller = new AbortController()
    const delivering = subscriber.deliverDirectly(writer, controller.signal)
    subscriber.pushAll([eventAt(1)])
    // A burst with an event already written at its head (two reads overlapping): skipped, not written twice.
    subscriber.pushAll([eventAt(1), eventAt(2), eventAt(3)])
    expect(log).toEqual([1, 2, 3])
    controller.abort()
    await delivering
  })

  it('queues what a full socket refused in the middle of a burst, in order, for the iterator', async () => {
    const subscriber = new Subscriber(10)
    const iterator = subscriber.iterator<{ n: number }>(undefined)
    const { writer, log } = writerWithRoom(2)
    const delivering = subscriber.deliverDirectly(writer, new AbortController().signal)
    subscriber.pushAll([eventAt(1), eventAt(2), eventAt(3), eventAt(4)])
    // The writer let go once the socket refused: the rest waits in the subscription's queue.
    await delivering
    expect(log).toEqual([1, 2])
    expect(subscriber.canDeliverDirectly).toBe(false)
    expect((await take(iterator, 2)).map(event => event.value.n)).toEqual([3, 4])
    expect(subscriber.canDeliverDirectly).toBe(true)
    await iterator.return?.()
  })
})

describe('resumable subscription (what useRpcSubscription runs)', () => {
  const closed = () => new ORPCError('CONNECTION_CLOSED', { status: 503 })

  /** A source that yields `events` and then fails with `error`; records the lastEventId of each call. */
  function fakeSource(script: Array<{ events: Array<{ id: string, n: number }>, error?: unknown }>) {
    const calls: Array<string | undefined> = []
    const source = async ({ lastEventId }: { lastEventId: string | undefined }) => {
      calls.push(lastEventId)
      const step = script[calls.length - 1] ?? { events: [] }
      return (async function* () {
        for (const event of step.events) yield withEventMeta({ n: event.n }, { id: event.id })
        if (step.error) throw step.error
        await new Promise(() => {})
      })()
    }
    return { source, calls }
  }

  it('calls again with the last delivered event id after a retryable error', async () => {
    const { source, calls } = fakeSource([
      { events: [{ id: '1-0', n: 1 }, { id: '2-0', n: 2 }], error: closed() },
      { events: [{ id: '3-0', n: 3 }] },
    ])
    const received: Array<[number, string | undefined]> = []
    const statuses: RpcSubscriptionStatus[] = []
    const subscription = startResumableSubscription(source as never, {
      retryBaseDelay: 1,
      retryMaxDelay: 5,
      onEvent: (value: any, id) => received.push([value.n, id]),
      onStatus: status => statuses.push(status),
    })
    await waitFor(() => received.length === 3)
    subscription.stop()
    expect(received.map(([n]) => n)).toEqual([1, 2, 3])
    expect(calls).toEqual([undefined, '2-0'])
    expect(statuses).toEqual(['connecting', 'open', 'reconnecting', 'open', 'closed'])
  })

  it('stops with status error on an error retrying cannot fix', async () => {
    const { source, calls } = fakeSource([{ events: [], error: new ORPCError('UNAUTHORIZED', { status: 401 }) }])
    const statuses: RpcSubscriptionStatus[] = []
    startResumableSubscription(source as never, { onEvent: () => {}, onStatus: status => statuses.push(status) })
    await waitFor(() => statuses.includes('error'))
    await new Promise(resolve => setTimeout(resolve, 20))
    expect(calls).toHaveLength(1)
    expect(isRetryableSubscriptionError(closed())).toBe(true)
    expect(isRetryableSubscriptionError(new ORPCError('BAD_REQUEST'))).toBe(false)
  })
})

describe('memory publisher timers', () => {
  it('starts no timer (a Durable Object with one pending cannot hibernate); a later publish sweeps idle channels', async () => {
    const timers = vi.spyOn(globalThis, 'setInterval')
    const timeouts = vi.spyOn(globalThis, 'setTimeout')
    vi.useFakeTimers({ toFake: ['Date'] })
    try {
      const channels = new Map<string, MemoryChannel>()
      const publisher = createMemoryPublisher({ ...publisherDefaults, retention: 1 }, channels)
      await publisher.publish('a', { n: 1 })
      const kept = publisher.subscribe('kept')
      expect([...channels.keys()].sort()).toEqual(['a', 'kept'])
      // Within the sweep interval (10 s at least), events older than the retention stay where nothing touches them.
      vi.setSystemTime(Date.now() + 5000)
      await publisher.publish('b', { n: 2 })
      expect([...channels.keys()].sort()).toEqual(['a', 'b', 'kept'])
      vi.setSystemTime(Date.now() + 6000)
      await publisher.publish('c', { n: 3 })
      // 'a' and 'b' hold only events past the retention and no subscriber: gone; 'kept' has its subscriber.
      expect([...channels.keys()].sort()).toEqual(['c', 'kept'])
      expect(timers).not.toHaveBeenCalled()
      expect(timeouts).not.toHaveBeenCalled()
      await kept.return?.()
      await publisher.close()
    }
    finally {
      vi.useRealTimers()
      timers.mockRestore()
      timeouts.mockRestore()
    }
  })
})
