// `npm run bench`: builds the bench fixture once, starts the servers, drives every target with the load process
// in round-robin rounds, and prints the tables (stdout, Markdown) and writes them as JSON (bench/results/).
// Progress goes to stderr. See docs/benchmarks.md for what the numbers mean.
import type { ChildProcess } from 'node:child_process'
import { execFileSync, fork, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { cpus, freemem, loadavg, release, totalmem } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { getRandomPort } from 'get-port-please'
import { prepareTypes } from '../scripts/prepare-types.mjs'
import { defaultRedisUrl, redisProblem, runFanout } from './fanout'
import type { FromClient, Job, JobResult, Pattern, Target, ToClient } from './shared'
import { definePatterns, isThroughputPattern, targets } from './shared'
import type { BenchReport, JobRecord } from './report'
import { failures, renderReport, summarize } from './report'

const benchDir = dirname(fileURLToPath(import.meta.url))
const rootDir = join(benchDir, '..')
const fixtureDir = join(benchDir, 'fixture')
const socketIoEntry = join(benchDir, 'socketio-server.mjs')
const resultsDir = join(benchDir, 'results')

const { values: options, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'quick': { type: 'boolean', default: false },
    'rounds': { type: 'string' },
    'start-round': { type: 'string', default: '1' },
    'patterns': { type: 'string' },
    'targets': { type: 'string' },
    'sustained-seconds': { type: 'string', default: '20' },
    'rebuild': { type: 'boolean', default: false },
    'no-build': { type: 'boolean', default: false },
    'out': { type: 'string' },
    'merge': { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    'redis-url': { type: 'string', default: defaultRedisUrl },
    'runtime': { type: 'string', default: 'node' },
    'help': { type: 'boolean', default: false },
  },
})

if (options.help) {
  process.stdout.write(`npm run bench -- [options]
  --quick                 smoke counts, one round (under a minute)
  --rounds N              rounds (default 3; --quick: 1)
  --start-round N         number of the first round, to continue the rotation across split runs (default 1)
  --patterns a,b          only these: ${definePatterns(false, 20).map(pattern => pattern.id).join(', ')}
  --targets a,b           only these: ${targets.map(target => target.key).join(', ')}
  --sustained-seconds N   length of the sustained pattern (default 20)
  --rebuild / --no-build  always / never build the fixture (default: when its sources changed)
  --cpu-prof              write the fixture servers' V8 CPU profiles to bench/results/profiles/, the load
                          process's to bench/results/profiles/load/
  --runtime node|bun|deno|cloudflare
                          the runtime of the fixture server (default node); the others build with their Nitro
                          preset, run from node_modules/.bin (cloudflare: workerd through wrangler dev), and
                          leave out (d) and Socket.IO (e); cloudflare runs the request/response and stream
                          patterns only, and reads no server CPU (workerd does not tell it)
  --redis-url URL         the Redis the fanout pattern uses (default ${defaultRedisUrl}); without one it is
                          skipped, or fails under CI=true
  --out FILE              where the JSON goes (default bench/results/bench-<time>.json)
  --merge FILE...         read earlier JSON results as one run and print the tables again
`)
  process.exit(0)
}

const log = (line: string) => process.stderr.write(`${line}\n`)

/** How the fixture server runs on a `--runtime`: its Nitro preset, its build's folder and its command. */
interface BenchRuntime {
  preset: string
  output: string
  command: (entry: string, execArgv: string[], port: number) => Promise<[string, string[]]> | [string, string[]]
  /** What the server prints once it listens. */
  ready: string
}

