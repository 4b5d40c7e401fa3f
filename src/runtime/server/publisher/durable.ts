import type { CatchUpPage, PublishedEvent } from './core'
import { durableObjectState, isCloudflareWorker } from '../transports/cloudflare'

/** An event as the memory driver retains it. */
export interface RetainedEvent extends PublishedEvent {
  publishedAt: number
}

/**
 * Where the memory driver also keeps its retained events when memory does not last: a Cloudflare Durable
 * Object, which Cloudflare may evict (its memory gone) while clients are away and come back with their last
 * event id. Publishing answers once the event is stored; a subscriber that resumes reads what it missed from
 * here, a page at a time.
 */
export interface RetainedEventStore {
  /** Keeps `event` of `channel`; resolves once it is stored. */
  put: (channel: string, event: RetainedEvent) => Promise<void>
  /** The page of `channel`'s events after `after` (`0-0`: from the first). */
  read: (channel: string, after: string, retentionMs: number) => Promise<CatchUpPage>
  /** Deletes `channel`'s events past `maxEvents` (the oldest) or older than `retentionMs`. */
  trim: (channel: string, maxEvents: number, retentionMs: number) => Promise<void>
}

const pageSize = 128

/** Keys sort as ids do: both parts zero-padded (an id part is at most 20 digits). */
const keyPrefixOf = (channel: string) => `nuxt-orpc:event:${channel}\u0000`
const keyOf = (channel: string, id: string) => {
  const [ms = '0', seq = '0'] = id.split('-')
  return `${keyPrefixOf(channel)}${ms.padStart(20, '0')}-${seq.padStart(20, '0')}`
}

/** Retained events in the Durable Object's storage: one write per publish, one list per page read. */
export const durableEventStore: RetainedEventStore | undefined = isCloudflareWorker
  ? {
      async put(channel, event) {
        await (await durableObjectState()).storage.put(keyOf(channel, event.id), event)
      },
      async read(channel, after, retentionMs) {
        const storage = (await durableObjectState()).storage
        // `start` is inclusive: one more than a page, the event at `after` itself skipped.
        const entries = await storage.list({ prefix: keyPrefixOf(channel), start: keyOf(channel, after), limit: pageSize + 1 })
        const cutoff = Date.now() - retentionMs
        const events: PublishedEvent[] = []
        let last: string | undefined
        let count = 0
        for (const value of entries.values()) {
          const event = value as RetainedEvent
          count++
          last = event.id
          if (event.id === after || event.publishedAt < cutoff) continue
          events.push({ id: event.id, payload: event.payload })
        }
        return { events, next: count === pageSize + 1 ? last : undefined }
      },
      async trim(channel, maxEvents, retentionMs) {
        const storage = (await durableObjectState()).storage
        const prefix = keyPrefixOf(channel)
        const old = await storage.list({ prefix, end: keyOf(channel, `${Date.now() - retentionMs}-0`) })
        const newest = await storage.list({ prefix, reverse: true, limit: maxEvents + pageSize })
        const excess = [...newest.keys()].slice(maxEvents)
        const keys = [...new Set([...old.keys(), ...excess])]
        for (let index = 0; index < keys.length; index += pageSize) await storage.delete(keys.slice(index, index + pageSize))
      },
    }
  : undefined
