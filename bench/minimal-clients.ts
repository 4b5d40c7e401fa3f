// The raw echo (a) and nuxt-orpc's route (c) of one built fixture server, each driven by 64 sockets of an equally
// minimal client (ws, one call in flight per socket, JSON in and out): what each server spends per call when the
// client costs the same, which the sustained pattern cannot show (there each target has its own client).
// Rounds alternate a and c; prints calls/s and server and client CPU per call, then the median a/c.
// Usage: jiti bench/minimal-clients.ts [rounds, default 10] [seconds per round, default 4]
import WebSocket from 'ws'
import { median } from './report'
import { roundsAndSeconds, startFixtureServer } from './standalone'

const { rounds, seconds } = roundsAndSeconds('minimal-clients.ts', 10, 4)
const sockets = 64
const { port, base, process: server } = await startFixtureServer()

try {
  const data = { id: 42, text: 'hello from the bench' }

  /** One socket and a call function: the echo's `{ id, data }` or oRPC's request message, nothing else. */
  async function connect(target: 'a' | 'c'): Promise<() => Promise<void>> {
    const socket = new WebSocket(`ws://127.0.0.1:${port}${target === 'a' ? '/raw' : '/_orpc'}`, { origin: base })
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))
    const pending = new Map<string | number, () => void>()
    socket.on('message', (frame) => {
      const message = JSON.parse(String(frame)) as { id?: number, i?: string | number }
      const id = target === 'a' ? message.id! : message.i!
      pending.get(id)?.()
      pending.delete(id)
    })
    let lastId = 0
    return () => new Promise((resolve) => {
      const id = ++lastId
      if (target === 'a') {
        pending.set(id, resolve)
        socket.send(JSON.stringify({ id, data }))
      }
      else {
        const key = `_${id.toString(36)}`
        pending.set(key, resolve)
        socket.send(JSON.stringify({ i: key, p: { u: '/echo', b: { json: data } } }))
      }
    })
  }

  const serverCpu = async () => {
    const { cpu } = await (await fetch(`${base}/_bench/stats`)).json() as { cpu: { user: number, system: number } }
    return cpu.user + cpu.system
  }
  const clients = { a: await Promise.all(Array.from({ length: sockets }, () => connect('a'))), c: await Promise.all(Array.from({ length: sockets }, () => connect('c'))) }
  const results = { a: [] as Array<{ perSecond: number, serverUs: number, clientUs: number }>, c: [] as Array<{ perSecond: number, serverUs: number, clientUs: number }> }
  for (let round = 0; round < rounds; round++) {
    for (const target of round % 2 ? ['c', 'a'] as const : ['a', 'c'] as const) {
      let calls = 0
      const until = Date.now() + seconds * 1000
      const serverBefore = await serverCpu()
      const clientBefore = process.cpuUsage()
      await Promise.all(clients[target].map(async (call) => {
        while (Date.now() < until) {
          await call()
          calls++
        }
      }))
      const client = process.cpuUsage(clientBefore)
      const result = { perSecond: calls / seconds, serverUs: (await serverCpu() - serverBefore) / calls, clientUs: (client.user + client.system) / calls }
      results[target].push(result)
      console.log(`round ${round + 1} ${target}: ${Math.round(result.perSecond)}/s, server ${result.serverUs.toFixed(1)} us/call, client ${result.clientUs.toFixed(1)} us/call`)
    }
  }
  for (const target of ['a', 'c'] as const) {
    const list = results[target]
    console.log(`${target}: median ${Math.round(median(list.map(result => result.perSecond))!)}/s, server ${median(list.map(result => result.serverUs))!.toFixed(1)} us/call, client ${median(list.map(result => result.clientUs))!.toFixed(1)} us/call`)
  }
  const ratios = results.a.map((result, index) => result.serverUs / results.c[index]!.serverUs)
  console.log(`a/c server CPU per call: median ${median(ratios)!.toFixed(2)} (rounds ${Math.min(...ratios).toFixed(2)} to ${Math.max(...ratios).toFixed(2)})`)
}
finally {
  server.kill()
}
process.exit(0)
