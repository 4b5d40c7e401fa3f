export default defineNuxtConfig({
  modules: ['nuxt-auth-utils', '../src/module'],
  devtools: { enabled: true },
  runtimeConfig: {
    // Dev-only default; set NUXT_SESSION_PASSWORD (32+ characters) anywhere else.
    session: { password: 'playground-password-change-me-32-characters-long' },
  },
  compatibilityDate: '2026-11-01',
  orpc: {},
})