const runtimes: Record<'node' | 'bun' | 'deno' | 'cloudflare', BenchRuntime> = {
  node: { preset: 'node-server', output: '.output', ready: 'Listening', command: (entry, execArgv) => [process.execPath, [...execArgv, entry]] },
  bun: { preset: 'bun', output: '.output-bun', ready: 'Listening', command: entry => [join(rootDir, 'node_modules/.bin/bun'), ['run', entry]] },
  deno: { preset: 'deno-server', output: '.output-deno', ready: 'Listening', command: entry => [join(rootDir, 'node_modules/.bin/deno'), ['run', '--allow-net', '--allow-read', '--allow-env', '--allow-sys', entry]] },
  // workerd through `wrangler dev --local`, offline (as test/contract.ts runs it): the Worker serves HTTP, and
  // every socket, (a) and (b) included, lives in Nitro's one Durable Object.
  cloudflare: {
    preset: 'cloudflare-durable',
    output: '.output-cloudflare',
    ready: 'Ready on',
    command: async (entry, _execArgv, port) => [join(rootDir, 'node_modules/.bin/wrangler'), [
      'dev', '--local', '-c', join(dirname(entry), 'wrangler.json'), '--ip', '127.0.0.1', '--port', String(port),
      '--inspector-port', String(await getRandomPort('127.0.0.1')), '--persist-to', join(dirname(entry), '../.wrangler-state'),
      '--show-interactive-dev-session=false',
    ]],
  },
}

/** What wrangler must not do on a closed network: report, check for updates, fetch Cloudflare's data. */
const quietWrangler = {
  WRANGLER_SEND_METRICS: 'false',
  WRANGLER_SEND_ERROR_REPORTS: 'false',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  WRANGLER_HIDE_BANNER: 'true',
  X_LOCAL_EXPLORER: 'false',
}
if (!(options.runtime! in runtimes)) throw new Error(`--runtime: "${options.runtime}" is not one of ${Object.keys(runtimes).join(', ')}`)
const runtimeName = options.runtime as keyof typeof runtimes
const runtime = runtimes[runtimeName]
const serverEntry = join(fixtureDir, runtime.output, 'server/index.mjs')
const buildHashFile = join(fixtureDir, runtime.output, 'bench-build.hash')

// Every process this harness starts, so that a failure or Ctrl-C still ends them all.
const children = new Set<ChildProcess>()
function track(child: ChildProcess) {
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}
/** Signals a child's process group where it has one of its own (servers), else the child. */
function killGroup(child: ChildProcess, signal: NodeJS.Signals) {
  try {
    process.kill(-child.pid!, signal)
  }
  catch {
    child.kill(signal)
  }
}
function killChildren() {
  for (const child of children) killGroup(child, 'SIGKILL')
}
process.on('exit', killChildren)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killChildren()
    process.exit(130)
  })
}

/** A hash of everything the build depends on: the fixture, the module's source and the lockfile. */
async function sourceHash(): Promise<string> {
  const hash = createHash('sha256')
  const skip = /(?:^|\/)(?:\.nuxt|\.output|\.data|node_modules)(?:\/|$)/
  for (const dir of [fixtureDir, join(rootDir, 'src')]) {
    const files = (await readdir(dir, { recursive: true, withFileTypes: true }))
      .filter(entry => entry.isFile())
      .map(entry => join(entry.parentPath, entry.name))
      .filter(file => !skip.test(relative(dir, file)))
      .sort()
    for (const file of files) hash.update(relative(rootDir, file)).update(await readFile(file))
  }
  hash.update(await readFile(join(rootDir, 'package-lock.json')))
  return hash.digest('hex')
}

/** Builds the fixture unless the last build came from the same sources. */
async function buildFixture() {
  const hash = await sourceHash()
  const built = existsSync(buildHashFile) ? await readFile(buildHashFile, 'utf8') : undefined
  if (options['no-build']) {
    if (!existsSync(serverEntry)) throw new Error('--no-build: bench/fixture has not been built yet')
    if (built !== hash) log('warning: --no-build with sources changed since the last build')
    return
  }
  if (built === hash && !options.rebuild) {
    log('fixture: build is up to date')
    return
  }
  log('fixture: building (nuxi build bench/fixture) ...')
  const started = Date.now()
  // On a fresh clone the module's generated tsconfig is not there yet; Vite needs it to transform src/.
  prepareTypes(rootDir)
  const nuxi = join(rootDir, 'node_modules/.bin/nuxi')
  const env = runtimeName === 'node' ? process.env : { ...process.env, NITRO_PRESET: runtime.preset, NUXT_ORPC_BENCH_OUTPUT: join(fixtureDir, runtime.output) }
  const child = track(spawn(process.execPath, [nuxi, 'build', fixtureDir], { cwd: rootDir, env, stdio: ['ignore', 2, 2] }))
  const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
  if (code !== 0) throw new Error(`nuxi build exited with ${code}`)
  await writeFile(buildHashFile, hash)
  log(`fixture: built in ${((Date.now() - started) / 1000).toFixed(1)} s`)
}

