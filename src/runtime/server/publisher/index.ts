import { useRuntimeConfig } from 'nitropack/runtime'
import type { RpcChannelMap } from '../../types'
import type { RpcPublisher, RpcPublisherConfig } from './core'
import { createPublisher } from './create'
import { inspectPublisher } from '../devtools/inspector'

let publisher: RpcPublisher | undefined

/**
 * The app's publisher, typed by the `RpcChannels` interface: `publish(channel, payload)` and
 * `subscribe(channel, { signal, lastEventId })`. The driver (`memory` or `redis`) comes from
 * `orpc.publisher` in the config, or `NUXT_ORPC_PUBLISHER_DRIVER` / `NUXT_ORPC_PUBLISHER_URL` at runtime.
 *
 * ```ts
 * messages: rpc.input(z.object({ room: z.string() })).handler(async function* ({ input, signal, lastEventId }) {
 *   yield* usePublisher().subscribe(`chat:${input.room}`, { signal, lastEventId })
 * })
 * ```
 */
export function usePublisher(): RpcPublisher<RpcChannelMap> {
  if (!publisher) {
    publisher = createPublisher(useRuntimeConfig().orpc?.publisher as Partial<RpcPublisherConfig> | undefined)
    if (import.meta.dev) publisher = inspectPublisher(publisher)
  }
  return publisher as unknown as RpcPublisher<RpcChannelMap>
}

/** Ends every subscription and closes the publisher's connections (nuxt-orpc runs it on Nitro's `close` hook). */
export async function closePublisher() {
  const closing = publisher
  publisher = undefined
  await closing?.close()
}
