import { createServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { os, withEventMeta } from '@orpc/server'
import { experimental_RPCHandler as RPCHandler } from '@orpc/server/crossws'
import wsAdapter from 'crossws/adapters/node'
import { getRandomPort } from 'get-port-please'
import { afterEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { ClientContext, ClientLink } from '@orpc/client'
import { createORPCClient } from '@orpc/client'
import { createRpcClient, reconnectDelay } from '../src/runtime/client/connection'
import { startResumableSubscription } from '../src/runtime/client/resumable'
import { createClient, rejectionOf, waitFor } from './helpers'

/** A real oRPC crossws server (oRPC's stock handler, no nuxt-orpc code) that records every frame it gets. */
async function startStockServer() {
  const frames: Array<{ i: number, t?: number }> = []
  const executions = new Map<string, number>()
  const router = {
    ping: os.handler(() => 'pong'),
    count: os.input(z.object({ key: z.string() })).handler(({ input }) => {
      executions.set(input.key, (executions.get(input.key) ?? 0) + 1)
      return executions.get(input.key)
    }),
    hang: os.handler(() => new Promise(() => {})),
    numbers: os.handler(async function* () {
      for (let n = 0; n < 3; n++) yield n
    }),
    resumableStream: os.handler(async function* ({ signal, lastEventId }) {
      yield withEventMeta({ after: lastEventId ?? null }, { id: String(Number(lastEventId ?? 0) + 1) })
      await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason)))
    }),
    counter: os.input(z.object({ everyMs: z.number() }).optional()).handler(async function* ({ input, signal, lastEventId }) {
      for (let n = lastEventId === undefined ? 0 : Number(lastEventId) + 1; !signal?.aborted; n++) {
        yield withEventMeta({ n }, { id: String(n) })
        await new Promise(resolve => setTimeout(resolve, input?.everyMs ?? 20))
      }
    }),
    hangingStream: os.handler(async function* ({ signal }) {
      yield 0
      await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason)))
    }),
  }
  const handler = new RPCHandler(router)
  const ws = wsAdapter({
    hooks: {
      message(peer, message) {
        frames.push(JSON.parse(message.text()))
        void handler.message(peer, message, { context: {} })
      },
      close(peer) {
        handler.close(peer)
      },
    },
  })
  const sockets = new Set<Socket>()
  const server = createServer((_, response) => response.end('ws only'))
  server.on('upgrade', (request, socket, head) => void ws.handleUpgrade(request, socket, head))
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  const port = await new Promise<number>(resolve => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)))
  return {
    url: `ws://127.0.0.1:${port}`,
    frames,
    executions,
    /** Drops every connection at the TCP level, like a crashed server. */
    dropAll() {
      for (const socket of sockets) socket.destroy()
    },
    async stop() {
      for (const socket of sockets) socket.destroy()
      await new Promise(resolve => server.close(resolve))
    },
  }
}

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup()
})

async function stockServer() {
  const server = await startStockServer()
  cleanups.push(() => server.stop())
  return server
}

function client(url: string | (() => string), connectTimeout = 2000) {
  const created = createClient({ url, reconnectBaseDelay: 20, reconnectMaxDelay: 100, connectTimeout })
  cleanups.push(() => created.connection.close())
  return created
}

describe('reconnectDelay', () => {
  it('doubles from the base up to the cap', () => {
    const ceilings = [0, 1, 2, 3, 4, 5, 6].map(attempt => reconnectDelay(attempt, 500, 10_000, () => 1))
    expect(ceilings).toEqual([500, 1000, 2000, 4000, 8000, 10_000, 10_000])
  })

  it('draws each wait between half and all of the ceiling', () => {
    expect(reconnectDelay(2, 500, 10_000, () => 0)).toBe(1000)
    for (let attempt = 0; attempt < 10; attempt++) {
      const delay = reconnectDelay(attempt, 500, 10_000)
      const ceiling = Math.min(10_000, 500 * 2 ** attempt)
      expect(delay).toBeGreaterThanOrEqual(ceiling / 2)
      expect(delay).toBeLessThanOrEqual(ceiling)
    }
  })

  it('draws fresh jitter on every attempt', () => {
    const draws = new Set(Array.from({ length: 50 }, () => reconnectDelay(3, 500, 10_000)))
    expect(draws.size).toBeGreaterThan(40)
  })
})

