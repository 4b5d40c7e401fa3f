import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setup, useTestContext } from '@nuxt/test-utils/e2e'
import { getRandomPort } from 'get-port-please'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { createClient, rejectionOf } from './helpers'

// The basic fixture built with the `vercel` preset, which has no WebSockets: the module serves the router over
// HTTP only and tells the browser so. Vercel's function is a Node request listener, run here by a small server.
await setup({
  rootDir: fileURLToPath(new URL('./fixtures/basic', import.meta.url)),
  server: false,
  nuxtConfig: { nitro: { preset: 'vercel' } },
})

let baseUrl: string
let stop: () => void

beforeAll(async () => {
  const output = useTestContext().nuxt!.options.nitro.output!.dir!
  const entry = join(output, 'functions/__fallback.func/index.mjs')
  expect(existsSync(entry)).toBe(true)
  const scratch = mkdtempSync(join(tmpdir(), 'nuxt-orpc-vercel-'))
  const server = join(scratch, 'serve.mjs')
  writeFileSync(server, `import { createServer } from 'node:http'
const { default: handler } = await import(${JSON.stringify(entry)})
createServer(handler).listen(Number(process.env.PORT), '127.0.0.1', () => console.log('Listening'))
`)
  const port = await getRandomPort('127.0.0.1')
  const child = spawn(process.execPath, [server], { env: { ...process.env, PORT: String(port), NODE_ENV: 'production' }, stdio: ['ignore', 'pipe', 'pipe'] })
  const logs: string[] = []
  child.stderr.on('data', (chunk: Buffer) => logs.push(chunk.toString()))
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('Listening') && resolve())
    child.once('exit', code => reject(new Error(`The Vercel function exited with ${code}: ${logs.join('')}`)))
  })
  baseUrl = `http://127.0.0.1:${port}`
  stop = () => {
    child.kill('SIGKILL')
    rmSync(scratch, { recursive: true, force: true })
  }
})

afterAll(() => stop?.())

describe('a preset without WebSockets (vercel)', () => {
  it('serves no socket: an upgrade is not answered with 101', async () => {
    const socket = new WebSocket(`${baseUrl.replace('http', 'ws')}/_orpc`)
    const failure = await new Promise<string>((resolve) => {
      socket.once('open', () => resolve('opened'))
      socket.once('error', error => resolve(error.message))
    })
    socket.terminate()
    // The HTTP route's typed NOT_FOUND: no WebSocket route (whose answer to a plain request is 426) was built.
    expect(failure).toBe('Unexpected server response: 404')
  })

  it('tells the browser to call over HTTP, and answers calls, errors and streams there', async () => {
    const page = await (await fetch(`${baseUrl}/`)).text()
    expect(page).toContain('Hello SSR via ssr')
    expect(page).toMatch(/orpc:\{[^}]*transport:"http"/)

    const { client: rpc, connection } = createClient({ url: `${baseUrl.replace('http', 'ws')}/_orpc`, transport: 'http' })
    expect(await rpc.greet({ name: 'vercel' })).toEqual({ message: 'Hello vercel', transport: 'http' })
    expect(await rejectionOf(rpc.fail())).toMatchObject({ code: 'CONFLICT' })
    const ticks: number[] = []
    for await (const tick of await rpc.ticks({ id: 'vercel', intervalMs: 5 })) {
      ticks.push(tick)
      if (tick >= 2) break
    }
    expect(ticks).toEqual([0, 1, 2])
    connection.close()
  })
})
