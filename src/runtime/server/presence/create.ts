import { defu } from 'defu'
import type { RpcPublisher, RpcPublisherConfig } from '../publisher/core'
import { publisherDefaults } from '../publisher/core'
import { redisCommandClientOf } from '../publisher/redis'
import type { RpcPresence } from './core'
import { createPresence } from './core'
import { createMemoryPresenceStore } from './memory'
import { createRedisPresenceStore } from './redis'

/**
 * Presence on `publisher`'s driver, for `config` (the publisher's): in memory, or in Redis on the Redis
 * publisher's own connection. `usePresence()` is this for the app's publisher.
 */
export function createPresenceFor(publisher: RpcPublisher, options: Partial<RpcPublisherConfig> = {}): RpcPresence {
  const config = defu(options, publisherDefaults) as RpcPublisherConfig
  const redisClient = (publisher as { [redisCommandClientOf]?: Parameters<typeof createRedisPresenceStore>[0] })[redisCommandClientOf]
  if (config.driver === 'redis' && !redisClient) throw new TypeError('[nuxt-orpc] Presence with the redis driver needs the Redis publisher (createRedisPublisher).')
  const store = config.driver === 'redis' ? createRedisPresenceStore(redisClient!, config.prefix, config.presenceTtl) : createMemoryPresenceStore()
  return createPresence(publisher, store, config)
}
