import { getEventMeta, ORPCError } from '@orpc/server'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import type { RpcPresence, RpcPresenceEvent } from '../src/runtime/server/presence/core'
import { presenceEventsChannel } from '../src/runtime/server/presence/core'
import { createPresenceFor } from '../src/runtime/server/presence/create'
import type { RpcPublisherConfig } from '../src/runtime/server/publisher/core'
import { createPublisher } from '../src/runtime/server/publisher/create'
import { waitFor } from './helpers'
import { redisAnswers } from './pubsub'

// Presence in process, on each driver: the e2e half (real servers, a killed instance) is in pubsub.test.ts.

const redisUp = await redisAnswers(6379)
const skipRedis = !redisUp && !process.env.CI
if (skipRedis) console.warn('[presence.test] Redis does not answer at 127.0.0.1:6379: the Redis driver\'s presence tests are SKIPPED.')

interface Member { name: string }

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

let counter = 0
const freshChannel = () => `room:${process.pid}-${Date.now()}-${counter++}`
const prefix = `nuxt-orpc-presence-test:${process.pid}:${Date.now()}:`

function instance(config: Partial<RpcPublisherConfig>) {
  const publisher = createPublisher({ prefix, ...config })
  const presence = createPresenceFor(publisher, { prefix, ...config }) as RpcPresence<Record<string, Member>>
  cleanups.push(async () => {
    await presence.close()
    await publisher.close()
  })
  return { publisher, presence }
}

/** Reads a presence stream in the background, keeping what it yields and each event's id. */
function watch(presence: RpcPresence<Record<string, Member>>, channel: string, lastEventId?: string) {
  const controller = new AbortController()
  const events: Array<RpcPresenceEvent<Member> & { id?: string }> = []
  const errors: unknown[] = []
  const stream = presence.subscribe(channel, { signal: controller.signal, lastEventId })
  const done = (async () => {
    try {
      for await (const event of stream) events.push({ ...event, id: getEventMeta(event)?.id })
    }
    catch (error) {
      errors.push(error)
    }
  })()
  const stop = async () => {
    controller.abort()
    await done
  }
  cleanups.push(stop)
  /** The changes (every event but `sync`) as `type key:name/connections`. */
  const changes = () => events.filter(event => event.type !== 'sync').map(event => 'member' in event ? `${event.type} ${event.member.key}:${event.member.data.name}/${event.member.connections}` : '')
  return { events, errors, changes, stop }
}

function join(presence: RpcPresence<Record<string, Member>>, channel: string, name: string, key?: string) {
  const controller = new AbortController()
  const joined = presence.join(channel, { name }, { signal: controller.signal, key })
  return { controller, joined }
}

const drivers = [
  { name: 'memory', config: { driver: 'memory' } as const, skip: false },
  { name: 'redis', config: { driver: 'redis', presenceTtl: 1 } as const, skip: skipRedis },
]

