import type { PublishedEvent, RpcPublisher, RpcPublisherConfig } from './core'
import { assertChannelName, assertPayload, createEventIdGenerator, publisherClosed, resumeIdOf, Subscriber } from './core'

interface RetainedEvent extends PublishedEvent {
  publishedAt: number
}

export interface MemoryChannel {
  retained: RetainedEvent[]
  subscribers: Set<Subscriber>
}

/**
 * The one-process driver: events go straight to this process's subscribers, and the last events of each
 * channel stay in memory (bounded by count and age) for subscribers that resume with `lastEventId`.
 * `channels` is the channel table, passed in only by tests that check what it keeps.
 */
export function createMemoryPublisher(config: RpcPublisherConfig, channels = new Map<string, MemoryChannel>()): RpcPublisher {
  const nextId = createEventIdGenerator()
  const retentionMs = config.retention * 1000

  const channelOf = (name: string) => {
    let channel = channels.get(name)
    if (!channel) {
      channels.set(name, channel = { retained: [], subscribers: new Set() })
      startSweep()
    }
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

  // Idle channels would otherwise keep their last events (and their map entry) forever. The timer runs only
  // while there are channels: none at startup (Cloudflare refuses timers while a Worker loads) and none in a
  // quiet server (a Durable Object with a timer pending cannot hibernate).
  let sweep: ReturnType<typeof setInterval> | undefined
  function startSweep() {
    if (sweep) return
    sweep = setInterval(() => {
      const now = Date.now()
      for (const [name, channel] of channels) {
        trim(channel, now)
        dropIfUnused(name, channel)
      }
      if (!channels.size) {
        clearInterval(sweep)
        sweep = undefined
      }
    }, Math.max(retentionMs, 10_000))
    ;(sweep as { unref?: () => void }).unref?.()
  }

  return {
    async publish(name, payload) {
      assertChannelName(name, config.maxChannelNameLength)
      assertPayload(payload)
      const event: RetainedEvent = { id: nextId(), payload, publishedAt: Date.now() }
      // Without retention, a channel nobody listens to needs no entry.
      const channel = retentionMs > 0 ? channelOf(name) : channels.get(name)
      if (!channel) return { id: event.id }
      if (retentionMs > 0) {
        channel.retained.push(event)
        trim(channel, event.publishedAt)
      }
      for (const subscriber of channel.subscribers) subscriber.push(event)
      return { id: event.id }
    },

    subscribe(name, options = {}) {
      assertChannelName(name, config.maxChannelNameLength)
      const resumeAfter = resumeIdOf(options, config.retention)
      const channel = channelOf(name)
      const subscriber = new Subscriber(config.maxBufferedEvents, resumeAfter)
      if (resumeAfter !== undefined) {
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
      clearInterval(sweep)
      for (const channel of channels.values()) {
        for (const subscriber of channel.subscribers) subscriber.fail(publisherClosed())
      }
      channels.clear()
    },
  }
}
