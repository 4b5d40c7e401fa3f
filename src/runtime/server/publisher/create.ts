import { defu } from 'defu'
import type { RpcPublisher, RpcPublisherConfig } from './core'
import { publisherDefaults } from './core'
import { createMemoryPublisher } from './memory'
import { createRedisPublisher } from './redis'

/** A publisher for `config`: the memory driver, or Redis (ioredis is loaded only then). */
export function createPublisher(config: Partial<RpcPublisherConfig> = {}): RpcPublisher {
  const resolved = defu(config, publisherDefaults) as RpcPublisherConfig
  if (resolved.driver === 'redis') return createRedisPublisher(resolved)
  if (resolved.driver === 'memory') return createMemoryPublisher(resolved)
  throw new TypeError(`[nuxt-orpc] orpc.publisher.driver must be 'memory' or 'redis', not '${String(resolved.driver)}'.`)
}
