// Reads a V8 CPU profile (from `npm run bench -- --cpu-prof`) and prints where the server's time went: by
// package (or Node internals, GC, idle) and the functions with the most self time.
// Usage: jiti bench/profile.ts bench/results/profiles/CPU.<...>.cpuprofile... [top]
import { readFile } from 'node:fs/promises'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

/** Who owns the code at `url`: an npm package, the Nitro bundle (h3, crossws, nuxt-orpc's runtime), or Node. */
function areaOf(node: ProfileNode): string {
  const { url, functionName } = node.callFrame
  if (!url) return functionName.startsWith('(') ? functionName : '(native)'
  if (url.startsWith('node:')) return 'node internals'
  const packagePath = url.split('/node_modules/').at(-1)!
  if (packagePath !== url) {
    const parts = packagePath.split('/')
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!
  }
  if (url.includes('/.output/server/chunks/nitro/')) return 'nitro bundle (h3, crossws, nuxt-orpc runtime)'
  if (url.includes('/.output/server/')) return 'fixture routes and procedures'
  return url
}

// Node writes one profile per thread that ran JavaScript, so a glob may match several files: their times add up.
const files = process.argv.slice(2).filter(argument => !/^\d+$/.test(argument))
const topArgument = process.argv.slice(2).find(argument => /^\d+$/.test(argument))
if (files.length === 0) {
  console.error('usage: jiti bench/profile.ts <file.cpuprofile>... [top]')
  process.exit(1)
}
const areas = new Map<string, number>()
const functions = new Map<string, number>()
let total = 0
for (const file of files) {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile
  const byId = new Map(profile.nodes.map(node => [node.id, node]))
  const selfTime = new Map<number, number>()
  profile.samples.forEach((id, index) => selfTime.set(id, (selfTime.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0)))
  for (const [id, time] of selfTime) {
    const node = byId.get(id)!
    if (node.callFrame.functionName === '(idle)') continue
    total += time
    const area = areaOf(node)
    areas.set(area, (areas.get(area) ?? 0) + time)
    const name = `${node.callFrame.functionName || '(anonymous)'}  [${area}${node.callFrame.url ? `:${node.callFrame.lineNumber + 1}` : ''}]`
    functions.set(name, (functions.get(name) ?? 0) + time)
  }
}

const percent = (time: number) => `${(100 * time / total).toFixed(1).padStart(5)}%`
console.log(`busy (not idle): ${(total / 1e6).toFixed(2)} s\n\nby area (self time):`)
for (const [area, time] of [...areas].sort((left, right) => right[1] - left[1])) console.log(`  ${percent(time)}  ${area}`)
console.log(`\ntop functions (self time):`)
for (const [name, time] of [...functions].sort((left, right) => right[1] - left[1]).slice(0, Number(topArgument ?? 30))) {
  console.log(`  ${percent(time)}  ${name}`)
}
