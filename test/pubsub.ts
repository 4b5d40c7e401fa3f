import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import { connect } from 'node:net'
import { getRandomPort } from 'get-port-please'
import type { RpcSubscriptionStatus } from '../src/runtime/client/resumable'
import { startResumableSubscription } from '../src/runtime/client/resumable'
import type { TestClient } from './helpers'
import { createClient, waitFor } from './helpers'

/** Whether a Redis server answers PING on `port`. */
export function redisAnswers(port: number, host = '127.0.0.1', timeout = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, host)
    const done = (answer: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(answer)
    }
    const timer = setTimeout(() => done(false), timeout)
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', data => done(data.toString().startsWith('+PONG')))
    socket.once('error', () => done(false))
  })
}

/** A throw-away redis-server on its own port, for tests that stop and restart Redis. */
export class ThrowAwayRedis {
  private child: ChildProcess | undefined

  constructor(readonly port: number) {}

  static async create() {
    const redis = new ThrowAwayRedis(await getRandomPort('127.0.0.1'))
    await redis.start()
    return redis
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`
  }

  async start() {
    this.child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { stdio: 'ignore' })
    await waitFor(() => redisAnswers(this.port), { timeout: 10_000, interval: 50 })
  }

  async stop() {
    const child = this.child
    this.child = undefined
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  }
}

/**
 * The fixture's chat message as the tests see it. Not imported from the fixture: its declaration file also
 * augments `#nuxt-orpc`'s channels, which would clash with the bench fixture's in the root type check.
 */
export interface ChatMessage {
  room: string
  author: string
  text: string
  via: string
  sentAt: Date
}

/** nuxt-orpc's client in Node, with every socket it opens kept so a test can drop one. */
export function trackedClient(url: string) {
  const sockets: WebSocket[] = []
  class TrackedWebSocket extends WebSocket {
    constructor(socketUrl: string) {
      super(socketUrl)
      sockets.push(this)
    }
  }
  const { client, connection } = createClient({ url, WebSocket: TrackedWebSocket, reconnectBaseDelay: 50, reconnectMaxDelay: 300, connectTimeout: 2000 })
  return {
    client: client as TestClient,
    connection,
    sockets,
    /** Closes the current socket as a network drop would, from under the client. */
    dropSocket: () => sockets.at(-1)!.close(3000, 'dropped by the test'),
  }
}

/** A subscription that resumes as useRpcSubscription does (the same code), collecting what it receives. */
export function collect(source: (options: { signal: AbortSignal, lastEventId: string | undefined }) => Promise<AsyncIterable<ChatMessage>>, lastEventId?: string) {
  const received: Array<ChatMessage & { id: string | undefined }> = []
  const statuses: RpcSubscriptionStatus[] = []
  const errors: unknown[] = []
  const subscription = startResumableSubscription(source, {
    lastEventId,
    retryBaseDelay: 50,
    retryMaxDelay: 300,
    onEvent: (message, id) => received.push({ ...message, id }),
    onStatus: (status, error) => {
      statuses.push(status)
      if (error) errors.push(error)
    },
  })
  return { received, statuses, errors, subscription, texts: () => received.map(message => message.text) }
}

export const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

let roomCounter = 0
/** A room no other test (or earlier run against the same Redis) has used. */
export const freshRoom = () => `room-${process.pid}-${Date.now()}-${roomCounter++}`
