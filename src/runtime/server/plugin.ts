import type { AdapterOptions } from 'crossws'
import { defu } from 'defu'
import { defineNitroPlugin, useRuntimeConfig } from 'nitropack/runtime'
import { createContext, router } from '#nuxt-orpc/app'
import { provideRpcCaller } from '../shared/caller'
import { createRpcCaller } from './caller'

/** crossws's Node adapter options: `serverOptions` goes to ws's WebSocketServer. */
type NodeAdapterOptions = AdapterOptions & { serverOptions?: { maxPayload?: number } }

export default defineNitroPlugin((nitroApp) => {
  const { maxMessageBytes } = useRuntimeConfig().orpc as { maxMessageBytes: number }

  // ws enforces maxPayload while it reads a frame and closes with 1009 past it. Nitro builds its crossws
  // adapter from these options after the plugins ran, so setting them here is early enough. They apply to
  // every WebSocket route of the app: ws has one server per process.
  const nodeOptions: NodeAdapterOptions = { serverOptions: { maxPayload: maxMessageBytes } }
  nitroApp.h3App.options.websocket = defu(nodeOptions, nitroApp.h3App.options.websocket)

  const callerFactory = (event: Parameters<typeof createRpcCaller>[2]) => createRpcCaller(router, createContext, event)
  nitroApp.hooks.hook('request', (event) => {
    provideRpcCaller(event, callerFactory)
  })
})
