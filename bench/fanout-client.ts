// A fan-out load process, forked by bench/fanout.ts: the subscribers of one server instance, or the publisher.
// It never starts servers or touches Redis; it opens connections with the target's client (nuxt-orpc's,
// socket.io-client, or plain ws for the raw baseline) and subscribes or publishes.
import { mkdir, writeFile } from 'node:fs/promises'
import { Session as InspectorSession } from 'node:inspector/promises'
import { join } from 'node:path'
import { createORPCClient } from '@orpc/client'
import type { RouterClient } from '@orpc/server'
import type { Socket } from 'socket.io-client'
import { io } from 'socket.io-client'
import WebSocket from 'ws'
import type { RpcConnection, RpcConnectionOptions } from '../src/runtime/client/connection'
import { createRpcConnection } from '../src/runtime/client/connection'
import { startResumableSubscription } from '../src/runtime/client/resumable'
import type { router } from './fixture/server/rpc'
import type { FanoutEvent } from './fixture/server/rpc/fanout'
import type { FanoutAnswer, FanoutClientKind, FanoutRequest, FromFanoutClient, SubscriberReport, ToFanoutClient } from './shared'
import { browserLike } from './shared'

type BenchClient = RouterClient<typeof router>

/** Comparable across processes of one machine: the wall clock at process start plus a monotonic clock. */
const now = () => performance.timeOrigin + performance.now()

const send = (message: FromFanoutClient) => process.send!(message)

/** nuxt-orpc's browser client on ws's WebSocket, with the page's own Origin (the server checks it). */
function connect(serverUrl: string, onReconnect?: () => void): { connection: RpcConnection, client: BenchClient } {
  class BenchWebSocket extends WebSocket {
    constructor(address: string, protocols?: string[]) {
      super(address, protocols, browserLike(serverUrl, protocols))
    }
  }
  let previous = 'idle'
  const connection = createRpcConnection({
    url: `${serverUrl.replace(/^http/, 'ws')}/_orpc`,
    WebSocket: BenchWebSocket as unknown as RpcConnectionOptions['WebSocket'],
    onStatus: ({ state }) => {
      if (state === 'reconnecting' && previous !== 'reconnecting') onReconnect?.()
      previous = state
    },
  })
  return { connection, client: createORPCClient<BenchClient>(connection) }
}

/**
 * Without the fixture's RpcChannels augmentation (this file is typechecked outside the fixture) the stream's
 * events are plain objects; this checks what arrived instead of asserting it.
 */
function isFanoutEvent(value: unknown): value is FanoutEvent {
  return typeof value === 'object' && value !== null
    && typeof (value as Partial<FanoutEvent>).seq === 'number' && typeof (value as Partial<FanoutEvent>).sentAt === 'number'
}

const errorText = (error: unknown) => error instanceof Error ? error.message : String(error)

/** A Socket.IO socket of its own (no multiplexing), websocket transport only, the page's Origin. */
function socketIo(serverUrl: string): Socket {
  return io(serverUrl, { transports: ['websocket'], forceNew: true, extraHeaders: { origin: serverUrl } })
}

/** Resolves once a Socket.IO socket is connected; rejects on its first connection error. */
function connected(socket: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve())
    socket.once('connect_error', reject)
  })
}

/** The raw baseline's sockets (bench/fanout-raw-server.mjs): plain ws on /subscribe and /publish. */
function rawSocket(serverUrl: string, path: '/subscribe' | '/publish', onError: (error: Error) => void): Promise<WebSocket> {
  const socket = new WebSocket(`${serverUrl.replace(/^http/, 'ws')}${path}`, browserLike(serverUrl))
  return new Promise((resolve, reject) => {
    socket.once('open', () => {
      socket.off('error', reject)
      socket.on('error', onError)
      resolve(socket)
    })
    socket.once('error', reject)
  })
}

/** The event in nuxt-orpc's frame `{"i":..,"t":3,"p":{"e":"message","d":{"json":<event>},"m":{..}}}`. */
function eventOfFrame(data: WebSocket.RawData): unknown {
  const frame = JSON.parse(String(data)) as { p?: { e?: string, d?: { json?: unknown } } }
  return frame.p?.e === 'message' ? frame.p.d?.json : frame
}

/** The subscribers of one instance, each on its own connection, all following one channel. */
class Subscribers {
  private readonly connections: Array<{ close: () => void }> = []
  private readonly abort = new AbortController()
  /** Slot `seq * count + index`: latency of subscriber `index`'s first arrival of publish `seq`, ms. */
  private readonly latencies: Float64Array
  private readonly arrivals: Uint16Array
  private readonly deliveredBySeq: Uint32Array
  private readonly live: Uint8Array
  private liveCount = 0
  private reconnects = 0
  private errors = 0
  private readonly errorSamples: string[] = []

