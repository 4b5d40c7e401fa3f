import type { ClientContext, ClientLink } from '@orpc/client'
import type { StandardLinkOptions } from '@orpc/client/standard'
import { CompositeStandardLinkPlugin } from '@orpc/client/standard'
import type { RouterClient } from '@orpc/server'
import { intercept } from '@orpc/shared'
import { shallowReadonly, shallowRef } from 'vue'
import type { Ref } from 'vue'
import { joinURL } from 'ufo'
import { useNuxtApp, useRequestEvent, useRuntimeConfig } from '#imports'
import type { RpcClientContext, RpcClientSetup, RpcRouter } from '../types'
import { useRpcCaller } from '../shared/caller'
import type { RpcConnection, RpcConnectionOptions, RpcConnectionStatus } from '../client/connection'
import { createRpcClient, createRpcConnection } from '../client/connection'

type AppClient = RouterClient<RpcRouter, RpcClientContext>

interface RpcAppState {
  client: AppClient
  /** The browser's socket; undefined during SSR. */
  connection: RpcConnection | undefined
  status: Ref<RpcConnectionStatus>
}

const stateKey = '_nuxtOrpc'

function useRpcAppState(): RpcAppState {
  const nuxtApp = useNuxtApp() as ReturnType<typeof useNuxtApp> & { [stateKey]?: RpcAppState }
  if (nuxtApp[stateKey]) return nuxtApp[stateKey]

  const status = shallowRef<RpcConnectionStatus>({ state: 'idle', transport: 'websocket', closeCode: undefined, closeReason: undefined })
  // The app's plugins and interceptors, from its `orpc:client` hooks. Called at once, not awaited: the client is
  // made on the first useRpc(), which may come before the next tick.
  const setup: RpcClientSetup = { plugins: [], interceptors: [], clientInterceptors: [] }
  nuxtApp.runWithContext(() => nuxtApp.hooks.callHookWith((hooks) => {
    for (const hook of hooks) {
      const result: unknown = hook(setup)
      if (import.meta.dev && result instanceof Promise) {
        console.warn('[nuxt-orpc] An `orpc:client` hook returned a promise: it runs synchronously, when the client is made, so what it adds after an `await` is not used. Make it synchronous.')
      }
    }
  }, 'orpc:client', [setup]))
  const linkSetup = setup as unknown as Required<Pick<RpcConnectionOptions, 'plugins' | 'interceptors' | 'clientInterceptors'>>
  let client: AppClient
  let connection: RpcConnection | undefined
  if (import.meta.server) {
    client = inProcessClient(useRpcCaller(useRequestEvent()!) as AppClient, linkSetup)
  }
  else {
    const config = useRuntimeConfig()
    const { route, transport, reconnectBaseDelay, reconnectMaxDelay, connectTimeout, heartbeatTimeout } = config.public.orpc
    const path = joinURL(config.app.baseURL, route)
    connection = createRpcConnection({
      url: () => `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${path}`,
      httpUrl: () => `${location.origin}${path}`,
      transport: transport as RpcConnectionOptions['transport'],
      reconnectBaseDelay,
      reconnectMaxDelay,
      connectTimeout,
      heartbeatTimeout,
      onStatus: (next) => {
        status.value = next
      },
      ...linkSetup,
    })
    status.value = connection.status
    client = createRpcClient(connection)
  }
  return nuxtApp[stateKey] = { client, connection, status }
}

/**
 * During SSR, calls run in-process: the call interceptors (the app's and its plugins') run around them as they do
 * in the browser. Request interceptors do not: there is no request.
 */
function inProcessClient(caller: AppClient, setup: Pick<RpcConnectionOptions, 'plugins' | 'interceptors'>): AppClient {
  // The plugins add their call interceptors, as the browser's connection (and oRPC's StandardLink) has them do.
  const linkOptions: StandardLinkOptions<ClientContext> = { interceptors: [...setup.interceptors ?? []], clientInterceptors: [] }
  new CompositeStandardLinkPlugin(setup.plugins).init(linkOptions)
  const interceptors = linkOptions.interceptors ?? []
  if (interceptors.length === 0) return caller
  const link: ClientLink<ClientContext> = {
    call: (path, input, options) => intercept(interceptors, { ...options, path, input }, ({ path: at, input: given, ...rest }) => {
      const procedure = at.reduce<unknown>((node, key) => (node as Record<string, unknown>)[key], caller) as (input: unknown, options: unknown) => Promise<unknown>
      return procedure(given, rest)
    }),
  }
  return createRpcClient(link) as AppClient
}

/**
 * The typed client of the app's router. In the browser it talks over the app's one WebSocket (opened on the
 * first call); during SSR it calls the router in-process with the page request's context.
 */
export function useRpc(): AppClient {
  return useRpcAppState().client
}

/**
 * The browser connection's state (`'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'`), the transport
 * calls take (`'websocket'`, or `'http'` while the socket cannot be opened) and the socket's last close code and
 * reason, as a read-only reactive value. During SSR it stays `'idle'`.
 */
export function useRpcStatus(): Readonly<Ref<Readonly<RpcConnectionStatus>>> {
  return shallowReadonly(useRpcAppState().status)
}

/**
 * Moves the browser's calls to a new socket, whose handshake carries the cookies of now: after a login, a logout
 * or a token refresh, when the socket's context (read once per connection) is stale. Calls in flight finish on
 * the old socket; streams whose events carry ids resume on the new one; the old one closes once it is idle.
 * With nuxt-auth-utils installed, nuxt-orpc calls it whenever the user session changes. Does nothing during
 * SSR (each page request has its own context) or before the socket opened.
 */
export function refreshRpcConnection(): Promise<void> {
  return useRpcAppState().connection?.refresh() ?? Promise.resolve()
}

/** The browser's socket (for `useRpcSubscription`); undefined during SSR. Not an auto-import. */
export function useRpcConnection(): RpcConnection | undefined {
  return useRpcAppState().connection
}
