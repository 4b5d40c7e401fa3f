import type { Client, ClientContext } from '@orpc/client'
import { StandardRPCJsonSerializer } from '@orpc/client/standard'
import type { DefineQueryOptions, EntryKey, UseMutationOptions } from '@pinia/colada'
import { useNuxtApp } from '#imports'
import { useRpc } from '../composables'

type InputOption<I> = undefined extends I ? { input?: I } : { input: I }
type ContextOption<C> = Record<never, never> extends C ? { context?: C } : { context: C }
/** Optional when nothing in it is required. */
type Options<T> = Record<never, never> extends T ? [options?: T] : [options: T]

export type RpcColadaQueryOptionsIn<C, I, O, E> = InputOption<I> & ContextOption<C> & Omit<DefineQueryOptions<O, E>, 'key' | 'query'>
export type RpcColadaMutationOptionsIn<C, I, O, E> = ContextOption<C> & Omit<UseMutationOptions<O, I, E>, 'mutation'>

/** What `useRpcColadaUtils()` gives for one procedure. */
export interface RpcColadaProcedureUtils<C extends ClientContext, I, O, E> {
  /** The procedure's client, as `useRpc()` has it. */
  call: Client<C, I, O, E>
  /** The cache key of this procedure's queries, of those with this input when one is given: for `invalidateQueries`. */
  key: (options?: { input?: I }) => EntryKey
  /**
   * Options for Pinia Colada's `useQuery`: the key (path and input) and the query (the call, with its signal).
   * Plain values: for an input that changes, give `useQuery` a getter that calls this.
   */
  queryOptions: (...options: Options<RpcColadaQueryOptionsIn<C, I, O, E>>) => DefineQueryOptions<O, E>
  /** Options for Pinia Colada's `useMutation`: the mutation calls the procedure with its variables as input. */
  mutationOptions: (...options: Options<RpcColadaMutationOptionsIn<C, I, O, E>>) => UseMutationOptions<O, I, E>
}

/** `useRpcColadaUtils()`'s shape: a procedure's utilities at each procedure, a `key()` at each router. */
export type RpcColadaUtils<T> = T extends Client<infer C, infer I, infer O, infer E>
  ? RpcColadaProcedureUtils<C, I, O, E>
  : { [K in keyof T]: RpcColadaUtils<T[K]> } & { key: () => EntryKey }

type AppColadaUtils = RpcColadaUtils<ReturnType<typeof useRpc>>

/** Cache keys begin with it, so that they never meet the app's other keys. */
const keyPrefix = 'rpc'
const serializer = new StandardRPCJsonSerializer()
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
  return nuxtApp[utilsKey] ??= utilsAt(useRpc(), []) as AppColadaUtils
}

/** A cache key: the path, then the input as oRPC serializes it (keys hold JSON only; inputs may hold Dates, BigInts, ...). */
function keyOf(path: readonly string[], input: unknown): EntryKey {
  if (input === undefined) return [keyPrefix, ...path]
  const [json, meta] = serializer.serialize(input)
  return [keyPrefix, ...path, meta.length > 0 ? { input: json as never, meta: meta as never } : { input: json as never }]
}

type AnyProcedure = (input: unknown, options?: { signal?: AbortSignal, context?: unknown }) => Promise<unknown>

function utilsAt(client: unknown, path: readonly string[]): object {
  const children = new Map<string, object>()
  const procedure = client as AnyProcedure
  const utils = {
    call: client,
    key: (options?: { input?: unknown }) => keyOf(path, options?.input),
    queryOptions: ({ input, context, ...rest }: { input?: unknown, context?: unknown } = {}) => ({
      key: keyOf(path, input),
      query: ({ signal }: { signal: AbortSignal }) => procedure(input, { signal, context }),
      ...rest,
    }),
    mutationOptions: ({ context, ...rest }: { context?: unknown } = {}) => ({
      mutation: (input: unknown) => procedure(input, { context }),
      ...rest,
    }),
  }
  return new Proxy(utils, {
    get(target, key) {
      if (typeof key !== 'string' || key in target) return Reflect.get(target, key)
      let child = children.get(key)
      if (!child) children.set(key, child = utilsAt((client as Record<string, unknown>)[key], [...path, key]))
      return child
    },
  })
}
