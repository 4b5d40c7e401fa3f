import type { RpcServerLimits } from '../shared/options'

/** The server options as Nitro's runtime config holds them (`runtimeConfig.orpc`). */
export interface ResolvedRuntimeOptions extends RpcServerLimits {
  allowedOrigins: string[]
  allowedHosts: string[]
  maxMessageBytes: number
  shutdownTimeout: number
}
