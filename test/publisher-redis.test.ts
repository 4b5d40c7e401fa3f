import { connect } from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { ORPCError } from '@orpc/server'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import type { RpcPublisher } from '../src/runtime/server/publisher/core'
import { publisherDefaults, Subscriber, subscriptionLive } from '../src/runtime/server/publisher/core'
import { catchUpPageSize, createRedisPublisher } from '../src/runtime/server/publisher/redis'
import { rejectionOf, take } from './helpers'
import { redisAnswers } from './pubsub'

// The driver against a real Redis: this machine kind runs one at 127.0.0.1:6379. Without it these tests are
// skipped, except in CI, where they must run (and fail).
const redisUrl = 'redis://127.0.0.1:6379'
const skipRedis = !(await redisAnswers(6379)) && !process.env.CI
if (skipRedis) {
  console.warn('[publisher-redis.test] Redis does not answer at 127.0.0.1:6379: the Redis driver tests are SKIPPED. Start redis-server (or set CI to make them fail instead).')
}

/** Keys of this run apart from every other run against the shared Redis; deleted after the run. */
const prefix = `nuxt-orpc-test:publisher:${process.pid}:${Date.now()}:`

const publishers: RpcPublisher[] = []
let cleanupMonitor: (() => void) | undefined

function redisPublisher(config: Partial<typeof publisherDefaults> = {}) {
  const publisher = createRedisPublisher({ ...publisherDefaults, driver: 'redis', url: redisUrl, prefix, ...config })
  publishers.push(publisher)
  return publisher
}

afterEach(async () => {
  cleanupMonitor?.()
  cleanupMonitor = undefined
  vi.restoreAllMocks()
  await Promise.all(publishers.splice(0).map(publisher => publisher.close()))
})

afterAll(async () => {
  if (skipRedis) return
  const redis = new Redis(redisUrl)
  const keys = await redis.keys(`${prefix}*`)
  if (keys.length) await redis.del(...keys)
  redis.disconnect()
})

/** Heap in use after a full collection (V8's gc, reached without --expose-gc). */
function heapAfterGc() {
  setFlagsFromString('--expose-gc')
  ;(runInNewContext('gc') as () => void)()
  return process.memoryUsage().heapUsed
}

