import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { defu } from 'defu'
import type { Nitro, NitroModule } from 'nitropack'
import { findExportNames } from 'mlly'
import { dirname, join, relative, resolve } from 'pathe'
import { joinURL } from 'ufo'
import { publisherDefaults } from './runtime/server/publisher/defaults'
import type { RpcServerLimits } from './runtime/shared/options'
import { defaultMaxMessageBytes, devAllowedHosts, serverLimitDefaults } from './runtime/shared/options'

export { devAllowedHosts }

/**
 * Options of the server half, under `orpc` in nitro.config (or in nuxt.config, which passes them on). The
 * limits and timers are `RpcServerLimits` (src/runtime/shared/options.ts), declared once for every entry point.
 */
export interface NuxtOrpcServerOptions extends Partial<RpcServerLimits> {
  /**
   * The router module, relative to Nitro's source directory (`server/` in Nuxt). Its named export `router`,
   * or else its default export, is served.
   * @default 'rpc/index'
   */
  router?: string
  /**
   * The route of the WebSocket endpoint.
   * @default '/_orpc'
   */
  route?: string
  /**
   * Origins allowed to open the socket besides the page's own host, e.g. `['https://admin.example.com']`.
   * A handshake from any other Origin is closed with 1008 before any procedure runs. Handshakes without an
   * Origin header (non-browser clients) are allowed. Runtime override: `NUXT_ORPC_ALLOWED_ORIGINS`.
   * @default []
   */
  allowedOrigins?: string[]
  /**
   * Host names the app is served under, e.g. `['app.example.com']` (`'.example.com'` also matches its
   * subdomains). When set, a browser's same-origin handshake is allowed only if its Host header is one of
   * them: a DNS-rebinding page (whose Host and Origin are the attacker's name) is refused with 1008.
   * `allowedOrigins` are allowed either way. Empty: any Host. In development (`nuxt dev`) an empty list means
   * `['localhost', '127.0.0.1', '[::1]']`. Runtime override: `NUXT_ORPC_ALLOWED_HOSTS`.
   * @default []
   */
  allowedHosts?: string[]
  /**
   * The largest WebSocket message the server reads, in bytes. ws enforces it while it reads the frame and
   * closes the socket with 1009 past it. It applies to every WebSocket route of the server.
   * @default 1048576 (1 MiB)
   */
  maxMessageBytes?: number
  /**
   * On SIGTERM/SIGINT: how long (ms) calls waiting for their response may still finish before every socket is
   * closed with 1001. Nitro's own limit (`NITRO_SHUTDOWN_TIMEOUT`, 30 s) still applies around it.
   * @default 10000
   */
  shutdownTimeout?: number
  /** Pub/sub for procedures (`usePublisher()`): one process in memory, or many through Redis. */
  publisher?: NuxtOrpcPublisherOptions
}

/** Options of the publisher behind `usePublisher()`, under `orpc.publisher`. */
export interface NuxtOrpcPublisherOptions {
  /**
   * `'memory'`: events reach the subscribers of this process only. `'redis'`: events reach subscribers on
   * every instance connected to the same Redis. Runtime override: `NUXT_ORPC_PUBLISHER_DRIVER`.
   * @default 'memory'
   */
  driver?: 'memory' | 'redis'
  /**
   * Redis URL (`redis://user:password@host:6379/0`, `rediss://` for TLS). Runtime override:
   * `NUXT_ORPC_PUBLISHER_URL`, which keeps credentials out of the build.
   * @default 'redis://127.0.0.1:6379'
   */
  url?: string
  /**
   * Prefix of every Redis key the publisher writes (one stream per channel).
   * @default 'orpc:'
   */
  prefix?: string
  /**
   * Seconds an event stays available to subscribers that resume with `lastEventId`. `0` turns resuming off:
   * subscribers get only what is published while they are subscribed (at most once).
   * @default 300
   */
  retention?: number
  /**
   * Most events kept per channel for resuming (Redis trims approximately: it may keep a few more).
   * @default 1000
   */
  maxEventsPerChannel?: number
  /**
   * Most events queued for one subscriber that reads slower than events come; past it its stream fails
   * with `SUBSCRIBER_OVERFLOW`, and `useRpcSubscription` resumes it from the retention window.
   * @default 1000
   */
  maxBufferedEvents?: number
  /**
   * Longest channel name `publish` and `subscribe` take, in characters; a longer one is refused with
   * `BAD_REQUEST`. Channel names built from input (`chat:${input.room}`) cannot then grow the server's maps.
   * @default 256
   */
  maxChannelNameLength?: number
  /**
   * Presence (`usePresence()`) with the Redis driver: seconds a member stays listed after its instance stopped
   * (killed, cut off from Redis) without leaving. Live instances refresh their members every third of it.
   * Runtime override: `NUXT_ORPC_PUBLISHER_PRESENCE_TTL`.
   * @default 15
   */
  presenceTtl?: number
}

