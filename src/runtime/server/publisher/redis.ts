// Built on ioredis directly rather than on oRPC's own publisher: @orpc/experimental-publisher (memory and
// ioredis drivers) is published up to 1.14.7 and pins @orpc/* 1.14.7, so installing it next to the 1.16.1
// this package pins would put a second copy of oRPC in the tree. ioredis is pinned to the version nitropack
// already depends on, so apps keep one copy of it too.
import type { Redis, RedisOptions } from 'ioredis'
import { StandardRPCJsonSerializer } from '@orpc/client/standard'
import type { CatchUpReader, PublishedEvent, RpcPublisher, RpcPublisherConfig } from './core'
import { afterPendingIo, assertChannelName, assertPayload, compareEventIds, publisherClosed, publisherUnavailable, resumeIdOf, setLiveWhen, Subscriber } from './core'

/** How long a publish waits for a Redis connection that is (re)connecting before it rejects. */
const publishWaitMs = 1000
/**
 * How often the notification connection is pinged: a half-open one (no error, no messages) is replaced within
 * about twice this, and every followed channel is then read once, so no event is left behind.
 */
const notifyPingMs = 5000
/** Entries one XREAD returns per channel at most; a channel that had more is read again at once. */
const pageSize = 500
/** Channels one XREAD names at most. */
const keysPerRead = 256
/**
 * Entries one catch-up XRANGE returns at most. A resuming subscriber holds at most one such page, so this is
 * smaller than the shared reader's page: there is one catch-up per resuming subscriber, not one per process.
 */
export const catchUpPageSize = 100

interface RedisChannel {
  key: string
  /** Id of the last entry the reader has delivered; undefined until read from Redis. */
  cursor: string | undefined
  /** Resolves once `cursor` is set. */
  ready: Promise<void>
  setReady: () => void
  subscribers: Set<Subscriber>
  /** Events decoded for catch-ups, by id, while any subscriber still holds them. */
  decoded: Map<string, WeakRef<PublishedEvent>>
  /** Whether a publish of this instance reads the channel in its transaction now (one at a time). */
  publishReading: boolean
}

const serializer = new StandardRPCJsonSerializer()

/** Stream entries store the payload as oRPC's JSON serialization, so Dates, Maps, BigInts... survive. */
export function encodePayload(payload: object): string {
  const [json, meta] = serializer.serialize(payload)
  return JSON.stringify(meta.length ? { json, meta } : { json })
}

/** The payload `encodePayload` encoded; throws on anything else. */
export function decodePayload(data: string): object {
  const { json, meta } = JSON.parse(data) as { json: unknown, meta?: [] }
  return serializer.deserialize(json, meta ?? []) as object
}

/**
 * How other parts of nuxt-orpc (presence) share the Redis publisher's command connection: a function that
 * resolves with it once it is ready, or rejects with PUBLISHER_UNAVAILABLE.
 */
export const redisCommandClientOf = Symbol('nuxt-orpc Redis command client')

