// The load process: forked by run.ts, it runs one job at a time against a server on loopback and reports what
// it measured. It never starts servers; it only opens connections, makes calls and reads the server's stats.
import type { Socket } from 'node:net'
import { connect as connectTcp } from 'node:net'
import { createORPCClient } from '@orpc/client'
import { RPCLink as FetchRPCLink } from '@orpc/client/fetch'
import { RPCLink as WebSocketRPCLink } from '@orpc/client/websocket'
import type { RouterClient } from '@orpc/server'
import { io } from 'socket.io-client'
import WebSocket from 'ws'
import type { RpcConnectionOptions } from '../src/runtime/client/connection'
import { createRpcClient, createRpcConnection } from '../src/runtime/client/connection'
import type { router } from './fixture/server/rpc'
import type { ColdResult, FromClient, IdleResult, Job, PatternSpec, ServerStats, Target, ThroughputResult, ToClient } from './shared'
import { browserLike } from './shared'

type BenchClient = RouterClient<typeof router>

/** What every client kind offers the patterns. */
interface BenchConnection {
  echo: (data: unknown) => Promise<unknown>
  /** Asks for a stream of `count` events and resolves with how many arrived. */
  stream: (count: number) => Promise<number>
  close: () => void
}

/** A small call body, the same for every target. */
const payload = { id: 42, text: 'hello from the bench' }

const now = () => performance.timeOrigin + performance.now()
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

function opened(socket: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('open', () => resolve())
    socket.once('error', reject)
    socket.once('close', code => reject(new Error(`closed with ${code} before it opened`)))
  })
}

/** (a) The raw echo: `{ id, data }` out, the same back; `{ id, stream }` asks for events `{ id, n }`, then `{ id, done }`. */
async function connectRaw(url: string, origin: string): Promise<BenchConnection> {
  const socket = new WebSocket(url, { origin })
  await opened(socket)
  let nextId = 0
  const pending = new Map<number, { onMessage: (message: { data?: unknown, done?: boolean }) => void, reject: (error: Error) => void }>()
  socket.on('message', (data) => {
    const message = JSON.parse(data.toString()) as { id: number, data?: unknown, done?: boolean }
    pending.get(message.id)?.onMessage(message)
  })
  socket.on('close', (code) => {
    for (const call of pending.values()) call.reject(new Error(`socket closed with ${code}`))
    pending.clear()
  })
  function request(body: object, onMessage: (message: { data?: unknown, done?: boolean }, id: number) => boolean): Promise<unknown> {
    const id = nextId++
    return new Promise((resolve, reject) => {
      pending.set(id, {
        onMessage: (message) => {
          if (!onMessage(message, id)) return
          pending.delete(id)
          resolve(message.data)
        },
        reject,
      })
      socket.send(JSON.stringify({ id, ...body }))
    })
  }
  return {
    echo: data => request({ data }, () => true),
    async stream(count) {
      let events = 0
      await request({ stream: count }, (message) => {
        if (message.done) return true
        events++
        return false
      })
      return events
    },
    close: () => socket.close(),
  }
}

function fromOrpcClient(client: BenchClient, close: () => void): BenchConnection {
  return {
    echo: data => client.echo(data),
    async stream(count) {
      let events = 0
      for await (const _event of await client.stream({ count })) events++
      return events
    },
    close,
  }
}

/** oRPC's stock client: `RPCLink` from `@orpc/client/websocket` on a socket it is handed open. */
async function connectOrpc(url: string, origin: string): Promise<BenchConnection> {
  const socket = new WebSocket(url, { origin })
  await opened(socket)
  // ws's WebSocket has the browser API RPCLink uses (addEventListener, send, readyState).
  const link = new WebSocketRPCLink({ websocket: socket as unknown as globalThis.WebSocket })
  return fromOrpcClient(createORPCClient<BenchClient>(link), () => socket.close())
}

