import { useRuntimeConfig } from 'nitropack/runtime'
import { createContext, router } from '#nuxt-orpc/app'
import type { ResolvedRuntimeOptions } from './config'
import { defineRpcWebSocketHandler } from './handler'

const config = useRuntimeConfig().orpc as ResolvedRuntimeOptions

export default defineRpcWebSocketHandler({
  ...config,
  router,
  createContext,
})
