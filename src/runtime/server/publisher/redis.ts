// Built on ioredis directly rather than on oRPC's own publisher: @orpc/experimental-publisher (memory and
// ioredis drivers) is published up to 1.14.7 and pins @orpc/* 1.14.7, so installing it next to the 1.16.1
// this package pins would put a second copy of oRPC in the tree. ioredis is pinned to the version nitropack
// already depends on, so apps keep one copy of it too.
import type { Redis, RedisOptions } from 'ioredis'
import { StandardRPCJsonSerializer } from '@orpc/client/standard'
import type { PublishedEvent, RpcPublisher, RpcPublisherConfig } from './core'
import { assertPayload, publisherClosed, publisherUnavailable, resumeIdOf, Subscriber } from './core'

/** How long a publish waits for a Redis connection that is (re)connecting before it rejects. */
const publishWaitMs = 1000
/** XREAD blocks at most this long, so a half-open connection or a missed wake-up costs at most this. */
const readBlockMs = 5000
/** Entries one XREAD or XRANGE returns at most. */
const pageSize = 500

interface RedisChannel {
  key: string
  /** Id of the last entry the shared reader has delivered; undefined until read from Redis. */
  cursor: string | undefined
  /** Resolves once `cursor` is set. */
  ready: Promise<void>
  setReady: () => void
  subscribers: Set<Subscriber>
}

const serializer = new StandardRPCJsonSerializer()

/** Stream entries store the payload as oRPC's JSON serialization, so Dates, Maps, BigInts... survive. */
function encodePayload(payload: object): string {
  const [json, meta] = serializer.serialize(payload)
  return JSON.stringify(meta.length ? { json, meta } : { json })
}