export type ResolvedServerOptions = Required<Omit<NuxtOrpcServerOptions, 'publisher'>> & { publisher: Required<NuxtOrpcPublisherOptions> }

export const serverDefaults: ResolvedServerOptions = {
  router: 'rpc/index',
  route: '/_orpc',
  allowedOrigins: [],
  allowedHosts: [],
  maxMessageBytes: defaultMaxMessageBytes,
  ...serverLimitDefaults,
  shutdownTimeout: 10_000,
  publisher: publisherDefaults,
}

declare module 'nitropack' {
  interface NitroConfig {
    /** nuxt-orpc: typed oRPC over one WebSocket. */
    orpc?: NuxtOrpcServerOptions
  }
  interface NitroOptions {
    orpc?: NuxtOrpcServerOptions
  }
}

/** Where the DevTools tab's page and data are served, in development only (see src/runtime/server/devtools). */
export const devtoolsRoute = '/__nuxt_orpc__/devtools'

const runtimeDir = fileURLToPath(new URL('./runtime', import.meta.url))
const moduleExtensions = ['.ts', '.mts', '.js', '.mjs']

/** The file behind an extension-less module path, if there is one. */
export function findModuleFile(path: string): string | undefined {
  if (moduleExtensions.some(ext => path.endsWith(ext))) return existsSync(path) ? path : undefined
  return moduleExtensions.map(ext => path + ext).find(file => existsSync(file))
}

/** Where the router and the optional context function live for this Nitro app. */
export function resolveServerFiles(srcDir: string, routerPath: string) {
  const router = findModuleFile(resolve(srcDir, routerPath))
  const context = findModuleFile(join(dirname(resolve(srcDir, routerPath)), 'context'))
  return { router, context }
}

function appModuleCode(routerFile: string | undefined, contextFile: string | undefined, expectedRouter: string, route: string) {
  const lines: string[] = [`export const route = ${JSON.stringify(route)}`]
  if (routerFile) {
    const exportNames = findExportNames(readFileSync(routerFile, 'utf8'))
    const exportName = exportNames.includes('router') ? 'router' : exportNames.includes('default') ? 'default' : undefined
    if (!exportName) {
      throw new Error(`[nuxt-orpc] ${routerFile} must export the oRPC router as \`export const router = { ... }\` or as its default export.`)
    }
    lines.push(`export { ${exportName} as router } from ${JSON.stringify(routerFile)}`)
  }
  else {
    lines.push(
      `console.warn(${JSON.stringify(`[nuxt-orpc] No router found at ${expectedRouter}.(ts|js): the WebSocket route serves no procedure.`)})`,
      'export const router = {}',
    )
  }
  lines.push(contextFile
    ? `export { default as createContext } from ${JSON.stringify(contextFile)}`
    : 'export const createContext = undefined')
  return lines.join('\n')
}

/**
 * The Nitro 2 runtime entries that serve WebSockets (through crossws); presets built on them (`heroku`,
 * `render-com`, ... on `node-server`) too. Every other preset has none: Vercel, Netlify, AWS Lambda, Azure,
 * Firebase.
 */
const webSocketEntries = /[\\/](?:node-server|node-cluster|node-listener|nitro-dev|bun|deno-server|deno-deploy|cloudflare-[a-z-]+)(?:\.[cm]?[jt]s)?$/

/** Whether the preset's runtime serves WebSockets (see `webSocketEntries`). */
export const servesWebSockets = (entry: string) => webSocketEntries.test(entry)

const isCloudflareDurable = (preset: string) => preset.replace(/_/g, '-') === 'cloudflare-durable'

/**
 * Nitro's `cloudflare-durable` preset sends every WebSocket to one Durable Object (class and binding
 * `$DurableObject`), but declares neither the binding nor its migration, and writes `wrangler.json` only in
 * Cloudflare's own CI: a deploy or `wrangler dev` of the output then fails at the first upgrade. Both are added
 * here, beside what the app's `cloudflare.wrangler` already says.
 */
