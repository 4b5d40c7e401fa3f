import { fileURLToPath } from 'node:url'
import { setup, url } from '@nuxt/test-utils/e2e'
import type { Browser } from 'playwright-core'
import { chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chromiumArgs, chromiumPath, skipBrowser } from './chromium'
import { startUpgradeRefusingProxy } from './proxy'

await setup({
  rootDir: fileURLToPath(new URL('./fixtures/basic', import.meta.url)),
  server: true,
})

let browser: Browser

beforeAll(async () => {
  if (skipBrowser) return
  browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs })
})

afterAll(async () => {
  await browser?.close()
})

describe.skipIf(skipBrowser)('in Chromium', () => {
  it('hydrates the SSR result without a call, then calls and streams over one socket', async () => {
    const page = await browser.newPage()
    const sockets: string[] = []
    const framesSent: string[] = []
    page.on('websocket', (socket) => {
      sockets.push(socket.url())
      socket.on('framesent', frame => framesSent.push(String(frame.payload)))
    })
    const pageErrors: Error[] = []
    page.on('pageerror', error => pageErrors.push(error))

    await page.goto(url('/'), { waitUntil: 'load', timeout: 10_000 })
    // Hydration is over when Nuxt says so (event handlers are attached from then on).
    await page.waitForFunction(() => (document.querySelector('#__nuxt') as { __vue_app__?: { $nuxt?: { isHydrating?: boolean } } } | null)?.__vue_app__?.$nuxt?.isHydrating === false, undefined, { timeout: 10_000 })
    expect(await page.textContent('#ssr')).toContain('Hello SSR via ssr')
    expect(await page.textContent('#status')).toContain('idle')
    // Hydration reused the SSR payload: no socket was opened for it.
    expect(sockets.filter(socketUrl => socketUrl.includes('/_orpc'))).toHaveLength(0)

    await page.click('#call')
    await page.waitForFunction(() => document.querySelector('#clicked')?.textContent?.includes('Hello browser via websocket'), undefined, { timeout: 10_000 })
    expect(await page.textContent('#status')).toContain('open')

    await page.click('#stream')
    await page.waitForFunction(() => document.querySelector('#ticks')?.textContent?.trim() === '0,1,2,3,4', undefined, { timeout: 10_000 })

    expect(sockets).toEqual([url('/_orpc').replace(/^http/, 'ws')])
    // One greet frame, one ticks frame, one abort frame for the early break: nothing was sent twice.
    expect(framesSent.map(frame => JSON.parse(frame)).map(frame => frame.t ?? 1)).toEqual([1, 1, 4])
    expect(pageErrors).toEqual([])
    await page.close()
  })

  it('calls and streams over HTTP behind a proxy that refuses upgrades, then moves to the socket once it lets them through; nothing is sent twice', async () => {
    const proxy = await startUpgradeRefusingProxy(new URL(url('/')))
    const page = await browser.newPage()
    try {
      const httpCalls: string[] = []
      page.on('request', (request) => {
        // Calls are POSTs; the client's probe of the HTTP route is a GET.
        if (request.method() === 'POST' && new URL(request.url()).pathname.startsWith('/_orpc/')) httpCalls.push(new URL(request.url()).pathname)
      })
      const framesSent: string[] = []
      page.on('websocket', socket => socket.on('framesent', frame => framesSent.push(String(frame.payload))))
      const pageErrors: Error[] = []
      page.on('pageerror', error => pageErrors.push(error))

      await page.goto(`${proxy.url}/`, { waitUntil: 'load', timeout: 10_000 })
      await page.waitForFunction(() => (document.querySelector('#__nuxt') as { __vue_app__?: { $nuxt?: { isHydrating?: boolean } } } | null)?.__vue_app__?.$nuxt?.isHydrating === false, undefined, { timeout: 10_000 })
      await page.click('#call')
      await page.waitForFunction(() => document.querySelector('#clicked')?.textContent?.includes('Hello browser via http'), undefined, { timeout: 10_000 })
      expect(await page.textContent('#transport')).toContain('http')
      await page.click('#stream')
      await page.waitForFunction(() => document.querySelector('#ticks')?.textContent?.trim() === '0,1,2,3,4', undefined, { timeout: 10_000 })
      expect(proxy.state.upgradesRefused).toBeGreaterThan(0)

      proxy.state.allowUpgrades = true
      await page.waitForFunction(() => document.querySelector('#transport')?.textContent?.trim() === 'websocket', undefined, { timeout: 10_000 })
      await page.click('#call')
      await page.waitForFunction(() => document.querySelector('#clicked')?.textContent?.includes('Hello browser via websocket'), undefined, { timeout: 10_000 })

      // Each call went out once, on one transport: greet and ticks over HTTP, then greet on the socket.
      expect(httpCalls).toEqual(['/_orpc/greet', '/_orpc/ticks'])
      expect(framesSent.map(frame => JSON.parse(frame)).filter(frame => frame.p?.u).map(frame => frame.p.u)).toEqual(['/greet'])
      expect(pageErrors).toEqual([])
    }
    finally {
      await page.close()
      proxy.close()
    }
  })
})