function decodeEntry(id: string, fields: string[]): PublishedEvent | undefined {
  const data = fields[fields.indexOf('d') + 1]
  try {
    return { id, payload: decodePayload(data!) }
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
 * window, and a PUBLISH of the stream's key on Redis pub/sub, in one transaction; the stream id is the event
 * id. Each instance subscribes (one connection) to the keys of the channels its subscribers follow, added and
 * dropped one at a time, and reads a channel (XREAD from its cursor, batched across the channels notified
 * together) only when a notification says it has something new: many quiet channels cost nothing per event.
 * The stream, not the notification, is what is delivered, so a lost notification only delays: a reconnected
 * notification connection reads every channel once. Each channel's cursor means a dropped Redis connection or
 * a Redis restart loses nothing still in the stream. A resuming subscriber reads what it missed with XRANGE,
 * then follows the reader. The entries read are fanned out in process, decoded once.
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

  // The channels with something new to read, and the one read under way at a time.
  const dirty = new Set<RedisChannel>()
  let reading = false

  /** Marks a channel as having new entries (a notification, or everything after a reconnect) and reads. */
  function markDirty(channel: RedisChannel) {
    dirty.add(channel)
    if (!reading && !closed) void readDirty()
  }

  /**
   * Reads the notified channels from their cursors, a batch of keys per XREAD, until none is left, and fans the
   * entries out. One read at a time, so a channel's entries are delivered in order. A failed read keeps its
   * channels for the next attempt, after a backoff.
   */
  async function readDirty() {
    reading = true
    try {
      for (let attempt = 0; !closed;) {
        const batch: RedisChannel[] = []
        for (const channel of dirty) {
          if (batch.length === keysPerRead) break
          // Not yet followed (its cursor is still being read): read once it is ready.
          if (channel.cursor === undefined) continue
          dirty.delete(channel)
          if (channels.get(channel.key) === channel) batch.push(channel)
        }
        if (!batch.length) return
        try {
          const client = await readyCommandClient()
          const reply = await client.xread('COUNT', pageSize, 'STREAMS', ...batch.map(channel => channel.key), ...batch.map(channel => channel.cursor!))
          attempt = 0
          for (const [key, entries] of reply ?? []) {
            const channel = channels.get(key)
            if (!channel || !batch.includes(channel)) continue
            deliver(channel, entries)
            // A full page: there may be more.
            if (entries.length === pageSize) dirty.add(channel)
          }
        }
        catch (error) {
          for (const channel of batch) dirty.add(channel)
          reportDown(error)
          await sleep(retryDelay(attempt++))
        }
      }
    }
    finally {
      reading = false
    }
  }

  /** Moves the channel's cursor past `entries` and hands them to its subscribers of now, after pending I/O. */
  function deliver(channel: RedisChannel, entries: Array<[id: string, fields: string[]]>) {
    const events: PublishedEvent[] = []
    for (const [id, fields] of entries) {
      // Two reads may overlap (the reader's and a local publish's): what one delivered, the other skips.
      if (channel.cursor !== undefined && compareEventIds(id, channel.cursor) <= 0) continue
      channel.cursor = id
      const event = decodeEntry(id, fields)
      if (event) events.push(event)
    }
    // Written once the I/O already here is handled: a publish from this instance answers before its fan-out.
    const subscribers = [...channel.subscribers]
    if (!events.length || !subscribers.length) return
    // Subscriber by subscriber, each with the whole burst: a socket's frames leave in one write, and the last
    // subscribers get a burst's first event after the others' whole bursts (with one event, as event by event).
    afterPendingIo(() => {
      for (const subscriber of subscribers) subscriber.pushAll(events)
    })
  }

  // The notification connection: pub/sub messages name the key of a stream that has a new entry. ioredis
  // reconnects it and subscribes it again to every key; what was published meanwhile is read then.
  const notifications = ioredis.then(({ Redis }) => {
    const client = new Redis(url, { ...connectionOptions, retryStrategy: times => Math.min(100 * 2 ** times, 2000) })
    client.on('error', reportDown)
    client.on('message', (key: string) => {
      const channel = channels.get(key)
      if (channel) markDirty(channel)
    })
    client.on('ready', () => {
      reportUp()
      if (!channels.size) return
      // ioredis subscribes again on 'ready' without waiting for Redis's answer: the PONG comes after it, and
      // only then does reading every channel once cover what was published while the connection was down.
      client.ping().then(() => {
        if (!closed) for (const channel of channels.values()) markDirty(channel)
      }, () => {})
    })
    client.connect().catch(() => {})
    // A connection that went silent without an error (half-open) is replaced once a ping goes unanswered for a
    // whole interval.
    let pingTimeout: ReturnType<typeof setTimeout> | undefined
    const pinger = setInterval(() => {
      if (client.status !== 'ready' || pingTimeout) return
      pingTimeout = setTimeout(() => {
        pingTimeout = undefined
        if (!closed) client.disconnect(true)
      }, notifyPingMs)
      ;(pingTimeout as { unref?: () => void }).unref?.()
      const settled = () => {
        clearTimeout(pingTimeout)
        pingTimeout = undefined
      }
      client.ping().then(settled, settled)
    }, notifyPingMs)
    ;(pinger as { unref?: () => void }).unref?.()
    client.once('end', () => {
      clearInterval(pinger)
      clearTimeout(pingTimeout)
    })
    return client
  })
  notifications.catch(() => {})

  /** The notification connection once it is ready (one wait shared by every channel followed meanwhile). */
  let notificationsReady: Promise<Redis> | undefined
  async function readyNotifications(): Promise<Redis> {
    const notifier = await notifications
    if (notifier.status === 'ready') return notifier
    notificationsReady ??= new Promise<Redis>(resolve => notifier.once('ready', () => {
      notificationsReady = undefined
      resolve(notifier)
    }))
    return notificationsReady
  }

  function channelOf(name: string): RedisChannel {
    const key = config.prefix + name
    const existing = channels.get(key)
    if (existing) return existing
    let setReady!: () => void
    const ready = new Promise<void>((resolve) => {
      setReady = resolve
    })
    const channel: RedisChannel = { key, cursor: undefined, ready, setReady, subscribers: new Set(), decoded: new Map(), publishReading: false }
    channels.set(key, channel)
    // Notified first, then the cursor set at the newest entry: a subscriber gets what is published from now on,
    // and nothing published after the cursor goes unnoticed.
    void retrying(() => !closed && channels.get(key) === channel, async () => {
      // Only once it is ready: ioredis 5 writes a SUBSCRIBE while the connection is still being set up, and its
      // own ready check (INFO) then fails in subscriber mode and drops the connection (redis/ioredis#2037, fixed
      // in ioredis 6). Seen here: a presence stream opened right after boot missed the changes of that window.
      const notifier = await readyNotifications()
      if (channels.get(key) !== channel) return
      await notifier.subscribe(key)
      const client = await readyCommandClient()
      const [newest] = await client.xrevrange(key, '+', '-', 'COUNT', 1)
      if (channels.get(key) !== channel) return
      channel.cursor = newest?.[0] ?? '0-0'
      channel.setReady()
      markDirty(channel)
    })
    return channel
  }

  /**
   * Reads what a resuming subscriber missed, a page at a time as it pulls. Reading starts once `followed` (the
   * shared reader's cursor is set, or the subscriber ended), so nothing falls between the catch-up and live
   * delivery.
   */
  function catchUpReader(channel: RedisChannel, subscriber: Subscriber, followed: Promise<void>): CatchUpReader {
    const alive = () => !closed && !subscriber.isEnded
    return async (after) => {
      await followed
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

  const publisher: RpcPublisher & { [redisCommandClientOf]: () => Promise<Redis> } = {
    [redisCommandClientOf]: readyCommandClient,

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
      // The instances following the channel read it now.
      transaction.publish(key, '')
      // This one, when it follows the channel, reads it in the same transaction: its subscribers get the event
      // with the publish's answer, in the stream's order, without waiting for the notification's read. One such
      // read per channel at a time: publishes in a burst all carry the same cursor, and would each read what
      // the others read. (The notification's read still follows, and finds what is left.)
      const followed = channels.get(key)
      const readFrom = followed && !followed.publishReading ? followed.cursor : undefined
      if (readFrom !== undefined) {
        transaction.xread('COUNT', pageSize, 'STREAMS', key, readFrom)
        followed!.publishReading = true
      }
      let results: Array<[error: Error | null, result: unknown]> | null
      try {
        results = await transaction.exec()
      }
      catch (error) {
        if (client.status === 'ready') reportPublishError(error)
        else reportDown(error)
        throw publisherUnavailable()
      }
      finally {
        if (readFrom !== undefined) followed!.publishReading = false
      }
      const [error, id] = results?.[0] ?? [new Error('the transaction was aborted'), undefined]
      if (error || typeof id !== 'string') {
        reportPublishError(error ?? new Error('XADD answered without an id'))
        throw publisherUnavailable()
      }
      publishError = undefined
      if (readFrom !== undefined && channels.get(key) === followed) {
        const [readError, reply] = results!.at(-1)!
        const entries = (reply as Array<[key: string, entries: Array<[id: string, fields: string[]]>]> | null)?.[0]?.[1]
        if (!readError && entries) deliver(followed!, entries)
      }
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
        if (!channel.subscribers.size && channels.get(channel.key) === channel) {
          channels.delete(channel.key)
          dirty.delete(channel)
          if (!closed) void notifications.then(client => client.unsubscribe(channel.key)).catch(() => {})
        }
      })
      // The channel is followed (its cursor set), or the subscription ended first: nothing waits forever on it.
      const followed = Promise.race([channel.ready, new Promise<void>(resolve => subscriber.onEnd(resolve))])
      if (resumeAfter !== undefined) subscriber.startPagedCatchUp(catchUpReader(channel, subscriber, followed), resumeAfter)
      return setLiveWhen(subscriber.iterator<object>(options.signal), followed)
    },

    async close() {
      closed = true
      for (const channel of channels.values()) {
        for (const subscriber of channel.subscribers) subscriber.fail(publisherClosed())
      }
      channels.clear()
      dirty.clear()
      const notifier = await notifications.catch(() => undefined)
      notifier?.disconnect()
      const client = await commandClient.catch(() => undefined)
      await client?.quit().catch(() => client.disconnect())
    },
  }
  return publisher
}
