// The measured effect of one upstream proposal (docs/benchmarks.md, "Upstream"): oRPC's `AsyncIdQueue.close`
// builds an AbortError on every finished call even when no pull waits for it. This wires oRPC's stock RPCLink
// to its stock crossws handler in one process (frames handed over in a microtask, no sockets) and compares CPU
// per call with `close` as shipped and with `close` building the error only when someone waits.
// Usage: npx jiti bench/upstream/abort-error.ts
import { createORPCClient } from '@orpc/client'
import { RPCLink } from '@orpc/client/websocket'
import { os } from '@orpc/server'
import { experimental_RPCHandler as RPCHandler } from '@orpc/server/crossws'
import { AsyncIdQueue } from '@orpc/shared'

type Listener = (event: { data: unknown }) => void

const handler = new RPCHandler({ echo: os.handler(({ input }) => input) })
const listeners: Listener[] = []
const serverPeer = {
  send: (data: unknown) => queueMicrotask(() => listeners.forEach(listener => listener({ data }))),
}
const websocket = {
  readyState: 1,
  send: (data: string) => {
    const message = { rawData: data, uint8Array: () => new TextEncoder().encode(data) }
    void handler.message(serverPeer as never, message as never, { context: {} })
  },
  addEventListener: (type: string, listener: Listener) => {
    if (type === 'message') listeners.push(listener)
  },
  removeEventListener: () => {},
}
const client = createORPCClient(new RPCLink({ websocket: websocket as never })) as unknown as { echo: (input: unknown) => Promise<unknown> }

interface QueueInternals {
  waiters: Map<string, unknown[]>
  openIds: Set<string>
  queues: Map<string, unknown[]>
}
const stockClose = AsyncIdQueue.prototype.close
function lazyClose(this: AsyncIdQueue<unknown>, options: { id?: string, reason?: unknown } = {}) {
  const queue = this as unknown as QueueInternals
  if (options.id === undefined || queue.waiters.get(options.id)?.length) return stockClose.call(this, options)
  queue.waiters.delete(options.id)
  queue.openIds.delete(options.id)
  queue.queues.delete(options.id)
}

async function run(calls: number) {
  const batch: Array<Promise<unknown>> = []
  for (let call = 0; call < calls; call++) {
    batch.push(client.echo({ id: 42, text: 'hello from the bench' }))
    if (batch.length === 100) await Promise.all(batch.splice(0))
  }
  await Promise.all(batch)
}

const samples = { stock: [] as number[], lazy: [] as number[] }
for (let round = 0; round < 6; round++) {
  for (const mode of round % 2 ? ['lazy', 'stock'] as const : ['stock', 'lazy'] as const) {
    AsyncIdQueue.prototype.close = mode === 'lazy' ? lazyClose : stockClose
    await run(5000)
    const before = process.cpuUsage()
    await run(40_000)
    const used = process.cpuUsage(before)
    samples[mode].push((used.user + used.system) / 40_000)
  }
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
const stock = median(samples.stock)
const lazy = median(samples.lazy)
process.stdout.write(`stock AsyncIdQueue.close: ${stock.toFixed(1)} us CPU per call (client and server peers)\n`)
process.stdout.write(`error built only when a pull waits: ${lazy.toFixed(1)} us CPU per call (${(lazy / stock).toFixed(2)}x)\n`)
