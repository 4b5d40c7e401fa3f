import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setup, useTestContext } from '@nuxt/test-utils/e2e'
import WebSocket from 'ws'
import { getRandomPort } from 'get-port-please'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createClient, RawSocket, rejectionOf, waitFor } from './helpers'

/** A runtime other than Node that Nitro builds the app for: its preset and how to run the built server. */
export interface Runtime {
  name: string
  preset: string
  /** What the build needs besides the preset. */
  nuxtConfig?: Record<string, unknown>
  /** The command that serves the built `entry` on `port`; `scratch` is a folder of its own for the run. */
  command: (entry: string, port: number, scratch: string) => Promise<[string, string[]]> | [string, string[]]
  /** What the server prints once it listens. */
  ready: string
  /** Whether the runtime tells the peer's address (what the per-IP cap counts). */
  tellsAddress: boolean
  /**
   * Whether a refused connection is told by the refusal frame (nuxt-orpc's client) or at the handshake with an
   * HTTP status (other clients), instead of being closed with a code.
   */
  refusesAtUpgrade?: boolean
  /** Whether the server hibernates with its sockets open (a Durable Object): then it is tested across a wake. */
  hibernates?: boolean
  /**
   * What a stream to a client that stops reading does: wait (`pause`), end its socket (`close`), or neither:
   * the runtime buffers and tells nothing (`none`).
   */
  backpressure: 'pause' | 'close' | 'none'
}

/** Node's WebSocket, with `headers` in its handshake (a page's origin, its cookies) as a browser would send them. */
const withHeaders = (headers: Record<string, string>) => class extends globalThis.WebSocket {
  constructor(url: string | URL, protocols?: string | string[]) {
    super(url, { protocols, headers } as never)
  }
}
const withOrigin = (origin: string) => withHeaders({ origin })

const bin = (name: string) => fileURLToPath(new URL(`../node_modules/.bin/${name}`, import.meta.url))

export const bunRuntime: Runtime = {
  name: 'Bun',
  preset: 'bun',
  command: entry => [bin('bun'), ['run', entry]],
  ready: 'Listening',
  tellsAddress: true,
  // Bun tells nothing of its send buffer; past its backpressureLimit it drops frames, and nuxt-orpc closes.
  backpressure: 'close',
}

export const denoRuntime: Runtime = {
  name: 'Deno',
  preset: 'deno-server',
  command: entry => [bin('deno'), ['run', '--allow-net', '--allow-read', '--allow-env', '--allow-sys', entry]],
  ready: 'Listening',
  // crossws 0.3 reads it off the upgrade's connection info once Deno has let that go.
  tellsAddress: false,
  backpressure: 'pause',
}

export const cloudflareRuntime: Runtime = {
  name: 'Cloudflare',
  preset: 'cloudflare-durable',
  // The newest date the pinned workerd (wrangler 4.86, the last for Node 20) knows; from 2026-04-07 on the
  // runtime answers a client's close frame itself.
  nuxtConfig: { compatibilityDate: { default: '2026-11-01', cloudflare: '2026-04-26' } },
  // `wrangler dev --local`: workerd from npm, offline; the config is the one Nitro wrote, with the Durable
  // Object that nuxt-orpc declares.
  command: async (entry, port, scratch) => [bin('wrangler'), [
    'dev', '--local', '-c', join(dirname(entry), 'wrangler.json'), '--ip', '127.0.0.1', '--port', String(port),
    '--inspector-port', String(await getRandomPort('127.0.0.1')), '--persist-to', join(scratch, 'state'),
    '--show-interactive-dev-session=false',
  ]],
  ready: 'Ready on',
  // Cloudflare's CF-Connecting-IP header (wrangler dev sets it).
  tellsAddress: true,
  refusesAtUpgrade: true,
  backpressure: 'none',
  hibernates: true,
}

