// nuxt-orpc's browser client without I/O: what its JavaScript costs per call. An in-process socket answers each
// request frame in a microtask, as a server would (parse, echo the input back as oRPC's response message), so
// no system call or scheduling is measured, and the figure is steady to a few percent between runs. 64 callers,
// one call in flight each; CPU per call over 500,000 calls, 5 samples.
// Usage: jiti bench/client-js.ts [rpc|orpc|interceptor|request-interceptor]  (rpc: createRpcClient, as useRpc()
// makes it; orpc: oRPC's createORPCClient over the same connection; interceptor: rpc with one call interceptor
// that only calls next, as a logging one would; request-interceptor: rpc with one such request interceptor, which
// sends every call through oRPC's RPCLink). The in-process server's share (about 1 us) is in all.
import { createORPCClient } from '@orpc/client'
import { createRpcClient, createRpcConnection } from '../src/runtime/client/connection'
import type { RpcConnectionOptions } from '../src/runtime/client/connection'

/** nuxt-orpc's server sends this once it accepted the connection (and as a heartbeat). */
const readyFrame = '{"i":-1,"t":4}'

class InProcessSocket extends EventTarget {
  readyState = 0
  protocol = 'nuxt-orpc'
  binaryType = 'arraybuffer'

  constructor() {
    super()
    queueMicrotask(() => {
      this.readyState = 1
      this.dispatchEvent(new Event('open'))
      this.deliver(readyFrame)
    })
  }

  send(frame: string) {
    const request = JSON.parse(frame) as { i: string, p: { b?: { json?: unknown } } }
    const answer = JSON.stringify({ i: request.i, p: { b: { json: request.p.b?.json } } })
    queueMicrotask(() => this.deliver(answer))
  }

  close() {}

  private deliver(data: string) {
    // A plain Event with `data`, as ws's own event class is on Node: Node's MessageEvent (undici's) would cost
    // more than the client itself.
    this.dispatchEvent(Object.assign(new Event('message'), { data }))
  }
}

const kind = process.argv[2] ?? 'rpc'
const payload = { id: 42, text: 'hello from the bench' }
const passThrough = <T>({ next }: { next: () => T }) => next()
const connection = createRpcConnection({
  url: 'ws://in-process',
  WebSocket: InProcessSocket as unknown as RpcConnectionOptions['WebSocket'],
  interceptors: kind === 'interceptor' ? [passThrough] : [],
  clientInterceptors: kind === 'request-interceptor' ? [passThrough] : [],
})
const client = (kind === 'orpc' ? createORPCClient(connection) : createRpcClient(connection)) as { echo: (input: unknown) => Promise<unknown> }

async function run(calls: number) {
  let left = calls
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (left-- > 0) await client.echo(payload)
  }))
}

await run(200_000)
const samples: number[] = []
for (let sample = 0; sample < 5; sample++) {
  const before = process.cpuUsage()
  await run(500_000)
  const used = process.cpuUsage(before)
  samples.push((used.user + used.system) / 500_000 * 1000)
}
samples.sort((left, right) => left - right)
console.log(`${kind === 'orpc' ? 'createORPCClient' : kind === 'rpc' ? 'createRpcClient' : `createRpcClient with a ${kind === 'interceptor' ? 'call interceptor' : 'request interceptor'}`}: ${Math.round(samples[2]!)} ns per call (samples ${samples.map(Math.round).join(', ')})`)
connection.close()
