import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'

/**
 * Generated types the build needs on a fresh clone: the fixtures' tsconfig.json (kept for `npm run test:types`)
 * point at `.nuxt/tsconfig.*.json`, which Vite reads while transforming, and the root tsconfig extends the
 * module's `.nuxt/tsconfig.json`. Generated once; later runs find them. Plain JS: Vite would read the missing
 * root tsconfig to transform a .ts file.
 */
export default function setup() {
  const bin = name => join('node_modules', '.bin', name)
  if (!existsSync('.nuxt/tsconfig.json')) {
    execFileSync(bin('nuxt-module-build'), ['prepare'], { stdio: 'inherit' })
  }
  for (const fixture of ['test/fixtures/basic', 'test/fixtures/pubsub', 'test/fixtures/query']) {
    if (existsSync(join(fixture, 'tsconfig.json')) && !existsSync(join(fixture, '.nuxt/tsconfig.app.json'))) {
      execFileSync(bin('nuxi'), ['prepare', fixture], { stdio: 'inherit' })
    }
  }
}
