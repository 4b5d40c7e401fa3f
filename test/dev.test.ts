import { fileURLToPath } from 'node:url'
import { $fetch, getServerLogs, setup, url } from '@nuxt/test-utils/e2e'
import { describe, expect, it } from 'vitest'
import { createClient, RawSocket, rejectionOf } from './helpers'

await setup({
  rootDir: fileURLToPath(new URL('./fixtures/basic', import.meta.url)),
  dev: true,
  server: true,
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
