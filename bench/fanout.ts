// The fan-out jobs (`--patterns fanout`: the patterns `fanout` and `fanout-single`), run by run.ts. Per target:
// - c-nuxt: fixture server instances share one Redis through nuxt-orpc's redis publisher (a key prefix of their
//   own, deleted afterwards), driven by nuxt-orpc's client;
// - e: Socket.IO 4 instances (bench/fanout-socketio-server.mjs) share it through @socket.io/redis-adapter (a
//   channel prefix of their own), driven by socket.io-client;
// - ws: the baseline, one plain `ws` process (bench/fanout-raw-server.mjs), no Redis, writing nuxt-orpc's frame.
// The subscribers of each instance run in a load process of their own (the baseline's connect to its one
// process), and one more load process publishes on instance 1. See docs/benchmarks.md, "Fan-out through Redis".
import type { ChildProcess } from 'node:child_process'
import { fork } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import type { DeliveryLatency, FanoutAnswer, FanoutAnswerTypes, FanoutClientKind, FanoutRequest, FanoutResult, FromFanoutClient, PatternSpec, ServerStats, SubscriberReport, Target, ToFanoutClient } from './shared'

type FanoutSpec = Extract<PatternSpec, { kind: 'fanout' }>

const benchDir = dirname(fileURLToPath(import.meta.url))

export const defaultRedisUrl = 'redis://127.0.0.1:6379'

export interface FanoutInstance {
  url: string
  stop: (signal?: NodeJS.Signals) => Promise<void>
}

/** What the job borrows from run.ts: its server spawner and its process bookkeeping. */
export interface FanoutHarness {
  redisUrl: string
  /** Starts the fixture server, or `script` (a Node script that prints "Listening on" too) where given. */
  startInstance: (label: string, env: Record<string, string>, script?: string) => Promise<FanoutInstance>
  /** Registers a child so that a failure or Ctrl-C of the harness ends it too. */
  track: (child: ChildProcess) => ChildProcess
  log: (line: string) => void
}

const now = () => performance.timeOrigin + performance.now()
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

function connectRedis(url: string): Redis {
  // No retries and no offline queue: a Redis that is not there fails at once.
  return new Redis(url, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null })
}

/** Why Redis at `url` cannot be used, or undefined when it answers PING. */
export async function redisProblem(url: string): Promise<string | undefined> {
  const redis = connectRedis(url)
  // The socket's own error (ECONNREFUSED...) says more than the rejection ("Connection is closed.").
  let socketError: Error | undefined
  redis.on('error', (error: Error) => socketError ??= error)
  try {
    await redis.connect()
    const answer = await redis.ping()
    return answer === 'PONG' ? undefined : `PING answered ${answer}`
  }
  catch (error) {
    return (socketError ?? (error instanceof Error ? error : new Error(String(error)))).message
  }
  finally {
    redis.disconnect()
  }
}

/** Deletes every key under `prefix`; resolves with how many it deleted and how many are left. */
async function deleteKeys(url: string, prefix: string): Promise<{ deleted: number, left: number }> {
  const redis = connectRedis(url)
  redis.on('error', () => {})
  try {
    await redis.connect()
    const scan = async () => {
      const keys: string[] = []
      let cursor = '0'
      do {
        const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
        cursor = next
        keys.push(...batch)
      } while (cursor !== '0')
      return keys
    }
    const keys = await scan()
    const deleted = keys.length ? await redis.del(...keys) : 0
    return { deleted, left: (await scan()).length }
  }
  finally {
    redis.disconnect()
  }
}

/** One fan-out load process (bench/fanout-client.ts): requests answered in turn, notices as they come. */
class FanoutProcess {
  readonly delivered = new Set<number>()
  live = false
  private nextId = 0
  private readonly pending = new Map<number, { resolve: (answer: FanoutAnswer) => void, reject: (error: Error) => void }>()