interface BenchServer {
  url: string
  child: ChildProcess
  /** Resolves once the server printed "Listening on". */
  listening: Promise<void>
  stop: (signal?: NodeJS.Signals) => Promise<void>
}

interface ServerExtras {
  /** Added to the server's environment. */
  env?: Record<string, string>
  /** Names it in the log (default: `<kind> server`). */
  label?: string
  /** A Node script to run instead of the kind's server (the fan-out's peers); it prints "Listening" too. */
  script?: string
}

/** Spawns a server on a free loopback port; its stderr is passed on, so a crash shows in the run's log. */
async function spawnServer(kind: Target['server'], execArgv = ['--expose-gc'], freePort?: number, { env, label = `${kind} server`, script }: ServerExtras = {}): Promise<BenchServer> {
  // With a port given, the spawn happens before this function first yields.
  const port = freePort ?? await getRandomPort('127.0.0.1')
  const [command, args] = script
    ? [process.execPath, [...execArgv, script]]
    : kind === 'nuxt' ? await runtime.command(serverEntry, execArgv, port) : [process.execPath, [...execArgv, socketIoEntry]]
  const ready = kind === 'nuxt' && !script ? runtime.ready : 'Listening'
  const child = track(spawn(command, args, {
    env: { ...process.env, ...env, ...quietWrangler, PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
    // A group of its own: wrangler runs workerd as a child, and both must go.
    detached: true,
  }))
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  child.stderr!.on('data', (chunk: Buffer) => log(`[${label}] ${chunk.toString().trimEnd()}`))
  const listening = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes(ready) && resolve())
    child.once('exit', code => reject(new Error(`${label} exited with ${code}`)))
    setTimeout(() => reject(new Error(`${label} did not listen within 30 s`)), 30_000).unref()
  })
  listening.catch(() => {})
  return {
    url: `http://127.0.0.1:${port}`,
    child,
    listening,
    async stop(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) killGroup(child, signal)
      await exited
    },
  }
}

async function startServer(kind: Target['server'], execArgv?: string[], extras?: ServerExtras): Promise<BenchServer> {
  const server = await spawnServer(kind, execArgv, undefined, extras)
  try {
    await server.listening
  }
  catch (error) {
    await server.stop()
    throw error
  }
  return server
}

/** The load process: one, reused for every job, restarted if a job fails or overruns. */
class LoadProcess {
  private child: ChildProcess | undefined
  private nextId = 0

