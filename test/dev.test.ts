import { readdir, readFile } from 'node:fs/promises'
import { get as httpGet } from 'node:http'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { $fetch, getServerLogs, setup, url, useTestContext } from '@nuxt/test-utils/e2e'
import { chromium } from 'playwright-core'
import { describe, expect, it } from 'vitest'
import { chromiumArgs, chromiumPath, hydrated, skipBrowser, watchPage } from './chromium'
import { createClient, devtoolsMarkers, RawSocket, rejectionOf, waitFor } from './helpers'

await setup({
  rootDir: fileURLToPath(new URL('./fixtures/basic', import.meta.url)),
  dev: true,
  server: true,
  // Nuxt DevTools on, for its oRPC tab (the fixture keeps it off for its other runs). `nuxi dev` reads the
  // fixture's config itself: the switch goes through the environment. DevTools stays off where VITEST or
  // TEST is set, which the dev server would inherit from vitest: as for a developer, they are not.
  env: { NUXT_ORPC_TEST_DEVTOOLS: 'true', VITEST: '', TEST: '' },
})

const wsUrl = (query = '') => url(`/_orpc${query}`).replace(/^http/, 'ws')

describe('nuxt dev', () => {
  it('serves calls over the socket and SSR', async () => {
    const { client, connection } = createClient({ url: wsUrl() })
    try {
      expect(await client.greet({ name: 'dev' })).toEqual({ message: 'Hello dev', transport: 'websocket' })
    }
    finally {
      connection.close()
    }
    expect(await $fetch<string>('/')).toContain('Hello SSR via ssr')
  })

  it('survives refused upgrades (foreign origin, 401) and keeps serving', async () => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const foreign = new RawSocket(wsUrl(), { origin: 'http://evil.example' })
      expect((await foreign.closed).code).toBe(1008)
      const denied = new RawSocket(wsUrl('?deny=401'))
      expect((await denied.closed).code).toBe(4401)
    }
    const { client, connection } = createClient({ url: wsUrl('?deny=401') })
    expect((await rejectionOf(client.ping())).code).toBe('UNAUTHORIZED')
    connection.close()

    const { client: healthy, connection: healthyConnection } = createClient({ url: wsUrl() })
    expect(await healthy.ping()).toBe('pong')
    healthyConnection.close()
    expect(getServerLogs().join('\n')).not.toMatch(/unhandledRejection|ECONNRESET/)
  })

  it('refuses a DNS-rebinding handshake (Host and Origin both another name) and lets the page\'s own origin in', async () => {
    const { host } = new URL(url('/'))
    const port = new URL(url('/')).port
    const rebound = new RawSocket(wsUrl(), { host: `rebind.attacker.example:${port}`, origin: `http://rebind.attacker.example:${port}` })
    expect(await rebound.closed).toEqual({ code: 1008, reason: `Origin http://rebind.attacker.example:${port} is not allowed` })
    const own = new RawSocket(wsUrl(), { origin: `http://${host}` })
    try {
      await own.opened
      expect((await own.request(1, 'ping')).p.b?.json).toBe('pong')
    }
    finally {
      own.close()
    }
  })
})

