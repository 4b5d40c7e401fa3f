import type { AdapterOptions } from 'crossws'
import { defu } from 'defu'
import { defineNitroPlugin, useRuntimeConfig } from 'nitropack/runtime'
import { WebSocketServer } from 'ws'
import { createContext, router } from '#nuxt-orpc/app'
import { provideRpcCaller } from '../shared/caller'
import { createRpcCaller } from './caller'
import type { ResolvedRuntimeOptions } from './config'
import { selectSubprotocol } from './handler'
import { shutdownRpcConnections } from './socket'

/** crossws's Node adapter options: `wss` replaces the WebSocket server it would build. */
type NodeAdapterOptions = AdapterOptions & { wss?: WebSocketServer }

export default defineNitroPlugin((nitroApp) => {
  const { maxMessageBytes, shutdownTimeout } = useRuntimeConfig().orpc as ResolvedRuntimeOptions

  // Nitro 2's crossws (0.3.x) bundles ws 8.18, which has no limit on message fragments (GHSA-96hv-2xvq-fx4p:
  // 300k one-byte fragments pin ~31 MiB on a socket that is never closed). crossws's Node adapter takes a
  // ready WebSocket server as `wss`, so nuxt-orpc hands it one from the current ws (>= 8.21: maxFragments and
  // maxBufferedChunks on by default; a flood is closed with 1008/1009). maxPayload is checked while ws reads
  // a frame. Nitro builds its adapter from these options after the plugins ran, so this is early enough; it
  // applies to every WebSocket route of the app (ws serves them all). Other runtimes ignore `wss`.
  // `handleProtocols` lets nuxt-orpc's client and server agree on the ready signal (see rpcSubprotocols).
  const websocketOptions: NodeAdapterOptions = {
    wss: new WebSocketServer({ noServer: true, maxPayload: maxMessageBytes, handleProtocols: selectSubprotocol }),
  }
  nitroApp.h3App.options.websocket = defu(websocketOptions, nitroApp.h3App.options.websocket)

  const callerFactory = (event: Parameters<typeof createRpcCaller>[2]) => createRpcCaller(router, createContext, event)
  nitroApp.hooks.hook('request', (event) => {
    provideRpcCaller(event, callerFactory)
  })

  // Graceful shutdown: on the presets where Nitro itself traps SIGTERM/SIGINT (and waits for open sockets,
  // which nuxt-orpc marks busy), drain calls and close sockets with 1001. Elsewhere a listener here would keep
  // the signal from ending the process.
  const nitroTrapsSignals = ['node-server', 'node-cluster'].includes(import.meta.preset ?? '') && !process.env.NITRO_SHUTDOWN_DISABLED
  if (nitroTrapsSignals) {
    for (const signal of (process.env.NITRO_SHUTDOWN_SIGNALS || 'SIGTERM SIGINT').split(' ')) {
      process.once(signal.trim(), () => void shutdownRpcConnections(shutdownTimeout))
    }
  }
  nitroApp.hooks.hook('close', () => shutdownRpcConnections(0))
})