describe('createRpcClient', () => {
  it('makes each path\'s client once and hands the link one frozen path array per procedure', async () => {
    const server = await stockServer()
    const { connection } = client(server.url)
    const paths: Array<readonly string[]> = []
    const link: ClientLink<ClientContext> = {
      call: (path, input, options) => {
        paths.push(path)
        return connection.call(path, input, options)
      },
    }
    const rpc = createRpcClient<any>(link)
    expect(rpc.count).toBe(rpc.count)
    expect(rpc.a.b).toBe(rpc.a.b)
    expect(rpc.a.b).not.toBe(rpc.a.c)
    expect(await rpc.count({ key: 'x' })).toBe(1)
    expect(await rpc.count({ key: 'x' })).toBe(2)
    expect(paths).toHaveLength(2)
    expect(paths[0]).toEqual(['count'])
    expect(paths[1]).toBe(paths[0])
    expect(Object.isFrozen(paths[0])).toBe(true)
    // A path no procedure has is the server's NOT_FOUND, as with oRPC's client.
    expect((await rejectionOf(rpc.a.b())).code).toBe('NOT_FOUND')
  })

  it.each([
    ['createRpcClient', (link: ClientLink<ClientContext>): any => createRpcClient(link)],
    ['oRPC\'s createORPCClient', (link: ClientLink<ClientContext>): any => createORPCClient(link)],
  ] as const)('keeps oRPC\'s proxy rules (%s): unwrap keys, `await client`, a procedure named then', async (_, create) => {
    const calls: Array<{ path: readonly string[], input: unknown, context: unknown }> = []
    const link: ClientLink<ClientContext> = {
      call: async (path, input, options) => {
        calls.push({ path: [...path], input, context: options.context })
        return 'ok'
      },
    }
    const rpc = create(link)
    expect(rpc.toString).toBe(Function.prototype.toString)
    expect(typeof rpc.users.bind).toBe('function')
    // Awaiting a client gives a client, not a call to a procedure named `then`.
    const awaited = await rpc.users
    expect(await awaited.list()).toBe('ok')
    expect(await rpc.then({ a: 1 })).toBe('ok')
    expect(await rpc.users.list(undefined, { context: { tenant: 't' } })).toBe('ok')
    expect(calls).toEqual([
      { path: ['users', 'list'], input: undefined, context: {} },
      { path: ['then'], input: { a: 1 }, context: {} },
      { path: ['users', 'list'], input: undefined, context: { tenant: 't' } },
    ])
  })

  it('rejects a call whose input cannot be serialized, on an open socket too, and keeps the socket', async () => {
    const server = await stockServer()
    const { client: rpc, connection } = client(server.url)
    expect(await rpc.ping()).toBe('pong')
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    let call: Promise<unknown> | undefined
    expect(() => call = connection.call(['count'], cyclic, { context: {} })).not.toThrow()
    await expect(call).rejects.toThrow(RangeError)
    expect(await rpc.count({ key: 'after' })).toBe(1)
    expect(connection.status.state).toBe('open')
  })

  it('turns a link that throws into a rejected call, as an async procedure would', async () => {
    const rpc = createRpcClient<any>({
      call: () => {
        throw new TypeError('link broke')
      },
    })
    let result: Promise<unknown> | undefined
    expect(() => result = rpc.ping()).not.toThrow()
    await expect(result).rejects.toThrow('link broke')
  })
})

