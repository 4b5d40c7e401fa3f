import type { DehydratedState } from '@tanstack/vue-query'
import { dehydrate, hydrate, QueryClient, VueQueryPlugin } from '@tanstack/vue-query'
import { StandardRPCJsonSerializer } from '@orpc/client/standard'
import type { Plugin } from '#app'
import { defineNuxtPlugin, useState } from '#imports'

const keySerializer = new StandardRPCJsonSerializer()

/**
 * TanStack Vue Query for the app, server-rendered: the queries a page awaited on the server (`onServerPrefetch`
 * with the query's `suspense`) go to the browser in the payload, and the browser starts from them without calling
 * again. Change the defaults from a plugin with `useQueryClient().setDefaultOptions(...)`.
 */
const vueQuery: Plugin = defineNuxtPlugin((nuxtApp) => {
  const state = useState<DehydratedState | null>('nuxt-orpc:vue-query', () => null)
  const queryClient = new QueryClient({
    defaultOptions: {
      queries: {
        // Fresh for a minute: data the server rendered is not fetched again as soon as the page hydrates.
        staleTime: 60_000,
        // oRPC's inputs may hold what JSON cannot (BigInt, Map, Set, Date): keys are hashed through its serializer.
        queryKeyHashFn: (queryKey) => {
          const [json, meta] = keySerializer.serialize(queryKey)
          return JSON.stringify({ json, meta })
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
  }
})

export default vueQuery
