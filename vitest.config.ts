import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    // Two cores: fixture builds and servers run one file at a time.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 240_000,
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.mjs'],
  },
})