  constructor(private readonly count: number, private readonly publishes: number) {
    this.latencies = new Float64Array(count * publishes)
    this.arrivals = new Uint16Array(count * publishes)
    this.deliveredBySeq = new Uint32Array(publishes)
    this.live = new Uint8Array(count)
  }

  /**
   * Opens every subscriber (64 handshakes at a time); resolves once each subscription call was answered
   * (nuxt-orpc), each socket's join was acknowledged (Socket.IO), or each socket opened (raw ws).
   */
  async open(kind: FanoutClientKind, serverUrl: string, channel: string): Promise<number> {
    let next = 0
    let opened = 0
    await Promise.all(Array.from({ length: Math.min(64, this.count) }, async () => {
      while (next < this.count) {
        const index = next++
        try {
          if (kind === 'nuxt') await this.openRpc(index, serverUrl, channel)
          else if (kind === 'socketio') await this.openSocketIo(index, serverUrl, channel)
          else await this.openRaw(index, serverUrl)
          opened++
        }
        catch (error) {
          this.fail(`subscribe: ${errorText(error)}`)
        }
      }
    }))
    return opened
  }

  /**
   * Subscribes as a page's `useRpcSubscription` does: `startResumableSubscription` gives each event to a
   * callback (as socket.io-client's listener gets it) and calls again after a drop. Resolves once the stream
   * is open.
   */
  private openRpc(index: number, serverUrl: string, channel: string): Promise<void> {
    const { connection, client } = connect(serverUrl, () => this.reconnects++)
    return new Promise((resolve, reject) => {
      let open = false
      const subscription = startResumableSubscription(options => client.fanout.subscribe({ channel }, options), {
        onEvent: event => this.receive(index, event),
        onStatus: (status, error) => {
          if (status === 'open' && !open) {
            open = true
            resolve()
          }
          else if (status === 'error') {
            if (open) this.fail(`subscription: ${errorText(error)}`)
            else reject(error)
          }
          else if (status === 'closed' && !this.abort.signal.aborted) {
            this.fail('a subscription ended')
          }
        },
      })
      this.connections.push({
        close: () => {
          subscription.stop()
          connection.close()
        },
      })
    })
  }

  /** Joins the room (with its ack), and again after every reconnection, as an app would. */
  private async openSocketIo(index: number, serverUrl: string, channel: string) {
    const socket = socketIo(serverUrl)
    this.connections.push({ close: () => socket.disconnect() })
    socket.on('event', (event: unknown) => this.receive(index, event))
    const join = () => socket.timeout(30_000).emitWithAck('join', channel)
    await connected(socket)
    await join()
    socket.on('connect', () => {
      this.reconnects++
      join().catch(error => this.fail(`rejoin: ${errorText(error)}`))
    })
    socket.on('disconnect', (reason) => {
      if (!this.abort.signal.aborted) this.fail(`disconnected: ${reason}`)
    })
  }

  private async openRaw(index: number, serverUrl: string) {
    const socket = await rawSocket(serverUrl, '/subscribe', error => this.fail(`socket: ${errorText(error)}`))
    this.connections.push({ close: () => socket.close() })
    socket.on('message', (data) => {
      try {
        this.receive(index, eventOfFrame(data))
      }
      catch (error) {
        this.fail(`frame: ${errorText(error)}`)
      }
    })
    socket.on('close', () => {
      if (!this.abort.signal.aborted) this.fail('a socket closed')
    })
  }

  private receive(index: number, event: unknown) {
    const receivedAt = now()
    if (!isFanoutEvent(event) || event.seq >= this.publishes) {
      this.fail(`unexpected event ${JSON.stringify(event)}`)
      return
    }
    if (!this.live[index]) {
      this.live[index] = 1
      if (++this.liveCount === this.count) send({ type: 'live' })
    }
    if (event.seq < 0) return
    const slot = event.seq * this.count + index
    const arrivals = this.arrivals[slot]! + 1
    this.arrivals[slot] = arrivals
    // A duplicate is counted (arrivals > 1), not timed.
    if (arrivals > 1) return
    this.latencies[slot] = receivedAt - event.sentAt
    const delivered = this.deliveredBySeq[event.seq]! + 1
    this.deliveredBySeq[event.seq] = delivered
    if (delivered === this.count) send({ type: 'delivered', seq: event.seq })
  }

  private fail(message: string) {
    this.errors++
    if (this.errorSamples.length < 5) this.errorSamples.push(message)
  }

