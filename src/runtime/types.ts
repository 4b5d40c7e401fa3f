import type { StandardLinkOptions, StandardLinkPlugin } from '@orpc/client/standard'
import type { AnyRouter } from '@orpc/server'
import type { H3Event } from 'h3'

/**
 * Filled by the declaration nuxt-orpc generates from `rpc/context.ts`: `{ context: ReturnType }`.
 * Kept apart from {@link RpcRouterRegister} so the router's type can depend on the context's
 * without a cycle.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RpcContextRegister {}

/** Filled by the declaration nuxt-orpc generates from `rpc/index.ts`: `{ router: typeof router }`. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RpcRouterRegister {}

/** The context every procedure sees: what the app's context function returned for the connection. */
export type RpcContext = RpcContextRegister extends { context: infer C extends object } ? C : Record<never, never>

export type RpcAnyRouter = AnyRouter

/** The router a module exports: its named export `router`, or else its default export. */
export type RpcRouterOf<M> = M extends { router: infer R } ? R : M extends { default: infer D } ? D : never

/** The app's router, as registered by the generated declaration. */
export type RpcRouter = RpcRouterRegister extends { router: infer R extends AnyRouter } ? R : AnyRouter

/** The request a WebSocket upgrade carries (crossws's); the context function gets an H3 event made from it. */
export interface RpcUpgradeRequest {
  readonly url: string
  readonly headers: Headers
  readonly context: Record<string, unknown>
}

/** What the context function receives, once per connection or once per SSR page request. */
export interface RpcContextInput {
  /**
   * The request behind this context, as an H3 event: the page request during SSR, the WebSocket upgrade over
   * the socket (on every runtime), so `getUserSession(event)`, `requireUserSession(event)` and
   * `getCookie(event, name)` work the same on both paths. Over the socket its response goes nowhere: cookies
   * set there do not reach the browser.
   */
  event: H3Event
  /** The request URL. */
  url: URL
  /** The request headers (cookies included). */
  headers: Headers
  /** The peer's IP address as the server's socket sees it (no proxy headers are trusted). */
  remoteAddress: string | undefined
  /**
   * `'websocket'` for a connection, `'http'` for one call over HTTP (a client that cannot open the socket),
   * `'ssr'` for in-process calls made while rendering a page.
   */
  transport: 'websocket' | 'http' | 'ssr'
}

/** The shape of the default export of `rpc/context.ts`. */
export type RpcContextFunction<T extends object = object> = (input: RpcContextInput) => T | Promise<T>

/**
 * The channels of the app's publisher and the payload each carries. Augment it to type `usePublisher()`:
 *
 * ```ts
 * declare module '#nuxt-orpc' {
 *   interface RpcChannels {
 *     'announcements': { text: string }
 *     [room: `chat:${string}`]: { author: string, text: string }
 *   }
 * }
 * ```
 *
 * Payloads are objects (event ids travel as oRPC event metadata, which needs an object to hold it).
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RpcChannels {}

/** The channel map `usePublisher()` is typed with: {@link RpcChannels}, or any channel while it is empty. */
export type RpcChannelMap = keyof RpcChannels extends never ? Record<string, object> : RpcChannels

/**
 * The presence channels of the app and the data each member carries. Augment it to type `usePresence()`:
 *
 * ```ts
 * declare module '#nuxt-orpc' {
 *   interface RpcPresenceChannels {
 *     [room: `room:${string}`]: { name: string }
 *   }
 * }
 * ```
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RpcPresenceChannels {}

/** The channel map `usePresence()` is typed with: {@link RpcPresenceChannels}, or any channel while it is empty. */
export type RpcPresenceChannelMap = keyof RpcPresenceChannels extends never ? Record<string, object> : RpcPresenceChannels

/**
 * The client context of `useRpc()` calls: what oRPC client plugins read from a call's `context` option. Augment
 * it to type theirs:
 *
 * ```ts
 * import type { ClientRetryPluginContext } from '@orpc/client/plugins'
 * declare module '#nuxt-orpc' {
 *   interface RpcClientContext extends ClientRetryPluginContext {}
 * }
 * ```
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RpcClientContext {}

/**
 * What an `orpc:client` hook fills (a Nuxt plugin registers it with `nuxtApp.hook('orpc:client', setup => ...)`):
 * oRPC link plugins and interceptors for `useRpc()`'s calls. The hooks run once per app, synchronously, when the
 * client is first used. See `RpcConnectionOptions` for where each one runs.
 */
export interface RpcClientSetup {
  plugins: StandardLinkPlugin<RpcClientContext>[]
  interceptors: NonNullable<StandardLinkOptions<RpcClientContext>['interceptors']>
  clientInterceptors: NonNullable<StandardLinkOptions<RpcClientContext>['clientInterceptors']>
}
