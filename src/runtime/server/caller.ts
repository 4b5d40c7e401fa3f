import type { AnyRouter, RouterClient } from '@orpc/server'
import { createRouterClient } from '@orpc/server'
import type { H3Event } from 'h3'
import type { RpcContextFunction } from '../types'
import { contextInputFromEvent, errorFromRefusal, refusalFromError } from './context'
import { toCallerError } from './plain-call'

/**
 * An in-process client of `router` for one HTTP request: no socket, no HTTP hop. The context function runs
 * once for the request, on the first call; if it refuses, every call rejects with the same typed error the
 * socket would give (UNAUTHORIZED for 401, FORBIDDEN for 403). A procedure's error reaches the page as the
 * socket would send it (`toCallerError`): Nuxt writes an error's message into the server-rendered payload.
 */
export function createRpcCaller<T extends AnyRouter>(router: T, createContext: RpcContextFunction | undefined, event: H3Event): RouterClient<T> {
  let context: Promise<object> | undefined
  const resolveContext = () => context ??= Promise.resolve()
    .then(() => createContext?.(contextInputFromEvent(event)) ?? {})
    .catch((error) => {
      throw errorFromRefusal(refusalFromError(error))
    })
  return createRouterClient(router as AnyRouter, {
    context: resolveContext,
    interceptors: [async ({ next }) => {
      try {
        return await next()
      }
      catch (error) {
        throw toCallerError(error)
      }
    }],
  }) as RouterClient<T>
}
