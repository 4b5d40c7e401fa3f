import type { PublishedEvent, RpcPublisher, RpcPublisherConfig } from './core'
import { assertPayload, createEventIdGenerator, publisherClosed, resumeIdOf, Subscriber } from './core'

interface RetainedEvent extends PublishedEvent {
  publishedAt: number
}

interface MemoryChannel {
  retained: RetainedEvent[]
  subscribers: Set<Subscriber>
}

/**
 * The one-process driver: events go straight to this process's subscribers, and the last events of each
 * channel stay in memory (bounded by count and age) for subscribers that resume with `lastEventId`.
 */
export function createMemoryPublisher(config: RpcPublisherConfig): RpcPublisher {
  const channels = new Map<string, MemoryChannel>()
  const nextId = createEventIdGenerator()
  const retentionMs = config.retention * 1000

  const channelOf = (name: string) => {
    let channel = channels.get(name)
    if (!channel) channels.set(name, channel = { retained: [], subscribers: new Set() })
    return channel
  }

  const trim = (channel: MemoryChannel, now: number) => {
    const overCount = channel.retained.length - config.maxEventsPerChannel
    if (overCount > 0) channel.retained.splice(0, overCount)
    const firstFresh = channel.retained.findIndex(event => now - event.publishedAt <= retentionMs)
    channel.retained.splice(0, firstFresh === -1 ? channel.retained.length : firstFresh)
  }

  // Idle channels would otherwise keep their last events (and their map entry) forever.
  const sweep = setInterval(() => {
    const now = Date.now()
    for (const [name, channel] of channels) {
      trim(channel, now)
      if (!channel.retained.length && !channel.subscribers.size) channels.delete(name)
    }
  }, Math.max(retentionMs, 10_000))
  sweep.unref?.()

  return {
    async publish(name, payload) {
      assertPayload(payload)
      const channel = channelOf(name)
      const event: RetainedEvent = { id: nextId(), payload, publishedAt: Date.now() }
      if (retentionMs > 0) {
        channel.retained.push(event)
        trim(channel, event.publishedAt)
      }
      for (const subscriber of channel.subscribers) subscriber.push(event)
      return { id: event.id }
    },

    subscribe(name, options = {}) {
      const resumeAfter = resumeIdOf(options, config.retention)
      const channel = channelOf(name)
      const subscriber = new Subscriber(config.maxBufferedEvents, resumeAfter)
      if (resumeAfter !== undefined) {
        trim(channel, Date.now())
        subscriber.startCatchUp()
        subscriber.finishCatchUp(channel.retained)
      }
      channel.subscribers.add(subscriber)
      subscriber.onEnd(() => channel.subscribers.delete(subscriber))
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
