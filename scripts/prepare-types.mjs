import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

/**
 * Generated types a build needs on a fresh clone: the root tsconfig extends the module's `.nuxt/tsconfig.json`,
 * and Vite reads it while transforming the module's own `.ts` files, in any app that builds them (the test
 * fixtures, the benchmark's, the playground). A fixture whose tsconfig.json points at its own
 * `.nuxt/tsconfig.*.json` (kept for `npm run test:types`) needs those too. Generated once; later runs find them.
 * Plain JS: Vite would read the missing root tsconfig to transform a .ts file.
 * @param {string} rootDir the repository
 * @param {string[]} fixtures app directories, relative to `rootDir`, whose own types are needed
 */
export function prepareTypes(rootDir, fixtures = []) {
  const bin = name => join(rootDir, 'node_modules', '.bin', name)
  if (!existsSync(join(rootDir, '.nuxt/tsconfig.json'))) {
    execFileSync(bin('nuxt-module-build'), ['prepare'], { cwd: rootDir, stdio: 'inherit' })
  }
  for (const fixture of fixtures) {
    if (existsSync(join(rootDir, fixture, 'tsconfig.json')) && !existsSync(join(rootDir, fixture, '.nuxt/tsconfig.app.json'))) {
      execFileSync(bin('nuxi'), ['prepare', fixture], { cwd: rootDir, stdio: 'inherit' })
    }
  }
}

// `node scripts/prepare-types.mjs`: before the playground's dev server or build (npm run dev, dev:build).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) prepareTypes(process.cwd())
