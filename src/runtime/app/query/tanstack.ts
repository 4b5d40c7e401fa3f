import type { RouterUtils } from '@orpc/tanstack-query'
import { createTanstackQueryUtils } from '@orpc/tanstack-query'
import { useNuxtApp } from '#imports'
import { useRpc } from '../composables'

type AppQueryUtils = RouterUtils<ReturnType<typeof useRpc>>

const utilsKey = '_nuxtOrpcQueryUtils'

/**
 * oRPC's TanStack Query utilities (`@orpc/tanstack-query`) on `useRpc()`: `queryOptions`, `mutationOptions`,
 * `key`, `experimental_streamedOptions`, `experimental_liveOptions`, ... for every procedure, over the app's one
 * socket in the browser and in-process during SSR.
 *
 * ```ts
 * const rpcQuery = useRpcQueryUtils()
 * const { data, suspense } = useQuery(computed(() => rpcQuery.planet.find.queryOptions({ input: { id: id.value } })))
 * onServerPrefetch(suspense)
 * ```
 */
export function useRpcQueryUtils(): AppQueryUtils {
  const nuxtApp = useNuxtApp() as ReturnType<typeof useNuxtApp> & { [utilsKey]?: AppQueryUtils }
  return nuxtApp[utilsKey] ??= createTanstackQueryUtils(useRpc())
}
