import { getEventMeta, ORPCError, withEventMeta } from '@orpc/server'
import type { RpcPresenceEvent, RpcPresenceMember } from '../../shared/presence'
import type { RpcPublisher, RpcPublisherConfig } from '../publisher/core'
import { assertChannelName, assertPayload, publisherUnavailable, subscriptionLive } from '../publisher/core'

export type { RpcPresenceEvent, RpcPresenceMember }

export interface RpcPresenceJoinOptions {
  /**
   * The member leaves when it aborts: pass the procedure's `signal`. A streaming procedure's signal aborts
   * when the client stops the stream or its connection closes, so a member is present while its stream is open.
   */
  signal: AbortSignal | undefined
  /**
   * What identifies the member, such as a user id: joins with the same key (two tabs, two devices) are one
   * member with several connections. Without it each join is a member of its own.
   */
  key?: string
}

/** One join, as `join` returns it. */
export interface RpcPresenceJoin<T = object> {
  readonly key: string
  /** Replaces the member's data (every connection of the key shares it); others get an `update` event. */
  update: (data: T) => Promise<void>
  /** Leaves now, before the signal aborts. */
  leave: () => Promise<void>
}

export interface RpcPresenceSubscribeOptions {
  /** Ends the stream when aborted: pass the procedure's `signal`. */
  signal?: AbortSignal
  /**
   * Accepted for symmetry with `usePublisher().subscribe`, and ignored: every presence stream starts with a
   * `sync` of who is there now, a resumed one too (what changed while it was away is in it).
   */
  lastEventId?: string
}

/**
 * Who is in a channel, across instances when the publisher's driver is `redis`. Typed by the
 * `RpcPresenceChannels` interface (channel name to member data).
 */
export interface RpcPresence<Channels extends object = Record<string, object>> {
  /** Joins the calling connection to `channel` with `data`, until `options.signal` aborts or `leave()`. */
  join: <K extends keyof Channels & string>(channel: K, data: Channels[K], options: RpcPresenceJoinOptions) => Promise<RpcPresenceJoin<Channels[K]>>
  /** The members present now, in the order they joined. */
  list: <K extends keyof Channels & string>(channel: K) => Promise<RpcPresenceMember<Channels[K]>[]>
  /** A `sync` of the members present, then every join, update and leave; a resumed stream syncs again. */
  subscribe: <K extends keyof Channels & string>(channel: K, options?: RpcPresenceSubscribeOptions) => AsyncGenerator<RpcPresenceEvent<Channels[K]>, void, unknown>
  /** Leaves every join of this instance and stops refreshing. */
  close: () => Promise<void>
}

/** A join of this instance, as it refreshes it: made again if the store lost it (a Redis outage, a restart). */
export interface OwnJoin {
  entry: string
  key: string
  data: object
}

/** A change of a channel's members, as a store makes it; `version` increases per channel with every change. */
export interface PresenceChange {
  type: 'join' | 'update' | 'leave'
  key: string
  data: object
  connections: number
  version: number
}

/** The members of a channel at `version`, and the joins that expired on the way (each a `leave` to publish). */
export interface PresenceSnapshot {
  members: RpcPresenceMember[]
  version: number
  expired: PresenceChange[]
}

/**
 * Where a driver keeps who is present. Joins are identified by `entry`, unique per instance and join. Each
 * operation answers with the changes it made, in order: the store's own removal of expired joins first.
 */
export interface PresenceStore {
  join: (channel: string, entry: string, key: string, data: object) => Promise<PresenceChange[]>
  update: (channel: string, entry: string, data: object) => Promise<PresenceChange[]>
  leave: (channel: string, entry: string) => Promise<PresenceChange[]>
  list: (channel: string) => Promise<PresenceSnapshot>
  /**
   * Keeps this instance's joins in `channel` alive for another time to live, and removes the joins of
   * instances that stopped doing so; returns the changes that removal made. Undefined: the store has no
   * time to live (one process: its joins end with it).
   */
  refresh?: (channel: string, joins: OwnJoin[]) => Promise<PresenceChange[]>
  close: () => Promise<void>
}

const eventsPrefix = '~presence:'

/** The publisher channel a presence channel's changes go through: a name `publish` would not be asked for. */
export const presenceEventsChannel = (channel: string) => eventsPrefix + channel