/** What wrangler must not do on a closed network: report, check for updates, fetch Cloudflare's data. */
const quietWrangler = (scratch: string) => ({
  WRANGLER_SEND_METRICS: 'false',
  WRANGLER_SEND_ERROR_REPORTS: 'false',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  WRANGLER_HIDE_BANNER: 'true',
  X_LOCAL_EXPLORER: 'false',
  WRANGLER_LOG_PATH: join(scratch, 'logs'),
  MINIFLARE_CACHE_DIR: join(scratch, 'cache'),
  CI: 'true',
})

interface RunningServer {
  url: string
  port: number
  logs: string[]
  process: ChildProcess
  scratch: string
}

/**
 * Starts the built server under `runtime` on `port` and waits until it listens. `scratch`: the folder of an
 * earlier run to go on with (what wrangler keeps of Durable Objects stays in it).
 */
async function startServer(runtime: Runtime, entry: string, port: number, scratch = mkdtempSync(join(tmpdir(), 'nuxt-orpc-runtime-'))): Promise<RunningServer> {
  const [command, args] = await runtime.command(entry, port, scratch)
  const child = spawn(command, args, {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'production', ...quietWrangler(scratch) },
    cwd: scratch,
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: wrangler runs workerd as a child, and both must go.
    detached: true,
  })
  const logs: string[] = []
  const started = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${runtime.name} server did not start: ${logs.join('')}`)), 60_000)
    child.stdout!.on('data', (chunk: Buffer) => {
      logs.push(chunk.toString())
      if (logs.join('').includes(runtime.ready)) {
        clearTimeout(timer)
        resolve()
      }
    })
    child.stderr!.on('data', (chunk: Buffer) => logs.push(chunk.toString()))
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${runtime.name} server exited with ${code}: ${logs.join('')}`))
    })
  })
  const server = { url: `http://127.0.0.1:${port}`, port, logs, process: child, scratch }
  try {
    await started
  }
  catch (error) {
    await stopServer(server)
    throw error
  }
  return server
}

async function stopServer(server: RunningServer | undefined, { keepScratch = false } = {}) {
  if (!server) return
  const running = server.process.exitCode === null && server.process.signalCode === null
  const exited = running && new Promise(resolve => server.process.once('exit', resolve))
  // The whole group, even when the server itself is gone: a child of its (workerd) may not be.
  try {
    process.kill(-server.process.pid!, 'SIGKILL')
  }
  catch {
    // The group has ended already.
  }
  await exited
  if (!keepScratch) rmSync(server.scratch, { recursive: true, force: true })
}

/**
 * The README's contract, on the basic fixture built with `runtime`'s preset and run by that runtime: typed
 * calls and errors, streams with abort, context from the upgrade (cookies, h3 helpers), SSR in-process, the
 * origin check, the message size limit, malformed frames, the in-flight cap, the ready signal, and the
 * browser client's reconnect after a restart.
 */