function declareDurableObject(nitro: Nitro) {
  const cloudflare = (nitro.options as { cloudflare?: CloudflareOptions }).cloudflare ??= {}
  cloudflare.deployConfig ??= true
  const wrangler = cloudflare.wrangler ??= {}
  const className = '$DurableObject'
  const bindings = (wrangler.durable_objects ??= {}).bindings ??= []
  if (!bindings.some(binding => binding.name === className)) bindings.push({ name: className, class_name: className })
  const migrations = wrangler.migrations ??= []
  const declared = migrations.some(migration => [...migration.new_classes ?? [], ...migration.new_sqlite_classes ?? []].includes(className))
  if (!declared) migrations.push({ tag: 'nuxt-orpc-v1', new_sqlite_classes: [className] })
}

/** The part of Nitro's `cloudflare` options (and of wrangler's config) that `declareDurableObject` fills. */
interface CloudflareOptions {
  deployConfig?: boolean
  wrangler?: {
    durable_objects?: { bindings?: Array<{ name: string, class_name: string }> }
    migrations?: Array<{ tag: string, new_classes?: string[], new_sqlite_classes?: string[] }>
  }
}

/**
 * Installs the server half: the WebSocket route, the Nitro plugin (frame limit, in-process SSR client) and
 * the `rpc` server auto-import. Nuxt's module runs this same function.
 */
export function setupNitro(nitro: Nitro) {
  const options = defu(nitro.options.orpc, serverDefaults) as ResolvedServerOptions
  // DNS rebinding targets development servers above all: there, only local host names count as same-origin.
  if (nitro.options.dev && !options.allowedHosts.length) options.allowedHosts = [...devAllowedHosts]
  nitro.options.orpc = options

  const webSockets = servesWebSockets(nitro.options.entry)
  if (webSockets) {
    nitro.options.experimental ||= {}
    nitro.options.experimental.websocket = true
    if (isCloudflareDurable(nitro.options.preset)) declareDurableObject(nitro)
  }
  else {
    // A Nuxt app's browser client reads this: straight to HTTP, no socket attempt that cannot succeed.
    const publicConfig = nitro.options.runtimeConfig.public as { orpc?: { transport?: string } } | undefined
    if (publicConfig?.orpc) publicConfig.orpc.transport = 'http'
    nitro.logger.info(`[nuxt-orpc] The \`${nitro.options.preset}\` preset has no WebSockets: the router is served over HTTP only (${options.route}/<procedure>, streams as server-sent events), and the browser calls over HTTP.`)
  }

  // Private runtime config (the publisher's Redis URL may hold a password); NUXT_ORPC_* overrides it.
  const { router: _router, route: _route, ...runtimeOptions } = options
  nitro.options.runtimeConfig.orpc = defu(nitro.options.runtimeConfig.orpc as object | undefined, runtimeOptions)

  const files = resolveServerFiles(nitro.options.srcDir, options.router)
  const expectedRouter = relative(nitro.options.rootDir, resolve(nitro.options.srcDir, options.router))
  nitro.options.virtual['#nuxt-orpc/app'] = () => appModuleCode(files.router, files.context, expectedRouter, options.route)
  nitro.options.alias['#nuxt-orpc'] = join(runtimeDir, 'types')

  // The runtime imports Nitro's virtual modules, so it must be bundled, not left to node_modules.
  // (Externals are not resolved yet while modules run: the object may still be missing.)
  const externals = nitro.options.externals ?? {}
  nitro.options.externals = { ...externals, inline: [...(externals.inline ?? []), runtimeDir] }

  if (webSockets) nitro.options.handlers.push({ route: options.route, handler: join(runtimeDir, 'server/route') })
  // The same router over HTTP, for clients that cannot open the socket.
  nitro.options.handlers.push({ route: joinURL(options.route, '**'), handler: join(runtimeDir, 'server/http-route') })
  nitro.options.plugins.push(join(runtimeDir, 'server/plugin'), join(runtimeDir, 'server/publisher/plugin'))
  // The DevTools tab's page and data. Development only: a production build has no route and no inspector.
  if (nitro.options.dev) {
    const handler = join(runtimeDir, 'server/devtools/route')
    nitro.options.handlers.push({ route: devtoolsRoute, handler }, { route: `${devtoolsRoute}/**`, handler })
  }

  if (nitro.options.imports) {
    nitro.options.imports.presets ||= []
    nitro.options.imports.presets.push(
      { from: join(runtimeDir, 'server/rpc'), imports: ['rpc'] },
      { from: join(runtimeDir, 'server/registry'), imports: ['closeRpcConnections'] },
      { from: join(runtimeDir, 'server/publisher/index'), imports: ['usePublisher'] },
      { from: join(runtimeDir, 'server/presence/index'), imports: ['usePresence'] },
    )
  }
  return files
}

const nitroModule: NitroModule = {
  name: 'nuxt-orpc',
  setup: nitro => void setupNitro(nitro),
}

export default nitroModule
