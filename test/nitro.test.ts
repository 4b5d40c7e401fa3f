import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build, copyPublicAssets, createNitro, prepare } from 'nitropack'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createClient, RawSocket } from './helpers'
import type { NodeServer } from './process'
import { startNodeServer } from './process'

const rootDir = fileURLToPath(new URL('./fixtures/nitro', import.meta.url))
let outputDir: string
let server: NodeServer

beforeAll(async () => {
  outputDir = await mkdtemp(join(tmpdir(), 'nuxt-orpc-nitro-'))
  const nitro = await createNitro({ rootDir, dev: false, preset: 'node-server', output: { dir: outputDir }, logLevel: 1 })
  await prepare(nitro)
  await copyPublicAssets(nitro)
  await build(nitro)
  await nitro.close()
  server = await startNodeServer(join(outputDir, 'server/index.mjs'))
})

afterAll(async () => {
  await server?.stop()
  await rm(outputDir, { recursive: true, force: true })
})

describe('Nitro standalone (nuxt-orpc/nitro)', () => {
  it('serves the router from rpc/index.ts on the configured route, with its context', async () => {
    const { client, connection } = createClient({ url: `${server.url.replace('http', 'ws')}/rpc` })
    try {
      expect(await client.hello({ name: 'Nitro' })).toBe('Hello Nitro from nitro (websocket)')
    }
    finally {
      connection.close()
    }
  })

  it('applies the origin check there too', async () => {
    const raw = new RawSocket(`${server.url.replace('http', 'ws')}/rpc`, { origin: 'https://elsewhere.example' })
    expect((await raw.closed).code).toBe(1008)
  })

  it('mounts the handler on a hand-written h3 route with nuxt-orpc/server', async () => {
    const raw = new RawSocket(`${server.url.replace('http', 'ws')}/custom`)
    await raw.opened
    expect((await raw.request(1, 'double', 21)).p.b?.json).toBe(42)
    raw.close()
  })
})