  private async start(): Promise<ChildProcess> {
    const child = track(fork(join(benchDir, 'client.ts'), [], {
      cwd: rootDir,
      execArgv: ['--expose-gc', '--import', 'jiti/register', ...(options['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${join(resultsDir, 'profiles', 'load')}`] : [])],
      stdio: ['ignore', 2, 2, 'ipc'],
    }))
    await new Promise<void>((resolve, reject) => {
      child.once('message', (message: FromClient) => message.type === 'ready' ? resolve() : reject(new Error('load process did not start')))
      child.once('exit', code => reject(new Error(`load process exited with ${code}`)))
    })
    return child
  }

  async run(job: Job, timeoutMs: number): Promise<JobResult> {
    const answer = await this.exchange(id => ({ type: 'job', id, job }), timeoutMs)
    return (answer as Extract<FromClient, { type: 'result' }>).result
  }

  /** Returns once the load process is quiet (see settle() in client.ts). */
  async settle(quietMs: number): Promise<void> {
    await this.exchange(id => ({ type: 'settle', id, quietMs }), 30_000)
  }

  private async exchange(message: (id: number) => ToClient, timeoutMs: number): Promise<FromClient> {
    this.child ??= await this.start()
    const child = this.child
    const id = this.nextId++
    try {
      return await new Promise<FromClient>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs)
        const onExit = (code: number | null) => reject(new Error(`load process exited with ${code}`))
        const onMessage = (answer: FromClient) => {
          if (answer.type === 'ready' || answer.id !== id) return
          clearTimeout(timer)
          child.off('message', onMessage)
          child.off('exit', onExit)
          if (answer.type === 'error') reject(new Error(answer.message))
          else resolve(answer)
        }
        child.on('message', onMessage)
        child.once('exit', onExit)
        child.send(message(id))
      })
    }
    catch (error) {
      // Whatever it was doing, start afresh for the next job.
      child.kill('SIGKILL')
      this.child = undefined
      throw error
    }
  }

  stop() {
    this.child?.send({ type: 'exit' } satisfies ToClient)
    this.child = undefined
  }
}

function jobTimeout(pattern: Pattern): number {
  switch (pattern.spec.kind) {
    case 'sustained': return pattern.spec.durationMs + 60_000
    case 'idle': return 180_000
    default: return 120_000
  }
}

/** --cpu-prof: V8 writes a server's CPU profile when it exits (read it with bench/profile.ts). */
const profiling = () => options['cpu-prof'] ? ['--expose-gc', '--cpu-prof', `--cpu-prof-dir=${join(resultsDir, 'profiles')}`] : undefined

/** Set when the fanout pattern must fail rather than be skipped (no Redis under CI=true). */
let fanoutRefusal: string | undefined

/** Runs one job; idle and cold start get a server process of their own, started for that job only. */
async function runJob(load: LoadProcess, pattern: Pattern, target: Target, shared: Record<Target['server'], BenchServer>): Promise<JobResult> {
  const kind = pattern.spec.kind
  if (pattern.spec.kind === 'fanout') {
    // Its own server instances and load processes; the shared ones stay out of it.
    if (fanoutRefusal) throw new Error(fanoutRefusal)
    return await runFanout(pattern.spec, target, {
      redisUrl: options['redis-url'],
      startInstance: (label, env, script) => startServer(target.server, profiling(), { env, label, script }),
      track,
      log,
    })
  }
  // Every job starts with a quiet load process, the cold start's clock before the server is even spawned.
  await load.settle(options.quick ? 50 : 200)
  if (kind === 'cold') {
    // Plain `node`, no flags; the clock starts right before the spawn, the load process stops it at the first answer.
    const port = await getRandomPort('127.0.0.1')
    const spawnedAt = performance.timeOrigin + performance.now()
    const server = await spawnServer(target.server, [], port)
    try {
      return await load.run({ pattern, target, serverUrl: server.url, spawnedAt }, jobTimeout(pattern))
    }
    finally {
      await server.stop()
    }
  }
  const server = kind === 'idle' ? await startServer(target.server) : shared[target.server]
  try {
    return await load.run({ pattern, target, serverUrl: server.url }, jobTimeout(pattern))
  }
  finally {
    if (server !== shared[target.server]) await server.stop()
  }
}