  private constructor(private readonly child: ChildProcess, private readonly name: string, onNotice: () => void) {
    child.on('message', (message: FromFanoutClient) => {
      if (message.type === 'delivered') this.delivered.add(message.seq)
      else if (message.type === 'live') this.live = true
      if (message.type === 'delivered' || message.type === 'live') {
        onNotice()
        return
      }
      if (message.type === 'ready') return
      const call = this.pending.get(message.id)
      this.pending.delete(message.id)
      if (message.type === 'error') call?.reject(new Error(`${name}: ${message.message}`))
      else call?.resolve(message.answer)
    })
    child.once('exit', (code) => {
      for (const call of this.pending.values()) call.reject(new Error(`${name} exited with ${code}`))
      this.pending.clear()
    })
  }

  static async start(name: string, harness: FanoutHarness, onNotice: () => void): Promise<FanoutProcess> {
    const child = harness.track(fork(join(benchDir, 'fanout-client.ts'), [], {
      cwd: join(benchDir, '..'),
      // FANOUT_CLIENT_PROF=<dir>: each subscriber process writes a V8 CPU profile of the measured publishes there.
      execArgv: ['--import', 'jiti/register'],
      stdio: ['ignore', 2, 2, 'ipc'],
    }))
    await new Promise<void>((resolve, reject) => {
      child.once('message', (message: FromFanoutClient) => message.type === 'ready' ? resolve() : reject(new Error(`${name} did not start`)))
      child.once('exit', code => reject(new Error(`${name} exited with ${code}`)))
    })
    return new FanoutProcess(child, name, onNotice)
  }

  request<R extends FanoutRequest>(request: R, timeoutMs: number): Promise<Extract<FanoutAnswer, { type: FanoutAnswerTypes[R['type']] }>> {
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`${this.name}: no answer to ${request.type} within ${timeoutMs / 1000} s`))
      }, timeoutMs)
      this.pending.set(id, {
        resolve: (answer) => {
          clearTimeout(timer)
          resolve(answer as Extract<FanoutAnswer, { type: FanoutAnswerTypes[R['type']] }>)
        },
        reject: (error) => {
          clearTimeout(timer)
          reject(error)
        },
      })
      this.child.send({ type: 'request', id, request } satisfies ToFanoutClient)
    })
  }

  /** Asks it to exit; kills it if it has not within 5 s. */
  async stop() {
    const child = this.child
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.send({ type: 'exit' } satisfies ToFanoutClient)
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }
}

/**
 * How far a load process's clock (`performance.timeOrigin + performance.now()`) is from this one's: the
 * offset seen over the fastest of a few IPC round trips, and half that round trip as its uncertainty.
 */
async function clockOffset(loadProcess: FanoutProcess): Promise<{ offset: number, uncertainty: number }> {
  let best = { offset: 0, uncertainty: Number.POSITIVE_INFINITY }
  for (let attempt = 0; attempt < 7; attempt++) {
    const before = now()
    const { now: theirs } = await loadProcess.request({ type: 'clock' }, 5000)
    const after = now()
    if ((after - before) / 2 < best.uncertainty) best = { offset: theirs - (before + after) / 2, uncertainty: (after - before) / 2 }
  }
  return best
}

async function readStats(serverUrl: string, gc = false): Promise<ServerStats> {
  const response = await fetch(`${serverUrl}/_bench/stats${gc ? '?gc=1' : ''}`)
  if (!response.ok) throw new Error(`stats: HTTP ${response.status}`)
  return await response.json() as ServerStats
}

const cpuMicros = (stats: ServerStats) => stats.cpu.user + stats.cpu.system

/** Nearest-rank percentile of an ascending list. */
function percentile(sorted: number[], fraction: number): number | null {
  if (!sorted.length) return null
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))]!
}

function latencyOf(reports: SubscriberReport[], seqs: number[], subscribers: number): DeliveryLatency {
  const sorted = reports.flatMap(report => seqs.flatMap(seq => report.latencies[seq] ?? [])).sort((left, right) => left - right)
  return { expected: subscribers * seqs.length, delivered: sorted.length, p1: percentile(sorted, 0.01), p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1) ?? null }
}

