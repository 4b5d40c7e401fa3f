// @ts-check
import { createConfigForNuxt } from '@nuxt/eslint-config/flat'

export default createConfigForNuxt({
  features: {
    tooling: true,
    stylistic: true,
  },
  dirs: {
    src: ['./playground', './playground/app', './test/fixtures/basic', './test/fixtures/basic/app', './test/fixtures/pubsub', './test/fixtures/pubsub/app', './test/fixtures/query', './test/fixtures/query/app'],
  },
}).append({
  files: ['test/**/*.ts'],
  rules: {
    // Tests drive untyped clients against fixtures on purpose.
    '@typescript-eslint/no-explicit-any': 'off',
  },
}, {
  ignores: ['**/.nuxt', '**/.output', '**/dist', '**/node_modules', 'scratch'],
})
