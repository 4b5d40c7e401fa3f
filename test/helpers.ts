import { appendFileSync, mkdirSync } from 'node:fs'
import { getEventMeta } from '@orpc/server'
import WebSocket from 'ws'
import type { RpcConnectionOptions } from '../src/runtime/client/connection'
import { createRpcClient, createRpcConnection } from '../src/runtime/client/connection'

export interface Closed {
  code: number
  reason: string
}

/** A raw socket from the `ws` package, for frames no well-behaved client would send. */
export class RawSocket {
  readonly socket: WebSocket
  readonly opened: Promise<void>
  readonly closed: Promise<Closed>
  readonly responses = new Map<unknown, unknown[]>()
  private readonly waiting = new Map<unknown, (message: unknown) => void>()

  constructor(url: string, headers: Record<string, string> = {}, localAddress?: string) {
    this.socket = new WebSocket(url, { headers, localAddress })
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve())
      this.socket.once('error', reject)
    })
    this.closed = new Promise((resolve) => {
      this.socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() }))
    })
    this.socket.on('message', (data) => {
      const message = JSON.parse(data.toString()) as { i: unknown }
      // The server's heartbeat (an abort for call -1) is not an answer to anything.
      if (message.i === -1) return
      const list = this.responses.get(message.i) ?? []
      list.push(message)
      this.responses.set(message.i, list)
      this.waiting.get(message.i)?.(message)
    })
  }

  send(data: string | Buffer) {
    this.socket.send(data)
  }

  /** Sends one oRPC request frame and resolves with the first frame answering it. */
  request(id: number | string, path: string, input?: unknown) {
    const answer = new Promise<{ i: number | string, t?: number, p: { s?: number, b?: { json: unknown } } }>((resolve) => {
      this.waiting.set(id, message => resolve(message as never))
    })
    this.socket.send(JSON.stringify({ i: id, p: { u: `/${path}`, b: input === undefined ? undefined : { json: input } } }))
    return answer
  }

  close() {
    this.socket.terminate()
  }
}

/** Tests call fixtures' procedures by name, without importing their server-side types. */
export type TestClient = any

/** nuxt-orpc's own client connection, driven by Node 22's WebSocket. */
export function createClient(options: RpcConnectionOptions) {
  const connection = createRpcConnection(options)
  return { connection, client: createRpcClient(connection) as unknown as TestClient }
}

export async function waitFor<T>(check: () => T | Promise<T>, { timeout = 5000, interval = 20 } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeout
  let lastError: unknown
  while (Date.now() < deadline) {
    try {
      const result = await check()
      if (result) return result as NonNullable<T>
    }
    catch (error) {
      lastError = error
    }
    await new Promise(resolve => setTimeout(resolve, interval))
  }
  throw lastError ?? new Error('waitFor timed out')
}

/** Resolves with the rejection of `promise` (and fails if it resolves). */
export async function rejectionOf(promise: Promise<unknown>): Promise<any> {
  try {
    await promise
  }
  catch (error) {
    return error
  }
  throw new Error('expected a rejection')
}

/**
 * Figures a test measured (heap growth, times), kept for closing notes when NUXT_ORPC_FIGURES is set:
 * appended to bench/results/test-figures.jsonl. Tests assert their bounds either way.
 */
export function recordFigure(name: string, value: number | string) {
  if (!process.env.NUXT_ORPC_FIGURES) return
  mkdirSync('bench/results', { recursive: true })
  appendFileSync('bench/results/test-figures.jsonl', `${JSON.stringify({ name, value, at: new Date().toISOString() })}\n`)
}

/** Pulls `count` events from an iterator (a publisher's subscription), with their event ids. */
export async function take(iterator: AsyncIterator<object>, count: number) {
  const events: Array<{ id: string | undefined, value: any }> = []
  while (events.length < count) {
    const result = await iterator.next()
    if (result.done) break
    events.push({ id: getEventMeta(result.value)?.id, value: result.value })
  }
  return events
}

/**
 * Strings only the DevTools tab's code holds (its inspector's class, its page's title, its route): a production
 * build must contain none of them (basic.test.ts), a development build has them all (dev.test.ts).
 */
export const devtoolsMarkers = ['RpcInspector', 'nuxt-orpc DevTools', '__nuxt_orpc__'] as const