/** How each fan-out target runs: its client, and its server (the baseline: one process whatever the layout). */
function fanoutTarget(target: Target): { client: FanoutClientKind, script?: string, oneInstance: boolean, name: string } {
  switch (target.key) {
    case 'c-nuxt': return { client: 'nuxt', oneInstance: false, name: 'fanout instance' }
    case 'e': return { client: 'socketio', script: join(benchDir, 'fanout-socketio-server.mjs'), oneInstance: false, name: 'fanout Socket.IO instance' }
    case 'ws': return { client: 'ws', script: join(benchDir, 'fanout-raw-server.mjs'), oneInstance: true, name: 'fanout raw ws server' }
    default: throw new Error(`the fan-out has no target ${target.key} (only c-nuxt, e, ws)`)
  }
}

/** Runs the job once: fresh instances, processes and key prefix; everything is stopped and deleted at the end. */
export async function runFanout(spec: FanoutSpec, target: Target, harness: FanoutHarness): Promise<FanoutResult> {
  const { log } = harness
  const kind = fanoutTarget(target)
  const prefix = `nuxt-orpc-bench:${process.pid}-${Date.now()}:`
  const channel = 'room'
  const layoutInstances = spec.instances
  const serverCount = kind.oneInstance ? 1 : layoutInstances
  const totalSubscribers = layoutInstances * spec.subscribersPerInstance
  const totalPublishes = spec.warmupPublishes + spec.publishes
  const instances: FanoutInstance[] = []
  const processes: FanoutProcess[] = []

  // Notices (delivered, live) from the subscriber processes wake whoever waits for one.
  let wake: (() => void) | undefined
  const onNotice = () => {
    const waiting = wake
    wake = undefined
    waiting?.()
  }
  async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs
    while (!condition()) {
      const remaining = deadline - performance.now()
      if (remaining <= 0) return false
      let timer: ReturnType<typeof setTimeout> | undefined
      await new Promise<void>((resolve) => {
        wake = resolve
        timer = setTimeout(resolve, remaining)
      })
      clearTimeout(timer)
    }
    return true
  }

  try {
    const env: Record<string, string> = kind.client === 'nuxt'
      ? { NUXT_ORPC_PUBLISHER_DRIVER: 'redis', NUXT_ORPC_PUBLISHER_URL: harness.redisUrl, NUXT_ORPC_PUBLISHER_PREFIX: prefix }
      : kind.client === 'socketio' ? { FANOUT_REDIS_URL: harness.redisUrl, FANOUT_KEY: `${prefix}socket.io` } : {}
    // Each is registered for the clean-up below as soon as it exists.
    const startInstance = async (label: string) => {
      const instance = await harness.startInstance(label, env, kind.script)
      instances.push(instance)
      return instance
    }
    const startProcess = async (name: string) => {
      const loadProcess = await FanoutProcess.start(name, harness, onNotice)
      processes.push(loadProcess)
      return loadProcess
    }
    for (let index = 1; index <= serverCount; index++) await startInstance(serverCount > 1 ? `${kind.name} ${index}` : kind.name)
    const first = instances[0]!
    // Each instance's subscribers in `loadProcessesPerInstance` load processes of their own; on the baseline's
    // one server they all connect to it.
    const processesPerInstance = spec.loadProcessesPerInstance
    const perProcess = spec.subscribersPerInstance / processesPerInstance
    if (!Number.isInteger(perProcess)) throw new Error(`${spec.subscribersPerInstance} subscribers do not split evenly over ${processesPerInstance} load processes`)
    const subscriberProcesses: FanoutProcess[] = []
    const instanceOf: FanoutInstance[] = []
    for (let index = 0; index < layoutInstances; index++) {
      for (let part = 0; part < processesPerInstance; part++) {
        subscriberProcesses.push(await startProcess(`subscribers ${index + 1}${processesPerInstance > 1 ? `.${part + 1}` : ''} (${target.key})`))
        instanceOf.push(instances[index] ?? first)
      }
    }
    const publisher = await startProcess(`publisher (${target.key})`)

    const publisherClock = await clockOffset(publisher)
    let clockSkewMs = 0
    for (const subscriberProcess of subscriberProcesses) {
      const clock = await clockOffset(subscriberProcess)
      clockSkewMs = Math.max(clockSkewMs, Math.abs(clock.offset - publisherClock.offset) + clock.uncertainty + publisherClock.uncertainty)
    }

    // Memory per subscriber: every instance after gc, before the subscribers connect and once all are live.
    const readMemory = () => Promise.all(instances.map(async instance => (await readStats(instance.url, true)).memory))
    const memoryBefore = await readMemory()

    const subscribeStart = performance.now()
    const opened = await Promise.all(subscriberProcesses.map((subscriberProcess, index) =>
      subscriberProcess.request({ type: 'subscribe', client: kind.client, serverUrl: instanceOf[index]!.url, channel, count: perProcess, publishes: totalPublishes }, Math.max(120_000, 30 * perProcess))))
    const subscribeSeconds = (performance.now() - subscribeStart) / 1000
    if (opened.some(answer => answer.opened !== perProcess)) {
      throw new Error(`subscribed ${opened.map(answer => answer.opened).join(' + ')} of ${perProcess} per subscriber process`)
    }

    // A subscription is live once the instance's reader follows the channel (nuxt-orpc) or the instance's
    // adapter is subscribed to Redis (Socket.IO), which the client cannot see: probes go out until every
    // subscriber has had one.
    const publish = (seq: number) => publisher.request({ type: 'publish', client: kind.client, serverUrl: first.url, channel, seq }, 10_000)
    const allLive = () => subscriberProcesses.every(subscriberProcess => subscriberProcess.live)
    let errors = 0
    const errorSamples: string[] = []
    const publishFailed = (seq: number, error: unknown) => {
      errors++
      if (errorSamples.length < 5) errorSamples.push(`publish ${seq}: ${error instanceof Error ? error.message : String(error)}`)
    }
    for (let probe = -1; !allLive(); probe--) {
      if (probe < -120) throw new Error('the subscribers did not all receive a probe within 120 probes (about 30 s)')
      await publish(probe).catch(error => log(`fanout: probe ${probe} failed: ${error instanceof Error ? error.message : String(error)}`))
      await waitUntil(allLive, 250)
    }
    const memoryAfter = await readMemory()

    const callMs: number[] = []
    // CPU of the instances and of the subscriber processes around the measured publishes.
    const readCpu = async () => ({
      servers: await Promise.all(instances.map(async instance => cpuMicros(await readStats(instance.url)))),
      clients: await Promise.all(subscriberProcesses.map(async subscriberProcess => (await subscriberProcess.request({ type: 'cpu' }, 5000)).micros)),
    })
    let before = { servers: instances.map(() => 0), clients: subscriberProcesses.map(() => 0) }
    for (let seq = 0; seq < totalPublishes; seq++) {
      if (seq === spec.warmupPublishes) before = await readCpu()
      try {
        const answer = await publish(seq)
        if (seq >= spec.warmupPublishes) callMs.push(answer.callMs)
      }
      catch (error) {
        publishFailed(seq, error)
        continue
      }
      // The next publish waits until this one reached everybody, so deliveries of two publishes never overlap.
      const complete = await waitUntil(() => subscriberProcesses.every(subscriberProcess => subscriberProcess.delivered.has(seq)), 5000)
      if (!complete) log(`fanout: publish ${seq} had not reached every subscriber after 5 s`)
      await sleep(spec.gapMs)
    }
    const after = await readCpu()
    // Late and duplicate deliveries still count.
    await sleep(500)
    const reports = await Promise.all(subscriberProcesses.map(async subscriberProcess => (await subscriberProcess.request({ type: 'collect' }, 30_000)).report))

    const measured = Array.from({ length: spec.publishes }, (_, index) => spec.warmupPublishes + index)
    // Per publish, its slowest delivery (a loop: 10,000 arguments to Math.max would be a lot).
    const lastDeliveries = measured
      .map(seq => reports.reduce((slowest, report) => (report.latencies[seq] ?? []).reduce((max, latency) => Math.max(max, latency), slowest), Number.NEGATIVE_INFINITY))
      .filter(Number.isFinite)
    const sum = (values: number[]) => values.reduce((total, value) => total + value, 0)
    const all = latencyOf(reports, measured, totalSubscribers)
    // How fast a publish reaches everybody: its deliveries over the time until its last one, summed over publishes.
    const deliveriesPerSecond = lastDeliveries.length ? all.delivered / (sum(lastDeliveries) / 1000) : null
    lastDeliveries.sort((left, right) => left - right)
    callMs.sort((left, right) => left - right)
    // Subscribers on the publishing instance, and on the others (none on one instance, or for the baseline).
    const near = reports.filter((_, index) => instanceOf[index] === first)
    const far = reports.filter((_, index) => instanceOf[index] !== first)
    const subscribersOf = (instance: FanoutInstance) => instanceOf.filter(other => other === instance).length * perProcess
    const serverCpu = instances.map((_, index) => after.servers[index]! - before.servers[index]!)
    const memoryGrowth = (pick: (memory: ServerStats['memory']) => number) =>
      sum(instances.map((_, index) => pick(memoryAfter[index]!) - pick(memoryBefore[index]!))) / totalSubscribers
    return {
      kind: 'fanout',
      instances: serverCount,
      subscribers: totalSubscribers,
      publishes: spec.publishes,
      all,
      sameInstance: latencyOf(near, measured, near.length * perProcess),
      otherInstance: far.length ? latencyOf(far, measured, far.length * perProcess) : null,
      missing: sum(reports.flatMap(report => report.missing)),
      duplicates: sum(reports.flatMap(report => report.duplicates)),
      lastDelivery: { p50: percentile(lastDeliveries, 0.5), max: lastDeliveries.at(-1) ?? null },
      deliveriesPerSecond,
      publishCall: { p50: percentile(callMs, 0.5), p99: percentile(callMs, 0.99) },
      serverCpuUsPerDelivery: instances.map((instance, index) => serverCpu[index]! / (subscribersOf(instance) * spec.publishes)),
      serverCpuUsPerDeliveryAll: sum(serverCpu) / (totalSubscribers * spec.publishes),
      memoryPerSubscriber: { heap: memoryGrowth(memory => memory.heapUsed), rss: memoryGrowth(memory => memory.rss) },
      clientCpuUsPerDelivery: (sum(after.clients) - sum(before.clients)) / (totalSubscribers * spec.publishes),
      subscribeSeconds,
      clockSkewMs,
      reconnects: sum(reports.map(report => report.reconnects)),
      errors: errors + sum(reports.map(report => report.errors)),
      errorSamples: [...errorSamples, ...reports.flatMap(report => report.errorSamples)].slice(0, 5),
    }
  }
  finally {
    // Subscribers leave first, then the instances shut down gracefully (their publishers or adapters quit Redis).
    await Promise.all(processes.map(fanoutProcess => fanoutProcess.request({ type: 'close' }, 10_000).catch(() => {})))
    await Promise.all(processes.map(fanoutProcess => fanoutProcess.stop()))
    await Promise.all(instances.map(async (instance) => {
      const killer = setTimeout(() => void instance.stop('SIGKILL'), 10_000)
      await instance.stop('SIGTERM')
      clearTimeout(killer)
    }))
    // Only nuxt-orpc's publisher keeps keys (its streams); Socket.IO's adapter (pub/sub) and the baseline keep none.
    if (kind.client === 'nuxt') await deleteRunKeys(harness, prefix)
  }
}

async function deleteRunKeys({ redisUrl, log }: FanoutHarness, prefix: string) {
  try {
    const { deleted, left } = await deleteKeys(redisUrl, prefix)
    if (left) log(`fanout: ${left} Redis key(s) under ${prefix} could not be deleted`)
    else log(`fanout: deleted ${deleted} Redis key(s) under ${prefix}`)
  }
  catch (error) {
    log(`fanout: could not delete the Redis keys under ${prefix} (they expire with the publisher's retention, 5 minutes): ${error instanceof Error ? error.message : String(error)}`)
  }
}
