/** The publisher's settings as the runtime config holds them (`runtimeConfig.orpc.publisher`). */
export interface RpcPublisherConfig {
  driver: 'memory' | 'redis'
  /** Redis URL; empty means `redis://127.0.0.1:6379`. */
  url: string
  /** Prefix of every Redis key the publisher writes. */
  prefix: string
  /** Seconds an event stays available for resuming; 0 turns resuming off. */
  retention: number
  /** Most events kept per channel for resuming. */
  maxEventsPerChannel: number
  /** Most events waiting for one slow subscriber before its stream fails with SUBSCRIBER_OVERFLOW. */
  maxBufferedEvents: number
  /**
   * Longest channel name `publish` and `subscribe` accept, in characters (UTF-16 code units); longer names
   * are refused with BAD_REQUEST. Channel names often come from input, and each costs memory while it lives.
   * @default 256
   */
  maxChannelNameLength: number
  /**
   * Seconds a presence join outlives the last sign of life of its instance (Redis driver): an instance that
   * dies without leaving has its members leave this long after, give or take a third.
   * @default 15
   */
  presenceTtl: number
}

/** Shared by the build-time options (src/nitro.ts) and the runtime, so the two cannot drift apart. */
export const publisherDefaults: RpcPublisherConfig = {
  driver: 'memory',
  url: '',
  prefix: 'orpc:',
  retention: 300,
  maxEventsPerChannel: 1000,
  maxBufferedEvents: 1000,
  maxChannelNameLength: 256,
  presenceTtl: 15,
}
