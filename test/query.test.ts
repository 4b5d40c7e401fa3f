import { fileURLToPath } from 'node:url'
import { $fetch, setup, url } from '@nuxt/test-utils/e2e'
import type { Browser } from 'playwright-core'
import { chromium } from 'playwright-core'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { chromiumArgs, chromiumPath, hydrated, skipBrowser, watchPage } from './chromium'
import type { TestClient } from './helpers'
import { createClient } from './helpers'

// The query libraries over nuxt-orpc's client, and the `orpc:client` hook, in Chromium against the built app.

await setup({
  rootDir: fileURLToPath(new URL('./fixtures/query', import.meta.url)),
  server: true,
})

let browser: Browser
let rpc: TestClient
let closeClient: () => void

beforeAll(async () => {
  const { client, connection } = createClient({ url: () => url('/_orpc').replace(/^http/, 'ws') })
  rpc = client
  closeClient = () => connection.close()
  if (!skipBrowser) browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs })
})

afterAll(async () => {
  closeClient?.()
  await browser?.close()
})

beforeEach(async () => {
  await rpc.reset()
})

/** The calls among the frames a page sent, as `path input`. */
const callsIn = (frames: string[]) => frames.map(frame => JSON.parse(frame)).filter(frame => frame.t === undefined).map(frame => `${frame.p.u} ${JSON.stringify(frame.p.b?.json ?? null)}`)

const textOf = async (page: import('playwright-core').Page, selector: string) => (await page.textContent(selector))?.trim()

describe('server rendering', () => {
  it('renders each library\'s query and runs the orpc:client hook\'s plugins in-process (no browser needed)', async () => {
    for (const page of ['/tanstack', '/colada']) expect(await $fetch<string>(page)).toContain('1 Mercury 1600')
    const html = await $fetch<string>('/plugins')
    expect(html).toMatch(/<p id="flaky-ssr">\s*2\s*<\/p>/)
    expect(html).toContain('ssr flaky ok')
  })
})

describe.skipIf(skipBrowser)('in Chromium', () => {
  it('TanStack Query: a query rendered on the server is not called again by the browser; reactive input, mutation with invalidation, streamed and live queries go over the socket', async () => {
    const { page, sockets, framesSent, pageErrors } = await watchPage(browser)
    const response = await page.goto(url('/tanstack'), { waitUntil: 'load', timeout: 10_000 })
    // The server rendered the query's data (a Date included, which the payload keeps a Date).
    expect(await response!.text()).toContain('1 Mercury 1600')
    await hydrated(page)
    await page.waitForFunction(() => document.querySelector('#streamed')?.textContent?.trim() === '0,1,2', undefined, { timeout: 10_000 })
    await page.waitForFunction(() => document.querySelector('#live')?.textContent?.trim() === '3', undefined, { timeout: 10_000 })
    expect(await textOf(page, '#planet')).toBe('1 Mercury 1600')
    // The browser called only the streams: the query's data came with the page.
    expect(callsIn(framesSent)).toEqual(['/ticker {"count":3}', '/ticker {"count":4}'])
    expect(await rpc.runs({ name: 'planet.find' })).toBe(1)

    await page.click('#next')
    await page.waitForFunction(() => document.querySelector('#planet')?.textContent?.trim() === '2 Venus 1601', undefined, { timeout: 10_000 })
    await page.click('#rename')
    await page.waitForFunction(() => document.querySelector('#planet')?.textContent?.trim() === '2 Planet 2 1601', undefined, { timeout: 10_000 })
    // The new id was one call; the mutation one; the invalidation refetched the query on screen only.
    expect(callsIn(framesSent).slice(2)).toEqual(['/planet/find {"id":2}', '/planet/rename {"id":2,"name":"Planet 2"}', '/planet/find {"id":2}'])
    expect(sockets).toHaveLength(1)
    expect(pageErrors).toEqual([])
    await page.close()
  })

  it('Pinia Colada: a query rendered on the server is not called again by the browser; reactive input and mutation with invalidation go over the socket', async () => {
    const { page, sockets, framesSent, pageErrors } = await watchPage(browser)
    const response = await page.goto(url('/colada'), { waitUntil: 'load', timeout: 10_000 })
    expect(await response!.text()).toContain('1 Mercury 1600')
    await hydrated(page)
    expect(await textOf(page, '#planet')).toBe('1 Mercury 1600')

    await page.click('#next')
    await page.waitForFunction(() => document.querySelector('#planet')?.textContent?.trim() === '2 Venus 1601', undefined, { timeout: 10_000 })
    await page.click('#rename')
    await page.waitForFunction(() => document.querySelector('#planet')?.textContent?.trim() === '2 Planet 2 1601', undefined, { timeout: 10_000 })
    expect(callsIn(framesSent)).toEqual(['/planet/find {"id":2}', '/planet/rename {"id":2,"name":"Planet 2"}', '/planet/find {"id":2}'])
    expect(await rpc.runs({ name: 'planet.find' })).toBe(3)
    expect(sockets).toHaveLength(1)
    expect(pageErrors).toEqual([])
    await page.close()
  })

  it('the orpc:client hook gives useRpc() oRPC client plugins and interceptors: they run during SSR (in-process) and in the browser (hot path)', async () => {
    const { page, framesSent, pageErrors } = await watchPage(browser)
    const response = await page.goto(url('/plugins'), { waitUntil: 'load', timeout: 10_000 })
    const html = await response!.text()
    // During SSR, ClientRetryPlugin called again after the first failure; the interceptor saw one call.
    expect(html).toMatch(/<p id="flaky-ssr">\s*2\s*<\/p>/)
    await hydrated(page)
    expect(await page.$$eval('#log li', items => items.map(item => item.textContent?.trim()))).toEqual(['ssr flaky ok'])

    await page.click('#call')
    await page.waitForFunction(() => document.querySelector('#result')?.textContent?.includes('answered on run 3'), undefined, { timeout: 10_000 })
    expect(await page.$$eval('#log li', items => items.map(item => item.textContent?.trim()))).toEqual(['ssr flaky ok', 'browser flaky ok'])
    // Three calls (two failed), each on nuxt-orpc's hot path (ids starting with `_`).
    const requests = framesSent.map(frame => JSON.parse(frame)).filter(frame => frame.t === undefined)
    expect(requests.map(frame => frame.p.u)).toEqual(['/flaky', '/flaky', '/flaky'])
    expect(requests.every(frame => String(frame.i).startsWith('_'))).toBe(true)
    expect(pageErrors).toEqual([])
    await page.close()
  })
})
