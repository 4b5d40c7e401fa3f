import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createORPCClient } from '@orpc/client'
import { RPCLink as HTTPLink } from '@orpc/client/fetch'
import { $fetch, getServerLogs, setup, startServer, stopServer, url, useTestContext } from '@nuxt/test-utils/e2e'
import { getRandomPort } from 'get-port-please'
import { afterEach, describe, expect, it } from 'vitest'
import type { RpcConnection } from '../src/runtime/client/connection'
import type { TestClient } from './helpers'
import { createClient, devtoolsMarkers, RawSocket, rejectionOf, waitFor } from './helpers'
import { startUpgradeRefusingProxy } from './proxy'

const port = await getRandomPort('127.0.0.1')

await setup({
  rootDir: fileURLToPath(new URL('./fixtures/basic', import.meta.url)),
  server: true,
  port,
})

const wsUrl = (query = '') => url(`/_orpc${query}`).replace(/^http/, 'ws')
const cleanups: Array<() => void> = []

function socket(query = '', headers: Record<string, string> = {}) {
  const raw = new RawSocket(wsUrl(query), headers)
  cleanups.push(() => raw.close())
  return raw
}

function client(query = '') {
  const { connection, client } = createClient({ url: () => wsUrl(query), reconnectBaseDelay: 50, reconnectMaxDelay: 200, connectTimeout: 3000 })
  cleanups.push(() => connection.close())
  return { connection, client }
}

afterEach(() => {
  cleanups.splice(0).forEach(cleanup => cleanup())
})

/** A control socket: proves the server and other connections still work. */
async function expectServerHealthy() {
  const { client: control } = client()
  expect(await control.ping()).toBe('pong')
}

const serverLogs = () => getServerLogs().join('\n')

function expectNoUnhandledRejection() {
  expect(serverLogs()).not.toMatch(/unhandledRejection|uncaughtException/i)
}

describe('calls over the socket', () => {
  it('answers a typed call with schema-validated input', async () => {
    const { client: rpc } = client()
    expect(await rpc.greet({ name: 'Ada' })).toEqual({ message: 'Hello Ada', transport: 'websocket' })
  })

  it('rejects invalid input with BAD_REQUEST and the validation issues', async () => {
    const { client: rpc } = client()
    const error = await rejectionOf(rpc.greet({ name: '' }))
    expect(error.code).toBe('BAD_REQUEST')
    expect(error.data.issues[0].path).toEqual(['name'])
  })

  it('passes typed errors from procedures to the caller', async () => {
    const { client: rpc } = client()
    const error = await rejectionOf(rpc.fail())
    expect(error).toMatchObject({ code: 'CONFLICT', status: 409, message: 'Always conflicts', data: { reason: 'test' } })
  })

  it('answers output that cannot be written as JSON with INTERNAL_SERVER_ERROR, and the socket goes on', async () => {
    const { client: rpc } = client()
    const error = await rejectionOf(rpc.unencodable())
    expect(error).toMatchObject({ code: 'INTERNAL_SERVER_ERROR', status: 500 })
    expect(await rpc.ping()).toBe('pong')
    expectNoUnhandledRejection()
  })

  it('multiplexes concurrent calls on one socket', async () => {
    const { client: rpc } = client()
    const results = await Promise.all(Array.from({ length: 50 }, (_, index) => rpc.greet({ name: `n${index}` })))
    expect(results.map(result => result.message)).toEqual(Array.from({ length: 50 }, (_, index) => `Hello n${index}`))
  })

  it('builds the context from the upgrade request as an H3 event', async () => {
    const { client: rpc } = client()
    const info = await rpc.connection()
    // Headers and address are read on demand from the upgrade request.
    expect(info).toMatchObject({ isH3Event: true, transport: 'websocket', host: `127.0.0.1:${port}` })
    expect(info.remoteAddress).toMatch(/127\.0\.0\.1/)
  })
})

