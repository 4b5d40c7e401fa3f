declare module '#nuxt-orpc/app' {
  import type { AnyRouter } from '@orpc/server'
  import type { RpcContextFunction } from './types'

  /** The route the socket is served on; calls over HTTP are under it. */
  export const route: string
  export const router: AnyRouter
  export const createContext: RpcContextFunction | undefined
}