/**
 * nuxt-orpc's browser client (`createRpcConnection` and `createRpcClient`, as useRpc() makes it), on ws's
 * WebSocket. Against the bare oRPC route it offers only `orpc`, the subprotocol it agrees on with any stock oRPC
 * server: the bare route never sends the ready frame that the `nuxt-orpc` subprotocol promises.
 */
async function connectNuxt(url: string, origin: string, plainOrpc: boolean): Promise<BenchConnection> {
  class BenchWebSocket extends WebSocket {
    constructor(address: string, protocols?: string[]) {
      const offered = (plainOrpc ? protocols?.filter(protocol => protocol !== 'nuxt-orpc') : protocols) ?? []
      super(address, offered, browserLike(origin, offered))
    }
  }
  const connection = createRpcConnection({ url, WebSocket: BenchWebSocket as unknown as RpcConnectionOptions['WebSocket'] })
  // What useRpc() returns.
  const client = createRpcClient<BenchClient>(connection)
  // The connection opens on its first call.
  await client.echo(payload)
  return fromOrpcClient(client, () => connection.close())
}

/** oRPC over HTTP: `RPCLink` from `@orpc/client/fetch` (Node's fetch, keep-alive). */
function connectHttp(url: string): BenchConnection {
  return fromOrpcClient(createORPCClient<BenchClient>(new FetchRPCLink({ url })), () => {})
}

/** nuxt-orpc's client with `transport: 'http'`: every call a request to the module's HTTP route. */
async function connectNuxtHttp(url: string): Promise<BenchConnection> {
  const connection = createRpcConnection({ url, transport: 'http' })
  const client = createRpcClient<BenchClient>(connection)
  await client.echo(payload)
  return fromOrpcClient(client, () => connection.close())
}

/** Socket.IO's client, websocket transport only, one engine per connection (no multiplexing). */
async function connectSocketIo(url: string, origin: string): Promise<BenchConnection> {
  const socket = io(url, { transports: ['websocket'], forceNew: true, reconnection: false, extraHeaders: { origin } })
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve())
    socket.once('connect_error', reject)
  })
  return {
    echo: data => socket.emitWithAck('echo', data),
    async stream(count) {
      let events = 0
      const onEvent = () => events++
      socket.on('event', onEvent)
      await socket.emitWithAck('stream', count)
      socket.off('event', onEvent)
      return events
    },
    close: () => socket.disconnect(),
  }
}

function connectTarget(target: Target, serverUrl: string): Promise<BenchConnection> | BenchConnection {
  const wsUrl = serverUrl.replace(/^http/, 'ws')
  // Every WebSocket handshake carries the page's own Origin, as a browser's would: nuxt-orpc checks it.
  const origin = serverUrl
  switch (target.key) {
    case 'a': return connectRaw(`${wsUrl}/raw`, origin)
    case 'b-orpc': return connectOrpc(`${wsUrl}/orpc-bare`, origin)
    case 'b-nuxt': return connectNuxt(`${wsUrl}/orpc-bare`, origin, true)
    case 'c-orpc': return connectOrpc(`${wsUrl}/_orpc`, origin)
    case 'c-nuxt': return connectNuxt(`${wsUrl}/_orpc`, origin, false)
    case 'd': return connectHttp(`${serverUrl}/orpc-http`)
    case 'd-nuxt': return connectNuxtHttp(`${wsUrl}/_orpc`)
    case 'e': return connectSocketIo(serverUrl, origin)
    default: throw new Error(`unknown target ${target.key}`)
  }
}

/** Opens `count` connections, at most `parallel` handshakes at a time. */
async function connectMany<T>(count: number, parallel: number, open: () => Promise<T> | T): Promise<T[]> {
  const connections: T[] = []
  let next = 0
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, async () => {
    while (next < count) {
      next++
      connections.push(await open())
    }
  }))
  return connections
}

async function readStats(serverUrl: string, collectGarbage = false): Promise<ServerStats> {
  const response = await fetch(`${serverUrl}/_bench/stats${collectGarbage ? '?gc=1' : ''}`)
  if (!response.ok) throw new Error(`stats: HTTP ${response.status}`)
  return await response.json() as ServerStats
}

