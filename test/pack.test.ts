import { execFile, spawn } from 'node:child_process'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { getRandomPort } from 'get-port-please'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

// The package as a user installs it: `npm pack` (which runs prepack from this clean state), the tarball
// installed into a fresh Nuxt app on the oldest and the newest Nuxt the module claims, and into a Nitro-only
// app; each is built and driven by a real client through the packaged `nuxt-orpc/client`. It installs from the
// npm registry, so it runs in CI and when NUXT_ORPC_PACK=1, and is skipped otherwise.

const enabled = process.env.CI === 'true' || process.env.NUXT_ORPC_PACK === '1'
if (!enabled) console.info('[nuxt-orpc tests] Pack test skipped: it installs from the npm registry (set NUXT_ORPC_PACK=1 to run it; CI always does).')

const run = promisify(execFile)
const rootDir = fileURLToPath(new URL('..', import.meta.url))
/** The versions the module claims (`compatibility` in src/module.ts) and the newest one, pinned. */
const nuxtVersions = ['4.0.3', '4.6.4']
const nitroVersion = '2.13.6'
const zodVersion = '4.6.7'

let workDir: string
let tarball: string

const router = `import { z } from 'zod'

export const router = {
  hello: rpc.input(z.object({ name: z.string() })).handler(({ input }) => \`Hello \${input.name}\`),
  count: rpc.handler(async function* () {
    for (let n = 0; n < 3; n++) yield n
  }),
}
`

/** Calls the server through the installed package's framework-free client and prints what it got. */
const check = `import { createRpcClient, createRpcConnection } from 'nuxt-orpc/client'

const connection = createRpcConnection({ url: process.argv[2], connectTimeout: 5000 })
const rpc = createRpcClient(connection)
const hello = await rpc.hello({ name: 'packed' })
const counts = []
for await (const n of await rpc.count()) counts.push(n)
console.log(JSON.stringify({ hello, counts }))
connection.close()
`

async function writeFiles(dir: string, files: Record<string, string>) {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true })
    await writeFile(join(dir, path), content)
  }
}

async function install(dir: string) {
  await run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, timeout: 300_000 })
}

/** Starts `.output/server/index.mjs` of `dir`, runs the client check against `route`, fetches `/`, and stops it. */
async function driveBuiltServer(dir: string, route: string) {
  const port = await getRandomPort('127.0.0.1')
  const server = spawn(process.execPath, [join(dir, '.output/server/index.mjs')], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const logs: string[] = []
  try {
    await new Promise<void>((resolve, reject) => {
      server.stdout.on('data', (chunk: Buffer) => {
        logs.push(chunk.toString())
        if (chunk.toString().includes('Listening')) resolve()
      })
      server.stderr.on('data', (chunk: Buffer) => logs.push(chunk.toString()))
      server.once('exit', code => reject(new Error(`server exited with ${code}: ${logs.join('')}`)))
    })
    const { stdout } = await run(process.execPath, [join(dir, 'check.mjs'), `ws://127.0.0.1:${port}${route}`], { cwd: dir, timeout: 30_000 })
    const page = await (await fetch(`http://127.0.0.1:${port}/`)).text()
    return { result: JSON.parse(stdout) as unknown, page, logs: logs.join('') }
  }
  finally {
    server.kill('SIGKILL')
  }
}

/** Installs the app in `dir`, builds it with `builder`, and checks the socket at `route` and the page at `/`. */
async function expectAppWorks(dir: string, builder: 'nuxi' | 'nitropack', route: string, pageText: string) {
  await install(dir)
  await run(join(dir, 'node_modules/.bin', builder), ['build'], { cwd: dir, timeout: 300_000 })
  const { result, page, logs } = await driveBuiltServer(dir, route)
  expect(result).toEqual({ hello: 'Hello packed', counts: [0, 1, 2] })
  expect(page).toContain(pageText)
  expect(logs).not.toMatch(/unhandledRejection|uncaughtException/i)
}

describe.skipIf(!enabled)('the packed module, installed as a user would', () => {
  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'nuxt-orpc-pack-'))
    await run('npm', ['pack', '--pack-destination', workDir, '--loglevel=error'], { cwd: rootDir, timeout: 300_000 })
    tarball = join(workDir, (await readdir(workDir)).find(name => name.endsWith('.tgz'))!)
  }, 300_000)

  afterAll(async () => {
    if (workDir) await rm(workDir, { recursive: true, force: true })
  })

  it.each(nuxtVersions)('works in a fresh Nuxt %s app: build, SSR, calls and a stream over the socket', async (version) => {
    const dir = join(workDir, `nuxt-${version}`)
    await writeFiles(dir, {
      'package.json': JSON.stringify({ name: 'fresh-nuxt-app', private: true, type: 'module', dependencies: { 'nuxt': version, 'nuxt-orpc': `file:${tarball}`, 'zod': zodVersion } }),
      'nuxt.config.ts': `export default defineNuxtConfig({ modules: ['nuxt-orpc'], devtools: { enabled: false }, telemetry: false, compatibilityDate: '2026-11-01' })\n`,
      'server/rpc/index.ts': router,
      'app/app.vue': `<script setup lang="ts">\nconst { data } = await useAsyncData('hello', () => useRpc().hello({ name: 'SSR' }))\n</script>\n\n<template>\n  <p id="hello">{{ data }}</p>\n</template>\n`,
      'check.mjs': check,
    })
    await expectAppWorks(dir, 'nuxi', '/_orpc', 'Hello SSR')
  }, 600_000)

  it('works in a Nitro-only app: build, calls and a stream over the socket', async () => {
    const dir = join(workDir, 'nitro')
    await writeFiles(dir, {
      'package.json': JSON.stringify({ name: 'fresh-nitro-app', private: true, type: 'module', dependencies: { 'nitropack': nitroVersion, 'nuxt-orpc': `file:${tarball}`, 'zod': zodVersion } }),
      'nitro.config.ts': `export default defineNitroConfig({ modules: ['nuxt-orpc/nitro'], orpc: { route: '/rpc' }, compatibilityDate: '2026-11-01' })\n`,
      'rpc/index.ts': router,
      'routes/index.ts': `export default defineEventHandler(() => 'nitro up')\n`,
      'check.mjs': check,
    })
    await expectAppWorks(dir, 'nitropack', '/rpc', 'nitro up')
  }, 600_000)
})
