// What bounds "(c) <= 2/3 of bare oRPC's (b) server CPU per call" when oRPC's `RPCLink` drives the calls. In the
// closed-loop patterns with many sockets, `RPCLink`'s own CPU sets the pace, and a server faster than that pace
// waits between calls; on a VM each wait costs the server kernel time and cold caches. This script shows what
// that pace costs a server that does nothing but echo. Per round: 64 `RPCLink` sockets call bare oRPC (b) in a
// loop, then nuxt-orpc's route (c); then 64 sockets of a minimal raw client call the raw echo (a) twice, with a
// busy wait after each answer sized so that the raw client's CPU per call matches what `RPCLink` spent against
// (b), then against (c), in that round (`RPCLink` costs more per call against the faster route). The client
// column shows how closely each pace was matched.
// Prints server CPU per call (user + system, and user) and sleeps per call, then the medians of a/b at (b)'s
// pace and c/a at (c)'s pace.
// Usage: jiti bench/echo-at-rpclink-pace.ts [rounds, default 8] [seconds per round, default 5]
import { createORPCClient } from '@orpc/client'
import { RPCLink } from '@orpc/client/websocket'
import WebSocket from 'ws'
import { median } from './report'
import type { ServerStats } from './shared'
import { roundsAndSeconds, startFixtureServer } from './standalone'

const { rounds, seconds } = roundsAndSeconds('echo-at-rpclink-pace.ts', 8, 5)
const sockets = 64
const { port, base, process: server } = await startFixtureServer()

type Call = () => Promise<unknown>
interface Result { perSecond: number, serverUs: number, userUs: number, sleeps: number, clientUs: number }

try {
  const data = { id: 42, text: 'hello from the bench' }

  async function open(path: string): Promise<WebSocket> {
    const socket = new WebSocket(`ws://127.0.0.1:${port}${path}`, { origin: base })
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))
    return socket
  }

  async function rpcLinkCall(path: string): Promise<Call> {
    const client = createORPCClient<{ echo: (input: unknown) => Promise<unknown> }>(new RPCLink({ websocket: await open(path) as unknown as globalThis.WebSocket }))
    return () => client.echo(data)
  }

  async function rawCall(): Promise<Call> {
    const socket = await open('/raw')
    const pending = new Map<number, () => void>()
    socket.on('message', (frame) => {
      const { id } = JSON.parse(String(frame)) as { id: number }
      pending.get(id)?.()
      pending.delete(id)
    })
    let lastId = 0
    return () => new Promise<void>((resolve) => {
      const id = ++lastId
      pending.set(id, resolve)
      socket.send(JSON.stringify({ id, data }))
    })
  }

  const stats = async () => await (await fetch(`${base}/_bench/stats`)).json() as ServerStats

  /** `calls` in a loop for `seconds`, each followed by `waitUs` of busy CPU (the pace of a costlier client). */
  async function run(calls: Call[], waitUs = 0): Promise<Result> {
    let count = 0
    const until = performance.now() + seconds * 1000
    const before = await stats()
    const clientBefore = process.cpuUsage()
    await Promise.all(calls.map(async (call) => {
      while (performance.now() < until) {
        await call()
        count++
        const busyUntil = performance.now() + waitUs / 1000
        while (performance.now() < busyUntil) {
          // The CPU a costlier client would spend on this call.
        }
      }
    }))
    const client = process.cpuUsage(clientBefore)
    const after = await stats()
    const user = after.cpu.user - before.cpu.user
    return {
      perSecond: count / seconds,
      serverUs: (user + after.cpu.system - before.cpu.system) / count,
      userUs: user / count,
      sleeps: (after.sleeps - before.sleeps) / count,
      clientUs: (client.user + client.system) / count,
    }
  }

  const bare = await Promise.all(Array.from({ length: sockets }, () => rpcLinkCall('/orpc-bare')))
  const nuxt = await Promise.all(Array.from({ length: sockets }, () => rpcLinkCall('/_orpc')))
  const raw = await Promise.all(Array.from({ length: sockets }, rawCall))
  // Warm-up, and the raw client's own CPU per call, unpaced.
  await run(bare)
  await run(nuxt)
  const rawClientUs = (await run(raw)).clientUs
  // A paced raw client costs more per call than the unpaced one plus its busy wait (the wait's caches, the
  // timer reads): the sum of every paced run's overshoot so far is taken off the next wait. One paced run
  // before round 1 is not recorded.
  let overshootUs = 0
  const paced = async (rpcLinkClientUs: number) => {
    const result = await run(raw, Math.max(0, rpcLinkClientUs - rawClientUs - overshootUs))
    overshootUs += result.clientUs - rpcLinkClientUs
    return result
  }
  await paced((await run(bare)).clientUs)

  const print = (round: number, label: string, result: Result) => console.log(`round ${round} ${label}: ${Math.round(result.perSecond)}/s, server ${result.serverUs.toFixed(1)} us/call (user ${result.userUs.toFixed(1)}), ${result.sleeps.toFixed(2)} sleeps/call, client ${result.clientUs.toFixed(1)} us/call`)
  const ratios = { 'a/b at (b)\'s pace': [] as number[], 'c/a at (c)\'s pace': [] as number[], 'c/b': [] as number[] }
  for (let round = 1; round <= rounds; round++) {
    const b = await run(bare)
    print(round, 'b, RPCLink', b)
    const c = await run(nuxt)
    print(round, 'c, RPCLink', c)
    const aAtB = await paced(b.clientUs)
    print(round, 'a, raw client at RPCLink\'s pace against b', aAtB)
    const aAtC = await paced(c.clientUs)
    print(round, 'a, raw client at RPCLink\'s pace against c', aAtC)
    ratios['a/b at (b)\'s pace'].push(aAtB.serverUs / b.serverUs)
    ratios['c/a at (c)\'s pace'].push(c.serverUs / aAtC.serverUs)
    ratios['c/b'].push(c.serverUs / b.serverUs)
  }
  for (const [label, list] of Object.entries(ratios)) {
    console.log(`${label}, server CPU per call: median ${median(list)!.toFixed(2)} (rounds ${Math.min(...list).toFixed(2)} to ${Math.max(...list).toFixed(2)})`)
  }
}
finally {
  server.kill()
}
process.exit(0)
