import { useNuxtApp } from '#imports'
import { useRpc } from '../composables'
import type { RpcColadaUtils } from './colada-utils'
import { createRpcColadaUtils } from './colada-utils'

export type { RpcColadaMutationOptionsIn, RpcColadaProcedureUtils, RpcColadaQueryOptionsIn, RpcColadaUtils } from './colada-utils'

type AppColadaUtils = RpcColadaUtils<ReturnType<typeof useRpc>>

const utilsKey = '_nuxtOrpcColadaUtils'

/**
 * Pinia Colada (`@pinia/colada`, with `@pinia/colada-nuxt` for SSR) over `useRpc()`: query and mutation options
 * for every procedure, over the app's one socket in the browser and in-process during SSR.
 *
 * ```ts
 * const rpcColada = useRpcColadaUtils()
 * const { data } = useQuery(() => rpcColada.planet.find.queryOptions({ input: { id: id.value } }))
 * ```
 */
export function useRpcColadaUtils(): AppColadaUtils {
  const nuxtApp = useNuxtApp() as ReturnType<typeof useNuxtApp> & { [utilsKey]?: AppColadaUtils }
  return nuxtApp[utilsKey] ??= createRpcColadaUtils(useRpc())
}
