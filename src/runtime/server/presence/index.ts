import { useRuntimeConfig } from 'nitropack/runtime'
import type { RpcPresenceChannelMap } from '../../types'
import type { RpcPublisherConfig } from '../publisher/core'
import { usePublisher } from '../publisher/index'
import type { RpcPresence } from './core'
import { createPresenceFor } from './create'

let presence: RpcPresence | undefined

/**
 * Who is in a channel, typed by the `RpcPresenceChannels` interface: `join(channel, data, { signal, key })`,
 * `list(channel)` and `subscribe(channel, { signal, lastEventId })`, on the publisher's driver (`memory`, or
 * `redis` across instances).
 *
 * ```ts
 * room: rpc.input(z.object({ room: z.string() })).handler(async function* ({ input, context, signal, lastEventId }) {
 *   await usePresence().join(`room:${input.room}`, { name: context.user.name }, { signal, key: context.user.id })
 *   yield* usePresence().subscribe(`room:${input.room}`, { signal, lastEventId })
 * })
 * ```
 */
export function usePresence(): RpcPresence<RpcPresenceChannelMap> {
  presence ??= createPresenceFor(usePublisher() as never, useRuntimeConfig().orpc?.publisher as Partial<RpcPublisherConfig> | undefined)
  return presence as unknown as RpcPresence<RpcPresenceChannelMap>
}

/** Leaves every join of this instance (nuxt-orpc runs it on Nitro's `close` hook, before the publisher closes). */
export async function closePresence() {
  const closing = presence
  presence = undefined
  await closing?.close()
}