function decodeEntry(id: string, fields: string[]): PublishedEvent | undefined {
  const data = fields[fields.indexOf('d') + 1]
  try {
    const { json, meta } = JSON.parse(data!) as { json: unknown, meta?: [] }
    return { id, payload: serializer.deserialize(json, meta ?? []) as object }
  }
  catch (error) {
    console.warn(`[nuxt-orpc] Skipped stream entry ${id}: it is not an event nuxt-orpc wrote.`, error)
    return undefined
  }
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/** Backoff between Redis retries: doubling from 100 ms up to 2 s, jittered so instances do not retry in step. */
const retryDelay = (attempt: number) => Math.min(2000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2)

/**
 * The multi-instance driver: one Redis stream per channel. A publish is an XADD, trimmed to the retention
 * window; the stream id is the event id. Each instance reads every channel its subscribers listen to with
 * one shared blocking XREAD (one connection, whatever the number of subscribers and channels) and fans the
 * entries out in process. Because the reader keeps a cursor per channel, a dropped Redis connection or a
 * Redis restart loses nothing still in the stream: reading goes on from the cursor. A resuming subscriber
 * reads what it missed with XRANGE, then follows the shared reader.
 */
export function createRedisPublisher(config: RpcPublisherConfig): RpcPublisher {
  const url = config.url || 'redis://127.0.0.1:6379'
  const retentionMs = config.retention * 1000
  const channels = new Map<string, RedisChannel>()
  let closed = false
  let outage: string | undefined

  const reportDown = (error: unknown) => {
    const reason = error instanceof Error ? error.message : String(error)
    if (outage === undefined) console.warn(`[nuxt-orpc] Redis publisher: ${reason}. Publishing fails with PUBLISHER_UNAVAILABLE; subscribers wait and resume when Redis is back.`)
    outage = reason
  }
  const reportUp = () => {
    if (outage !== undefined) console.info('[nuxt-orpc] Redis publisher: connected again.')
    outage = undefined
  }

  const connectionOptions: RedisOptions = {
    lazyConnect: true,
    connectionName: 'nuxt-orpc-publisher',
    connectTimeout: 5000,
  }
  const ioredis = import('ioredis')

  // Commands (publish, catch-up reads): reconnects by itself; while it is down, commands fail at once
  // instead of waiting in an offline queue, so a publishing procedure gets a prompt, typed error.
  const commandClient = ioredis.then(({ Redis }) => {
    const client = new Redis(url, {
      ...connectionOptions,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: 5000,
      retryStrategy: times => Math.min(100 * 2 ** times, 2000),
    })
    // An 'error' event without a listener would crash the process.
    client.on('error', reportDown)
    client.on('ready', reportUp)
    client.connect().catch(() => {})
    return client
  })
  commandClient.catch(error => console.error('[nuxt-orpc] Redis publisher: cannot load ioredis.', error))

  async function readyCommandClient(): Promise<Redis> {
    const client = await commandClient
    if (client.status === 'ready') return client
    if (closed || client.status === 'end') throw publisherUnavailable('closed')
    await new Promise<void>((resolve, reject) => {
      const onReady = () => {
        clearTimeout(timeout)
        resolve()
      }
      const timeout = setTimeout(() => {
        client.off('ready', onReady)
        reject(publisherUnavailable(outage ? `Redis: ${outage}` : `Redis is ${client.status}`))
      }, publishWaitMs)
      client.once('ready', onReady)
    })
    return client
  }

  /** Retries `task` with backoff while `alive()`: reads wait for Redis instead of failing. */
  async function retrying<T>(alive: () => boolean, task: () => Promise<T>): Promise<T | undefined> {
    for (let attempt = 0; alive(); attempt++) {
      try {
        return await task()
      }
      catch {
        await sleep(retryDelay(attempt))
      }
    }
    return undefined
  }

  // The shared reader. It gets a fresh connection after any failure (no reconnect, no resent commands): a
  // blocking XREAD resent after a reconnect would block the connection with stale cursors.
  let reader: { client: Redis, id: number } | undefined
  let readerBlocked = false
  let wakeReader: (() => void) | undefined

  async function openReader() {
    if (reader) return reader
    const { Redis } = await ioredis
    const client = new Redis(url, {
      ...connectionOptions,
      maxRetriesPerRequest: null,
      autoResendUnfulfilledCommands: false,
      retryStrategy: () => null,
    })
    client.on('error', reportDown)
    try {
      await client.connect()
      const id = await client.client('ID')
      reader = { client, id }
      return reader
    }
    catch (error) {
      client.disconnect()
      throw error
    }
  }

  /** Makes the reader pick up a channel that just got its cursor: CLIENT UNBLOCK ends its XREAD early. */
  function wake() {
    const wakeUp = wakeReader
    wakeReader = undefined
    wakeUp?.()
    if (readerBlocked && reader) {
      const readerId = reader.id
      commandClient.then(client => client.status === 'ready' && client.client('UNBLOCK', readerId)).catch(() => {})
    }
  }

  async function readLoop() {
    for (let attempt = 0; !closed;) {
      const tracked = [...channels.values()].filter(channel => channel.cursor !== undefined)
      if (!tracked.length) {
        await new Promise<void>((resolve) => {
          wakeReader = resolve
        })
        continue
      }
      try {
        const { client } = await openReader()
        readerBlocked = true
        const reply = await client.xread('COUNT', pageSize, 'BLOCK', readBlockMs, 'STREAMS', ...tracked.map(channel => channel.key), ...tracked.map(channel => channel.cursor!))
        readerBlocked = false
        attempt = 0
        reportUp()
        for (const [key, entries] of reply ?? []) {
          const channel = tracked.find(candidate => candidate.key === key)
          if (!channel || channels.get(key) !== channel) continue
          for (const [id, fields] of entries) {
            channel.cursor = id
            const event = decodeEntry(id, fields)
            if (event) for (const subscriber of channel.subscribers) subscriber.push(event)
          }
        }
      }
      catch (error) {
        readerBlocked = false
        if (closed) return
        reader?.client.disconnect()
        reader = undefined
        reportDown(error)
        await sleep(retryDelay(attempt++))
      }
    }
  }
  void readLoop()

  function channelOf(name: string): RedisChannel {
    const key = config.prefix + name
    const existing = channels.get(key)
    if (existing) return existing
    let setReady!: () => void
    const ready = new Promise<void>((resolve) => {
      setReady = resolve
    })
    const channel: RedisChannel = { key, cursor: undefined, ready, setReady, subscribers: new Set() }
    channels.set(key, channel)
    // The cursor starts at the newest entry: a subscriber gets what is published from now on.
    void retrying(() => !closed && channels.get(key) === channel, async () => {
      const client = await readyCommandClient()
      const [newest] = await client.xrevrange(key, '+', '-', 'COUNT', 1)
      channel.cursor = newest?.[0] ?? '0-0'
      channel.setReady()
      wake()
    })
    return channel
  }

  /** Reads what a resuming subscriber missed, after the shared reader's cursor is set (so nothing falls between). */
  async function catchUp(channel: RedisChannel, subscriber: Subscriber, after: string) {
    const alive = () => !closed && !subscriber.isEnded
    const ended = new Promise<void>(resolve => subscriber.onEnd(resolve))
    await Promise.race([channel.ready, ended])
    const missed: PublishedEvent[] = []
    let from = after
    for (let more = true; more && alive();) {
      const page = await retrying(alive, async () => (await readyCommandClient()).xrange(channel.key, `(${from}`, '+', 'COUNT', pageSize))
      for (const [id, fields] of page ?? []) {
        from = id
        const event = decodeEntry(id, fields)
        if (event) missed.push(event)
      }
      more = page?.length === pageSize
    }
    subscriber.finishCatchUp(missed)
  }

  return {
    async publish(name, payload) {
      assertPayload(payload)
      const data = encodePayload(payload)
      const client = await readyCommandClient()
      const key = config.prefix + name
      const transaction = client.multi().xadd(key, 'MAXLEN', '~', config.maxEventsPerChannel, '*', 'd', data)
      if (retentionMs > 0) transaction.xtrim(key, 'MINID', '~', `${Date.now() - retentionMs}-0`)
      // An idle channel's stream goes away once nothing in it could still be resumed from.
      transaction.pexpire(key, Math.max(retentionMs, 60_000))
      let results: Array<[error: Error | null, result: unknown]> | null
      try {
        results = await transaction.exec()
      }
      catch (error) {
        // ioredis's own wording for a dropped connection ("Stream isn't writeable...") means nothing to a caller.
        const reason = client.status === 'ready' && error instanceof Error ? error.message : `not connected (${client.status})`
        throw publisherUnavailable(`Redis: ${reason}`, error)
      }
      const [error, id] = results?.[0] ?? [new Error('the transaction was aborted'), undefined]
      if (error || typeof id !== 'string') throw publisherUnavailable(`Redis: ${error?.message ?? 'no id'}`, error)
      return { id }
    },

    subscribe(name, options = {}) {
      const resumeAfter = resumeIdOf(options, config.retention)
      const channel = channelOf(name)
      const subscriber = new Subscriber(config.maxBufferedEvents, resumeAfter)
      channel.subscribers.add(subscriber)
      subscriber.onEnd(() => {
        channel.subscribers.delete(subscriber)
        if (!channel.subscribers.size && channels.get(channel.key) === channel) channels.delete(channel.key)
      })
      if (resumeAfter !== undefined) {
        subscriber.startCatchUp()
        void catchUp(channel, subscriber, resumeAfter)
      }
      return subscriber.iterator(options.signal)
    },

    async close() {
      closed = true
      for (const channel of channels.values()) {
        for (const subscriber of channel.subscribers) subscriber.fail(publisherClosed())
      }
      channels.clear()
      wake()
      reader?.client.disconnect()
      reader = undefined
      const client = await commandClient.catch(() => undefined)
      await client?.quit().catch(() => client.disconnect())
    },
  }
}
