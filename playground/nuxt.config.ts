export default defineNuxtConfig({
  // Pinia Colada (with Pinia) for app/pages/colada.vue; TanStack Query needs no module: nuxt-orpc installs it.
  modules: ['nuxt-auth-utils', '@pinia/nuxt', '@pinia/colada-nuxt', '../src/module'],
  devtools: { enabled: true },
  runtimeConfig: {
    // Dev-only default; set NUXT_SESSION_PASSWORD (32+ characters) anywhere else.
    session: { password: 'playground-password-change-me-32-characters-long' },
  },
  compatibilityDate: '2026-11-01',
  orpc: {
    // The host names the app is served under: a DNS-rebinding page (another Host) cannot open the socket. In
    // `nuxt dev` an empty list means these three; in production list your public names (or NUXT_ORPC_ALLOWED_HOSTS).
    allowedHosts: ['localhost', '127.0.0.1', '[::1]'],
  },
})