function describeResult(result: JobResult): string {
  switch (result.kind) {
    case 'throughput':
      return `${Math.round(result.perSecond)}/s, server ${result.serverCpuUs === null ? 'n/a' : `${result.serverCpuUs.toFixed(1)} us (user ${result.serverUserUs?.toFixed(1)}, ${result.serverSleepsPerCall?.toFixed(2)} sleeps/call)`}, client ${result.clientCpuUs.toFixed(1)} us${result.errors ? `, ${result.errors} errors` : ''}`
    case 'idle':
      return `${result.held}/${result.requested} held, heap ${(result.heapPerConnection / 1024).toFixed(1)} KB, rss ${(result.rssPerConnection / 1024).toFixed(1)} KB per connection`
    case 'cold':
      return `${Math.round(result.ms)} ms`
    case 'fanout': {
      const ms = (value: number | null) => value === null ? 'n/a' : value.toFixed(1)
      const lost = result.missing || result.duplicates ? `, ${result.missing} MISSING, ${result.duplicates} DUPLICATED` : ''
      const other = result.otherInstance ? `, other ${ms(result.otherInstance.p99)}` : ''
      const perSecond = result.deliveriesPerSecond ? `, ${Math.round(result.deliveriesPerSecond)} deliveries/s` : ''
      const cpu = result.serverCpuUsPerDeliveryAll === undefined ? '' : `, server ${result.serverCpuUsPerDeliveryAll.toFixed(1)} us/delivery`
      return `${result.all.delivered}/${result.all.expected} delivered${lost}${perSecond}, p50 ${ms(result.all.p50)} ms, p99 ${ms(result.all.p99)} ms, max ${ms(result.all.max)} ms (same instance p99 ${ms(result.sameInstance.p99)}${other})${cpu}${result.errors ? `, ${result.errors} errors` : ''}`
    }
  }
}

function packageVersions(lock: { packages: Record<string, { version?: string }> }) {
  const names = ['nuxt', 'nitropack', 'h3', 'crossws', 'ws', '@orpc/server', '@orpc/client', 'socket.io', 'socket.io-client', 'engine.io', 'engine.io-client', 'engine.io-client/node_modules/ws', '@socket.io/redis-adapter', 'ioredis', 'jiti']
  return Object.fromEntries(names.map(name => [name, lock.packages[`node_modules/${name}`]?.version ?? 'missing']))
}

function openFilesLimit(): number {
  return Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim())
}

function gitRevision(): string {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: rootDir, encoding: 'utf8' }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bench'], { cwd: rootDir, encoding: 'utf8' }).trim()
    return dirty ? `${commit} (with local changes)` : commit
  }
  catch {
    return 'unknown'
  }
}

