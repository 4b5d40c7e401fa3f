// Where an idle connection's memory goes: opens N idle connections to bare oRPC (b) in one fixture server and
// to nuxt-orpc (c) in another, takes a heap snapshot of each, and prints per connection the object kinds by
// which the two differ (self sizes). Needs the bench fixture built (`npm run bench` builds it).
// Usage: jiti bench/heap-diff.ts [connections, default 2000]
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'
import type { FixtureServer } from './standalone'
import { sleep, startFixtureServer } from './standalone'

const connections = Number(process.argv[2] ?? 2000)

interface Totals {
  /** Self size and count per `type:name` (strings cut to 40 characters). */
  kinds: Map<string, { count: number, size: number }>
  size: number
}

interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[], node_types: [string[], ...unknown[]] } }
  nodes: number[]
  strings: string[]
}

function totalsOf(snapshot: HeapSnapshot): Totals {
  const fields = snapshot.snapshot.meta.node_fields
  const types = snapshot.snapshot.meta.node_types[0]
  const [typeAt, nameAt, sizeAt] = ['type', 'name', 'self_size'].map(field => fields.indexOf(field)) as [number, number, number]
  const kinds = new Map<string, { count: number, size: number }>()
  let size = 0
  for (let index = 0; index < snapshot.nodes.length; index += fields.length) {
    const type = types[snapshot.nodes[index + typeAt]!]!
    const name = snapshot.strings[snapshot.nodes[index + nameAt]!]!
    const key = `${type}:${type.includes('string') ? name.slice(0, 40).replace(/\n/g, ' ') : name}`
    const kind = kinds.get(key) ?? { count: 0, size: 0 }
    kind.count++
    kind.size += snapshot.nodes[index + sizeAt]!
    kinds.set(key, kind)
    size += snapshot.nodes[index + sizeAt]!
  }
  return { kinds, size }
}

/** Opens `connections` idle connections the way the bench's idle pattern does, then snapshots the server's heap. */
async function snapshotWithIdleConnections(target: 'b' | 'c'): Promise<Totals> {
  const directory = await mkdtemp(join(tmpdir(), 'nuxt-orpc-heap-'))
  let server: FixtureServer['process'] | undefined
  const sockets: WebSocket[] = []
  try {
    const fixture = await startFixtureServer(['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${directory}`])
    server = fixture.process
    const port = fixture.port
    const url = `ws://127.0.0.1:${port}${target === 'c' ? '/_orpc' : '/orpc-bare'}`
    // nuxt-orpc's client offers its subprotocol and waits for the ready frame; oRPC's RPCLink offers none.
    const open = () => new Promise<WebSocket>((resolve, reject) => {
      const socket = new WebSocket(url, target === 'c' ? ['orpc', 'nuxt-orpc'] : [], { origin: `http://127.0.0.1:${port}` })
      socket.once(target === 'c' ? 'message' : 'open', () => resolve(socket))
      socket.once('error', reject)
    })
    // Load the route's code first, so it is not counted per connection.
    for (let warm = 0; warm < 10; warm++) (await open()).terminate()
    await sleep(300)
    while (sockets.length < connections) {
      sockets.push(...await Promise.all(Array.from({ length: Math.min(50, connections - sockets.length) }, open)))
    }
    await sleep(500)
    server.kill('SIGUSR2')
    // The snapshot is complete once its file stops growing.
    let file: string | undefined
    let lastSize = -1
    while (!file) {
      await sleep(500)
      const name = (await readdir(directory)).find(entry => entry.endsWith('.heapsnapshot'))
      if (!name) continue
      const { size } = await stat(join(directory, name))
      if (size > 0 && size === lastSize) file = join(directory, name)
      lastSize = size
    }
    return totalsOf(JSON.parse(await readFile(file, 'utf8')) as HeapSnapshot)
  }
  finally {
    for (const socket of sockets) socket.terminate()
    server?.kill()
    await rm(directory, { recursive: true, force: true })
  }
}

const bare = await snapshotWithIdleConnections('b')
const nuxtOrpc = await snapshotWithIdleConnections('c')
console.log(`${connections} idle connections; heap snapshot self sizes, nuxt-orpc (c) minus bare oRPC (b), per connection`)
console.log(`in all: ${((nuxtOrpc.size - bare.size) / connections).toFixed(0)} bytes\n`)
console.log('   bytes  objects  kind')
const rows = [...new Set([...bare.kinds.keys(), ...nuxtOrpc.kinds.keys()])].map((key) => {
  const before = bare.kinds.get(key) ?? { count: 0, size: 0 }
  const after = nuxtOrpc.kinds.get(key) ?? { count: 0, size: 0 }
  return { key, size: (after.size - before.size) / connections, count: (after.count - before.count) / connections }
}).filter(row => Math.abs(row.size) >= 4).sort((left, right) => Math.abs(right.size) - Math.abs(left.size))
for (const row of rows.slice(0, 30)) {
  console.log(`${row.size.toFixed(0).padStart(8)}  ${row.count.toFixed(2).padStart(7)}  ${row.key}`)
}
console.log('\nStrings holding the port or the route path differ only by their length (/orpc-bare, /_orpc).')