/**
 * How long (µs of versions) a change may arrive after a newer one of another member; a stream forgets what it
 * gave of members older than that (its skip list stays bounded by the members that changed in that time).
 */
const lateChangeWindow = 60_000_000

/** The payload of a change on the publisher channel. */
interface PublishedChange {
  type: PresenceChange['type']
  member: RpcPresenceMember
  /** The change's version: a stream skips a change older than what it has seen of the member. */
  version: number
}

/**
 * The store-independent half: joins tied to signals, changes published through the publisher (so they cross
 * instances as its events do, with event ids), streams that start with a sync, and the refresh loop where the
 * store has a time to live.
 */
export function createPresence(publisher: RpcPublisher, store: PresenceStore, config: Pick<RpcPublisherConfig, 'presenceTtl' | 'maxChannelNameLength'>): RpcPresence {
  const instance = randomId()
  let joins = 0
  let closed = false
  /** This instance's joins, per channel: what it refreshes, and leaves on close. */
  const ownJoins = new Map<string, Map<string, OwnJoin & { leave: () => Promise<void> }>>()
  /** Channels this instance streams the changes of, with how many streams: it removes their expired joins. */
  const watched = new Map<string, number>()
  let timer: ReturnType<typeof setInterval> | undefined
  // Its changes go through the publisher channel `~presence:<name>`, which must fit the publisher's limit too.
  const maxNameLength = config.maxChannelNameLength - eventsPrefix.length

  const publish = async (channel: string, changes: PresenceChange[]) => {
    for (const change of changes) {
      const payload: PublishedChange = { type: change.type, member: { key: change.key, data: change.data, connections: change.connections }, version: change.version }
      await publisher.publish(presenceEventsChannel(channel), payload)
    }
  }

  const refreshAll = async () => {
    const refresh = store.refresh!
    const channels = new Set([...ownJoins.keys(), ...watched.keys()])
    await Promise.all([...channels].map(async (channel) => {
      try {
        await publish(channel, await refresh(channel, [...ownJoins.get(channel)?.values() ?? []]))
      }
      catch {
        // Redis is down: the publisher already logs it. The joins outlive a short outage (their time to live
        // is three refreshes long), and the next refresh goes on.
      }
    }))
  }

  // The refresh loop runs while this instance has joins or streams, and only where the store has a time to
  // live: the memory driver sets no timer (a Durable Object with a timer pending cannot hibernate).
  const updateTimer = () => {
    const needed = !!store.refresh && !closed && (ownJoins.size > 0 || watched.size > 0)
    if (needed && !timer) {
      timer = setInterval(() => void refreshAll(), config.presenceTtl * 1000 / 3)
      ;(timer as { unref?: () => void }).unref?.()
    }
    else if (!needed && timer) {
      clearInterval(timer)
      timer = undefined
    }
  }

  const storeCall = async <T>(call: () => Promise<T>): Promise<T> => {
    try {
      return await call()
    }
    catch (error) {
      if (error instanceof ORPCError) throw error
      console.error('[nuxt-orpc] Presence: the store failed:', error)
      throw publisherUnavailable()
    }
  }

  return {
    async join(channel, data, { signal, key }) {
      assertChannelName(channel, maxNameLength)
      assertPayload(data)
      if (closed) throw new ORPCError('SERVICE_UNAVAILABLE', { message: 'Presence is closed (the server is shutting down).' })
      if (!(signal instanceof AbortSignal)) {
        // oRPC types a procedure's signal as optional: an in-process call (SSR, createRouterClient) has none
        // unless its caller passes one, and a member without one would never leave.
        throw new TypeError('[nuxt-orpc] usePresence().join needs the procedure\'s signal (the member leaves when it aborts); this call has none.')
      }
      if (key !== undefined && (typeof key !== 'string' || key.length > config.maxChannelNameLength)) {
        throw new TypeError(`[nuxt-orpc] A presence key is a string of at most ${config.maxChannelNameLength} characters.`)
      }
      signal.throwIfAborted()
      const entry = `${instance}:${++joins}`
      const memberKey = key ?? entry

      let left: Promise<void> | undefined
      const leave = () => {
        left ??= (async () => {
          signal.removeEventListener('abort', onAbort)
          const channelJoins = ownJoins.get(channel)
          channelJoins?.delete(entry)
          if (channelJoins && !channelJoins.size) ownJoins.delete(channel)
          updateTimer()
          await publish(channel, await storeCall(() => store.leave(channel, entry)))
        })()
        return left
      }
      const onAbort = () => {
        // Nobody waits on a leave made by the signal: a failure leaves the join to its time to live.
        leave().catch(() => {})
      }
      // Registered before the store has it: a close() meanwhile makes it leave too.
      let channelJoins = ownJoins.get(channel)
      if (!channelJoins) ownJoins.set(channel, channelJoins = new Map())
      const own = { entry, key: memberKey, data: data as object, leave }
      channelJoins.set(entry, own)
      updateTimer()
      try {
        await publish(channel, await storeCall(() => store.join(channel, entry, memberKey, data)))
      }
      catch (error) {
        // Not joined, or joined without the others hearing of it: taken out again (or left to its time to live).
        leave().catch(() => {})
        throw error
      }
      signal.addEventListener('abort', onAbort, { once: true })
      // Aborted while joining: leave at once.
      if (signal.aborted) onAbort()

      return {
        key: memberKey,
        async update(next) {
          assertPayload(next)
          if (left) throw new ORPCError('BAD_REQUEST', { message: 'This presence join has left; join again.' })
          own.data = next
          await publish(channel, await storeCall(() => store.update(channel, entry, next)))
        },
        leave,
      }
    },

    async list(channel) {
      assertChannelName(channel, maxNameLength)
      const snapshot = await storeCall(() => store.list(channel))
      await publish(channel, snapshot.expired)
      return snapshot.members as never
    },

    subscribe(channel, { signal } = {}) {
      assertChannelName(channel, maxNameLength)
      // Presence is state: every stream, a resumed one too, starts with a sync of who is there now, then the
      // changes. (Replaying changes after a `lastEventId` would miss what no change recorded: joins that expired
      // during a Redis outage, members a restarted process or a woken Durable Object forgot.) Subscribed
      // before the snapshot is read, so no change falls between the two; changes the snapshot already holds
      // (an older version) are skipped.
      const changes = publisher.subscribe(presenceEventsChannel(channel), { signal })
      return (async function* () {
        watched.set(channel, (watched.get(channel) ?? 0) + 1)
        updateTimer()
        try {
          /** Changes at or below it are in what the stream has already given. */
          let floor = 0
          /** The newest version given per member key: instances publish in parallel, so a change may arrive late. */
          const seen = new Map<string, number>()
          // Read once the stream gets every change from now on: a change made before is in the snapshot.
          await subscriptionLive(changes)
          const snapshot = await storeCall(() => store.list(channel))
          await publish(channel, snapshot.expired)
          floor = snapshot.version
          yield { type: 'sync' as const, members: snapshot.members }
          for await (const published of changes) {
            const change = published as unknown as PublishedChange
            if (change.version <= floor || change.version <= (seen.get(change.member.key) ?? 0)) continue
            seen.set(change.member.key, change.version)
            if (change.version - lateChangeWindow > floor) {
              floor = change.version - lateChangeWindow
              for (const [key, version] of seen) if (version <= floor) seen.delete(key)
            }
            const id = getEventMeta(published)?.id
            const event = { type: change.type, member: change.member }
            yield (id ? withEventMeta(event, { id }) : event)
          }
        }
        finally {
          const count = (watched.get(channel) ?? 1) - 1
          if (count > 0) watched.set(channel, count)
          else watched.delete(channel)
          updateTimer()
          await changes.return?.()
        }
      })() as never
    },

    async close() {
      closed = true
      updateTimer()
      const leaves = [...ownJoins.values()].flatMap(channelJoins => [...channelJoins.values()])
      await Promise.allSettled(leaves.map(own => own.leave()))
      await store.close()
    },
  } satisfies RpcPresence as RpcPresence
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8))
  return Array.from(bytes, byte => byte.toString(16).padStart(2, '0')).join('')
}

/** Versions that keep increasing across restarts: microseconds of the clock, one more than the last at least. */
export function createVersionClock(now: () => number = Date.now) {
  let last = 0
  return () => {
    last = Math.max(now() * 1000, last + 1)
    return last
  }
}
