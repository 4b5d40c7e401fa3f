import {
  addImports,
  addPlugin,
  addTypeTemplate,
  createResolver,
  defineNuxtModule,
  hasNuxtModule,
  tryResolveModule,
} from '@nuxt/kit'
import { addCustomTab } from '@nuxt/devtools-kit'
import { defu } from 'defu'
import { relative, resolve } from 'pathe'
import { joinURL } from 'ufo'
import type { NuxtOrpcServerOptions } from './nitro'
import { devtoolsRoute, resolveServerFiles, serverDefaults, setupNitro } from './nitro'
import type { RpcClientTimers } from './runtime/shared/options'
import { clientTimerDefaults } from './runtime/shared/options'

/** The module's options: the server half's (`NuxtOrpcServerOptions`) and the browser connection's timers. */
export interface ModuleOptions extends NuxtOrpcServerOptions, Partial<RpcClientTimers> {
  /**
   * Set to `false` to turn the module off.
   * @default true
   */
  enabled?: boolean
  /**
   * How the browser calls: `'auto'` (the socket; over HTTP and server-sent events while the socket cannot be
   * opened but the server answers HTTP), `'websocket'` (the socket only) or `'http'` (HTTP only).
   * @default 'auto'
   */
  transport?: 'auto' | 'websocket' | 'http'
  /**
   * With `@tanstack/vue-query` installed, nuxt-orpc installs Vue Query for the app (`VueQueryPlugin`), with what
   * the server's queries fetched going to the browser in the payload. Set to `false` where the app installs
   * `VueQueryPlugin` itself.
   * @default true
   */
  vueQuery?: boolean
}

export interface RpcPublicRuntimeConfig extends RpcClientTimers {
  route: string
  transport: 'auto' | 'websocket' | 'http'
  /** Silence after which the browser replaces its socket: the server's heartbeatInterval + heartbeatTimeout. */
  heartbeatTimeout: number
}

declare module '@nuxt/schema' {
  interface PublicRuntimeConfig {
    orpc: RpcPublicRuntimeConfig
  }
}

