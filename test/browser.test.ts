import { fileURLToPath } from 'node:url'
import { setup, url } from '@nuxt/test-utils/e2e'
import type { Browser } from 'playwright-core'
import { chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chromiumArgs, chromiumPath, hydrated, skipBrowser, watchPage } from './chromium'
import { RawSocket } from './helpers'
import { startUpgradeRefusingProxy } from './proxy'

await setup({
  rootDir: fileURLToPath(new URL('./fixtures/basic', import.meta.url)),
  server: true,
})

let browser: Browser

/** What the fixture's /session page puts on `window` for the session-switch test. */
interface SessionPage {
  login: (name: string) => Promise<void>
  logout: () => Promise<void>
  refresh: () => Promise<void>
  slow: (ms: number) => Promise<unknown>
  whoami: () => Promise<unknown>
  feed: () => number[]
  status: () => { state: string, closeCode?: number }
}

declare global {
  interface Window {
    session: SessionPage
  }
}

beforeAll(async () => {
  if (skipBrowser) return
  browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs })
})

afterAll(async () => {
  await browser?.close()
})

const watchedPage = () => watchPage(browser)

describe.skipIf(skipBrowser)('in Chromium', () => {
  it('hydrates the SSR result without a call, then calls and streams over one socket', async () => {
    const { page, sockets, framesSent, pageErrors } = await watchedPage()

    await page.goto(url('/'), { waitUntil: 'load', timeout: 10_000 })
    await hydrated(page)
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

  it('renders a live list on the server, then goes on in the browser from its last event: every event once, in order, while events keep coming', async () => {
    const publisher = new RawSocket(url('/_orpc').replace(/^http/, 'ws'))
    await publisher.opened
    let published = 0
    const tick = async () => {
      const n = published++
      await publisher.request(`t${n}`, 'tick', { n })
    }
    for (let n = 0; n < 5; n++) await tick()
    // Events keep coming while the page renders, loads and hydrates.
    let publishing = true
    const ticking = (async () => {
      while (publishing) {
        await tick()
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    })()
    const { page, framesSent, pageErrors } = await watchedPage()
    const response = await page.goto(url('/live'), { waitUntil: 'load', timeout: 10_000 })
    const html = await response!.text()
    await hydrated(page)
    await new Promise(resolve => setTimeout(resolve, 300))
    publishing = false
    await ticking
    const last = published - 1
    await page.waitForFunction(last => document.querySelector('#live-events')?.textContent?.trim().split(',').at(-1) === String(last), last, { timeout: 10_000 })

    // The server rendered the events it had, from the first one on.
    const rendered = /<p id="live-events">([^<]*)<\/p>/.exec(html)?.[1]?.trim().split(',').map(Number) ?? []
    expect(rendered.slice(0, 5)).toEqual([0, 1, 2, 3, 4])
    // In the browser: every event once, in order, those published between render and hydration included.
    const shown = (await page.textContent('#live-events'))!.trim().split(',').map(Number)
    expect(shown).toEqual(Array.from({ length: published }, (_, n) => n))
    expect(shown.length).toBeGreaterThan(rendered.length)
    expect((await page.textContent('#live-status'))?.trim()).toBe('open')
    // One call from the browser, resuming after the last rendered event: the rendered ones were not fetched again.
    const calls = framesSent.map(frame => JSON.parse(frame) as { t?: number, p?: { u?: string, h?: Record<string, string> } }).filter(frame => (frame.t ?? 1) === 1)
    const tickerCalls = calls.filter(call => call.p?.u?.endsWith('/ticker'))
    expect(tickerCalls).toHaveLength(1)
    expect(tickerCalls[0]!.p!.h?.['last-event-id']).toBeDefined()
    // A stream without ids: rendered (its first event), then started afresh in the browser, which goes on.
    expect(/<p id="live-tick">([^<]*)<\/p>/.exec(html)?.[1]?.trim()).toBe('0')
    const tickCalls = calls.filter(call => call.p?.u?.endsWith('/ticks'))
    expect(tickCalls).toHaveLength(1)
    expect(tickCalls[0]!.p!.h).toBeUndefined()
    await page.waitForFunction(() => Number(document.querySelector('#live-tick')?.textContent) > 2, undefined, { timeout: 10_000 })
    expect(pageErrors).toEqual([])
    publisher.close()
    await page.close()
  })

  it('moves to a new socket when the session changes (nuxt-auth-utils): the call in flight settles once, the stream goes on without gap or duplicate, the next call sees the new user; a refused session gets UNAUTHORIZED', async () => {
    const publisher = new RawSocket(url('/_orpc').replace(/^http/, 'ws'))
    await publisher.opened
    let published = 0
    let publishing = true
    const posting = (async () => {
      while (publishing) {
        const n = published++
        await publisher.request(`f${n}`, 'post', { n })
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    })()
    const { page, sockets, framesSent, pageErrors } = await watchedPage()
    await page.goto(url('/session'), { waitUntil: 'load', timeout: 10_000 })
    await page.waitForFunction(() => (window.session?.feed().length ?? 0) > 3, undefined, { timeout: 10_000 })

    // Log in while a call runs.
    const first = page.evaluate(() => window.session.slow(800))
    await page.evaluate(name => window.session.login(name), 'bob')
    expect(await page.evaluate(() => window.session.whoami())).toEqual({ value: { name: 'bob' } })
    expect(await first).toEqual({ value: 'done' })
    // Log out while another one runs.
    const second = page.evaluate(() => window.session.slow(800))
    await page.evaluate(() => window.session.logout())
    expect(await page.evaluate(() => window.session.whoami())).toMatchObject({ error: 'UNAUTHORIZED' })
    expect(await second).toEqual({ value: 'done' })

    publishing = false
    await posting
    const last = published - 1
    await page.waitForFunction(last => window.session.feed().at(-1) === last, last, { timeout: 10_000 })
    const feed = await page.evaluate(() => window.session.feed())
    // Every event from the first one seen, once and in order, across both switches.
    expect(feed).toEqual(Array.from({ length: last - feed[0]! + 1 }, (_, index) => feed[0]! + index))
    expect(sockets).toHaveLength(3)
    // Each call went out once.
    expect(framesSent.filter(frame => frame.includes('/slow'))).toHaveLength(2)

    // A session the server refuses: calls in flight still finish on the old socket; new ones get the refusal.
    const third = page.evaluate(() => window.session.slow(800))
    await page.evaluate(async () => {
      document.cookie = 'revoked=1; path=/'
      await window.session.refresh()
    })
    expect(await page.evaluate(() => window.session.whoami())).toMatchObject({ error: 'UNAUTHORIZED', data: { closeCode: 4401 } })
    expect(await page.evaluate(() => window.session.status())).toMatchObject({ state: 'closed', closeCode: 4401 })
    expect(await third).toEqual({ value: 'done' })
    expect(pageErrors).toEqual([])
    publisher.close()
    await page.close()
  })

  it('calls and streams over HTTP behind a proxy that refuses upgrades, then moves to the socket once it lets them through; nothing is sent twice', async () => {
    const proxy = await startUpgradeRefusingProxy(new URL(url('/')))
    const { page, framesSent, pageErrors } = await watchedPage()
    try {
      const httpCalls: string[] = []
      page.on('request', (request) => {
        // Calls are POSTs; the client's probe of the HTTP route is a GET.
        if (request.method() === 'POST' && new URL(request.url()).pathname.startsWith('/_orpc/')) httpCalls.push(new URL(request.url()).pathname)
      })

      await page.goto(`${proxy.url}/`, { waitUntil: 'load', timeout: 10_000 })
      await hydrated(page)
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