describe('nuxt-orpc client against oRPC\'s stock crossws handler', () => {
  it('calls, streams and reports typed errors', async () => {
    const server = await stockServer()
    const { client: rpc, connection } = client(server.url)
    expect(connection.status.state).toBe('idle')
    expect(await rpc.ping()).toBe('pong')
    expect(connection.status.state).toBe('open')
    const numbers: number[] = []
    for await (const n of await rpc.numbers()) numbers.push(n)
    expect(numbers).toEqual([0, 1, 2])
    expect((await rejectionOf(rpc.count({ key: 5 }))).code).toBe('BAD_REQUEST')
  })

  it('opens one socket for concurrent first calls and sends each frame once', async () => {
    const server = await stockServer()
    const { client: rpc } = client(server.url)
    const results = await Promise.all(Array.from({ length: 20 }, (_, index) => rpc.count({ key: `k${index}` })))
    expect(results).toEqual(Array.from({ length: 20 }, () => 1))
    expect(server.frames.filter(frame => frame.t === undefined)).toHaveLength(20)
  })

  it('rejects calls in flight with CONNECTION_CLOSED when the server drops, and never replays them', async () => {
    const server = await stockServer()
    const { client: rpc, connection } = client(server.url)
    expect(await rpc.count({ key: 'before' })).toBe(1)

    const inFlight = [rejectionOf(rpc.hang()), rejectionOf(rpc.hang())]
    await waitFor(() => server.frames.length === 3)
    const droppedAt = Date.now()
    server.dropAll()
    const [error, other] = await Promise.all(inFlight)
    expect(Date.now() - droppedAt).toBeLessThan(1000)
    expect(error).toMatchObject({ code: 'CONNECTION_CLOSED', data: { closeCode: 1006 } })
    expect(other).toMatchObject({ code: 'CONNECTION_CLOSED', data: { closeCode: 1006 } })
    // Each call gets an error of its own.
    expect(other).not.toBe(error)

    await waitFor(() => connection.status.state === 'open')
    expect(await rpc.count({ key: 'after' })).toBe(1)
    // Four calls, four request frames: nothing was sent twice after the reconnect.
    expect(server.frames.filter(frame => frame.t === undefined).map(frame => frame.i)).toHaveLength(4)
    expect(server.executions.get('before')).toBe(1)
  })

  it('holds a call made while reconnecting and sends it once the socket is open', async () => {
    let server = await stockServer()
    let url = server.url
    const { client: rpc, connection } = client(() => url, 5000)
    expect(await rpc.ping()).toBe('pong')
    await server.stop()
    await waitFor(() => connection.status.state === 'reconnecting')

    const pending = rpc.count({ key: 'queued' })
    await new Promise(resolve => setTimeout(resolve, 150))
    server = await stockServer()
    url = server.url
    expect(await pending).toBe(1)
    expect(server.executions.get('queued')).toBe(1)
  })

  it('rejects with CONNECTION_TIMEOUT when nothing listens, and never hangs', async () => {
    const port = await getRandomPort('127.0.0.1')
    const { client: rpc, connection } = client(`ws://127.0.0.1:${port}`, 500)
    const startedAt = Date.now()
    const error = await rejectionOf(rpc.ping())
    expect(error.code).toBe('CONNECTION_TIMEOUT')
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(450)
    expect(Date.now() - startedAt).toBeLessThan(1500)
    expect(connection.status.state).toBe('reconnecting')
  })

  it('handles a handshake refused with HTTP 403 (error without close in Node) and recovers', async () => {
    let refuse = true
    const server = await stockServer()
    const refusing = createServer()
    refusing.on('upgrade', (_request, socket) => {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')
    })
    const refusingPort = await new Promise<number>(resolve => refusing.listen(0, '127.0.0.1', () => resolve((refusing.address() as AddressInfo).port)))
    cleanups.push(() => new Promise(resolve => refusing.close(resolve)))
    const { client: rpc, connection } = client(() => refuse ? `ws://127.0.0.1:${refusingPort}` : server.url, 3000)

    const pending = rpc.ping()
    await waitFor(() => connection.status.state === 'reconnecting')
    refuse = false
    expect(await pending).toBe('pong')
  })

  it('does not fall back to HTTP for a server that answers HTTP but is not nuxt-orpc\'s route (no probe answer)', async () => {
    const other = createServer((_request, response) => response.end('hello'))
    other.on('upgrade', (_request, socket) => socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n'))
    const otherPort = await new Promise<number>(resolve => other.listen(0, '127.0.0.1', () => resolve((other.address() as AddressInfo).port)))
    cleanups.push(() => new Promise(resolve => other.close(resolve)))
    const { client: rpc, connection } = client(`ws://127.0.0.1:${otherPort}`, 800)
    expect(await rejectionOf(rpc.ping())).toMatchObject({ code: 'CONNECTION_TIMEOUT' })
    expect(connection.status.transport).toBe('websocket')
  })

  it('lets an aborted signal cancel a call that is waiting for the socket', async () => {
    const port = await getRandomPort('127.0.0.1')
    const { client: rpc } = client(`ws://127.0.0.1:${port}`, 5000)
    const controller = new AbortController()
    const pending = rejectionOf(rpc.ping(undefined, { signal: controller.signal }))
    controller.abort(new Error('user gave up'))
    expect((await pending).message).toBe('user gave up')
  })
})

describe('closing races', () => {
  it('answers reads made before and while a stream resumes in the order they were made', async () => {
    let server = await stockServer()
    let url = server.url
    const { client: rpc, connection } = client(() => url, 5000)
    const stream = await rpc.counter({ everyMs: 300 })
    expect((await stream.next()).value).toEqual({ n: 0 })
    const first = stream.next()
    const second = stream.next()
    await server.stop()
    await waitFor(() => connection.status.state === 'reconnecting')
    const third = stream.next()
    server = await stockServer()
    url = server.url
    const values = (await Promise.all([first, second, third])).map(result => result.value.n)
    expect(values).toEqual([1, 2, 3])
    await stream.return()
  })

  it('makes no new call for a stream returned while it waits for a socket to resume on', async () => {
    let server = await stockServer()
    let url = server.url
    const { client: rpc, connection } = client(() => url, 5000)
    const stream = await rpc.counter({ everyMs: 10_000 })
    expect((await stream.next()).value).toEqual({ n: 0 })
    const reading = stream.next()
    await server.stop()
    await waitFor(() => connection.status.state === 'reconnecting')
    await stream.return()
    server = await stockServer()
    url = server.url
    expect(await reading).toEqual({ done: true, value: undefined })
    expect(await rpc.ping()).toBe('pong')
    await new Promise(resolve => setTimeout(resolve, 200))
    // The new server got the ping only.
    expect(server.frames.filter(frame => frame.t === undefined)).toHaveLength(1)
  })

  it('gives reads made at once the events in order, each once, then the end', async () => {
    const server = await stockServer()
    const { client: rpc } = client(server.url)
    const stream = await rpc.numbers()
    const reads = await Promise.all([stream.next(), stream.next(), stream.next(), stream.next(), stream.next()])
    expect(reads).toEqual([
      { done: false, value: 0 },
      { done: false, value: 1 },
      { done: false, value: 2 },
      { done: true, value: undefined },
      { done: true, value: undefined },
    ])
  })

  it('a stream\'s return() ends a read that waits on it', async () => {
    const server = await stockServer()
    const { client: rpc } = client(server.url)
    const stream = await rpc.hangingStream()
    expect((await stream.next()).value).toBe(0)
    const waiting = stream.next()
    await stream.return()
    expect(await Promise.race([waiting, new Promise(resolve => setTimeout(() => resolve('still waiting'), 1000))])).toEqual({ done: true, value: undefined })
  })

  it('close() ends a stream whose events carry ids, which a dropped socket would resume: no new socket, no new call', async () => {
    const server = await stockServer()
    const { client: rpc, connection } = client(server.url)
    const requests = () => server.frames.filter(frame => frame.t === undefined).length

    // A drop: the stream is called again after its last id, on a new socket.
    const dropped = await rpc.resumableStream()
    expect((await dropped.next()).value).toEqual({ after: null })
    server.dropAll()
    expect((await dropped.next()).value).toEqual({ after: '1' })
    expect(requests()).toBe(2)

    // close(): the stream ends with CONNECTION_CLOSED, and the socket stays closed.
    const closing = dropped.next()
    connection.close()
    expect(await rejectionOf(closing)).toMatchObject({ code: 'CONNECTION_CLOSED' })
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(connection.status.state).toBe('closed')
    expect(requests()).toBe(2)
    // The next call opens it again.
    expect(await rpc.ping()).toBe('pong')
  })

  it('aborts a running stream and closes the socket right away without an unhandled rejection', async () => {
    const server = await stockServer()
    const { client: rpc, connection } = client(server.url)
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const controller = new AbortController()
      const iterator = await rpc.hangingStream(undefined, { signal: controller.signal })
      const first = iterator.next()
      controller.abort()
      connection.close()
      await rejectionOf(first)
      await new Promise(resolve => setTimeout(resolve, 100))
      expect(unhandled).toEqual([])
    }
    finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})

describe('startResumableSubscription on the connection\'s streams (a callback per event, as useRpcSubscription reads)', () => {
  it('gives the events in order, resumes after a dropped socket from the last id, and stop() ends the server\'s stream', async () => {
    const server = await stockServer()
    const { client: rpc } = client(server.url)
    const seen: number[] = []
    const statuses: string[] = []
    const subscription = startResumableSubscription<{ n: number }>(options => rpc.counter(undefined, options), {
      onEvent: event => seen.push(event.n),
      onStatus: status => statuses.push(status),
    })
    await waitFor(() => seen.length >= 5)
    server.dropAll()
    await waitFor(() => seen.length >= 15)
    subscription.stop()
    const stoppedAt = seen.length
    expect(seen).toEqual(Array.from({ length: stoppedAt }, (_, n) => n))
    expect(subscription.lastEventId).toBe(String(stoppedAt - 1))
    // The connection resumed the stream by itself: the subscription never saw it drop.
    expect(statuses).toEqual(['connecting', 'open', 'closed'])
    const calls = server.frames.filter(frame => frame.t === undefined)
    expect(calls).toHaveLength(2)
    await waitFor(() => server.frames.some(frame => frame.t === 4 && frame.i === calls[1]!.i))
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(seen).toHaveLength(stoppedAt)
  })

  it('stops the server\'s stream when onEvent throws, and ends with status error and that exception', async () => {
    const server = await stockServer()
    const { client: rpc } = client(server.url)
    const seen: number[] = []
    const thrown = new Error('the page failed on an event')
    let failed: unknown
    const subscription = startResumableSubscription<{ n: number }>(options => rpc.counter(undefined, options), {
      onEvent: (event) => {
        seen.push(event.n)
        if (event.n === 2) throw thrown
      },
      onStatus: (status, error) => {
        if (status === 'error') failed = error
      },
    })
    await waitFor(() => subscription.status === 'error')
    expect(failed).toBe(thrown)
    const call = server.frames.find(frame => frame.t === undefined)!
    await waitFor(() => server.frames.some(frame => frame.t === 4 && frame.i === call.i))
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(seen).toEqual([0, 1, 2])
  })
})