const cpuMicros = (usage: { user: number, system: number }) => usage.user + usage.system

function percentile(sorted: Float64Array, fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))]!
}

/** Latencies of timed calls, in ms. */
class Recorder {
  private values: Float64Array
  private count = 0
  errors = 0

  constructor(expected: number) {
    this.values = new Float64Array(Math.max(16, expected))
  }

  /** One timed call; a failed call counts as an error, not as a latency. */
  async time(call: () => Promise<unknown>) {
    const start = performance.now()
    try {
      await call()
    }
    catch {
      this.errors++
      return
    }
    if (this.count === this.values.length) {
      const grown = new Float64Array(this.values.length * 2)
      grown.set(this.values)
      this.values = grown
    }
    this.values[this.count++] = performance.now() - start
  }

  get calls() {
    return this.count + this.errors
  }

  percentiles() {
    if (this.count === 0) return { p50: null, p99: null }
    const sorted = this.values.slice(0, this.count).sort()
    return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) }
  }
}

/** Runs `body` between two readings of server and client CPU; the readings are outside the timed span. */
async function measured(serverUrl: string, body: () => Promise<{ operations: number, recorder?: Recorder, errors?: number }>): Promise<ThroughputResult> {
  const serverBefore = await readStats(serverUrl)
  const clientBefore = process.cpuUsage()
  const start = performance.now()
  const { operations, recorder, errors = 0 } = await body()
  const seconds = (performance.now() - start) / 1000
  const clientCpu = cpuMicros(process.cpuUsage(clientBefore))
  const serverAfter = await readStats(serverUrl)
  // Null on workerd (see ServerStats).
  const cpuKnown = (serverAfter.cpu as ServerStats['cpu'] | null) !== null && (serverBefore.cpu as ServerStats['cpu'] | null) !== null
  const serverCpu = cpuKnown ? cpuMicros(serverAfter.cpu) - cpuMicros(serverBefore.cpu) : null
  return {
    kind: 'throughput',
    operations,
    seconds,
    perSecond: operations / seconds,
    ...(recorder ? recorder.percentiles() : { p50: null, p99: null }),
    serverCpuUs: serverCpu === null ? null : serverCpu / operations,
    ...(cpuKnown ? { serverUserUs: (serverAfter.cpu.user - serverBefore.cpu.user) / operations } : {}),
    serverSleepsPerCall: (serverAfter.sleeps - serverBefore.sleeps) / operations,
    clientCpuUs: clientCpu / operations,
    errors: recorder ? recorder.errors : errors,
  }
}

async function sequentialCalls(connection: BenchConnection, calls: number, recorder?: Recorder) {
  for (let call = 0; call < calls; call++) {
    if (recorder) await recorder.time(() => connection.echo(payload))
    else await connection.echo(payload)
  }
}

