import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { os } from '@orpc/server'
import type { Hooks } from 'crossws'
import wsAdapter from 'crossws/adapters/node'
import { afterEach, describe, expect, it } from 'vitest'
import { ipKeyOf, isOriginAllowed, normalizeHosts } from '../src/runtime/server/admission'
import type { RpcWebSocketHandlerOptions } from '../src/runtime/server/handler'
import { createRpcWebSocketHooks } from '../src/runtime/server/handler'
import { closeRpcConnections, countRpcConnections } from '../src/runtime/server'
import type { RpcContextInput } from '../src/runtime/types'
import { RawSocket, waitFor } from './helpers'

// nuxt-orpc's hooks on a real crossws Node adapter and a real http server in this process, so a test can act
// at an exact point of a handshake (between the upgrade hook and `open`), which no outside client can time.

const router = {
  ping: os.handler(() => 'pong' as const),
  hang: os.handler(({ signal }) => new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason)))),
}

const servers: Array<() => Promise<void>> = []
const sockets: RawSocket[] = []

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.close()
  await Promise.all(servers.splice(0).map(close => close()))
  await waitFor(() => countRpcConnections() === 0)
})

async function startServer(options: Omit<RpcWebSocketHandlerOptions, 'router'>, wrap: (hooks: Partial<Hooks>) => Partial<Hooks> = hooks => hooks) {
  const ws = wsAdapter({ hooks: wrap(createRpcWebSocketHooks({ router, ...options })) })
  const server = createServer((_, response) => response.end('ws only'))
  server.on('upgrade', (request, socket, head) => void ws.handleUpgrade(request, socket, head))
  const port = await new Promise<number>(resolve => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)))
  servers.push(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return { port, url: `ws://127.0.0.1:${port}/_orpc` }
}

function open(url: string, headers: Record<string, string> = {}) {
  const socket = new RawSocket(url, headers)
  sockets.push(socket)
  return socket
}

/** Whether the socket is still open and answers a call. */
async function answers(socket: RawSocket) {
  if (await Promise.race([socket.opened.then(() => false, () => true), socket.closed.then(() => true)])) return false
  const answer = await Promise.race([socket.request(`ping-${Math.random()}`, 'ping'), socket.closed])
  return (answer as { p?: { b?: { json: unknown } } }).p?.b?.json === 'pong'
}

const contextFromHeader = ({ headers }: RpcContextInput) => ({ user: headers.get('x-user') })

describe('caps before the context function', () => {
  it('runs the context function only for handshakes within the per-IP cap, counting those still under way', async () => {
    let runs = 0
    const { url } = await startServer({
      maxConnectionsPerIp: 4,
      createContext: async () => {
        runs++
        // A slow session lookup: every handshake of the flood arrives while the first ones still wait here.
        await new Promise(resolve => setTimeout(resolve, 300))
        return {}
      },
    })
    const flood = Array.from({ length: 40 }, () => open(url))
    const outcomes = await Promise.all(flood.map(socket => Promise.race([
      socket.closed,
      socket.opened.then(() => new Promise(resolve => setTimeout(() => resolve('open'), 500))),
    ])))
    const refused = outcomes.filter(outcome => outcome !== 'open')
    expect(refused).toHaveLength(36)
    expect(refused[0]).toEqual({ code: 1013, reason: 'Too many connections from this address' })
    expect(runs).toBe(4)
    const accepted = flood.filter((_, index) => outcomes[index] === 'open')
    expect(await Promise.all(accepted.map(answers))).toEqual([true, true, true, true])
  })

  it('counts handshakes under way against maxConnections, and frees the slot of one the context function refused', async () => {
    let runs = 0
    const { url } = await startServer({
      maxConnections: 3,
      createContext: async ({ headers }) => {
        runs++
        await new Promise(resolve => setTimeout(resolve, 200))
        if (headers.get('x-user') === 'nobody') throw new Response(null, { status: 401, statusText: 'Log in first' })
        return {}
      },
    })
    const refusedByContext = open(url, { 'x-user': 'nobody' })
    const others = Array.from({ length: 5 }, () => open(url))
    expect(await refusedByContext.closed).toEqual({ code: 4401, reason: 'Log in first' })
    const closedEarly = await Promise.all(others.map(socket => Promise.race([socket.closed, new Promise(resolve => setTimeout(() => resolve('open'), 400))])))
    expect(closedEarly.filter(outcome => outcome === 'open')).toHaveLength(2)
    expect(closedEarly.filter(outcome => outcome !== 'open')).toEqual(Array.from({ length: 3 }, () => ({ code: 1013, reason: 'Too many connections' })))
    expect(runs).toBe(3)
    // The refused handshake's slot is free again: a third connection fits.
    expect(await answers(open(url))).toBe(true)
  })
})

