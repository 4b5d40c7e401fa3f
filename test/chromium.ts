import { existsSync } from 'node:fs'
import type { Browser, Page } from 'playwright-core'

/** Debian's Chromium, which the browser tests drive (`.ci/run` installs it: `apt-get install chromium`). */
export const chromiumPath = '/usr/bin/chromium'

export const chromiumArgs = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync']

/** Browser tests skip, saying why, where Chromium is missing; in CI they must run. */
export const skipBrowser = !existsSync(chromiumPath) && !process.env.CI
if (skipBrowser) {
  process.stderr.write(`[nuxt-orpc tests] Browser tests skipped: ${chromiumPath} is missing (apt-get install chromium).\n`)
}

/** A new page, with the sockets it opens, the frames it sends on them and its uncaught errors. */
export async function watchPage(browser: Browser) {
  const page = await browser.newPage()
  const sockets: string[] = []
  const framesSent: string[] = []
  const pageErrors: Error[] = []
  page.on('websocket', (socket) => {
    sockets.push(socket.url())
    socket.on('framesent', frame => framesSent.push(String(frame.payload)))
  })
  page.on('pageerror', error => pageErrors.push(error))
  return { page, sockets, framesSent, pageErrors }
}

/** Hydration is over when Nuxt says so (event handlers are attached from then on). */
export async function hydrated(page: Page) {
  await page.waitForFunction(() => (document.querySelector('#__nuxt') as { __vue_app__?: { $nuxt?: { isHydrating?: boolean } } } | null)?.__vue_app__?.$nuxt?.isHydrating === false, undefined, { timeout: 10_000 })
}