describe('origin check', () => {
  it('accepts the same origin, a listed origin and no origin', async () => {
    for (const headers of [{ origin: `http://127.0.0.1:${port}` }, { origin: 'http://allowed.example' }, {}] as Array<Record<string, string>>) {
      const raw = socket('', headers)
      await raw.opened
      const answer = await raw.request(1, 'ping')
      expect(answer.p.b?.json).toBe('pong')
    }
  })

  it('closes a foreign origin with 1008 before any procedure runs', async () => {
    const key = `origin-${Date.now()}`
    const raw = socket('', { origin: 'http://evil.example' })
    await raw.opened
    void raw.request(1, 'count', { key })
    expect(await raw.closed).toEqual({ code: 1008, reason: 'Origin http://evil.example is not allowed' })
    expect(raw.responses.size).toBe(0)
    const { client: rpc } = client()
    expect(await rpc.countOf({ key })).toBe(0)
  })

  it('refuses a foreign origin to nuxt-orpc\'s client with a typed FORBIDDEN', async () => {
    // Node's WebSocket sends no Origin; a `ws` client stands in for a cross-site browser page.
    class EvilWebSocket extends (await import('ws')).default {
      constructor(address: string, protocols?: string[]) {
        super(address, protocols, { headers: { origin: 'https://evil.example' } })
      }
    }
    const { connection, client: rpc } = createClient({ url: wsUrl(), WebSocket: EvilWebSocket as never })
    cleanups.push(() => connection.close())
    const error = await rejectionOf(rpc.ping())
    expect(error.code).toBe('FORBIDDEN')
    expect(connection.status).toMatchObject({ state: 'closed', closeCode: 1008 })
  })
})

describe('connection context', () => {
  it('refuses the connection with 4401 when the context function throws 401', async () => {
    const key = `deny-${Date.now()}`
    const raw = socket('?deny=401')
    await raw.opened
    void raw.request(1, 'count', { key })
    expect(await raw.closed).toEqual({ code: 4401, reason: 'Sign in first' })
    expect(raw.responses.size).toBe(0)
    const { client: rpc } = client()
    expect(await rpc.countOf({ key })).toBe(0)
  })

  it('gives nuxt-orpc\'s client a typed UNAUTHORIZED and does not reconnect by itself', async () => {
    const { connection, client: rpc } = client('?deny=401')
    const error = await rejectionOf(rpc.ping())
    expect(error).toMatchObject({ code: 'UNAUTHORIZED', status: 401, message: 'Sign in first' })
    expect(connection.status).toMatchObject({ state: 'closed', closeCode: 4401 })
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(connection.status.state).toBe('closed')
  })

  it('refuses with 4403 for an ORPCError FORBIDDEN', async () => {
    const raw = socket('?deny=403')
    expect(await raw.closed).toEqual({ code: 4403, reason: 'Not for you' })
  })

  it('refuses with 1011 and logs when the context function crashes', async () => {
    const raw = socket('?deny=crash')
    expect(await raw.closed).toEqual({ code: 1011, reason: 'Connection context failed' })
    await waitFor(() => serverLogs().includes('context exploded'))
    await expectServerHealthy()
    expectNoUnhandledRejection()
  })
})

describe('bad input', () => {
  it('closes a frame larger than maxMessageBytes with 1009', async () => {
    const raw = socket()
    await raw.opened
    raw.send(JSON.stringify({ i: 1, p: { u: '/greet', b: { json: { name: 'x'.repeat(70 * 1024) } } } }))
    expect((await raw.closed).code).toBe(1009)
    await expectServerHealthy()
  })

  it('accepts a frame just under the limit', async () => {
    const { client: rpc } = client()
    const name = 'y'.repeat(60 * 1024)
    expect((await rpc.greet({ name })).message).toBe(`Hello ${name}`)
  })

  const malformed: Array<[string, string | Buffer, number]> = [
    ['not JSON', 'hello there', 1007],
    ['binary junk', Buffer.from([0x00, 0x9F, 0x92, 0x96, 0xC3]), 1007],
    ['binary junk after the file delimiter', Buffer.from([0x7B, 0xFF, 0x01, 0x02]), 1007],
    ['null', 'null', 1008],
    ['an empty object', '{}', 1008],
    ['a number', '42', 1008],
    ['a request without a URL', JSON.stringify({ i: 1, p: {} }), 1008],
    ['a request whose URL is a number', JSON.stringify({ i: 1, p: { u: 5 } }), 1008],
    ['a request whose URL is not a URL', JSON.stringify({ i: 1, p: { u: 'http//' } }), 1008],
  ]

  for (const [name, frame, code] of malformed) {
    it(`closes the socket on ${name} with ${code}, and nothing else breaks`, async () => {
      const bystander = socket()
      await bystander.opened
      const pending = bystander.request(7, 'slow', { ms: 300 })

      const raw = socket()
      await raw.opened
      raw.send(frame)
      expect((await raw.closed).code).toBe(code)

      expect((await pending).p.b?.json).toBe('done')
      expect((await bystander.request(8, 'ping')).p.b?.json).toBe('pong')
      expectNoUnhandledRejection()
    })
  }

  it('ignores abort frames and stream events for calls that never existed', async () => {
    const raw = socket()
    await raw.opened
    raw.send(JSON.stringify({ i: 999, t: 4 }))
    raw.send(JSON.stringify({ i: 998, t: 3, p: { e: 'message', d: 1 } }))
    expect((await raw.request(1, 'ping')).p.b?.json).toBe('pong')
  })
})

