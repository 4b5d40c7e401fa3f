// Built on ioredis directly rather than on oRPC's own publisher: @orpc/experimental-publisher (memory and
// ioredis drivers) is published up to 1.14.7 and pins @orpc/* 1.14.7, so installing it next to the 1.16.1
// this package pins would put a second copy of oRPC in the tree. ioredis is pinned to the version nitropack
// already depends on, so apps keep one copy of it too.
import type { Redis, RedisOptions } from 'ioredis'
import { StandardRPCJsonSerializer } from '@orpc/client/standard'
import type { CatchUpReader, PublishedEvent, RpcPublisher, RpcPublisherConfig } from './core'
import { afterPendingIo, assertChannelName, assertPayload, publisherClosed, publisherUnavailable, resumeIdOf, Subscriber } from './core'

/** How long a publish waits for a Redis connection that is (re)connecting before it rejects. */
const publishWaitMs = 1000
/** XREAD blocks at most this long, so a half-open connection or a missed wake-up costs at most this. */
const readBlockMs = 5000
/** Entries one XREAD returns at most. */
const pageSize = 500
/**
 * Entries one catch-up XRANGE returns at most. A resuming subscriber holds at most one such page, so this is
 * smaller than the shared reader's page: there is one catch-up per resuming subscriber, not one per process.
 */
export const catchUpPageSize = 100

interface RedisChannel {
  key: string
  /** Id of the last entry the shared reader has delivered; undefined until read from Redis. */
  cursor: string | undefined
  /** Resolves once `cursor` is set. */
  ready: Promise<void>
  setReady: () => void
  subscribers: Set<Subscriber>
  /** Events decoded for catch-ups, by id, while any subscriber still holds them. */
  decoded: Map<string, WeakRef<PublishedEvent>>
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

// Forgets a shared decoded event once no subscriber holds it.
const decodedEvents = new FinalizationRegistry<{ channel: RedisChannel, id: string }>(({ channel, id }) => {
  if (!channel.decoded.get(id)?.deref()) channel.decoded.delete(id)
})

/** Decodes a catch-up entry, or reuses the copy another resuming subscriber of the channel still holds. */
function decodeShared(channel: RedisChannel, id: string, fields: string[]): PublishedEvent | undefined {
  const shared = channel.decoded.get(id)?.deref()
  if (shared) return shared
  const event = decodeEntry(id, fields)
  if (event) {
    channel.decoded.set(id, new WeakRef(event))
    decodedEvents.register(event, { channel, id })
  }
  return event
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
  // Redis's answer to a failed publish stays in the server log: callers get a generic PUBLISHER_UNAVAILABLE.
  // Logged once per distinct error until a publish succeeds, so a failing Redis does not log every publish.
  let publishError: string | undefined
  const reportPublishError = (error: unknown) => {
    const reason = error instanceof Error ? error.message : String(error)
    if (reason !== publishError) console.error(`[nuxt-orpc] Redis publisher: a publish failed (PUBLISHER_UNAVAILABLE): ${reason}`)
    publishError = reason
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
    if (closed || client.status === 'end') throw publisherUnavailable()
    await new Promise<void>((resolve, reject) => {
      const onReady = () => {
        clearTimeout(timeout)
        resolve()
      }
      const timeout = setTimeout(() => {
        client.off('ready', onReady)
        // What went wrong is logged by reportDown when the connection fails.
        reject(publisherUnavailable())
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
          const events: PublishedEvent[] = []
          for (const [id, fields] of entries) {
            channel.cursor = id
            const event = decodeEntry(id, fields)
            if (event) events.push(event)
          }
          // The subscribers of now, written to once the I/O already here is handled: a publish from this
          // instance answers before its fan-out (its XADD's reply and this read arrive together).
          const subscribers = [...channel.subscribers]
          if (events.length && subscribers.length) {
            afterPendingIo(() => {
              for (const event of events) {
                for (const subscriber of subscribers) subscriber.push(event)
              }
            })
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
    const channel: RedisChannel = { key, cursor: undefined, ready, setReady, subscribers: new Set(), decoded: new Map() }
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

  /**
   * Reads what a resuming subscriber missed, a page at a time as it pulls. Reading starts once the shared
   * reader's cursor is set, so nothing falls between the catch-up and live delivery.
   */
  function catchUpReader(channel: RedisChannel, subscriber: Subscriber): CatchUpReader {
    const alive = () => !closed && !subscriber.isEnded
    const ended = new Promise<void>(resolve => subscriber.onEnd(resolve))
    return async (after) => {
      await Promise.race([channel.ready, ended])
      const entries = await retrying(alive, async () => (await readyCommandClient()).xrange(channel.key, `(${after}`, '+', 'COUNT', catchUpPageSize))
      if (!entries || !alive()) return undefined
      const events: PublishedEvent[] = []
      for (const [id, fields] of entries) {
        const event = decodeShared(channel, id, fields)
        if (event) events.push(event)
      }
      return { events, next: entries.length === catchUpPageSize ? entries.at(-1)![0] : undefined }
    }
  }

  return {
    async publish(name, payload) {
      assertChannelName(name, config.maxChannelNameLength)
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
        if (client.status === 'ready') reportPublishError(error)
        else reportDown(error)
        throw publisherUnavailable()
      }
      const [error, id] = results?.[0] ?? [new Error('the transaction was aborted'), undefined]
      if (error || typeof id !== 'string') {
        reportPublishError(error ?? new Error('XADD answered without an id'))
        throw publisherUnavailable()
      }
      publishError = undefined
      return { id }
    },

    subscribe(name, options = {}) {
      assertChannelName(name, config.maxChannelNameLength)
      const resumeAfter = resumeIdOf(options, config.retention)
      const channel = channelOf(name)
      const subscriber = new Subscriber(config.maxBufferedEvents, resumeAfter)
      channel.subscribers.add(subscriber)
      subscriber.onEnd(() => {
        channel.subscribers.delete(subscriber)
        if (!channel.subscribers.size && channels.get(channel.key) === channel) channels.delete(channel.key)
      })
      if (resumeAfter !== undefined) subscriber.startPagedCatchUp(catchUpReader(channel, subscriber), resumeAfter)
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