async function measure(): Promise<BenchReport> {
  const quick = options.quick
  const rounds = Number(options.rounds ?? (quick ? 1 : 3))
  // A run split into several (one round each, say) keeps the rotation going with --start-round 2, 3, ...
  const firstRound = Number(options['start-round'])
  const lastRound = firstRound + rounds - 1
  const sustainedSeconds = Number(options['sustained-seconds'])
  const wantedPatterns = options.patterns?.split(',')
  // `fanout` names every fan-out layout (`fanout`, `fanout-single`).
  const wanted = (pattern: Pattern) => !wantedPatterns || wantedPatterns.includes(pattern.id) || (pattern.spec.kind === 'fanout' && wantedPatterns.includes('fanout'))
  const wantedTargets = options.targets?.split(',')
  const openFiles = openFilesLimit()
  const skipped: string[] = []
  const skip = (id: string, reason: string) => {
    log(`skipping ${id}: ${reason}`)
    skipped.push(`${id}: ${reason}`)
  }
  const redisUrl = options['redis-url']
  const wantsFanout = definePatterns(quick, sustainedSeconds).some(pattern => pattern.spec.kind === 'fanout' && wanted(pattern))
  const redisTrouble = wantsFanout ? await redisProblem(redisUrl) : undefined
  const redisReason = redisTrouble && `Redis does not answer at ${redisUrl} (${redisTrouble}). Start redis-server there, or pass --redis-url.`
  // CI must run it: there the job fails, loudly, instead of going missing.
  if (redisReason && process.env.CI) {
    fanoutRefusal = `${redisReason} (CI is set: failing instead of skipping)`
    log(`fanout: ${fanoutRefusal}`)
  }
  const patterns = definePatterns(quick, sustainedSeconds).filter((pattern) => {
    if (!wanted(pattern)) return false
    // workerd under wrangler: one long-lived server; no fresh processes per job (idle, cold), no Redis pair (fanout).
    if (runtimeName === 'cloudflare' && !isThroughputPattern(pattern.spec)) return false
    // Each side of 10,000 sockets needs a file descriptor per socket.
    if (pattern.spec.kind === 'idle' && pattern.spec.connections + 1000 > openFiles) {
      skip(pattern.id, `ulimit -n is ${openFiles}`)
      return false
    }
    if (pattern.spec.kind === 'fanout' && pattern.spec.subscribersPerInstance + 1000 > openFiles) {
      skip(pattern.id, `ulimit -n is ${openFiles}`)
      return false
    }
    if (pattern.spec.kind === 'fanout' && redisReason && !process.env.CI) {
      skip(pattern.id, redisReason)
      return false
    }
    return true
  })
  // Beside Bun or Deno, Socket.IO (which runs on Node) would compare runtimes, not servers, and (d) is oRPC's
  // Node adapter behind Nitro's emulated Node request (its event streams fail there): both are left out.
  // On workerd the bare crossws route answers no subprotocol, and a client that offers one (nuxt-orpc's, b-nuxt)
  // must refuse such a handshake: (b) is driven by RPCLink only there.
  const chosenTargets = targets.filter(target => (!wantedTargets || wantedTargets.includes(target.key))
    && (runtimeName === 'node' || (target.server === 'nuxt' && target.letter !== 'd'))
    && !(runtimeName === 'cloudflare' && target.key === 'b-nuxt'))

  const lock = JSON.parse(await readFile(join(rootDir, 'package-lock.json'), 'utf8'))
  const startedAt = new Date()
  const loadBefore = loadavg()
  await buildFixture()

  const load = new LoadProcess()
  const servers: Partial<Record<Target['server'], BenchServer>> = {}
  const records: JobRecord[] = []
  try {
    // The fan-out job starts servers of its own; the shared ones are for every other pattern.
    if (patterns.some(pattern => pattern.spec.kind !== 'fanout')) {
      servers.nuxt = await startServer('nuxt', profiling())
      if (chosenTargets.some(target => target.server === 'socketio')) servers.socketio = await startServer('socketio')
      log(`servers: fixture on ${runtimeName} ${servers.nuxt.url}${servers.socketio ? `, Socket.IO ${servers.socketio.url}` : ''}`)
    }
    if (!quick && patterns.some(pattern => isThroughputPattern(pattern.spec))) {
      // Not recorded: every target's code paths run once (and get optimized) on both sides before round one,
      // so that the first target of a round does not pay for compiling what the others then reuse.
      const warmups = definePatterns(true, 1).filter(pattern => ['concurrent-1', 'concurrent-many', 'stream'].includes(pattern.id))
      for (const target of chosenTargets) {
        for (const pattern of warmups.filter(warmup => warmup.targetKeys.includes(target.key))) await runJob(load, pattern, target, servers as Record<Target['server'], BenchServer>)
      }
      log('warm-up done')
    }
    const cold = patterns.find(pattern => pattern.spec.kind === 'cold')
    const coldTarget = cold && chosenTargets.find(target => cold.targetKeys.includes(target.key))
    if (!quick && cold && coldTarget) {
      // Not recorded either: the first spawn of a run also reads the build from disk.
      await runJob(load, cold, coldTarget, servers as Record<Target['server'], BenchServer>)
    }
    for (let round = firstRound; round <= lastRound; round++) {
      for (const pattern of patterns) {
        const keys = pattern.targetKeys.filter(key => chosenTargets.some(target => target.key === key))
        // Round-robin: every round starts with the next target, so no target always runs first or last.
        const shift = (round - 1) % Math.max(1, keys.length)
        for (const key of [...keys.slice(shift), ...keys.slice(0, shift)]) {
          const target = targets.find(candidate => candidate.key === key)!
          try {
            const result = await runJob(load, pattern, target, servers as Record<Target['server'], BenchServer>)
            records.push({ round, pattern: pattern.id, title: pattern.title, target: key, result })
            log(`round ${round}/${lastRound}  ${pattern.id.padEnd(16)} ${key.padEnd(7)} ${describeResult(result)}`)
          }
          catch (error) {
            const message = error instanceof Error ? error.message : String(error)
            records.push({ round, pattern: pattern.id, title: pattern.title, target: key, error: message })
            log(`round ${round}/${lastRound}  ${pattern.id.padEnd(16)} ${key.padEnd(7)} FAILED: ${message}`)
          }
        }
      }
    }
  }
  finally {
    load.stop()
    await servers.nuxt?.stop('SIGTERM')
    await servers.socketio?.stop('SIGTERM')
  }

  const sample = patterns.map(pattern => pattern.spec)
  const fanouts = sample.filter((spec): spec is Extract<typeof spec, { kind: 'fanout' }> => spec.kind === 'fanout')
  const fanout = fanouts[0]
  return {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: {
      cpu: cpus()[0]?.model ?? 'unknown',
      cores: cpus().length,
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      freeMemoryGiB: Math.round(freemem() / 2 ** 30),
      kernel: release(),
      node: process.version,
      openFilesLimit: openFiles,
      loadAverageBefore: loadBefore.map(value => Number(value.toFixed(2))),
      loadAverageAfter: loadavg().map(value => Number(value.toFixed(2))),
    },
    versions: { 'nuxt-orpc': `${JSON.parse(await readFile(join(rootDir, 'package.json'), 'utf8')).version} @ ${gitRevision()}`, ...packageVersions(lock) },
    conditions: {
      quick,
      rounds,
      patterns: Object.fromEntries(patterns.map((pattern, index) => [pattern.id, { title: pattern.title, ...sample[index] }])),
      notes: [
        runtimeName === 'node'
          ? 'One built fixture server (Nuxt 4, node-server preset, node --expose-gc) serves (a)-(d) side by side; Socket.IO (e) runs in its own process (node --expose-gc).'
          : `One built fixture server (Nuxt 4, ${runtime.preset} preset, run by ${runtimeName}) serves (a)-(c) side by side; (d), oRPC's Node adapter, and Socket.IO (e) are left out.`,
        'One load process (Node 22, forked from the harness) drives every job, one job at a time, over 127.0.0.1; the servers and the load process share the machine\'s cores.',
        'WebSocket clients use the ws package (socket.io-client uses it too); every handshake carries Origin: http://127.0.0.1:<port> like a same-origin page.',
        'Call body: {"id":42,"text":"hello from the bench"}; echo procedures have no input schema. Stream events are the integers 0..N-1.',
        'nuxt-orpc (c) runs with its default options (origin check, 1 MiB frames, 128 calls in flight, heartbeat every 25 s) except maxConnectionsPerIp 20000, maxConnections 20000, maxHandshakesPerSecond 100000, raised for the idle pattern.',
        'nuxt-orpc\'s client against the bare route (b-nuxt) offers only the `orpc` subprotocol (see docs/benchmarks.md).',
        'Server and client CPU are process.cpuUsage() deltas (user + system) of the whole process over the timed run, divided by calls (or events).',
        'Idle and cold-start jobs each get a fresh server process; idle heap is measured after gc() on both sides of opening the connections.',
        'Targets alternate round-robin: each round rotates the order. Figures are medians over rounds; ratios are medians of per-round ratios.',
        'The paced pattern is not one of the issue\'s: it offers every target the same load (open loop), so server CPU per call compares at equal batching.',
        ...(fanout
          ? [
              `Fan-out layouts: ${fanouts.map(spec => `${(spec.instances * spec.subscribersPerInstance).toLocaleString('en')} subscribers on ${spec.instances} instance(s) (${spec.loadProcessesPerInstance} load process(es) per instance), ${spec.warmupPublishes} warm-up + ${spec.publishes} measured publishes`).join('; ')}. Per job, fresh servers (node --expose-gc): c-nuxt, fixture instances sharing Redis at ${redisUrl} with NUXT_ORPC_PUBLISHER_DRIVER=redis and a key prefix of their own (deleted afterwards), nuxt-orpc's client; e, Socket.IO 4 instances (websocket transport only) sharing it through @socket.io/redis-adapter (a channel prefix of their own), socket.io-client sockets that join a room, io.to(room).emit per publish; ws, the baseline, one plain ws process (no Redis, whatever the layout) that writes each subscriber nuxt-orpc's event frame with one ws.send.`,
              `Fan-out: each instance's subscribers (one socket each) run in load processes of their own, split evenly (the baseline's connect to its one process; one load process spends more CPU decoding a delivery than a server writing it, so 10,000 subscribers are split over two and the job is not bound by one process's core), and one more load process publishes on instance 1 (a procedure, an acked emit, a ws message). Probes go out until every subscription is live; each publish waits until every subscriber has the previous one, plus ${fanout.gapMs} ms. Latency runs from the publish call's start to the event in the subscriber, on performance.timeOrigin + performance.now() in each process (their skew is checked over IPC). Deliveries/s: the measured publishes' deliveries over the sum of their times until their last delivery. Memory per subscriber: the instances' heap (after gc) and RSS growth from before subscribing to every subscription live, over the subscribers.`,
            ]
          : []),
      ],
      ...(skipped.length ? { skipped } : {}),
    },
    records,
  }
}

