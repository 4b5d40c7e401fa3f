import type { ClientContext, ClientLink, FriendlyClientOptions, NestedClient } from '@orpc/client'
import { RECURSIVE_CLIENT_UNWRAP_KEYS, resolveFriendlyClientOptions } from '@orpc/client'
import { preventNativeAwait } from '@orpc/shared'

/**
 * The typed client of a router on `link`: what oRPC's `createORPCClient` makes, with the same proxy rules
 * (`client.a.b(input, options)`, the unwrap keys, `await client` giving the client), but each path's client
 * is made once and a call returns the link's own promise.
 *
 * `createORPCClient` makes a new client (a path array, an options object, a closure and two proxies) on every
 * property access, so `client.chat.send(...)` makes two of them per call, and its procedure is an `async`
 * function around `link.call`: one more promise and more microtask turns per call. With the connection
 * handing out the plain call's own promise, that was 6% of the client's CPU per call in the bench's sustained
 * pattern (docs/benchmarks.md).
 */
export function createRpcClient<T extends NestedClient<ClientContext>>(link: ClientLink<ClientContext>): T {
  return clientAt(link, []) as T
}

function clientAt(link: ClientLink<ClientContext>, path: readonly string[]): object {
  const children = new Map<string, object>()
  const procedure = (input?: unknown, options: FriendlyClientOptions<ClientContext> = {}): Promise<unknown> => {
    try {
      return link.call(path, input, resolveFriendlyClientOptions(options))
    }
    catch (error) {
      // As an async function would: a call never throws, it rejects.
      return Promise.reject(error)
    }
  }
  return preventNativeAwait(new Proxy(procedure, {
    get(target, key) {
      let child = children.get(key as string)
      if (child !== undefined) return child
      if (typeof key !== 'string' || RECURSIVE_CLIENT_UNWRAP_KEYS.has(key)) return Reflect.get(target, key)
      children.set(key, child = clientAt(link, Object.freeze([...path, key])))
      return child
    },
  }))
}
