import { ClientRetryPlugin } from '@orpc/client/plugins'

// oRPC client plugins and interceptors for useRpc(): a call made with `{ context: { retry: 3 } }` is retried
// after a failure (only those: a call is never sent twice unless the app says it is safe), and in development
// every call is logged with its duration.
export default defineNuxtPlugin((nuxtApp) => {
  nuxtApp.hook('orpc:client', ({ plugins, interceptors }) => {
    plugins.push(new ClientRetryPlugin({ default: { retryDelay: 500 } }))
    if (import.meta.dev) {
      interceptors.push(async ({ path, next }) => {
        const started = performance.now()
        try {
          return await next()
        }
        finally {
          console.debug(`[rpc] ${path.join('.')} ${Math.round(performance.now() - started)} ms`)
        }
      })
    }
  })
})