describe('the DevTools tab\'s data (development only)', () => {
  const devtools = (path = '') => url(`/__nuxt_orpc__/devtools${path}`)
  interface State {
    connections: Array<{ id: string, origin?: string, remoteAddress: string, bytesIn: number, bytesOut: number, callsInFlight: number, closedAt?: number, closeCode?: number }>
    calls: Array<{ seq: number, connection: string, procedure: string, state: string, code?: string, duration?: number, inputBytes: number, outputBytes: number, events: number }>
    channels: Array<{ name: string, subscribers: number, published: number }>
    limits: Array<Record<string, unknown>>
  }
  const state = async () => await (await fetch(devtools('/state'))).json() as State

  it('lists a connection\'s calls, its open stream and channel, and what each call sent and got', async () => {
    const { client, connection } = createClient({ url: wsUrl() })
    try {
      expect(await client.greet({ name: 'inspector' })).toMatchObject({ message: 'Hello inspector' })
      expect((await rejectionOf(client.fail())).code).toBe('CONFLICT')
      const feed = await client.feed()
      const next = feed.next()
      await waitFor(async () => (await state()).channels.find(channel => channel.name === 'feed')?.subscribers === 1)
      await client.post({ n: 7 })
      expect((await next).value).toEqual({ n: 7 })

      const seen = await state()
      const greet = seen.calls.find(call => call.procedure === 'greet')!
      const conn = seen.connections.find(entry => entry.id === greet.connection)!
      expect(conn.closedAt).toBeUndefined()
      expect(conn.callsInFlight).toBe(1)
      // The connection's bytes hold at least its calls' frames.
      const ofConnection = seen.calls.filter(call => call.connection === conn.id)
      expect(ofConnection.map(call => call.procedure).sort()).toEqual(['fail', 'feed', 'greet', 'post'])
      expect(conn.bytesIn).toBeGreaterThanOrEqual(ofConnection.reduce((sum, call) => sum + call.inputBytes, 0))
      expect(conn.bytesOut).toBeGreaterThanOrEqual(ofConnection.reduce((sum, call) => sum + call.outputBytes, 0))
      expect(greet).toMatchObject({ state: 'done' })
      expect(greet.code).toBeUndefined()
      expect(greet.duration).toBeGreaterThan(0)
      expect(greet.inputBytes).toBeGreaterThan(10)
      expect(greet.outputBytes).toBeGreaterThan(10)
      expect(seen.calls.find(call => call.procedure === 'fail')).toMatchObject({ state: 'error', code: 'CONFLICT' })
      expect(seen.calls.find(call => call.procedure === 'feed')).toMatchObject({ state: 'streaming', events: 1 })
      expect(seen.calls.find(call => call.procedure === 'post')).toMatchObject({ state: 'done' })
      expect(seen.channels.find(channel => channel.name === 'feed')).toMatchObject({ subscribers: 1, published: 1 })
      expect(seen.limits[0]).toMatchObject({ maxCallsInFlight: 128, maxMessageBytes: 65_536, allowedHosts: ['localhost', '127.0.0.1', '[::1]'] })

      // The payload, on demand: the frames as sent.
      const payload = await (await fetch(devtools(`/calls/${greet.seq}`))).json() as { input: string, output: string }
      expect(JSON.parse(payload.input)).toMatchObject({ p: { u: '/greet', b: { json: { name: 'inspector' } } } })
      expect(JSON.parse(payload.output)).toMatchObject({ p: { b: { json: { message: 'Hello inspector' } } } })
      expect((await fetch(devtools('/calls/99999999'))).status).toBe(404)

      await feed.return()
      await waitFor(async () => (await state()).channels.find(channel => channel.name === 'feed')?.subscribers === 0)
      expect((await state()).calls.find(call => call.procedure === 'feed')).toMatchObject({ state: 'aborted', events: 1 })
    }
    finally {
      connection.close()
    }
  })

  it('keeps a closed connection with its close code', async () => {
    const raw = new RawSocket(wsUrl())
    await raw.opened
    expect((await raw.request(1, 'ping')).p.b?.json).toBe('pong')
    const before = await state()
    const id = before.calls.find(call => call.procedure === 'ping')!.connection
    raw.socket.send('not json')
    expect((await raw.closed).code).toBe(1007)
    const closed = await waitFor(async () => (await state()).connections.find(entry => entry.id === id && entry.closedAt))
    expect(closed.closeCode).toBe(1007)
  })

  it('is in the development build (the markers a production build must not hold)', async () => {
    const dir = join(useTestContext().nuxt!.options.buildDir, 'dev')
    const files = (await readdir(dir, { recursive: true, withFileTypes: true })).filter(entry => entry.isFile() && /\.[cm]?js$/.test(entry.name))
    const code = (await Promise.all(files.map(entry => readFile(join(entry.parentPath, entry.name), 'utf8')))).join('\n')
    for (const marker of devtoolsMarkers) expect(code).toContain(marker)
  })

  it('reads any URL a client sends without changing how the server answers it', async () => {
    const raw = new RawSocket(wsUrl())
    try {
      await raw.opened
      // An escape that does not decode: the server answers it as it would without the tab, and the tab lists it
      // with that answer.
      const answer = await raw.request(7, '%E0%A4%A/x')
      expect(answer.p.s).toBeGreaterThanOrEqual(400)
      expect((await raw.request(8, 'ping')).p.b?.json).toBe('pong')
      expect((await state()).calls.find(call => call.procedure === '%E0%A4%A.x')).toMatchObject({ state: 'error', status: answer.p.s })
    }
    finally {
      raw.close()
    }
  })

  it('serves the tab\'s page, and nothing under a host name that is not allowed (DNS rebinding)', async () => {
    const page = await fetch(devtools())
    expect(page.headers.get('content-type')).toContain('text/html')
    expect(await page.text()).toContain('<title>nuxt-orpc DevTools</title>')
    const port = new URL(url('/')).port
    const rebound = await rawGet(`http://127.0.0.1:${port}/__nuxt_orpc__/devtools/state`, `rebind.attacker.example:${port}`)
    expect(rebound.status).toBe(403)
    expect(rebound.body).not.toContain('connections')
    // A Host that is not a host name at all, and a path under the route that is not one of its own.
    expect((await rawGet(`http://127.0.0.1:${port}/__nuxt_orpc__/devtools/state`, 'not a host')).status).toBe(403)
    expect((await fetch(devtools('/elsewhere'))).status).toBe(404)
    // Another site's page (the browser says so) gets nothing either.
    const crossSite = await fetch(devtools('/state'), { headers: { 'sec-fetch-site': 'cross-site' } })
    expect(crossSite.status).toBe(403)
    expect((await fetch(devtools('/state'), { headers: { 'sec-fetch-site': 'same-origin' } })).status).toBe(200)
  })
})