async function runThroughput(job: Job, spec: Exclude<PatternSpec, { kind: 'idle' | 'cold' }>): Promise<ThroughputResult> {
  const { target, serverUrl } = job
  const socketCount = spec.kind === 'concurrent' || spec.kind === 'paced' ? spec.sockets : spec.kind === 'sustained' ? spec.clients : 1
  const connections = await connectMany(socketCount, 64, () => connectTarget(target, serverUrl))
  try {
    switch (spec.kind) {
      case 'sequential': {
        await sequentialCalls(connections[0]!, spec.warmupCalls)
        const recorder = new Recorder(spec.calls)
        return await measured(serverUrl, async () => {
          await sequentialCalls(connections[0]!, spec.calls, recorder)
          return { operations: recorder.calls, recorder }
        })
      }
      case 'concurrent': {
        const callers = (callsEach: number, recorder?: Recorder) => Promise.all(Array.from({ length: spec.callers }, (_, caller) =>
          sequentialCalls(connections[caller % connections.length]!, callsEach, recorder)))
        await callers(spec.warmupCallsEach)
        const recorder = new Recorder(spec.callers * spec.callsEach)
        return await measured(serverUrl, async () => {
          // The whole block (every caller done) again and again, at least once, until `repeatForMs` have passed.
          const start = performance.now()
          do await callers(spec.callsEach, recorder)
          while (performance.now() - start < spec.repeatForMs)
          return { operations: recorder.calls, recorder }
        })
      }
      case 'sustained': {
        const runFor = async (ms: number, recorder?: Recorder) => {
          const deadline = performance.now() + ms
          await Promise.all(connections.map(async (connection) => {
            while (performance.now() < deadline) {
              if (recorder) await recorder.time(() => connection.echo(payload))
              else await connection.echo(payload)
            }
          }))
        }
        await runFor(spec.warmupMs)
        const recorder = new Recorder(spec.durationMs * 20)
        return await measured(serverUrl, async () => {
          await runFor(spec.durationMs, recorder)
          return { operations: recorder.calls, recorder }
        })
      }
      case 'paced': {
        // Open loop: calls go out on schedule whether or not earlier ones were answered (up to a bound).
        const maxInFlight = 2000
        const runPaced = async (ms: number, recorder?: Recorder) => {
          const total = Math.round(spec.rate * ms / 1000)
          const start = performance.now()
          let sent = 0
          let inFlight = 0
          while (sent < total) {
            const due = Math.min(total, Math.floor((performance.now() - start) * spec.rate / 1000) + 1)
            while (sent < due && inFlight < maxInFlight) {
              const connection = connections[sent % connections.length]!
              inFlight++
              const call = recorder ? recorder.time(() => connection.echo(payload)) : connection.echo(payload)
              const done = () => inFlight--
              void call.then(done, done)
              sent++
            }
            await sleep(1)
          }
          while (inFlight > 0) await sleep(1)
        }
        await runPaced(spec.warmupMs)
        const recorder = new Recorder(spec.rate * spec.durationMs / 1000)
        return await measured(serverUrl, async () => {
          await runPaced(spec.durationMs, recorder)
          return { operations: recorder.calls, recorder }
        })
      }
      case 'stream': {
        await connections[0]!.stream(spec.warmupEvents)
        return await measured(serverUrl, async () => {
          const received = await connections[0]!.stream(spec.events)
          return { operations: spec.events, errors: spec.events - received }
        })
      }
      default:
        throw new Error(`not a throughput pattern: ${(spec as PatternSpec).kind}`)
    }
  }
  finally {
    for (const connection of connections) connection.close()
  }
}

/**
 * Drops a connection with a TCP reset instead of a close handshake. The side that closes first keeps each
 * connection in TIME_WAIT for a minute, and on the client that ties up an ephemeral port: 10,000 of them,
 * several times a run, leave other processes on this shared machine unable to listen on random ports.
 */
function reset(socket: WebSocket | undefined) {
  const tcp = (socket as unknown as { _socket?: Socket } | undefined)?._socket
  if (tcp && !tcp.destroyed) tcp.resetAndDestroy()
  else socket?.terminate()
}

interface IdleSocket {
  isOpen: () => boolean
  close: () => void
}

/** Opens one idle connection the way the target's own client would, without making a call. */
async function openIdle(target: Target, serverUrl: string): Promise<IdleSocket> {
  const origin = serverUrl
  if (target.server === 'socketio') {
    const socket = io(serverUrl, { transports: ['websocket'], forceNew: true, reconnection: false, extraHeaders: { origin } })
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve())
      socket.once('connect_error', reject)
    })
    return {
      isOpen: () => socket.connected,
      close: () => {
        // engine.io-client's websocket transport keeps ws's socket as `ws`.
        reset((socket.io.engine.transport as unknown as { ws?: WebSocket }).ws)
        socket.disconnect()
      },
    }
  }
  const path = { a: '/raw', b: '/orpc-bare', c: '/_orpc' }[target.letter as 'a' | 'b' | 'c']
  // nuxt-orpc's client offers its subprotocol and waits for the ready frame: the connection is then fully set up.
  const protocols = target.letter === 'c' ? ['orpc', 'nuxt-orpc'] : []
  const socket = new WebSocket(`${serverUrl.replace(/^http/, 'ws')}${path}`, protocols, browserLike(origin, protocols))
  let open = true
  socket.on('close', () => open = false)
  if (target.letter === 'c') {
    await new Promise<void>((resolve, reject) => {
      socket.once('message', () => resolve())
      socket.once('error', reject)
    })
  }
  else {
    await opened(socket)
  }
  return { isOpen: () => open && socket.readyState === WebSocket.OPEN, close: () => reset(socket) }
}