  report(): SubscriberReport {
    const report: SubscriberReport = { latencies: [], missing: [], duplicates: [], reconnects: this.reconnects, errors: this.errors, errorSamples: this.errorSamples }
    for (let seq = 0; seq < this.publishes; seq++) {
      const latencies: number[] = []
      let missing = 0
      let duplicates = 0
      for (let index = 0; index < this.count; index++) {
        const slot = seq * this.count + index
        const arrivals = this.arrivals[slot]!
        if (arrivals === 0) missing++
        else latencies.push(this.latencies[slot]!)
        if (arrivals > 1) duplicates += arrivals - 1
      }
      report.latencies.push(latencies)
      report.missing.push(missing)
      report.duplicates.push(duplicates)
    }
    return report
  }

  close() {
    this.abort.abort()
    for (const connection of this.connections) connection.close()
  }
}

/** The publisher's connection: it sends `{ channel, seq, sentAt }` and resolves once the server answered. */
interface Publisher {
  publish: (channel: string, seq: number, sentAt: number) => Promise<unknown>
  close: () => void
}

async function openPublisher(kind: FanoutClientKind, serverUrl: string): Promise<Publisher> {
  if (kind === 'nuxt') {
    const { connection, client } = connect(serverUrl)
    return { publish: (channel, seq, sentAt) => client.fanout.publish({ channel, seq, sentAt }), close: () => connection.close() }
  }
  if (kind === 'socketio') {
    const socket = socketIo(serverUrl)
    await connected(socket)
    return {
      publish: (room, seq, sentAt) => socket.timeout(10_000).emitWithAck('publish', { room, seq, sentAt }),
      close: () => socket.disconnect(),
    }
  }
  // The raw server answers each publish with its seq once it wrote every subscriber's frame.
  const socket = await rawSocket(serverUrl, '/publish', error => process.stderr.write(`fanout publisher: ${errorText(error)}\n`))
  const waiting = new Map<number, () => void>()
  socket.on('message', (data) => {
    const seq = Number(String(data))
    waiting.get(seq)?.()
    waiting.delete(seq)
  })
  return {
    publish: (_channel, seq, sentAt) => new Promise<void>((resolve) => {
      waiting.set(seq, resolve)
      socket.send(JSON.stringify({ seq, sentAt }))
    }),
    close: () => socket.close(),
  }
}

const profileDir = process.env.FANOUT_CLIENT_PROF
let profiler: InspectorSession | undefined

/** Starts a V8 CPU profile, or stops the running one and writes it to `dir` (read it with bench/profile.ts). */
async function toggleProfile(dir: string) {
  if (!profiler) {
    profiler = new InspectorSession()
    profiler.connect()
    await profiler.post('Profiler.enable')
    await profiler.post('Profiler.start')
    return
  }
  const { profile } = await profiler.post('Profiler.stop')
  profiler.disconnect()
  profiler = undefined
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, `fanout-subscribers-${process.pid}-${Date.now()}.cpuprofile`), JSON.stringify(profile))
}

let subscribers: Subscribers | undefined
let publisher: Promise<Publisher> | undefined

async function handle(request: FanoutRequest): Promise<FanoutAnswer> {
  switch (request.type) {
    case 'subscribe': {
      subscribers = new Subscribers(request.count, request.publishes)
      return { type: 'subscribed', opened: await subscribers.open(request.client, request.serverUrl, request.channel) }
    }
    case 'publish': {
      // The first publish (a probe, never timed) opens the publisher's connection.
      publisher ??= openPublisher(request.client, request.serverUrl).catch((error: unknown) => {
        publisher = undefined
        throw error
      })
      const connection = await publisher
      const sentAt = now()
      await connection.publish(request.channel, request.seq, sentAt)
      return { type: 'published', callMs: now() - sentAt }
    }
    case 'clock':
      return { type: 'clock', now: now() }
    case 'cpu': {
      // Read before and after the measured publishes: the profile, if asked for, covers just them.
      if (profileDir && subscribers) await toggleProfile(profileDir)
      const { user, system } = process.cpuUsage()
      return { type: 'cpu', micros: user + system }
    }
    case 'collect':
      if (!subscribers) throw new Error('collect: no subscribers in this process')
      return { type: 'collected', report: subscribers.report() }
    case 'close':
      subscribers?.close()
      await publisher?.then(connection => connection.close(), () => {})
      return { type: 'closed' }
  }
}

process.on('message', async (message: ToFanoutClient) => {
  if (message.type === 'exit') process.exit(0)
  try {
    send({ type: 'answer', id: message.id, answer: await handle(message.request) })
  }
  catch (error) {
    send({ type: 'error', id: message.id, message: error instanceof Error ? error.stack ?? error.message : String(error) })
  }
})

// A harness that died must not leave its load processes behind.
process.on('disconnect', () => process.exit(0))

send({ type: 'ready' })
