import type { CatchUpPage, PublishedEvent } from './core'
import { durableStorage, runsDurableObject } from '../transports/cloudflare'

/** An event as the memory driver retains it. */
export interface RetainedEvent extends PublishedEvent {
  publishedAt: number
}

/**
 * Where the memory driver keeps its retained events when memory does not last: a Cloudflare Durable Object,
 * which Cloudflare may evict (its memory gone) while clients are away and come back with their last event id.
 * Publishing answers once the event is stored; a subscriber that resumes reads what it missed from here, a
 * page at a time.
 */
export interface RetainedEventStore {
  /** Whether it can be used here and now: in the isolate that runs the Durable Object. */
  available: () => boolean
  /** Keeps `event` of `channel`; resolves once it is stored. */
  put: (channel: string, event: RetainedEvent) => Promise<void>
  /** The page of `channel`'s events after `after` (`0-0`: from the first), none older than `retentionMs`. */
  read: (channel: string, after: string, retentionMs: number) => Promise<CatchUpPage>
  /** Deletes `channel`'s oldest events past `maxEvents`, and those older than `retentionMs`. */
  trim: (channel: string, maxEvents: number, retentionMs: number) => Promise<void>
}

/** Events read per page, and keys deleted per call (Cloudflare's limit for one `delete`). */
const pageSize = 128
/** Most events one trim deletes: the rest goes at the next one. */
const trimLimit = 1024

// A channel's keys share a prefix that no other channel's keys start with (the name is URI-encoded, so it holds
// no `|`), and sort as their ids do (both parts zero-padded: an id part is at most 20 digits).
const keyPrefixOf = (channel: string) => `nuxt-orpc:event:${encodeURIComponent(channel)}|`
const keyOf = (channel: string, id: string) => {
  const [ms = '0', seq = '0'] = id.split('-')
  return `${keyPrefixOf(channel)}${ms.padStart(20, '0')}-${seq.padStart(20, '0')}`
}

async function deleteKeys(keys: string[]) {
  const store = durableStorage()
  for (let index = 0; index < keys.length; index += pageSize) await store.delete(keys.slice(index, index + pageSize))
}

/** Retained events in the Durable Object's storage: one write per publish, one list per page read. */
export const durableEventStore: RetainedEventStore = {
  available: runsDurableObject,
  async put(channel, event) {
    await durableStorage().put(keyOf(channel, event.id), event)
  },
  async read(channel, after, retentionMs) {
    // `start` is inclusive: a page and one more, the event at `after` itself skipped.
    const entries = await durableStorage().list({ prefix: keyPrefixOf(channel), start: keyOf(channel, after), limit: pageSize + 1 })
    const cutoff = Date.now() - retentionMs
    const events: PublishedEvent[] = []
    let last: string | undefined
    for (const value of entries.values()) {
      const event = value as RetainedEvent
      last = event.id
      if (event.id !== after && event.publishedAt >= cutoff) events.push({ id: event.id, payload: event.payload })
    }
    return { events, next: entries.size === pageSize + 1 ? last : undefined }
  },
  async trim(channel, maxEvents, retentionMs) {
    const store = durableStorage()
    const prefix = keyPrefixOf(channel)
    // The newest key that goes: the one just past `maxEvents`, or the last older than the retention.
    const newest = await store.list({ prefix, reverse: true, limit: maxEvents + 1 })
    const pastCount = newest.size > maxEvents ? [...newest.keys()].at(-1)! : undefined
    const pastAge = keyOf(channel, `${Date.now() - retentionMs}-0`)
    const end = pastCount !== undefined && pastCount >= pastAge ? `${pastCount}\u0000` : pastAge
    const old = await store.list({ prefix, end, limit: trimLimit })
    await deleteKeys([...old.keys()])
  },
}