async function runIdle(job: Job, spec: Extract<PatternSpec, { kind: 'idle' }>): Promise<IdleResult> {
  const { target, serverUrl } = job
  // Load the route's code and warm the handshake path, so they are not counted as per-connection memory.
  for (const socket of await connectMany(10, 10, () => openIdle(target, serverUrl))) socket.close()
  await sleep(200)
  const before = await readStats(serverUrl, true)
  const start = performance.now()
  const sockets = await connectMany(spec.connections, 64, () => openIdle(target, serverUrl))
  const opensPerSecond = sockets.length / ((performance.now() - start) / 1000)
  try {
    await sleep(300)
    const after = await readStats(serverUrl, true)
    await sleep(spec.holdMs)
    const held = sockets.filter(socket => socket.isOpen()).length
    return {
      kind: 'idle',
      requested: spec.connections,
      opened: sockets.length,
      held,
      serverSockets: after.sockets - before.sockets,
      heapPerConnection: (after.memory.heapUsed - before.memory.heapUsed) / sockets.length,
      rssPerConnection: (after.memory.rss - before.memory.rss) / sockets.length,
      opensPerSecond,
    }
  }
  finally {
    for (const socket of sockets) socket.close()
  }
}

/** Resolves once something listens on the port (a refused connect is cheap; retried every 5 ms). */
async function waitForPort(port: number, deadline: number): Promise<number> {
  for (let attempts = 1; ; attempts++) {
    const listening = await new Promise<boolean>((resolve) => {
      const socket = connectTcp({ host: '127.0.0.1', port })
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (listening) return attempts
    if (Date.now() > deadline) throw new Error(`nothing listened on port ${port} in time`)
    await sleep(5)
  }
}

async function runCold(job: Job): Promise<ColdResult> {
  const deadline = Date.now() + 30_000
  const attempts = await waitForPort(Number(new URL(job.serverUrl).port), deadline)
  const connection = await connectTarget(job.target, job.serverUrl)
  await connection.echo(payload)
  const ms = now() - job.spawnedAt!
  connection.close()
  return { kind: 'cold', ms, attempts }
}

function runJob(job: Job) {
  const spec = job.pattern.spec
  if (spec.kind === 'idle') return runIdle(job, spec)
  if (spec.kind === 'cold') return runCold(job)
  return runThroughput(job, spec)
}

const send = (message: FromClient) => process.send!(message)

/**
 * Waits until this process has been quiet (event loop lag under 3 ms) for `quietMs`, at most 10 s: closing
 * 10,000 sockets, say, keeps it busy well after the job that opened them reported.
 */
async function settle(quietMs: number): Promise<number> {
  const start = performance.now()
  // What the last job left behind is collected now, not during the next job's timed run.
  globalThis.gc?.()
  let quietSince = performance.now()
  while (performance.now() - quietSince < quietMs && performance.now() - start < 10_000) {
    const before = performance.now()
    await sleep(20)
    if (performance.now() - before - 20 > 3) quietSince = performance.now()
  }
  return performance.now() - start
}

process.on('message', async (message: ToClient) => {
  if (message.type === 'exit') process.exit(0)
  try {
    if (message.type === 'settle') send({ type: 'settled', id: message.id, waitedMs: await settle(message.quietMs) })
    else send({ type: 'result', id: message.id, result: await runJob(message.job) })
  }
  catch (error) {
    send({ type: 'error', id: message.id, message: error instanceof Error ? error.stack ?? error.message : String(error) })
  }
})

// A harness that died must not leave its load process behind.
process.on('disconnect', () => process.exit(0))

send({ type: 'ready' })
