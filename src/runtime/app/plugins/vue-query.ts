import type { DehydratedState } from '@tanstack/vue-query'
import { dehydrate, hashKey, hydrate, QueryClient, VUE_QUERY_CLIENT, VueQueryPlugin } from '@tanstack/vue-query'
import { StandardRPCJsonSerializer } from '@orpc/client/standard'
import type { Plugin } from '#app'
import { defineNuxtPlugin, useState } from '#imports'

const keySerializer = new StandardRPCJsonSerializer()

/**
 * TanStack Vue Query for the app, server-rendered: the queries a page awaited on the server (`onServerPrefetch`
 * with the query's `suspense`) go to the browser in the payload, and the browser starts from them without calling
 * again. Change the defaults from a plugin, merged with these (`setDefaultOptions` replaces them all).
 */
const vueQuery: Plugin = defineNuxtPlugin((nuxtApp) => {
  const state = useState<DehydratedState | null>('nuxt-orpc:vue-query', () => null)
  const queryClient = new QueryClient({
    defaultOptions: {
      queries: {
        // Fresh for a minute: data the server rendered is not fetched again as soon as the page hydrates.
        staleTime: 60_000,
        // oRPC's inputs may hold what JSON cannot (BigInt, Map, Set, Date): keys go through its serializer first,
        // then TanStack's own hash (object keys sorted).
        queryKeyHashFn: (queryKey) => {
          const [json, meta] = keySerializer.serialize(queryKey)
          return hashKey([json, meta])
        },
      },
    },
  })
  nuxtApp.vueApp.use(VueQueryPlugin, { queryClient })
  if (import.meta.server) {
    nuxtApp.hooks.hook('app:rendered', () => {
      state.value = dehydrate(queryClient)
    })
  }
  else if (state.value) {
    hydrate(queryClient, state.value)
    // The cache has it now: no second copy in the app's state.
    state.value = null
  }
  if (import.meta.dev) {
    // Module plugins run before the app's: an app that installs VueQueryPlugin itself replaces this client.
    nuxtApp.hooks.hook('app:created', (vueApp) => {
      if (vueApp._context.provides[VUE_QUERY_CLIENT] !== queryClient) {
        console.warn('[nuxt-orpc] The app installs Vue Query itself, and nuxt-orpc did too: set `orpc: { vueQuery: false }` in nuxt.config to keep only yours (then hand over the server\'s query state yourself).')
      }
    })
  }
})

export default vueQuery