export async function describeContract(runtime: Runtime) {
  await setup({
    rootDir: fileURLToPath(new URL('./fixtures/basic', import.meta.url)),
    server: false,
    nuxtConfig: { ...runtime.nuxtConfig, nitro: { preset: runtime.preset } },
  })

  let server: RunningServer | undefined
  let entry: string
  const cleanups: Array<() => void> = []

  beforeAll(async () => {
    entry = join(useTestContext().nuxt!.options.nitro.output!.dir!, 'server/index.mjs')
    server = await startServer(runtime, entry, await getRandomPort('127.0.0.1'))
  })

  afterAll(async () => {
    cleanups.splice(0).forEach(cleanup => cleanup())
    await stopServer(server)
  })

  const wsUrl = (query = '') => `${server!.url.replace('http', 'ws')}/_orpc${query}`
  const raw = (headers: Record<string, string> = {}, query = '') => {
    const socket = new RawSocket(wsUrl(query), headers)
    cleanups.push(() => socket.close())
    return socket
  }
  const client = () => {
    const created = createClient({ url: () => wsUrl(), reconnectBaseDelay: 50, reconnectMaxDelay: 300, connectTimeout: 5000 })
    cleanups.push(() => created.connection.close())
    return created
  }
  const serverLogs = () => server!.logs.join('')

  describe(`${runtime.name} (${runtime.preset} preset)`, () => {
    it('answers typed calls, typed errors and validation errors through nuxt-orpc\'s client, with the ready signal', async () => {
      const { client: rpc, connection } = client()
      expect(await rpc.greet({ name: runtime.name })).toEqual({ message: `Hello ${runtime.name}`, transport: 'websocket' })
      expect(connection.status.state).toBe('open')
      expect(await rejectionOf(rpc.fail())).toMatchObject({ code: 'CONFLICT', message: 'Always conflicts', data: { reason: 'test' } })
      expect(await rejectionOf(rpc.greet({ name: '' }))).toMatchObject({ code: 'BAD_REQUEST' })
      expect(await rejectionOf(rpc.crash())).toMatchObject({ code: 'INTERNAL_SERVER_ERROR', message: 'Internal server error' })
    })

    it('streams, and aborts a stream on the server when the client stops reading it', async () => {
      const { client: rpc } = client()
      const id = `${runtime.preset}-stream`
      const ticks: number[] = []
      for await (const tick of await rpc.ticks({ id, intervalMs: 5 })) {
        ticks.push(tick)
        if (tick >= 3) break
      }
      expect(ticks).toEqual([0, 1, 2, 3])
      await waitFor(async () => (await rpc.streamState({ id })) === 'aborted')
    })

    it('keeps who is in a room (usePresence): a member is listed while its stream is open and leaves when its connection closes', async () => {
      const watcher = client()
      const member = createClient({ url: () => wsUrl(), connectTimeout: 5000 })
      cleanups.push(() => member.connection.close())
      const name = `${runtime.preset}-member`
      const stream = await member.client.lobby({ name })
      const first = await stream.next()
      expect(first.value.type).toBe('sync')
      expect(first.value.members.map((present: { key: string }) => present.key)).toContain(name)
      expect(await watcher.client.lobbyMembers()).toContain(`${name}/1`)
      member.connection.close()
      await waitFor(async () => !(await watcher.client.lobbyMembers()).includes(`${name}/1`), { timeout: 5000, interval: 50 })
    })

    it('builds the context from the upgrade with cookies and h3 helpers (nuxt-auth-utils), and renders SSR in-process', async () => {
      const login = await fetch(`${server!.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'ada' }) })
      const cookie = login.headers.getSetCookie().map(value => value.split(';')[0]).join('; ')
      const socket = raw({ cookie })
      await socket.opened
      expect((await socket.request(1, 'whoami')).p.b?.json).toEqual({ name: 'ada' })
      expect((await socket.request(2, 'connection')).p.b?.json).toMatchObject({ isH3Event: true, transport: 'websocket' })
      const anonymous = raw()
      await anonymous.opened
      expect((await anonymous.request(1, 'whoami')).p.b?.json).toMatchObject({ code: 'UNAUTHORIZED' })
      const page = await (await fetch(`${server!.url}/me`, { headers: { cookie } })).text()
      expect(page).toContain('Signed in as ada')
      expect(await (await fetch(`${server!.url}/`)).text()).toContain('Hello SSR via ssr')
    })

    it(`refuses a foreign origin and a refused context before any call runs (${runtime.refusesAtUpgrade ? 'a client without the ready signal at the handshake: 403, 401' : 'close codes 1008, 4401'}); nuxt-orpc's client gets typed errors`, async () => {
      const denied = createClient({ url: () => wsUrl('?deny=401'), reconnectBaseDelay: 50, reconnectMaxDelay: 300, connectTimeout: 5000 })
      cleanups.push(() => denied.connection.close())
      expect(await rejectionOf(denied.client.ping())).toMatchObject({ code: 'UNAUTHORIZED', message: 'Sign in first', data: { closeCode: 4401 } })
      expect(denied.connection.status).toMatchObject({ state: 'closed', closeCode: 4401 })
      const foreign = createClient({ url: () => wsUrl(), WebSocket: withOrigin('http://evil.example'), reconnectBaseDelay: 50, reconnectMaxDelay: 300, connectTimeout: 5000 })
      cleanups.push(() => foreign.connection.close())
      expect(await rejectionOf(foreign.client.ping())).toMatchObject({ code: 'FORBIDDEN', data: { closeCode: 1008 } })
      if (runtime.refusesAtUpgrade) {
        await expect(raw({ origin: 'http://evil.example' }).opened).rejects.toThrow('Unexpected server response: 403')
        await expect(raw({}, '?deny=401').opened).rejects.toThrow('Unexpected server response: 401')
      }
      else {
        expect(await raw({ origin: 'http://evil.example' }).closed).toMatchObject({ code: 1008 })
        expect(await raw({}, '?deny=401').closed).toEqual({ code: 4401, reason: 'Sign in first' })
      }
      const { client: rpc } = client()
      expect(await rpc.ping()).toBe('pong')
    })

    it('closes a socket whose message is over maxMessageBytes (1009) and one with malformed frames (1007, 1008); the others go on', async () => {
      const bystander = raw()
      await bystander.opened
      const big = raw()
      await big.opened
      big.send(JSON.stringify({ i: 1, p: { u: '/greet', b: { json: { name: 'x'.repeat(100 * 1024) } } } }))
      expect((await big.closed).code).toBe(1009)
      const notJson = raw()
      await notJson.opened
      notJson.send('not json')
      expect((await notJson.closed).code).toBe(1007)
      const notOrpc = raw()
      await notOrpc.opened
      notOrpc.send('{"t":99}')
      expect((await notOrpc.closed).code).toBe(1008)
      expect((await bystander.request(1, 'ping')).p.b?.json).toBe('pong')
      expect(serverLogs()).not.toMatch(/unhandledRejection|uncaughtException/i)
    })

    it(`${runtime.tellsAddress ? 'counts' : 'cannot count'} connections by the peer's address for the per-IP cap`, async () => {
      const socket = raw()
      await socket.opened
      const addresses = await (await fetch(`${server!.url}/api/addresses`)).json() as Array<string | null>
      expect(addresses.length).toBeGreaterThan(0)
      if (runtime.tellsAddress) expect(addresses.every(address => address !== null && address.endsWith('127.0.0.1'))).toBe(true)
      else expect(addresses.every(address => address === null)).toBe(true)
    })

    // Cloudflare tells nothing of a socket's send buffer: what it does instead is in the README's runtime table.
    it.skipIf(runtime.backpressure === 'none')(`${runtime.backpressure === 'pause' ? 'pauses' : 'closes'} a stream to a client that stops reading: the server stops making events`, async () => {
      const control = raw()
      const reader = raw()
      await Promise.all([control.opened, reader.opened])
      const made = async () => (await control.request(`n${Math.random()}`, 'firehoseEvents')).p.b?.json as number
      reader.send(JSON.stringify({ i: 'f', p: { u: '/firehose' } }))
      await waitFor(() => (reader.responses.get('f')?.length ?? 0) > 10)
      reader.socket.pause()
      await new Promise(resolve => setTimeout(resolve, 2000))
      const stopped = await made()
      await new Promise(resolve => setTimeout(resolve, 1000))
      expect(await made()).toBe(stopped)
      if (runtime.backpressure === 'pause') {
        reader.socket.resume()
        await waitFor(async () => (await made()) > stopped + 500, { timeout: 10_000 })
      }
      else {
        reader.socket.resume()
        expect((await reader.closed).code).toBe(1013)
      }
    })

    it.skipIf(runtime.backpressure === 'none')('closes a client that keeps calling but does not read its replies with 1013; the others go on', async () => {
      const bystander = raw()
      const greedy = raw()
      await Promise.all([bystander.opened, greedy.opened])
      greedy.socket.pause()
      // Cheap to send, dear to answer (a validation error), until the server gives up on it.
      for (let round = 0; round < 100 && greedy.socket.readyState === WebSocket.OPEN; round++) {
        for (let n = 0; n < 2000; n++) greedy.send(`{"i":"r${round}-${n}","p":{"u":"/greet","b":{"json":{"name":""}}}}`)
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      greedy.socket.resume()
      // Deno ends such a socket without its close frame, which would wait behind the full buffer (1006).
      expect(runtime.preset === 'deno-server' ? [1013, 1006] : [1013]).toContain((await greedy.closed).code)
      expect((await bystander.request(1, 'ping')).p.b?.json).toBe('pong')
    })

    it('refuses calls past maxCallsInFlight with TOO_MANY_REQUESTS and keeps the socket', async () => {
      const socket = raw()
      await socket.opened
      const answers = await Promise.all(Array.from({ length: 130 }, (_, id) => socket.request(`s${id}`, 'slow', { ms: 500 })))
      const refused = answers.filter(answer => answer.p.s === 429)
      expect(refused).toHaveLength(2)
      expect((refused[0]!.p.b!.json as { code: string }).code).toBe('TOO_MANY_REQUESTS')
      expect((await socket.request('after', 'ping')).p.b?.json).toBe('pong')
    })

    it.runIf(runtime.hibernates)('hibernates with its sockets open, the client\'s pings answered without waking it; wakes with each connection\'s context, resumes its streams without gap or duplicate, ends the others typed', async () => {
      const loggedIn = async (name: string) => {
        const login = await fetch(`${server!.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) })
        const cookie = login.headers.getSetCookie().map(value => value.split(';')[0]).join('; ')
        const statuses: string[] = []
        // Pings after about 7 s of silence: some go out while the object sleeps. With pings every 4 s, 1 run in 3
        // failed on this machine (the object stayed awake, woke twice, or a ping went unanswered for 3 s) in
        // ways that follow workerd's timing around its hibernation rather than nuxt-orpc's; sparser pings made
        // it rarer (see the closing note of issue 17).
        const { client: rpc, connection } = createClient({ url: () => wsUrl(), WebSocket: withHeaders({ cookie }), heartbeatTimeout: 9000, reconnectBaseDelay: 50, onStatus: status => statuses.push(status.state) })
        cleanups.push(() => connection.close())
        expect(await rpc.whoami()).toEqual({ name })
        const feed: number[] = []
        const reading = (async () => {
          for await (const event of await rpc.feed()) {
            feed.push(event.n)
            if (event.n === 3) break
          }
        })()
        return { rpc, statuses, feed, reading }
      }
      // grace's connection is kept; hopper's record is lost while the object sleeps (its socket is then closed
      // with 1012 and the client reconnects).
      const grace = await loggedIn('grace')
      const hopper = await loggedIn('hopper')
      const madeBefore = await grace.rpc.durableObjectsMade()
      const bell = rejectionOf(grace.rpc.bell().then(async (stream: AsyncIterable<number>) => {
        for await (const _ of stream) { /* rings */ }
      }))
      const poster = raw()
      await poster.opened
      // Until both subscriptions are in place, a post may come before them.
      let attempt = 0
      await waitFor(async () => {
        await poster.request(`post${++attempt}`, 'post', { n: 100 + attempt })
        return grace.feed.length > 0 && hopper.feed.length > 0
      })
      await new Promise(resolve => setTimeout(resolve, 500))
      const graceBefore = [...grace.feed]
      const hopperBefore = [...hopper.feed]
      expect(await hopper.rpc.forgetConnectionsOf({ name: 'hopper' })).toBe(1)
      // Its close is an event for the object: handled before the idle time, not in it (where it would wake the
      // object, or keep it awake).
      poster.close()
      await poster.closed
      await new Promise(resolve => setTimeout(resolve, 1000))
      // Idle: no timer keeps the object awake (workerd hibernates it after about 10 s).
      await new Promise(resolve => setTimeout(resolve, 25_000))
      const waker = raw()
      await waker.opened
      await waker.request('p2', 'post', { n: 2 })
      await waker.request('p3', 'post', { n: 3 })
      await Promise.all([grace.reading, hopper.reading])
      // Made again: it hibernated with its sockets open, the pings meanwhile answered by Cloudflare alone. Made
      // again exactly once in most runs; in about 1 run in 4 workerd woke it once more in the idle time (a
      // ping, or the closed poster, reaching it as it went to sleep: not settled), so this asserts the wake.
      const madeAfter = await grace.rpc.durableObjectsMade()
      expect(madeAfter).toBeGreaterThan(madeBefore)
      expect(madeAfter).toBeLessThanOrEqual(madeBefore + 2)
      // Every event once, in order, the ones published as the object woke included.
      expect(grace.feed).toEqual([...graceBefore, 2, 3])
      expect(hopper.feed).toEqual([...hopperBefore, 2, 3])
      expect(await bell).toMatchObject({ code: 'CONNECTION_CLOSED', data: { closeCode: 1012 } })
      // grace: the same socket all along, with the context from its upgrade; hopper: a new one, with hers.
      expect(await grace.rpc.whoami()).toEqual({ name: 'grace' })
      expect(grace.statuses.filter(state => state !== 'open')).toEqual(['connecting'])
      expect(await hopper.rpc.whoami()).toEqual({ name: 'hopper' })
      expect(hopper.statuses).toContain('reconnecting')
      expect(serverLogs()).not.toMatch(/unhandledRejection|uncaughtException|Uncaught/i)
    }, 60_000)

    it.runIf(runtime.hibernates)('refuses a connection whose context cannot be kept while the object hibernates, saying why', async () => {
      await expect(raw({}, '?unkeepable').opened).rejects.toThrow('Unexpected server response: 500')
      await waitFor(() => serverLogs().includes('cannot be kept while the Durable Object hibernates'))
      // Too large to store (a SQLite-backed object keeps at most 2 MB per value): closed right after it opens.
      const big = raw({}, '?big=3072')
      await big.opened
      // A socket the object closes before the client spoke never ends under workerd: the client calls first.
      big.send('{"i":1,"p":{"u":"/ping"}}')
      expect(await big.closed).toEqual({ code: 1011, reason: 'Connection context could not be kept' })
      expect(serverLogs()).toContain('could not be kept in the Durable Object\'s storage')
      const { client: rpc } = client()
      expect(await rpc.ping()).toBe('pong')
    })

    it(`lets the browser client reconnect after the server restarts, without replaying a call${runtime.hibernates ? '; events published before it are still there to resume from (Durable Object storage)' : ''}`, async () => {
      const { client: rpc, connection } = client()
      const key = `${runtime.preset}-restart`
      expect(await rpc.count({ key })).toBe(1)
      const published = [] as Array<{ id: string }>
      for (const n of [301, 302, 303]) published.push(await rpc.post({ n }))
      await stopServer(server, { keepScratch: runtime.hibernates })
      await waitFor(() => connection.status.state !== 'open', { timeout: 5000 })
      server = await startServer(runtime, entry, server!.port, runtime.hibernates ? server!.scratch : undefined)
      expect(await waitFor(async () => (await rpc.ping()) === 'pong', { timeout: 15_000, interval: 100 })).toBe(true)
      // A fresh process: the count started over, and nothing sent before the restart ran again.
      expect(await rpc.countOf({ key })).toBe(0)
      if (runtime.hibernates) {
        // The object's memory is gone, its storage is not: a subscriber resuming after the first event gets the rest.
        const resumed: number[] = []
        for await (const event of await rpc.feed(undefined, { lastEventId: published[0]!.id })) {
          resumed.push(event.n)
          if (resumed.length === 2) break
        }
        expect(resumed).toEqual([302, 303])
      }
    })
  })
}
