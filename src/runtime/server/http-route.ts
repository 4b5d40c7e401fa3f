import { useRuntimeConfig } from 'nitropack/runtime'
import { createContext, route, router } from '#nuxt-orpc/app'
import type { ResolvedRuntimeOptions } from './config'
import { defineRpcHttpHandler } from './http'

const config = useRuntimeConfig().orpc as ResolvedRuntimeOptions

export default defineRpcHttpHandler({
  router,
  createContext,
  prefix: route as `/${string}`,
  allowedOrigins: config.allowedOrigins,
  allowedHosts: config.allowedHosts,
  maxMessageBytes: config.maxMessageBytes,
  rateLimit: config.rateLimit,
})