async function main() {
  let report: BenchReport
  if (options.merge) {
    // Several runs (e.g. one pattern per locked run) read as one: rounds are renumbered run after run.
    const runs = await Promise.all(positionals.map(async file => JSON.parse(await readFile(file, 'utf8')) as BenchReport))
    if (runs.length === 0) throw new Error('--merge needs result files')
    // Each run's rounds get numbers of their own, so that only jobs of the same run and round are paired.
    let next = 1
    const records: JobRecord[] = []
    for (const run of runs) {
      const renumbered = new Map<number, number>()
      for (const record of run.records) {
        if (!renumbered.has(record.round)) renumbered.set(record.round, next++)
        records.push({ ...record, round: renumbered.get(record.round)! })
      }
    }
    // A pattern's title says what one job did (counts, durations, repeats): jobs that differ are not one pattern.
    const titles = new Map<string, string>()
    for (const record of records) {
      const title = titles.get(record.pattern) ?? record.title
      if (title !== record.title) throw new Error(`--merge: pattern ${record.pattern} ran as "${title}" in one file and as "${record.title}" in another; merge only runs of the same jobs`)
      titles.set(record.pattern, title)
    }
    report = {
      ...runs[0]!,
      finishedAt: runs.at(-1)!.finishedAt,
      conditions: {
        ...runs[0]!.conditions,
        rounds: next - 1,
        patterns: Object.assign({}, ...runs.map(run => run.conditions.patterns)),
        mergedFrom: positionals.map(file => relative(rootDir, file)),
      },
      records,
    }
  }
  else {
    report = await measure()
  }
  report.summary = summarize(report.records)
  const text = renderReport(report)
  process.stdout.write(`${text}\n`)
  const out = options.out ?? join(resultsDir, `bench-${report.startedAt.replace(/[:.]/g, '-')}${options.merge ? '-merged' : ''}.json`)
  await mkdir(dirname(out), { recursive: true })
  await writeFile(out, `${JSON.stringify(report, null, 2)}\n`)
  log(`results: ${relative(process.cwd(), out)} (${Math.round(performance.now() / 1000)} s)`)
  const failed = failures(report)
  if (failed.length) {
    log(`${failed.length} job(s) failed or lost calls:\n  ${failed.join('\n  ')}`)
    process.exitCode = 1
  }
}

main().catch((error) => {
  log(error instanceof Error ? error.stack ?? error.message : String(error))
  killChildren()
  process.exit(1)
})