describe('streams', () => {
  it('aborts the server\'s signal when the client breaks early', async () => {
    const { client: rpc } = client()
    const id = `break-${Date.now()}`
    const seen: number[] = []
    for await (const tick of await rpc.ticks({ id, intervalMs: 10 })) {
      seen.push(tick)
      if (seen.length === 3) break
    }
    expect(seen).toEqual([0, 1, 2])
    expect(await waitFor(async () => (await rpc.streamState({ id })) === 'aborted')).toBe(true)
  })

  it('aborts every call still running when its socket closes', async () => {
    const raw = socket()
    await raw.opened
    const id = `closed-${Date.now()}`
    await raw.request(1, 'ticks', { id, intervalMs: 10 })
    await waitFor(() => (raw.responses.get(1)?.length ?? 0) >= 3)
    raw.close()
    const { client: rpc } = client()
    expect(await waitFor(async () => (await rpc.streamState({ id })) === 'aborted')).toBe(true)
  })
})

describe('SSR', () => {
  it('renders an in-process result into the HTML', async () => {
    const html = await $fetch<string>('/')
    expect(html).toContain('Hello SSR via ssr')
  })

  it('masks an unexpected error as the socket does: INTERNAL_SERVER_ERROR in the page, the original in the server log', async () => {
    const html = await $fetch<string>('/crash')
    expect(html).toContain('Internal server error')
    expect(html).not.toContain('hunter2')
    expect(html).not.toContain('10.0.3.7')
    const { client: rpc } = client()
    expect(await rejectionOf(rpc.crash())).toMatchObject({ code: 'INTERNAL_SERVER_ERROR', message: 'Internal server error' })
    // Logged on the server, once per path.
    await waitFor(() => serverLogs().split('A procedure failed').length - 1 >= 2)
    expect(serverLogs()).toContain('hunter2')
  })
})

describe('sessions (nuxt-auth-utils)', () => {
  async function login(name: string) {
    const response = await fetch(url('/api/login'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name }),
    })
    const cookie = response.headers.getSetCookie().map(value => value.split(';')[0]).join('; ')
    expect(cookie).toMatch(/nuxt-session=/)
    return cookie
  }

  it('reaches the context function over the socket', async () => {
    const cookie = await login('grace')
    const raw = socket('', { cookie })
    await raw.opened
    expect((await raw.request(1, 'whoami')).p.b?.json).toEqual({ name: 'grace' })
  })

  it('reaches the context function during SSR', async () => {
    const cookie = await login('linus')
    const html = await $fetch<string>('/me', { headers: { cookie } })
    expect(html).toContain('Signed in as linus')
  })

  it('fails a procedure that requires it with UNAUTHORIZED, on both paths', async () => {
    const { client: rpc } = client()
    const error = await rejectionOf(rpc.whoami())
    expect(error).toMatchObject({ code: 'UNAUTHORIZED', message: 'Log in first' })
    expect(await $fetch<string>('/me')).toContain('Error UNAUTHORIZED')
  })
})

describe('server restart', () => {
  it('rejects a call in flight with CONNECTION_CLOSED once the drain is over (shutdownTimeout 500 ms), then reconnects', async () => {
    const { connection, client: rpc } = client()
    expect(await rpc.ping()).toBe('pong')
    const states: string[] = []
    const watcher = setInterval(() => states.push((connection as RpcConnection).status.state), 5)

    const inFlight = rejectionOf(rpc.slow({ ms: 20_000 }))
    // Let the call reach the server: the drain waits for it, up to the fixture's shutdownTimeout.
    await new Promise(resolve => setTimeout(resolve, 100))
    const stoppedAt = Date.now()
    await stopServer()
    const error = await inFlight
    const elapsed = Date.now() - stoppedAt
    expect(elapsed).toBeGreaterThanOrEqual(400)
    expect(elapsed).toBeLessThan(2000)
    expect(error.code).toBe('CONNECTION_CLOSED')
    expect(error.data).toEqual({ closeCode: 1001, closeReason: 'Server shutting down' })

    await startServer()
    expect(await waitFor(async () => (await rpc.ping()) === 'pong', { timeout: 10_000 })).toBe(true)
    clearInterval(watcher)
    expect(states).toContain('reconnecting')
    expect(connection.status.state).toBe('open')
  })
})

