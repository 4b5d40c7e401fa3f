import type { ClientRetryPluginContext } from '@orpc/client/plugins'

// Types the `context` option of useRpc()'s calls for oRPC's retry plugin (app/plugins/rpc-client.ts).
declare module '#nuxt-orpc' {
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type
  interface RpcClientContext extends ClientRetryPluginContext {}
}

export {}
