import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setup, useTestContext } from '@nuxt/test-utils/e2e'
import { getRandomPort } from 'get-port-please'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { waitFor } from './helpers'
import { collect, freshRoom, redisAnswers, trackedClient } from './pubsub'

// The pubsub fixture built with the node-cluster preset: two workers behind one port, the Redis publisher
// between them. Needs Redis at 127.0.0.1:6379, skipped without it except in CI.
const skipRedis = !(await redisAnswers(6379)) && !process.env.CI
if (skipRedis) console.warn('[cluster.test] Redis does not answer at 127.0.0.1:6379: the node-cluster tests are SKIPPED.')

await setup({
  rootDir: fileURLToPath(new URL('./fixtures/pubsub', import.meta.url)),
  server: false,
  nuxtConfig: { nitro: { preset: 'node-cluster' } },
})

interface Cluster {
  primary: ChildProcess
  url: string
  logs: string[]
  exited: Promise<number | null>
}

let cluster: Cluster | undefined
const cleanups: Array<() => unknown> = []

/** Starts the primary (in a process group of its own) and waits until both workers listen. */
async function startCluster(): Promise<Cluster> {
  const port = await getRandomPort('127.0.0.1')
  const entry = join(useTestContext().nuxt!.options.nitro.output!.dir!, 'server/index.mjs')
  const primary = spawn(process.execPath, [entry], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      NODE_ENV: 'production',
      NITRO_CLUSTER_WORKERS: '2',
      NUXT_ORPC_PUBLISHER_DRIVER: 'redis',
      NUXT_ORPC_PUBLISHER_PREFIX: `nuxt-orpc-cluster:${process.pid}:${Date.now()}:`,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  })
  const logs: string[] = []
  const exited = new Promise<number | null>(resolve => primary.once('exit', code => resolve(code)))
  primary.stdout!.on('data', (chunk: Buffer) => logs.push(chunk.toString()))
  primary.stderr!.on('data', (chunk: Buffer) => logs.push(chunk.toString()))
  await waitFor(() => logs.join('').split('Listening').length - 1 >= 2, { timeout: 30_000, interval: 50 })
  return { primary, url: `ws://127.0.0.1:${port}/_orpc`, logs, exited }
}

/** Signals the whole process group, as systemd and Ctrl-C do. */
function signalGroup(target: Cluster, signal: NodeJS.Signals) {
  try {
    process.kill(-target.primary.pid!, signal)
  }
  catch {
    // Already gone.
  }
}

/** nuxt-orpc clients until one is served by each worker; returns one per worker pid. */
async function clientPerWorker(url: string) {
  const byWorker = new Map<number, ReturnType<typeof trackedClient>>()
  for (let attempt = 0; attempt < 20 && byWorker.size < 2; attempt++) {
    const tracked = trackedClient(url)
    cleanups.push(() => tracked.connection.close())
    const pid = await tracked.client.worker() as number
    if (!byWorker.has(pid)) byWorker.set(pid, tracked)
  }
  return [...byWorker.values()]
}

describe.skipIf(skipRedis)('node-cluster preset, two workers, Redis publisher', () => {
  beforeAll(async () => {
    cluster = await startCluster()
  })

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup()
  })

  afterAll(async () => {
    if (cluster && cluster.primary.exitCode === null) {
      signalGroup(cluster, 'SIGKILL')
      await cluster.exited
    }
  })

  it('delivers what is published on one worker to a subscriber on the other', async () => {
    const [first, second] = await clientPerWorker(cluster!.url)
    expect(second, 'no connection landed on a second worker').toBeDefined()
    const room = freshRoom()
    const listening = collect(({ signal, lastEventId }) => first!.client.chat.live({ room }, { signal, lastEventId }))
    cleanups.push(() => listening.subscription.stop())
    // Live only: the subscription counts from when its worker registered it, so probe until it is live.
    await waitFor(async () => {
      await second!.client.chat.send({ room, author: 'worker-2', text: 'probe' })
      return listening.received.length > 0
    }, { timeout: 10_000, interval: 100 })
    await second!.client.chat.send({ room, author: 'worker-2', text: 'across workers' })
    await waitFor(() => listening.texts().includes('across workers'))
    expect(listening.texts().filter(text => text !== 'probe')).toEqual(['across workers'])
    expect(cluster!.logs.join('')).not.toMatch(/unhandledRejection|uncaughtException/i)
  })

  it('shuts down gracefully on SIGTERM to its process group: sockets close with 1001, the cluster exits', async () => {
    const clients = await clientPerWorker(cluster!.url)
    const closes = clients.map(tracked => new Promise<number>((resolve) => {
      tracked.sockets.at(-1)!.addEventListener('close', event => resolve((event as CloseEvent).code))
    }))
    signalGroup(cluster!, 'SIGTERM')
    expect(await Promise.all(closes)).toEqual(clients.map(() => 1001))
    await cluster!.exited
    expect(cluster!.primary.exitCode ?? cluster!.primary.signalCode).not.toBeNull()
  })
})
