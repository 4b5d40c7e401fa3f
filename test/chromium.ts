import { existsSync } from 'node:fs'

/** Debian's Chromium, which the browser tests drive (`.ci/run` installs it: `apt-get install chromium`). */
export const chromiumPath = '/usr/bin/chromium'

export const chromiumArgs = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync']

/** Browser tests skip, saying why, where Chromium is missing; in CI they must run. */
export const skipBrowser = !existsSync(chromiumPath) && !process.env.CI
if (skipBrowser) {
  process.stderr.write(`[nuxt-orpc tests] Browser tests skipped: ${chromiumPath} is missing (apt-get install chromium).\n`)
}