describe('closeRpcConnections', () => {
  it('closes a connection whose context was made but whose socket was not open yet', async () => {
    let revoked = -1
    const { url } = await startServer({ createContext: contextFromHeader }, hooks => ({
      ...hooks,
      async upgrade(request) {
        await hooks.upgrade!(request)
        // The session ends right between the upgrade's decision and the socket's open.
        if (request.headers.get('x-user') === 'ada') revoked = closeRpcConnections(connection => (connection.context as { user?: string }).user === 'ada')
      },
    }))
    const bob = open(url, { 'x-user': 'bob' })
    await bob.opened
    const ada = open(url, { 'x-user': 'ada' })
    expect(await ada.closed).toEqual({ code: 4401, reason: 'Session ended' })
    expect(revoked).toBe(1)
    expect(await answers(bob)).toBe(true)
    expect(countRpcConnections()).toBe(1)
  })

  it('clamps a long reason to 123 bytes and closes every matching socket, aborting their calls', async () => {
    const { url } = await startServer({ createContext: contextFromHeader })
    const tabs = [open(url, { 'x-user': 'ada' }), open(url, { 'x-user': 'ada' })]
    const bob = open(url, { 'x-user': 'bob' })
    await Promise.all([...tabs, bob].map(socket => socket.opened))
    const hanging = tabs.map((socket, index) => socket.request(index, 'hang'))
    await new Promise(resolve => setTimeout(resolve, 50))
    const reason = `Your session was revoked by an administrator: ${'é'.repeat(100)}`
    expect(closeRpcConnections(connection => (connection.context as { user?: string }).user === 'ada', { reason })).toBe(2)
    for (const tab of tabs) {
      const closed = await tab.closed
      expect(closed.code).toBe(4401)
      expect(Buffer.byteLength(closed.reason)).toBeLessThanOrEqual(123)
      expect(closed.reason.startsWith('Your session was revoked')).toBe(true)
    }
    // Closed before any answer: the calls were aborted, not answered.
    expect(await Promise.race([Promise.all(hanging), new Promise(resolve => setTimeout(() => resolve('unanswered'), 200))])).toBe('unanswered')
    expect(await answers(bob)).toBe(true)
  })

  it('refuses a close code a server may not send with a TypeError, before closing anything', async () => {
    const { url } = await startServer({ createContext: contextFromHeader })
    const ada = open(url, { 'x-user': 'ada' })
    await ada.opened
    for (const code of [1005, 1006, 2000, 5000, 4401.5]) {
      expect(() => closeRpcConnections(undefined, { code })).toThrow(TypeError)
    }
    expect(await answers(ada)).toBe(true)
    expect(closeRpcConnections(undefined, { code: 4000, reason: 'bye' })).toBe(1)
    expect(await ada.closed).toEqual({ code: 4000, reason: 'bye' })
  })
})

describe('origin check and DNS rebinding', () => {
  it('with allowedHosts, refuses a same-origin handshake whose Host is not the app\'s (1008)', async () => {
    const { url, port } = await startServer({ allowedHosts: ['localhost', '127.0.0.1'] })
    const rebound = open(url, { host: `rebind.attacker.example:${port}`, origin: `http://rebind.attacker.example:${port}` })
    expect(await rebound.closed).toEqual({ code: 1008, reason: `Origin http://rebind.attacker.example:${port} is not allowed` })
    const own = open(url, { host: `localhost:${port}`, origin: `http://localhost:${port}` })
    expect(await answers(own)).toBe(true)
    // Not a browser (no Origin): no victim's cookies to ride on; allowed as before.
    expect(await answers(open(url, { host: `rebind.attacker.example:${port}` }))).toBe(true)
  })

  it('without allowedHosts, any Host counts for the same-origin rule (the documented default outside development)', async () => {
    const { url, port } = await startServer({})
    expect(await answers(open(url, { host: `rebind.attacker.example:${port}`, origin: `http://rebind.attacker.example:${port}` }))).toBe(true)
  })

  it('compares the scheme where the request came over TLS, and matches hosts and subdomains', () => {
    const none = new Set<string>()
    expect(isOriginAllowed('http://app.example.com', 'https://app.example.com/_orpc', none)).toBe(false)
    expect(isOriginAllowed('https://app.example.com', 'https://app.example.com/_orpc', none)).toBe(true)
    // TLS ended at a proxy: the request itself is plain http.
    expect(isOriginAllowed('https://app.example.com', 'http://app.example.com/_orpc', none)).toBe(true)
    const hosts = normalizeHosts(['.example.com', '::1'])
    expect(hosts).toEqual(['.example.com', '[::1]'])
    expect(isOriginAllowed('https://eu.example.com', 'https://eu.example.com/_orpc', none, hosts)).toBe(true)
    expect(isOriginAllowed('https://example.com', 'https://example.com/_orpc', none, hosts)).toBe(true)
    expect(isOriginAllowed('https://badexample.com', 'https://badexample.com/_orpc', none, hosts)).toBe(false)
    expect(isOriginAllowed('http://[::1]:3000', 'http://[::1]:3000/_orpc', none, hosts)).toBe(true)
    expect(() => normalizeHosts(['https://app.example.com'])).toThrow(/allowedHosts/)
  })
})

describe('per-IP key', () => {
  it('counts IPv4 (also mapped into IPv6) by address and IPv6 by its /64', () => {
    expect(ipKeyOf('203.0.113.7')).toBe('203.0.113.7')
    expect(ipKeyOf('::ffff:203.0.113.7')).toBe('203.0.113.7')
    expect(ipKeyOf('::ffff:cb00:7107')).toBe('203.0.113.7')
    expect(ipKeyOf('0:0:0:0:0:ffff:203.0.113.7')).toBe('203.0.113.7')
    expect(ipKeyOf('::ffff:cb00:7107')).not.toBe(ipKeyOf('::ffff:cb00:7108'))
    expect(ipKeyOf('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64')
    expect(ipKeyOf('2001:0db8:0001:0002:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64')
    expect(ipKeyOf('2001:db8::1')).toBe('2001:db8:0:0::/64')
    expect(ipKeyOf('2001:db8:0:0:1::')).toBe('2001:db8:0:0::/64')
    expect(ipKeyOf('::1')).toBe('0:0:0:0::/64')
    expect(ipKeyOf('fe80::1%eth0')).toBe('fe80:0:0:0::/64')
    expect(ipKeyOf('1::2:3:4:5:192.0.2.1')).toBe('1:0:2:3::/64')
    expect(ipKeyOf('2001:db8:1:2::1')).not.toBe(ipKeyOf('2001:db8:1:3::1'))
  })
})
