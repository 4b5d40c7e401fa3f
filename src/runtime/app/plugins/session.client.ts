import { watch } from 'vue'
import type { Plugin } from '#app'
import { defineNuxtPlugin, useState } from '#imports'
import { refreshRpcConnection } from '../composables'

/**
 * With nuxt-auth-utils: the socket's context was read from the session's cookie when it opened, so a login,
 * a logout or a refreshed session moves the calls to a new socket (`refreshRpcConnection`). Its session lives
 * in the `nuxt-session` state (what `useUserSession()` reads and its `fetch` and `clear` write; nuxt-auth-utils
 * 0.5). The name is its own: test/browser.test.ts's session-switch test fails if it changes.
 */
const refreshOnSessionChange: Plugin = defineNuxtPlugin(() => {
  const session = useState<unknown>('nuxt-session')
  watch(() => JSON.stringify(session.value ?? null), () => {
    void refreshRpcConnection()
  })
})

export default refreshOnSessionChange