export default defineNuxtModule<ModuleOptions>({
  meta: {
    name: 'nuxt-orpc',
    configKey: 'orpc',
    compatibility: { nuxt: '>=4.0.0' },
  },
  defaults: {
    enabled: true,
    transport: 'auto',
    vueQuery: true,
    ...serverDefaults,
    ...clientTimerDefaults,
  },
  async setup(options, nuxt) {
    const resolver = createResolver(import.meta.url)

    if (!options.enabled) return

    // Server half: the same Nitro module a Nitro-only app installs.
    const { enabled: _enabled, vueQuery, transport, reconnectBaseDelay, reconnectMaxDelay, connectTimeout, ...serverOptions } = options
    nuxt.options.nitro.orpc = serverOptions
    nuxt.options.nitro.modules ||= []
    nuxt.options.nitro.modules.push(nitro => void setupNitro(nitro))

    // A Nuxt DevTools tab (development only): connections, calls, streams, channels and limits of the server.
    if (nuxt.options.dev) {
      addCustomTab({
        name: 'nuxt-orpc',
        title: 'oRPC',
        icon: 'carbon:network-3',
        view: { type: 'iframe', src: joinURL(nuxt.options.app.baseURL, devtoolsRoute) },
      }, nuxt)
    }

    // Runtime config the browser client reads.
    nuxt.options.runtimeConfig.public.orpc = defu(nuxt.options.runtimeConfig.public.orpc, {
      route: options.route!,
      transport: transport!,
      reconnectBaseDelay: reconnectBaseDelay!,
      reconnectMaxDelay: reconnectMaxDelay!,
      connectTimeout: connectTimeout!,
      heartbeatTimeout: options.heartbeatInterval! + options.heartbeatTimeout!,
    })

    // Client composables.
    nuxt.options.alias['#nuxt-orpc'] = resolver.resolve('./runtime/types')
    addImports([
      { name: 'useRpc', from: resolver.resolve('./runtime/app/composables') },
      { name: 'useRpcStatus', from: resolver.resolve('./runtime/app/composables') },
      { name: 'useRpcSubscription', from: resolver.resolve('./runtime/app/subscription') },
      { name: 'useRpcPresence', from: resolver.resolve('./runtime/app/subscription') },
      { name: 'refreshRpcConnection', from: resolver.resolve('./runtime/app/composables') },
    ])
    // Query libraries, when the app has them: TanStack Query through oRPC's utilities, and Pinia Colada.
    const installed = async (id: string) => Boolean(await tryResolveModule(id, nuxt.options.modulesDir))
    if (await installed('@orpc/tanstack-query')) {
      addImports({ name: 'useRpcQueryUtils', from: resolver.resolve('./runtime/app/query/tanstack') })
    }
    if (vueQuery && await installed('@tanstack/vue-query')) {
      addPlugin(resolver.resolve('./runtime/app/plugins/vue-query'))
    }
    if (await installed('@pinia/colada')) {
      addImports({ name: 'useRpcColadaUtils', from: resolver.resolve('./runtime/app/query/colada') })
    }
    // With nuxt-auth-utils (before or after this module in `modules`), a changed session moves to a new socket.
    nuxt.hook('modules:done', () => {
      if (hasNuxtModule('nuxt-auth-utils')) addPlugin({ src: resolver.resolve('./runtime/app/plugins/session.client'), mode: 'client' })
    })
    // Nuxt adds a key per call site (its third argument, when not given), as it does for useAsyncData: what the
    // server rendered of a subscription (`ssr: true`) reaches the browser under it.
    nuxt.options.optimization.keyedComposables.push({ name: 'useRpcSubscription', source: resolver.resolve('./runtime/app/subscription'), argumentLength: 3 })

    // Types: tie useRpc() and `rpc` to the app's router and context, for the app and the server.
    addTypeTemplate({
      filename: 'types/nuxt-orpc.d.ts',
      getContents: ({ nuxt }) => {
        const files = resolveServerFiles(nuxt.options.serverDir, options.router!)
        const fromTypes = (file: string) => relative(resolve(nuxt.options.buildDir, 'types'), file).replace(/\.[cm]?[jt]s$/, '')
        return typeDeclaration(files.router && fromTypes(files.router), files.context && fromTypes(files.context))
      },
    }, { nuxt: true, nitro: true })
    // The hook by which the app's plugins give useRpc() its oRPC client plugins and interceptors.
    addTypeTemplate({
      filename: 'types/nuxt-orpc-hooks.d.ts',
      getContents: () => [
        `import type { RpcClientSetup } from '#nuxt-orpc'`,
        `declare module '#app' {`,
        `  interface RuntimeNuxtHooks {`,
        `    /** Give useRpc() oRPC client plugins and interceptors. Runs once, synchronously, when the client is made. */`,
        `    'orpc:client': (setup: RpcClientSetup) => void`,
        `  }`,
        `}`,
        `export {}`,
      ].join('\n'),
    }, { nuxt: true })
    // The server half's virtual module, for the server's typecheck (an ambient file: no top-level import).
    addTypeTemplate({
      filename: 'types/nuxt-orpc-virtual.d.ts',
      getContents: () => [
        `declare module '#nuxt-orpc/app' {`,
        `  import type { RpcAnyRouter, RpcContextFunction } from '#nuxt-orpc'`,
        `  export const route: string`,
        `  export const router: RpcAnyRouter`,
        `  export const createContext: RpcContextFunction | undefined`,
        `}`,
      ].join('\n'),
    }, { nuxt: true, nitro: true })
  },
})

/** The generated declaration: registers the router and context types on nuxt-orpc's interfaces. */
export function typeDeclaration(routerImport: string | undefined, contextImport: string | undefined) {
  const lines = [
    `import type { RpcRouterOf } from '#nuxt-orpc'`,
    `declare module '#nuxt-orpc' {`,
  ]
  if (routerImport) {
    lines.push(`  interface RpcRouterRegister { router: RpcRouterOf<typeof import(${JSON.stringify(routerImport)})> }`)
  }
  if (contextImport) {
    lines.push(`  interface RpcContextRegister { context: Awaited<ReturnType<typeof import(${JSON.stringify(contextImport)}).default>> }`)
  }
  lines.push('}', 'export {}')
  return lines.join('\n')
}
