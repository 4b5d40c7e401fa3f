import { useRuntimeConfig } from 'nitropack/runtime'
import { createContext, router } from '#nuxt-orpc/app'
import { defineRpcWebSocketHandler } from './handler'

const config = useRuntimeConfig().orpc as { allowedOrigins: string[] }

export default defineRpcWebSocketHandler({
  router,
  createContext,
  allowedOrigins: config.allowedOrigins,
})
