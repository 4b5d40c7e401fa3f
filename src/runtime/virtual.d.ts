declare module '#nuxt-orpc/app' {
  import type { AnyRouter } from '@orpc/server'
  import type { RpcContextFunction } from './types'

  export const router: AnyRouter
  export const createContext: RpcContextFunction | undefined
}
