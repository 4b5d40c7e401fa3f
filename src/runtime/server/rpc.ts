import { os } from '@orpc/server'
import type { RpcContext } from '../types'

/**
 * The oRPC builder for this app's procedures, typed with the connection context that `rpc/context.ts`
 * returns. Use it as oRPC's `os`: `rpc.input(schema).handler(({ input, context }) => ...)`.
 */
export const rpc = os.$context<RpcContext>()