describe.skipIf(skipRedis)('redis publisher (real Redis)', () => {
  it('resuming from 0-0 holds at most a page per subscriber, shares decoded events, then delivers all in order, then live events, once each', async () => {
    const publisher = redisPublisher()
    const channel = 'flood'
    const text = 'x'.repeat(2000)
    const ids: string[] = []
    for (let n = 0; n < 1000; n++) ids.push((await publisher.publish(channel, { n, body: { text } })).id)

    // The attack: many subscriptions resume from the start of the channel and then stop reading.
    const subscribers: Subscriber[] = []
    const iterator = vi.spyOn(Subscriber.prototype, 'iterator')
    const heapBefore = heapAfterGc()
    const attackers = Array.from({ length: 200 }, (_, n) => publisher.subscribe(channel, { lastEventId: n % 2 ? '0-0' : '0-1' }))
    subscribers.push(...iterator.mock.contexts as Subscriber[])
    expect(subscribers).toHaveLength(200)
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(subscribers.map(subscriber => subscriber.queuedCount)).toEqual(subscribers.map(() => 0))

    // Each reads one event, as a server's stream does before the client's socket stops draining.
    const firsts = await Promise.all(attackers.map(attacker => take(attacker, 1)))
    expect(firsts.map(([event]) => event!.id)).toEqual(attackers.map(() => ids[0]))
    const heapGrowth = heapAfterGc() - heapBefore
    console.info(`[publisher-redis.test] 200 subscribers resumed from 0-0 on 1000 retained 2 KB events, one read each: heap +${(heapGrowth / 2 ** 20).toFixed(1)} MiB`)
    expect(Math.max(...subscribers.map(subscriber => subscriber.queuedCount))).toBeLessThanOrEqual(catchUpPageSize - 1)
    // One decoded copy, whatever the subscriber and its lastEventId: the same nested object reaches both.
    expect(firsts[0]![0]!.value.body).toBe(firsts[1]![0]!.value.body)
    // Without paging and sharing this was about 400 MiB; one shared page is a few hundred KB.
    expect(heapGrowth).toBeLessThan(40 * 2 ** 20)

    // A subscriber that goes on reading gets every retained event in order, then live ones, each once.
    const reader = attackers[0]!
    const live: string[] = []
    const received = await take(reader, 500)
    for (let n = 1000; n < 1005; n++) live.push((await publisher.publish(channel, { n, body: { text: 'live' } })).id)
    received.push(...await take(reader, 500 - 1 + 5))
    expect(received.map(event => event.value.n)).toEqual(Array.from({ length: 1004 }, (_, n) => n + 1))
    expect(received.map(event => event.id)).toEqual([...ids.slice(1), ...live])
    await publisher.publish(channel, { n: 1005, body: { text: 'live' } })
    expect((await take(reader, 1)).map(event => event.value.n)).toEqual([1005])

    // The others, still not reading, stayed within a page each.
    expect(Math.max(...subscribers.slice(1).map(subscriber => subscriber.queuedCount))).toBeLessThanOrEqual(catchUpPageSize - 1 + 6)
  })

  it('refuses a lastEventId Redis cannot read after with BAD_REQUEST, instead of retrying forever', async () => {
    const publisher = redisPublisher()
    await publisher.publish('ids', { n: 1 })
    for (const lastEventId of ['1-99999999999999999999999', '18446744073709551615-18446744073709551615']) {
      expect(() => publisher.subscribe('ids', { lastEventId })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }))
    }
    // A valid id still resumes.
    const resumed = publisher.subscribe('ids', { lastEventId: '1-0' })
    expect((await take(resumed, 1)).map(event => event.value.n)).toEqual([1])
  })

  it('reads only the channels that have traffic: with 10,000 followed channels and one busy, a quiet one is read at most 3 times in all', { timeout: 60_000 }, async () => {
    // What Redis is asked, seen through MONITOR (on a plain socket: ioredis's own monitor mode mixed its replies
    // up under this much traffic): the keys each XREAD names.
    const monitor = connect(6379, '127.0.0.1')
    const readsOf = new Map<string, number>()
    let reads = 0
    let pending = ''
    monitor.on('data', (chunk: Buffer) => {
      const lines = (pending + chunk.toString()).split('\r\n')
      pending = lines.pop()!
      for (const line of lines) {
        // +<time> [<db> <address>] "xread" "COUNT" "<n>" "STREAMS" <keys...> <ids...>
        if (!line.includes('"xread"') || !line.includes(prefix)) continue
        const args = [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map(match => match[1]!)
        reads++
        for (const key of args.slice(4, 4 + (args.length - 4) / 2)) readsOf.set(key, (readsOf.get(key) ?? 0) + 1)
      }
    })
    await new Promise(resolve => monitor.once('connect', resolve))
    monitor.write('MONITOR\r\n')
    cleanupMonitor = () => monitor.destroy()

    const publisher = redisPublisher()
    const quiet = Array.from({ length: 10_000 }, (_, n) => `quiet-${n}`)
    const subscriptions = quiet.map(channel => publisher.subscribe(channel))
    const busy = publisher.subscribe('busy')
    // Every channel is followed once it has had an event (its cursor read, its notifications subscribed).
    const firsts = subscriptions.map(subscription => take(subscription, 1))
    const busyFirst = take(busy, 1)
    await Promise.all([...subscriptions, busy].map(subscriptionLive))
    await Promise.all([...quiet, 'busy'].map(channel => publisher.publish(channel, { first: true })))
    await Promise.all([...firsts, busyFirst])
    // Then only `busy` gets events.
    const received = take(busy, 50)
    for (let n = 0; n < 50; n++) await publisher.publish('busy', { n })
    expect((await received).map(event => event.value.n)).toEqual(Array.from({ length: 50 }, (_, n) => n))
    await new Promise(resolve => setTimeout(resolve, 300))
    monitor.destroy()

    // A quiet channel is read when it is first followed, by the publish of its one event (its publisher follows
    // it) and for that event's notification: 3 times at most, whatever the busy channel does. (Reading every
    // followed channel on every read, as a shared XREAD does, would name each one about 50 times.)
    expect(reads).toBeGreaterThan(0)
    expect(Math.max(...quiet.map(channel => readsOf.get(`${prefix}${channel}`) ?? 0))).toBeLessThanOrEqual(3)
    expect(readsOf.get(`${prefix}busy`)).toBeGreaterThanOrEqual(50)
  })

  it('refuses channel names longer than maxChannelNameLength with BAD_REQUEST', async () => {
    const publisher = redisPublisher({ maxChannelNameLength: 10 })
    expect(await rejectionOf(publisher.publish('x'.repeat(11), { n: 1 }))).toMatchObject({ code: 'BAD_REQUEST', status: 400, message: expect.stringContaining('at most 10 characters') })
    expect(() => publisher.subscribe('x'.repeat(11))).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }))
    const atLimit = publisher.subscribe('y'.repeat(10), { history: true })
    await publisher.publish('y'.repeat(10), { n: 1 })
    expect((await take(atLimit, 1)).map(event => event.value.n)).toEqual([1])
  })
})

describe('redis publisher when Redis cannot be reached', () => {
  it('rejects with a generic PUBLISHER_UNAVAILABLE that names no address or Redis error, and logs the details', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {})
    const publisher = redisPublisher({ url: 'redis://127.0.0.1:1' })
    const error = await rejectionOf(publisher.publish('a', { n: 1 }))
    expect(error).toBeInstanceOf(ORPCError)
    expect(error).toMatchObject({ code: 'PUBLISHER_UNAVAILABLE', status: 503 })
    const wire = JSON.stringify((error as ORPCError<string, unknown>).toJSON())
    for (const text of [wire, (error as Error).message]) {
      expect(text).not.toMatch(/127\.0\.0\.1|:1\b|ECONNREFUSED|redis|connect|stream|writeable/i)
    }
    expect((error as Error).cause).toBeUndefined()
    expect(warn.mock.calls.flat().join(' ')).toContain('ECONNREFUSED 127.0.0.1:1')
  })
})
