import type { AnyRouter, RouterClient } from '@orpc/server'
import type { H3Event } from 'h3'

/** Builds the in-process client for one request (set by nuxt-orpc's Nitro plugin). */
export type RpcCallerFactory = (event: H3Event) => RouterClient<AnyRouter>

const factoryKey = '_nuxtOrpcCallerFactory'
const callerKey = '_nuxtOrpcCaller'

export function provideRpcCaller(event: H3Event, factory: RpcCallerFactory) {
  event.context[factoryKey] = factory
}

/** The in-process client for this request, built once per request. */
export function useRpcCaller(event: H3Event): RouterClient<AnyRouter> {
  const factory = event.context[factoryKey] as RpcCallerFactory | undefined
  if (!factory) {
    throw new Error('[nuxt-orpc] The server half is not installed: add `nuxt-orpc` to `modules` in nuxt.config.')
  }
  return (event.context[callerKey] ??= factory(event)) as RouterClient<AnyRouter>
}