describe('over HTTP (clients that cannot open the socket)', () => {
  const httpClient = (headers: Record<string, string> = {}, query = ''): TestClient => createORPCClient(new HTTPLink({ url: url(`/_orpc${query}`), headers }))

  it('answers typed calls, typed errors and validation errors through oRPC\'s HTTP link', async () => {
    const rpc = httpClient()
    expect(await rpc.greet({ name: 'http' })).toEqual({ message: 'Hello http', transport: 'http' })
    expect(await rejectionOf(rpc.fail())).toMatchObject({ code: 'CONFLICT', message: 'Always conflicts', data: { reason: 'test' } })
    expect(await rejectionOf(rpc.greet({ name: '' }))).toMatchObject({ code: 'BAD_REQUEST' })
    expect(await rejectionOf(rpc.crash())).toMatchObject({ code: 'INTERNAL_SERVER_ERROR', message: 'Internal server error' })
    expect(await rejectionOf(rpc.nowhere())).toMatchObject({ code: 'NOT_FOUND' })
  })

  it('streams as server-sent events, and aborts the stream on the server when the client stops reading', async () => {
    const rpc = httpClient()
    const ticks: number[] = []
    for await (const tick of await rpc.ticks({ id: 'http-stream', intervalMs: 5 })) {
      ticks.push(tick)
      if (tick >= 3) break
    }
    expect(ticks).toEqual([0, 1, 2, 3])
    await waitFor(async () => (await rpc.streamState({ id: 'http-stream' })) === 'aborted')
  })

  it('builds the context per request from its cookies, with transport http', async () => {
    const login = await fetch(url('/api/login'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'ada' }) })
    const cookie = login.headers.getSetCookie().map(value => value.split(';')[0]).join('; ')
    expect(await httpClient({ cookie }).whoami()).toEqual({ name: 'ada' })
    expect(await httpClient({ cookie }).connection()).toMatchObject({ isH3Event: true, transport: 'http' })
    expect(await rejectionOf(httpClient().whoami())).toMatchObject({ code: 'UNAUTHORIZED' })
  })

  it('refuses a foreign origin (403), a refused context (its status) and a body over maxMessageBytes (413), as typed errors', async () => {
    expect(await rejectionOf(httpClient({ origin: 'http://evil.example' }).ping())).toMatchObject({ code: 'FORBIDDEN', status: 403 })
    expect(await httpClient({ origin: 'http://allowed.example' }).ping()).toBe('pong')
    expect(await rejectionOf(httpClient({}, '?deny=401').ping())).toMatchObject({ code: 'UNAUTHORIZED', message: 'Sign in first' })
    expect(await rejectionOf(httpClient().greet({ name: 'x'.repeat(100 * 1024) }))).toMatchObject({ status: 413 })
    // A body that is not oRPC's: a typed BAD_REQUEST in oRPC's format, and the route goes on.
    const malformed = await fetch(url('/_orpc/greet'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'not json' })
    expect(malformed.status).toBe(400)
    expect((await malformed.json() as { json: { code: string } }).json.code).toBe('BAD_REQUEST')
    expect(await httpClient().ping()).toBe('pong')
    expect(serverLogs()).not.toMatch(/unhandledRejection|uncaughtException/i)
  })

  it('answers CORS for allowedOrigins (preflight and calls, with credentials) and for no other origin', async () => {
    const preflight = await fetch(url('/_orpc/ping'), { method: 'OPTIONS', headers: { 'origin': 'http://allowed.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } })
    expect(preflight.status).toBe(204)
    expect(Object.fromEntries(preflight.headers)).toMatchObject({
      'access-control-allow-origin': 'http://allowed.example',
      'access-control-allow-credentials': 'true',
      'access-control-allow-methods': 'GET, POST',
      'access-control-allow-headers': 'content-type',
    })
    const call = await fetch(url('/_orpc/ping'), { method: 'POST', headers: { 'origin': 'http://allowed.example', 'content-type': 'application/json' }, body: '{}' })
    expect(call.status).toBe(200)
    expect(call.headers.get('access-control-allow-origin')).toBe('http://allowed.example')
    const foreign = await fetch(url('/_orpc/ping'), { method: 'OPTIONS', headers: { 'origin': 'http://evil.example', 'access-control-request-method': 'POST' } })
    expect(foreign.status).toBe(403)
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull()
  })
})

describe('falling back to HTTP (transport auto) behind a proxy that refuses WebSocket upgrades', () => {
  async function startProxy() {
    const proxy = await startUpgradeRefusingProxy(new URL(url('/')))
    cleanups.push(proxy.close)
    return { ...proxy, wsUrl: `${proxy.url.replace('http', 'ws')}/_orpc` }
  }

  it('calls and streams over HTTP while upgrades are refused, then moves to the socket; no call runs twice', async () => {
    const proxy = await startProxy()
    const { client: rpc, connection } = createClient({ url: proxy.wsUrl, reconnectBaseDelay: 100, reconnectMaxDelay: 300, connectTimeout: 5000 })
    cleanups.push(() => connection.close())
    const key = `fallback-${Math.random()}`
    expect(await rpc.greet({ name: 'a' })).toEqual({ message: 'Hello a', transport: 'http' })
    expect(connection.status).toMatchObject({ state: 'open', transport: 'http' })
    expect(await rpc.count({ key })).toBe(1)
    const ticks: number[] = []
    for await (const tick of await rpc.ticks({ id: 'fallback-stream', intervalMs: 5 })) {
      ticks.push(tick)
      if (tick >= 2) break
    }
    expect(ticks).toEqual([0, 1, 2])
    expect(proxy.state.upgradesRefused).toBeGreaterThan(0)

    proxy.state.allowUpgrades = true
    await waitFor(() => connection.status.transport === 'websocket' && connection.status.state === 'open', { timeout: 5000 })
    expect(await rpc.greet({ name: 'b' })).toEqual({ message: 'Hello b', transport: 'websocket' })
    expect(await rpc.count({ key })).toBe(2)
    expect(await rpc.countOf({ key })).toBe(2)
  })

  it('with transport websocket, calls wait for the socket and none goes over HTTP', async () => {
    const proxy = await startProxy()
    const { client: rpc, connection } = createClient({ url: proxy.wsUrl, transport: 'websocket', reconnectBaseDelay: 100, reconnectMaxDelay: 300, connectTimeout: 800 })
    cleanups.push(() => connection.close())
    const key = `socket-only-${Math.random()}`
    expect(await rejectionOf(rpc.count({ key }))).toMatchObject({ code: 'CONNECTION_TIMEOUT' })
    expect(connection.status.transport).toBe('websocket')
    expect(await client().client.countOf({ key })).toBe(0)
  })

  it('resumes a stream over HTTP whose response is cut, from its last event id: every event once, in order', async () => {
    const proxy = await startProxy()
    const { client: rpc, connection } = createClient({ url: proxy.wsUrl, transport: 'http' })
    cleanups.push(() => connection.close())
    const seen: number[] = []
    for await (const event of await rpc.numbered({ count: 30, intervalMs: 10 })) {
      seen.push(event.n)
      if (seen.length === 5) proxy.cut()
    }
    expect(seen).toEqual(Array.from({ length: 30 }, (_, n) => n))
  })

  it('with transport http, every call is an HTTP request', async () => {
    const { client: rpc, connection } = createClient({ url: wsUrl(), transport: 'http' })
    cleanups.push(() => connection.close())
    expect(await rpc.greet({ name: 'c' })).toEqual({ message: 'Hello c', transport: 'http' })
    expect(connection.status).toMatchObject({ state: 'open', transport: 'http' })
  })
})

describe('runtime config', () => {
  it('takes allowedOrigins from NUXT_ORPC_ALLOWED_ORIGINS at startup', async () => {
    await stopServer()
    await startServer({ env: { NUXT_ORPC_ALLOWED_ORIGINS: '["http://later.example"]' } })
    const later = socket('', { origin: 'http://later.example' })
    await later.opened
    expect((await later.request(1, 'ping')).p.b?.json).toBe('pong')
    const formerlyAllowed = socket('', { origin: 'http://allowed.example' })
    expect((await formerlyAllowed.closed).code).toBe(1008)
  })
})

describe('the DevTools tab in a production build', () => {
  it('is not there: no inspector, page or route in the built server, and the route answers as any procedure path', async () => {
    const output = join(useTestContext().nuxt!.options.nitro.output!.dir!, 'server')
    const files = (await readdir(output, { recursive: true, withFileTypes: true })).filter(entry => entry.isFile() && /\.[cm]?js$/.test(entry.name))
    const code = (await Promise.all(files.map(entry => readFile(join(entry.parentPath, entry.name), 'utf8')))).join('\n')
    // The files read are the server's: the socket's own messages are in them.
    expect(code).toContain('Malformed frame: not JSON')
    for (const marker of devtoolsMarkers) expect(code).not.toContain(marker)
    const response = await fetch(url('/__nuxt_orpc__/devtools/state'))
    expect(response.status).toBe(404)
    expect(await response.text()).not.toContain('connections')
  })
})
