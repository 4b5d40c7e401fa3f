import { getEventMeta, ORPCError, withEventMeta } from '@orpc/server'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { RpcSubscriptionStatus } from '../src/runtime/app/resumable'
import { isRetryableSubscriptionError, startResumableSubscription } from '../src/runtime/app/resumable'
import type { RpcPublisher } from '../src/runtime/server/publisher/core'
import { compareEventIds, createEventIdGenerator, publisherDefaults } from '../src/runtime/server/publisher/core'
import { createMemoryPublisher } from '../src/runtime/server/publisher/memory'
import { rejectionOf, waitFor } from './helpers'

const publishers: RpcPublisher[] = []

function memory(config: Partial<typeof publisherDefaults> = {}) {
  const publisher = createMemoryPublisher({ ...publisherDefaults, ...config })
  publishers.push(publisher)
  return publisher
}

afterEach(async () => {
  await Promise.all(publishers.splice(0).map(publisher => publisher.close()))
})

/** Pulls `count` events from an iterator, with their ids. */
async function take(iterator: AsyncIterator<object>, count: number) {
  const events: Array<{ id: string | undefined, value: any }> = []
  while (events.length < count) {
    const result = await iterator.next()
    if (result.done) break
    events.push({ id: getEventMeta(result.value)?.id, value: result.value })
  }
  return events
}

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