for (const driver of drivers) {
  describe.skipIf(driver.skip)(`presence, ${driver.name} driver`, () => {
    it('lists members by key: two joins with one key are one member with two connections, who leaves with the last', async () => {
      const { presence } = instance(driver.config)
      const channel = freshChannel()
      const watcher = watch(presence, channel)
      await waitFor(() => watcher.events.length === 1)
      expect(watcher.events[0]).toEqual({ type: 'sync', members: [] })

      const tab1 = join(presence, channel, 'Ada', 'user-1')
      const tab2 = join(presence, channel, 'Ada', 'user-1')
      const other = join(presence, channel, 'Bob')
      await Promise.all([tab1.joined, tab2.joined])
      const bob = await other.joined
      expect(bob.key).toMatch(/^[0-9a-f]{16}:\d+$/)
      const list = await presence.list(channel)
      expect(list).toEqual([
        { key: 'user-1', data: { name: 'Ada' }, connections: 2 },
        { key: bob.key, data: { name: 'Bob' }, connections: 1 },
      ])

      tab1.controller.abort()
      await waitFor(async () => (await presence.list(channel))[0]?.connections === 1)
      tab2.controller.abort()
      other.controller.abort()
      await waitFor(async () => (await presence.list(channel)).length === 0)
      await waitFor(() => watcher.changes().length === 6)
      expect(watcher.changes()).toEqual([
        'join user-1:Ada/1',
        'update user-1:Ada/2',
        `join ${bob.key}:Bob/1`,
        'update user-1:Ada/1',
        'leave user-1:Ada/0',
        `leave ${bob.key}:Bob/0`,
      ])
      // Each change carries an event id to resume after.
      expect(watcher.events.slice(1).every(event => typeof event.id === 'string')).toBe(true)
      expect(watcher.errors).toEqual([])
    })

    it('starts every stream with a sync of who is there (a resumed one too: what it missed is in it), then changes', async () => {
      const { presence } = instance(driver.config)
      const channel = freshChannel()
      const ada = join(presence, channel, 'Ada', 'ada')
      const joined = await ada.joined
      const first = watch(presence, channel)
      await waitFor(() => first.events.length === 1)
      expect(first.events[0]).toEqual({ type: 'sync', members: [{ key: 'ada', data: { name: 'Ada' }, connections: 1 }] })

      await joined.update({ name: 'Ada L.' })
      await waitFor(() => first.changes().length === 1)
      expect(first.changes()).toEqual(['update ada:Ada L./1'])
      const resumeAfter = first.events[1]!.id!
      await first.stop()

      // Missed while no stream was open.
      const bob = join(presence, channel, 'Bob', 'bob')
      await bob.joined
      ada.controller.abort()
      await waitFor(async () => (await presence.list(channel)).length === 1)

      const resumed = watch(presence, channel, resumeAfter)
      await waitFor(() => resumed.events.length === 1)
      expect(resumed.events[0]).toEqual({ type: 'sync', members: [{ key: 'bob', data: { name: 'Bob' }, connections: 1 }] })
      bob.controller.abort()
      await waitFor(() => resumed.events.length === 2)
      expect(resumed.changes()).toEqual(['leave bob:Bob/0'])

      // Data that is not an object is refused, and the member keeps what it had.
      const bobJoin = await join(presence, channel, 'Bo', 'bo').joined
      await expect(bobJoin.update('text' as never)).rejects.toThrow(/must be an object/)
      expect((await presence.list(channel)).find(member => member.key === 'bo')?.data).toEqual({ name: 'Bo' })
      // Leaving is final: the join cannot be updated any more.
      await expect(joined.update({ name: 'again' })).rejects.toMatchObject({ code: 'BAD_REQUEST' })
    })

    it('skips a change older than what the stream has already given of the member (instances publish in parallel)', async () => {
      const { presence, publisher } = instance(driver.config)
      const channel = freshChannel()
      const watcher = watch(presence, channel)
      await waitFor(() => watcher.events.length === 1)
      // The versions changes carry, as the publisher channel has them.
      const raw = publisher.subscribe(presenceEventsChannel(channel)) as AsyncIterator<{ type: string, version: number }>
      cleanups.push(() => raw.return?.())
      const ada = join(presence, channel, 'Ada', 'ada')
      await ada.joined
      const adaJoin = (await raw.next()).value
      expect(adaJoin.type).toBe('join')
      await waitFor(() => watcher.changes().length === 1)
      // A leave of Ada made before her join (after the stream's sync), published after it, as another instance's
      // publish could be: skipped for her. A change of Bob of the same age is new to the stream: given.
      const late = adaJoin.version - 0.5
      await publisher.publish(presenceEventsChannel(channel), { type: 'leave', member: { key: 'ada', data: { name: 'Ada' }, connections: 0 }, version: late })
      await publisher.publish(presenceEventsChannel(channel), { type: 'join', member: { key: 'bob', data: { name: 'Bob' }, connections: 1 }, version: late })
      // And one from before the stream's sync: in the sync already.
      await publisher.publish(presenceEventsChannel(channel), { type: 'join', member: { key: 'ghost', data: { name: 'Ghost' }, connections: 1 }, version: 2 })
      await join(presence, channel, 'Cy', 'cy').joined
      await waitFor(() => watcher.changes().length >= 3)
      expect(watcher.changes()).toEqual(['join ada:Ada/1', 'join bob:Bob/1', 'join cy:Cy/1'])
    })

    it('refuses bad input with clear errors and stores nothing', async () => {
      const { presence } = instance(driver.config)
      const channel = freshChannel()
      const signal = new AbortController().signal
      await expect(presence.join('x'.repeat(300), { name: 'long' }, { signal })).rejects.toMatchObject({ code: 'BAD_REQUEST' })
      // The publisher channel of its changes (`~presence:<name>`) must fit the publisher's limit (256) too.
      const tooLong = `room:${'y'.repeat(250)}`
      await expect(presence.join(tooLong, { name: 'long' }, { signal })).rejects.toMatchObject({ code: 'BAD_REQUEST' })
      expect(() => presence.subscribe(tooLong)).toThrow(ORPCError)
      await expect(presence.join(channel, 'text' as never, { signal })).rejects.toThrow(/must be an object/)
      await expect(presence.join(channel, { name: 'no signal' }, {} as never)).rejects.toThrow(/needs the procedure's signal/)
      await expect(presence.join(channel, { name: 'key' }, { signal, key: 42 as never })).rejects.toThrow(/presence key is a string/)
      await expect(presence.join(channel, { name: 'key' }, { signal, key: 'k'.repeat(300) })).rejects.toThrow(/presence key is a string/)
      await expect(presence.join(channel, { name: 'aborted' }, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' })
      await expect(presence.list('y'.repeat(300))).rejects.toBeInstanceOf(ORPCError)
      expect(() => presence.subscribe('z'.repeat(300))).toThrow(ORPCError)
      expect(await presence.list(channel)).toEqual([])
    })

    it('close() makes every member of the instance leave, and others hear of it', async () => {
      const { presence } = instance(driver.config)
      // Another instance on Redis; in memory, the same one (instances share nothing there).
      const leaving = driver.name === 'memory' ? { presence } : instance(driver.config)
      const channel = freshChannel()
      const watcher = watch(presence, channel)
      await waitFor(() => watcher.events.length === 1)
      await join(leaving.presence, channel, 'Ada', 'ada').joined
      await join(leaving.presence, channel, 'Bob', 'bob').joined
      await waitFor(() => watcher.changes().length === 2)
      await leaving.presence.close()
      await waitFor(() => watcher.changes().length === 4)
      expect(watcher.changes().slice(2).sort()).toEqual(['leave ada:Ada/0', 'leave bob:Bob/0'])
      await expect(leaving.presence.join(channel, { name: 'late' }, { signal: new AbortController().signal })).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' })
    })
  })
}

describe.skipIf(skipRedis)('presence, redis driver, two instances in one process', () => {
  it('a member of an instance that stops refreshing (its Redis connection gone) leaves for the others after the time to live', async () => {
    const survivor = instance({ driver: 'redis', presenceTtl: 1 })
    const doomed = instance({ driver: 'redis', presenceTtl: 1 })
    const channel = freshChannel()
    const watcher = watch(survivor.presence, channel)
    await waitFor(() => watcher.events.length === 1)
    await join(doomed.presence, channel, 'Ada', 'ada').joined
    await waitFor(() => watcher.changes().length === 1)
    // Alive past its time to live: its instance refreshes it.
    await new Promise(resolve => setTimeout(resolve, 1600))
    expect((await survivor.presence.list(channel)).map(member => member.key)).toEqual(['ada'])
    // The instance is cut off from Redis without leaving (what a killed process does: pubsub.test.ts kills one).
    await doomed.publisher.close()
    const cutAt = Date.now()
    await waitFor(() => watcher.changes().length === 2, { timeout: 5000, interval: 20 })
    const after = Date.now() - cutAt
    expect(watcher.changes()[1]).toBe('leave ada:Ada/0')
    // Time to live (1 s) plus a refresh interval (a third of it), and some slack for the machine.
    expect(after).toBeLessThan(1000 + 334 + 1000)
    expect(await survivor.presence.list(channel)).toEqual([])
  })

  it('a join Redis lost (its keys gone, as after a restart without persistence) is made again by its instance\'s refresh', async () => {
    const { presence } = instance({ driver: 'redis', presenceTtl: 1 })
    const channel = freshChannel()
    const watcher = watch(presence, channel)
    await waitFor(() => watcher.events.length === 1)
    await join(presence, channel, 'Ada', 'ada').joined
    await waitFor(() => watcher.changes().length === 1)
    const redis = new Redis('redis://127.0.0.1:6379')
    cleanups.push(() => redis.quit())
    const keys = await redis.keys(`${prefix}presence:{${channel}}:*`)
    expect(keys.length).toBe(6)
    await redis.del(...keys)
    expect(await presence.list(channel)).toEqual([])
    await waitFor(async () => (await presence.list(channel)).length === 1, { timeout: 3000 })
    expect(await presence.list(channel)).toEqual([{ key: 'ada', data: { name: 'Ada' }, connections: 1 }])
    await waitFor(() => watcher.changes().length === 2)
    expect(watcher.changes()).toEqual(['join ada:Ada/1', 'join ada:Ada/1'])
  })
})
