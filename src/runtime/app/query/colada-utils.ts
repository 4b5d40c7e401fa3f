import type { Client, ClientContext } from '@orpc/client'
import { RECURSIVE_CLIENT_UNWRAP_KEYS } from '@orpc/client'
import { StandardRPCJsonSerializer } from '@orpc/client/standard'
import type { DefineQueryOptions, EntryKey, UseMutationOptions } from '@pinia/colada'

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

/** Cache keys begin with it, so that they never meet the app's other keys. */
const keyPrefix = 'rpc'
const serializer = new StandardRPCJsonSerializer()

/** Pinia Colada utilities over any nuxt-orpc or oRPC client (what `useRpcColadaUtils()` gives for `useRpc()`). */
export function createRpcColadaUtils<T extends object>(client: T): RpcColadaUtils<T> {
  return utilsAt(client, []) as RpcColadaUtils<T>
}

/** A cache key: the path, then the input as oRPC serializes it (keys hold JSON only; inputs may hold Dates, BigInts, ...). */
function keyOf(path: readonly string[], input: unknown): EntryKey {
  if (input === undefined) return [keyPrefix, ...path]
  const [json, meta] = serializer.serialize(input)
  return [keyPrefix, ...path, meta.length > 0 ? { input: json as never, meta: meta as never } : { input: json as never }]
}

type AnyProcedure = (input: unknown, options?: { signal?: AbortSignal, context?: unknown }) => Promise<unknown>

/**
 * The utilities at `path`, built as oRPC's TanStack utilities are (`createRouterUtils`): a property is the child's
 * utilities, unless it is one of the helpers' names, which gives the helper with the child's utilities readable
 * through it (so a procedure named `key` or `call` still works: `utils.key.queryOptions(...)`).
 */
function utilsAt(client: unknown, path: readonly string[]): object {
  const children = new Map<string, object>()
  /** Each helper, with the child of its name readable through it. */
  const readableHelpers = new Map<string, object>()
  const procedure = client as AnyProcedure
  // No prototype: `constructor`, `toString`... are children's names like any other.
  const helpers: Record<string, unknown> = Object.assign(Object.create(null), {
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
  })
  const childAt = (key: string) => {
    let child = children.get(key)
    if (!child) children.set(key, child = utilsAt((client as Record<string, unknown>)[key], [...path, key]))
    return child
  }
  return new Proxy(helpers, {
    get(target, key) {
      if (typeof key !== 'string' || RECURSIVE_CLIENT_UNWRAP_KEYS.has(key)) return Reflect.get(Object.prototype, key)
      // Vue's own marks (`__v_raw`, `__v_skip`...) are not procedures: `toRaw` would follow them for ever.
      if (key.startsWith('__v_')) return undefined
      const helper = Reflect.get(target, key)
      const child = childAt(key)
      if (typeof helper !== 'function') return child
      let readable = readableHelpers.get(key)
      if (!readable) {
        readableHelpers.set(key, readable = new Proxy(helper, {
          get: (fn, name) => typeof name !== 'string' || RECURSIVE_CLIENT_UNWRAP_KEYS.has(name) ? Reflect.get(fn, name) : Reflect.get(child, name),
        }))
      }
      return readable
    },
  })
}
