import { defineBuildConfig } from 'unbuild'

// nuxt-module-build builds src/module and src/runtime; the Nitro module is a second entry (`nuxt-orpc/nitro`).
export default defineBuildConfig({
  entries: ['src/nitro'],
  externals: ['nitropack', 'nitropack/runtime', 'h3', 'crossws', 'ws'],
})
