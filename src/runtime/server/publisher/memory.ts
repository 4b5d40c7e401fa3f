import type { RpcPublisher, RpcPublisherConfig } from './core'
import { onDurableObjectWake } from '../transports/cloudflare'
import { afterPendingIo, assertChannelName, assertPayload, createEventIdGenerator, publisherClosed, resumeIdOf, Subscriber } from './core'
import type { RetainedEvent, RetainedEventStore } from './durable'
import { durableEventStore } from './durable'

export interface MemoryChannel {
  retained: RetainedEvent[]
  subscribers: Set<Subscriber>
}

/**
 * The one-process driver: events go straight to this process's subscribers, and the last events of each
 * channel stay (bounded by count and age) for subscribers that resume with `lastEventId`: in memory, or in
 * `store` where memory does not last (a Cloudflare Durable Object; see `durableEventStore`).
 * `channels` is the channel table, passed in only by tests that check what it keeps.
 */
export function createMemoryPublisher(config: RpcPublisherConfig, channels = new Map<string, MemoryChannel>(), store: RetainedEventStore | undefined = durableEventStore): RpcPublisher {
  const nextId = createEventIdGenerator()
  const retentionMs = config.retention * 1000
  // Retained in the store where it can be used (the isolate of the Durable Object), else in memory.
  const retainingStore = () => retentionMs > 0 && store?.available() ? store : undefined
  /** The last write to the store: the next one waits for it. */
  let storing = Promise.resolve()
  /** When the store was last trimmed, per channel (at most once a sweep interval). */
  const storeTrimmedAt = new Map<string, number>()

  const channelOf = (name: string) => {
    let channel = channels.get(name)
    if (!channel) channels.set(name, channel = { retained: [], subscribers: new Set() })
    return channel
  }

  // Channel names often come from input: an entry that nothing uses must go at once, not at the next sweep.
  const dropIfUnused = (name: string, channel: MemoryChannel) => {
    if (!channel.retained.length && !channel.subscribers.size && channels.get(name) === channel) channels.delete(name)
  }

  const trim = (channel: MemoryChannel, now: number) => {
    const overCount = channel.retained.length - config.maxEventsPerChannel
    if (overCount > 0) channel.retained.splice(0, overCount)
    const firstFresh = channel.retained.findIndex(event => now - event.publishedAt <= retentionMs)
    channel.retained.splice(0, firstFresh === -1 ? channel.retained.length : firstFresh)
  }

  // Idle channels would otherwise keep their last events (and their map entry) forever. They are swept by the
  // publishes and subscriptions that come at least a sweep interval after the last sweep, not by a timer: a
  // Durable Object with a timer pending cannot hibernate (and Cloudflare refuses timers while a Worker loads).
  // A server that goes quiet keeps at most `maxEventsPerChannel` events per channel until its next one.
  const sweepEvery = Math.max(retentionMs, 10_000)
  let lastSweep = Date.now()
  const sweepIfDue = (now: number) => {
    if (now - lastSweep < sweepEvery) return
    lastSweep = now
    for (const [name, channel] of channels) {
      trim(channel, now)
      dropIfUnused(name, channel)
    }
    for (const [name, trimmedAt] of storeTrimmedAt) {
      if (now - trimmedAt >= sweepEvery) storeTrimmedAt.delete(name)
    }
  }

  // Subscribers from before a Durable Object hibernated belong to the object as it was: forgotten, not ended
  // (workerd refuses their I/O from the woken object). Their clients resume with `lastEventId`.
  onDurableObjectWake(() => {
    for (const [name, channel] of channels) {
      channel.subscribers.clear()
      dropIfUnused(name, channel)
    }
  })

  return {
    async publish(name, payload) {
      assertChannelName(name, config.maxChannelNameLength)
      assertPayload(payload)
      const event: RetainedEvent = { id: nextId(), payload, publishedAt: Date.now() }
      sweepIfDue(event.publishedAt)
      const stored = retainingStore()
      if (stored) {
        // Stored before anyone gets it: a publish that fails (a payload storage cannot copy) delivered nothing,
        // and a subscriber resuming later finds it even after the object's memory is gone. One write at a
        // time, so events reach subscribers in the order of their ids (a subscriber skips one that is not).
        const put = storing.then(() => stored.put(name, event))
        storing = put.catch(() => {})
        await put
        if (event.publishedAt - (storeTrimmedAt.get(name) ?? 0) >= sweepEvery) {
          storeTrimmedAt.set(name, event.publishedAt)
          stored.trim(name, config.maxEventsPerChannel, retentionMs).catch((error: unknown) => {
            console.error(`[nuxt-orpc] Could not delete old events of channel ${name} from the Durable Object's storage:`, error)
          })
        }
      }
      // Without retention in memory, a channel nobody listens to needs no entry.
      const retainsInMemory = retentionMs > 0 && !stored
      const channel = retainsInMemory ? channelOf(name) : channels.get(name)
      if (retainsInMemory) {
        channel!.retained.push(event)
        trim(channel!, event.publishedAt)
      }
      // The subscribers of now, written to once the publish has answered.
      if (channel?.subscribers.size) {
        const subscribers = [...channel.subscribers]
        afterPendingIo(() => {
          for (const subscriber of subscribers) subscriber.push(event)
        })
      }
      return { id: event.id }
    },

    subscribe(name, options = {}) {
      assertChannelName(name, config.maxChannelNameLength)
      const resumeAfter = resumeIdOf(options, config.retention)
      sweepIfDue(Date.now())
      const channel = channelOf(name)
      const subscriber = new Subscriber(config.maxBufferedEvents, resumeAfter)
      const stored = retainingStore()
      if (resumeAfter !== undefined && stored) {
        // A page at a time, as the procedure reads; live events wait aside until the last page.
        subscriber.startPagedCatchUp(after => stored.read(name, after, retentionMs), resumeAfter)
      }
      else if (resumeAfter !== undefined) {
        trim(channel, Date.now())
        subscriber.startCatchUp()
        subscriber.finishCatchUp(channel.retained)
      }
      channel.subscribers.add(subscriber)
      subscriber.onEnd(() => {
        channel.subscribers.delete(subscriber)
        dropIfUnused(name, channel)
      })
      return subscriber.iterator(options.signal)
    },

    async close() {
      for (const channel of channels.values()) {
        for (const subscriber of channel.subscribers) subscriber.fail(publisherClosed())
      }
      channels.clear()
    },
  }
}