/** A GET with a Host header of the test's choosing (fetch does not let a caller set it). */
function rawGet(target: string, host: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpGet(target, { headers: { host } }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => body += chunk)
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
    })
    request.on('error', reject)
  })
}

describe.skipIf(skipBrowser)('the DevTools tab in Chromium', () => {
  it('opens from Nuxt DevTools and lists the calls the page made', async () => {
    const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs })
    try {
      const { page, pageErrors } = await watchPage(browser)
      await page.setViewportSize({ width: 1280, height: 800 })
      // Vite may reload the first page it serves, once it has optimized the dependencies it found there (the
      // module import in flight then fails): the test starts on a page loaded after that.
      await page.goto(url('/'))
      await hydrated(page)
      await page.reload()
      await hydrated(page)
      pageErrors.length = 0
      await page.click('#call')
      await page.waitForSelector('#clicked:has-text("Hello browser")')
      await page.click('#stream')
      await page.waitForSelector('#ticks:has-text("0,1,2,3,4")')
      // A client's procedure name is data, never markup in the tab.
      const markup = '<img src=x onerror="window.__injected=1">'
      const hostile = new RawSocket(wsUrl())
      await hostile.opened
      await hostile.request(1, encodeURIComponent(markup))
      hostile.close()
      // Nuxt DevTools' own API opens its panel; past its first-run welcome, on the oRPC tab.
      type DevtoolsHost = { devtools: { navigate: (path: string) => Promise<void> } }
      const openTab = () => page.evaluate(() => (window as unknown as { __NUXT_DEVTOOLS_HOST__: DevtoolsHost }).__NUXT_DEVTOOLS_HOST__.devtools.navigate('/modules/custom-nuxt-orpc'))
      await page.waitForFunction(() => 'devtools' in ((window as { __NUXT_DEVTOOLS_HOST__?: object }).__NUXT_DEVTOOLS_HOST__ ?? {}))
      await openTab()
      const panel = await waitFor(() => page.frames().find(frame => frame.url().includes('/__nuxt_devtools__/client/')), { timeout: 20_000 })
      const welcome = panel.getByText('Get Started')
      await welcome.waitFor({ timeout: 20_000 }).then(() => welcome.click(), () => {})
      await openTab()
      const tab = await waitFor(() => page.frames().find(frame => frame.url().includes('/__nuxt_orpc__/devtools')), { timeout: 20_000 })
      // The calls the page made, as the tab lists them: the call, and the stream the page stopped after 5 events.
      // (Newest first: earlier tests' calls are listed below them.)
      const greet = tab.locator('#calls tr[data-procedure="greet"]').first()
      await greet.waitFor()
      expect(await greet.locator('td').nth(1).textContent()).toBe('done')
      const connection = await greet.getAttribute('data-connection')
      const ticks = tab.locator(`#calls tr[data-procedure="ticks"][data-connection="${connection}"]`)
      expect(await ticks.locator('td').nth(1).textContent()).toBe('aborted')
      // The page stops after 5 events; a tick every 10 ms may send a sixth before the abort reaches the server
      // (seen under the full suite's load), and the tab counts what was sent.
      expect(Number(await ticks.locator('td').nth(5).textContent())).toBeGreaterThanOrEqual(5)
      expect((await page.textContent('#ticks'))?.trim()).toBe('0,1,2,3,4')
      const connectionRow = tab.locator(`#connections tr[data-id="${connection}"]`)
      expect(await connectionRow.locator('td').nth(1).textContent()).toBe(new URL(url('/')).origin)
      expect(await connectionRow.locator('td').last().textContent()).toBe('open')
      const injected = tab.locator('#calls tr').filter({ hasText: markup })
      expect(await injected.locator('code').first().textContent()).toBe(markup)
      expect(await tab.locator('#calls img').count()).toBe(0)
      expect(await tab.evaluate(() => (window as { __injected?: number }).__injected)).toBeUndefined()
      // Its payload, on demand.
      await greet.click()
      await tab.waitForSelector('#input:has-text("browser")')
      expect(JSON.parse(await tab.locator('#output').textContent() ?? '')).toMatchObject({ p: { b: { json: { message: 'Hello browser', transport: 'websocket' } } } })
      // Nuxt DevTools' own client fetches its icons from esm.sh, which this machine cannot reach: those errors are
      // its own. None may come from the page or the tab.
      expect(pageErrors.filter(error => !error.stack?.includes('/__nuxt_devtools__/client/'))).toEqual([])
    }
    finally {
      await browser.close()
    }
  }, 60_000)
})
