import { defu } from 'defu'
import { defineNitroPlugin, useRuntimeConfig } from 'nitropack/runtime'
import { createContext, router } from '#nuxt-orpc/app'
import { provideRpcCaller } from '../shared/caller'
import { createRpcCaller } from './caller'
import type { ResolvedRuntimeOptions } from './config'
import { selectSubprotocol } from './handler'
import { shutdownRpcConnections } from './registry'
import type { DurableObjectStateLike } from './transports/cloudflare'
import { attachDurableObject } from './transports/cloudflare'
import { createNodeAdapterOptions } from './transports/node'
import { answerSubprotocolsOnDeno } from './transports/web'

export default defineNitroPlugin((nitroApp) => {
  const { maxMessageBytes, shutdownTimeout } = useRuntimeConfig().orpc as ResolvedRuntimeOptions

  // On Node, the WebSocket server Nitro builds: the current ws (fragment limits), `maxMessageBytes` while a frame
  // is read, and the ready signal's subprotocol (see rpcSubprotocols). Nitro builds its adapter from these
  // options after the plugins ran, so this is early enough; other runtimes ignore them.
  const websocketOptions = createNodeAdapterOptions({ maxMessageBytes, handleProtocols: selectSubprotocol })
  nitroApp.h3App.options.websocket = defu(websocketOptions, nitroApp.h3App.options.websocket)
  answerSubprotocolsOnDeno()

  // Nitro's cloudflare-durable preset makes its Durable Object at first use and at every wake, and calls the
  // `cloudflare:durable:init` hook from its constructor. Hooks run a microtask later, after other plugins'
  // (any of which may await or throw), and the object's first event may be handled before that; hookable's
  // `beforeEach` runs synchronously, in the constructor.
  nitroApp.hooks.beforeEach((event) => {
    if (event.name !== 'cloudflare:durable:init') return
    // The hook's arguments are `(durable, { state, env })`; hookable 5 puts the hook's name before them here.
    const init = (event.args as unknown[]).find(arg => typeof arg === 'object' && arg !== null && 'state' in arg) as { state: DurableObjectStateLike } | undefined
    if (init) attachDurableObject(init.state)
  })

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
