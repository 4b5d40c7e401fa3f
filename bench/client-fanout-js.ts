// nuxt-orpc's browser client without I/O, in a fan-out's shape: N connections (in-process sockets), each with one
// stream, get one event each per publish. What its JavaScript costs per event when every event is on a stream
// of its own (bench/client-js.ts measures calls). 20 measured publishes after one warm-up.
// Each stream is read with `for await` (`iterator`, the default) or as `useRpcSubscription` reads it
// (`subscription`: startResumableSubscription, a callback per event).
// Usage: jiti bench/client-fanout-js.ts [streams, default 10000] [iterator|subscription]
import { createRpcClient, createRpcConnection } from '../src/runtime/client/connection'
import type { RpcConnectionOptions } from '../src/runtime/client/connection'
import type { RpcSubscriptionCallOptions } from '../src/runtime/client/resumable'
import { startResumableSubscription } from '../src/runtime/client/resumable'

const streams = Number(process.argv[2] ?? 10_000)
const reader = process.argv[3] ?? 'iterator'
if (reader !== 'iterator' && reader !== 'subscription') throw new Error(`reader: iterator or subscription, not ${reader}`)
const publishes = 20
const sockets: InProcessSocket[] = []

/** Answers a stream call with its response head; the events come from `publish`. */
class InProcessSocket extends EventTarget {
  readyState = 0
  protocol = 'nuxt-orpc'
  binaryType = 'arraybuffer'
  streamId: string | undefined

  constructor() {
    super()
    sockets.push(this)
    queueMicrotask(() => {
      this.readyState = 1
      this.dispatchEvent(new Event('open'))
      // nuxt-orpc's ready frame.
      this.deliver('{"i":-1,"t":4}')
    })
  }

  send(frame: string) {
    const request = JSON.parse(frame) as { i: string, t?: number }
    if (request.t !== undefined) return
    this.streamId = request.i
    queueMicrotask(() => this.deliver(JSON.stringify({ i: request.i, p: { h: { 'content-type': 'text/event-stream' } } })))
  }

  close() {}

  deliver(data: string) {
    this.dispatchEvent(Object.assign(new Event('message'), { data }))
  }
}

let received = 0
for (let index = 0; index < streams; index++) {
  const connection = createRpcConnection({ url: 'ws://in-process', WebSocket: InProcessSocket as unknown as RpcConnectionOptions['WebSocket'] })
  const client = createRpcClient(connection) as { subscribe: (input: object, options?: RpcSubscriptionCallOptions) => Promise<AsyncIterable<unknown>> }
  if (reader === 'subscription') {
    startResumableSubscription(options => client.subscribe({}, options), { onEvent: () => received++ })
  }
  else {
    void (async () => {
      for await (const _event of await client.subscribe({})) received++
    })()
  }
}
await new Promise(resolve => setTimeout(resolve, 500))

let seq = 0
/**
 * One event to every stream (the frame nuxt-orpc's server writes), each in a task of its own as frames of
 * different sockets arrive (microtasks run between them), then waits until each was read.
 */
async function publish() {
  const target = received + streams
  const n = seq++
  for (const socket of sockets) setImmediate(() => socket.deliver(`{"i":${JSON.stringify(socket.streamId)},"t":3,"p":{"e":"message","d":{"json":{"seq":${n},"sentAt":1765000000000.5}},"m":{"id":"1765000000000-${n}"}}}`))
  while (received < target) await new Promise(resolve => setImmediate(resolve))
}

await publish()
const before = process.cpuUsage()
for (let round = 0; round < publishes; round++) await publish()
const used = process.cpuUsage(before)
console.log(`${streams} streams (${reader}), one event each x${publishes}: ${((used.user + used.system) / (streams * publishes)).toFixed(2)} us of client CPU per event`)
process.exit(0)
