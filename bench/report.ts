// Turns the jobs of one or more runs into medians, per-round ratios, the issue's targets, and Markdown tables.
import type { DeliveryLatency, FanoutResult, IdleResult, JobResult, Target, ThroughputResult } from './shared'
import { definePatterns, targets } from './shared'

export interface JobRecord {
  round: number
  pattern: string
  title: string
  target: string
  result?: JobResult
  error?: string
}

export interface BenchReport {
  startedAt: string
  finishedAt: string
  machine: Record<string, unknown>
  versions: Record<string, string>
  conditions: {
    quick: boolean
    rounds: number
    patterns: Record<string, { title: string } & Record<string, unknown>>
    notes: string[]
    /** Patterns left out, and why (no Redis, a low ulimit). */
    skipped?: string[]
    mergedFrom?: string[]
  }
  records: JobRecord[]
  summary?: Summary
}

type Ratios = Partial<Record<'a' | 'b' | 'd' | 'e', number | null>>

export interface ThroughputRow {
  pattern: string
  title: string
  target: string
  rounds: number
  errors: number
  perSecond: number | null
  p50: number | null
  p99: number | null
  serverCpuUs: number | null
  /** The user-mode part of the server's CPU per call. */
  serverUserUs: number | null
  /** How often the server slept waiting for work, per call. */
  serverSleepsPerCall: number | null
  clientCpuUs: number | null
  /** Throughput over the reference's, median of per-round ratios (higher is better). */
  ratio: Ratios
  /** Server CPU per call over the reference's, median of per-round ratios (lower is better). */
  serverCpuRatio: Ratios
}

export interface IdleRow {
  pattern: string
  title: string
  target: string
  rounds: number
  requested: number
  /** The fewest opened / held over the rounds. */
  opened: number
  held: number
  heapPerConnection: number | null
  rssPerConnection: number | null
  opensPerSecond: number | null
  /** Heap per connection over the reference's (lower is better). */
  heapRatio: Ratios
}

export interface ColdRow {
  target: string
  rounds: number
  ms: number | null
  min: number | null
  max: number | null
  /** Cold start over the raw echo's (a), same process kind for a-d. */
  ratio: Ratios
}

/** One group of subscribers of the fan-out: latencies over every round's deliveries. */
export interface FanoutLatencyRow {
  expected: number
  delivered: number
  /** Medians of the rounds' p1, p50 and p99; the largest max. */
  p1: number | null
  p50: number | null
  p99: number | null
  max: number | null
}

export interface FanoutRow {
  pattern: string
  title: string
  target: string
  rounds: number
  /** Server instances the target ran on (the raw ws baseline: always 1). */
  instances: number
  subscribers: number
  publishes: number
  all: FanoutLatencyRow
  sameInstance: FanoutLatencyRow
  /** Null where no subscriber was on another instance. */
  otherInstance: FanoutLatencyRow | null
  missing: number
  duplicates: number
  errors: number
  reconnects: number
  /** Medians over the rounds (the max: the largest). */
  lastDeliveryP50: number | null
  lastDeliveryMax: number | null
  publishCallP50: number | null
  publishCallP99: number | null
  /** Median over the rounds of each round's deliveries per second (see FanoutResult). */
  deliveriesPerSecond: number | null
  /** Per instance. */
  serverCpuUsPerDelivery: Array<number | null>
  /** All instances' CPU over all deliveries. */
  serverCpuUsPerDeliveryAll: number | null
  clientCpuUsPerDelivery: number | null
  /** Server heap (after gc) and RSS growth per subscriber, bytes. */
  heapPerSubscriber: number | null
  rssPerSubscriber: number | null
  subscribeSeconds: number | null
  clockSkewMs: number | null
  /**
   * Medians of per-round ratios: deliveries/s and p99 over Socket.IO's (e), server CPU per delivery (all
   * instances) over the raw ws baseline's; null for the reference's own row.
   */
  ratio: { perSecondE: number | null, p99E: number | null, serverCpuWs: number | null }
}

export interface Goal {
  goal: string
  pattern: string
  measured: string
  pass: boolean | null
}

export interface Summary {
  throughput: ThroughputRow[]
  idle: IdleRow[]
  cold: ColdRow[]
  fanout: FanoutRow[]
  goals: Goal[]
}

export function median(values: number[]): number | null {
  if (values.length === 0) return null
  const sorted = [...values].sort((left, right) => left - right)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

const targetByKey = (key: string): Target => targets.find(target => target.key === key)!

/** The bare oRPC row to compare with: driven by the same client, for (b) and (c); else oRPC's stock client. */
const bareReference = (key: string) => targetByKey(key).client === 'nuxt' ? 'b-nuxt' : 'b-orpc'

/** A job counts only if it completed without losing a call. */
function usable(record: JobRecord): JobResult | undefined {
  const result = record.result
  if (!result) return undefined
  if (result.kind === 'throughput' && result.errors > 0) return undefined
  if (result.kind === 'idle' && result.held < result.requested) return undefined
  if (result.kind === 'fanout' && (result.missing || result.duplicates || result.errors)) return undefined
  return result
}

/** Throughput metrics of a job, for per-round ratios (null for other kinds of job). */
const perSecondOf = (result: JobResult) => result.kind === 'throughput' ? result.perSecond : null
const serverCpuOf = (result: JobResult) => result.kind === 'throughput' ? result.serverCpuUs : null
const serverUserCpuOf = (result: JobResult) => result.kind === 'throughput' ? result.serverUserUs ?? null : null
const clientCpuOf = (result: JobResult) => result.kind === 'throughput' ? result.clientCpuUs : null
/** Fan-out metrics of a job, for per-round ratios. */
const fanoutDeliveriesOf = (result: JobResult) => result.kind === 'fanout' ? result.deliveriesPerSecond ?? null : null
const fanoutP99Of = (result: JobResult) => result.kind === 'fanout' ? result.all.p99 : null
/** All instances' CPU per delivery; older results have it per instance only (instances of equal subscribers). */
const serverCpuAllOf = (result: FanoutResult) => result.serverCpuUsPerDeliveryAll
  ?? result.serverCpuUsPerDelivery.reduce((sum, value) => sum + value, 0) / result.serverCpuUsPerDelivery.length
const fanoutServerCpuOf = (result: JobResult) => result.kind === 'fanout' ? serverCpuAllOf(result) : null

function perRoundRatio(records: JobRecord[], pattern: string, target: string, reference: string, metric: (result: JobResult) => number | null): number | null {
  return median(perRoundRatios(records, pattern, target, reference, metric))
}

/** `target`'s metric over `reference`'s, one ratio per round in which both ran without losing a call. */
function perRoundRatios(records: JobRecord[], pattern: string, target: string, reference: string, metric: (result: JobResult) => number | null): number[] {
  const ratios: number[] = []
  for (const record of records) {
    if (record.pattern !== pattern || record.target !== target) continue
    const result = usable(record)
    const referenceRecord = records.find(other => other.pattern === pattern && other.target === reference && other.round === record.round)
    const referenceResult = referenceRecord && usable(referenceRecord)
    if (!result || !referenceResult) continue
    const value = metric(result)
    const referenceValue = metric(referenceResult)
    if (value === null || referenceValue === null || referenceValue === 0) continue
    ratios.push(value / referenceValue)
  }
  return ratios
}

function groupKeys(records: JobRecord[]): Array<{ pattern: string, title: string, target: string, records: JobRecord[] }> {
  const groups = new Map<string, { pattern: string, title: string, target: string, records: JobRecord[] }>()
  for (const record of records) {
    const key = `${record.pattern}\u0000${record.target}`
    if (!groups.has(key)) groups.set(key, { pattern: record.pattern, title: record.title, target: record.target, records: [] })
    groups.get(key)!.records.push(record)
  }
  // Table order: patterns as shared.ts defines them (then any other as it ran), targets as shared.ts lists them.
  const order = targets.map(target => target.key)
  const defined = [...definePatterns(false, 1), ...definePatterns(true, 1)].map(pattern => pattern.id)
  const patternOrder = [...new Set([...defined, ...records.map(record => record.pattern)])]
  return [...groups.values()].sort((left, right) =>
    patternOrder.indexOf(left.pattern) - patternOrder.indexOf(right.pattern) || order.indexOf(left.target) - order.indexOf(right.target))
}

export function summarize(records: JobRecord[]): Summary {
  const summary: Summary = { throughput: [], idle: [], cold: [], fanout: [], goals: [] }
  for (const group of groupKeys(records)) {
    const results = group.records.map(usable).filter(result => result !== undefined)
    const kind = group.records.find(record => record.result)?.result?.kind
    const ratio = (reference: string, metric: (result: JobResult) => number | null) =>
      perRoundRatio(records, group.pattern, group.target, reference, metric)
    if (kind === 'throughput') {
      const list = results as ThroughputResult[]
      summary.throughput.push({
        pattern: group.pattern,
        title: group.title,
        target: group.target,
        rounds: list.length,
        errors: group.records.reduce((sum, record) => sum + (record.error ? 1 : record.result?.kind === 'throughput' ? record.result.errors : 0), 0),
        perSecond: median(list.map(result => result.perSecond)),
        p50: median(list.flatMap(result => result.p50 ?? [])),
        p99: median(list.flatMap(result => result.p99 ?? [])),
        serverCpuUs: median(list.flatMap(result => result.serverCpuUs ?? [])),
        serverUserUs: median(list.flatMap(result => result.serverUserUs ?? [])),
        serverSleepsPerCall: median(list.flatMap(result => result.serverSleepsPerCall ?? [])),
        clientCpuUs: median(list.map(result => result.clientCpuUs)),
        ratio: { a: ratio('a', perSecondOf), b: ratio(bareReference(group.target), perSecondOf), d: ratio('d', perSecondOf), e: ratio('e', perSecondOf) },
        serverCpuRatio: { a: ratio('a', serverCpuOf), b: ratio(bareReference(group.target), serverCpuOf) },
      })
    }
    else if (kind === 'idle') {
      const all = group.records.map(record => record.result).filter((result): result is IdleResult => result?.kind === 'idle')
      const list = results as IdleResult[]
      const heap = (result: JobResult) => (result as IdleResult).heapPerConnection
      summary.idle.push({
        pattern: group.pattern,
        title: group.title,
        target: group.target,
        rounds: list.length,
        requested: all[0]?.requested ?? 0,
        opened: Math.min(...all.map(result => result.opened)),
        held: Math.min(...all.map(result => result.held)),
        heapPerConnection: median(list.map(result => result.heapPerConnection)),
        rssPerConnection: median(list.map(result => result.rssPerConnection)),
        opensPerSecond: median(list.map(result => result.opensPerSecond)),
        heapRatio: { b: ratio('b-orpc', heap), e: ratio('e', heap) },
      })
    }
    else if (kind === 'cold') {
      const list = results.map(result => result.kind === 'cold' ? result.ms : 0)
      summary.cold.push({
        target: group.target,
        rounds: list.length,
        ms: median(list),
        min: list.length ? Math.min(...list) : null,
        max: list.length ? Math.max(...list) : null,
        ratio: { a: ratio('a', result => result.kind === 'cold' ? result.ms : null) },
      })
    }
    else if (kind === 'fanout') {
      const all = group.records.map(record => record.result).filter((result): result is FanoutResult => result?.kind === 'fanout')
      const list = results as FanoutResult[]
      const latencyRow = (pick: (result: FanoutResult) => DeliveryLatency | null): FanoutLatencyRow => {
        const picked = all.flatMap(result => pick(result) ?? [])
        const usableOnes = list.flatMap(result => pick(result) ?? [])
        return {
          expected: picked.reduce((sum, latency) => sum + latency.expected, 0),
          delivered: picked.reduce((sum, latency) => sum + latency.delivered, 0),
          p1: median(usableOnes.flatMap(latency => latency.p1 ?? [])),
          p50: median(usableOnes.flatMap(latency => latency.p50 ?? [])),
          p99: median(usableOnes.flatMap(latency => latency.p99 ?? [])),
          max: usableOnes.length ? Math.max(...usableOnes.flatMap(latency => latency.max ?? [])) : null,
        }
      }
      const total = (pick: (result: FanoutResult) => number) => all.reduce((sum, result) => sum + pick(result), 0)
      // Results recorded before the one-instance layout ran on two instances.
      const instances = all[0]?.instances ?? 2
      const ratioTo = (reference: string, metric: (result: JobResult) => number | null) => group.target === reference ? null : ratio(reference, metric)
      summary.fanout.push({
        pattern: group.pattern,
        title: group.title,
        target: group.target,
        rounds: list.length,
        instances,
        subscribers: all[0]?.subscribers ?? 0,
        publishes: all[0]?.publishes ?? 0,
        all: latencyRow(result => result.all),
        sameInstance: latencyRow(result => result.sameInstance),
        otherInstance: all.some(result => result.otherInstance) ? latencyRow(result => result.otherInstance) : null,
        missing: total(result => result.missing),
        duplicates: total(result => result.duplicates),
        errors: total(result => result.errors) + group.records.filter(record => record.error).length,
        reconnects: total(result => result.reconnects),
        lastDeliveryP50: median(list.flatMap(result => result.lastDelivery.p50 ?? [])),
        lastDeliveryMax: list.length ? Math.max(...list.flatMap(result => result.lastDelivery.max ?? [])) : null,
        publishCallP50: median(list.flatMap(result => result.publishCall.p50 ?? [])),
        publishCallP99: median(list.flatMap(result => result.publishCall.p99 ?? [])),
        deliveriesPerSecond: median(list.flatMap(result => result.deliveriesPerSecond ?? [])),
        serverCpuUsPerDelivery: Array.from({ length: instances }, (_, index) => median(list.flatMap(result => result.serverCpuUsPerDelivery[index] ?? []))),
        serverCpuUsPerDeliveryAll: median(list.map(serverCpuAllOf)),
        clientCpuUsPerDelivery: median(list.map(result => result.clientCpuUsPerDelivery)),
        heapPerSubscriber: median(list.flatMap(result => result.memoryPerSubscriber?.heap ?? [])),
        rssPerSubscriber: median(list.flatMap(result => result.memoryPerSubscriber?.rss ?? [])),
        subscribeSeconds: median(list.map(result => result.subscribeSeconds)),
        clockSkewMs: list.length ? Math.max(...list.map(result => result.clockSkewMs)) : null,
        ratio: {
          perSecondE: ratioTo('e', fanoutDeliveriesOf),
          p99E: ratioTo('e', fanoutP99Of),
          serverCpuWs: ratioTo('ws', fanoutServerCpuOf),
        },
      })
    }
  }
  summary.goals = evaluateGoals(summary, records)
  return summary
}

const requestResponsePatterns = ['sequential', 'concurrent-1', 'concurrent-many', 'sustained']
const fixed = (value: number | null | undefined, digits = 2) => value === null || value === undefined ? 'n/a' : value.toFixed(digits)

/** The issue's targets, each evaluated per pattern (pass is null when a figure is missing). */
function evaluateGoals(summary: Summary, records: JobRecord[]): Goal[] {
  const goals: Goal[] = []
  /**
   * Each part is a value, or the per-round ratios whose median it is: their range is printed too, since it
   * shows how much of a miss (or a pass) the machine's noise could be.
   */
  const check = (goal: string, pattern: string, parts: Array<[label: string, measured: number | null | undefined | number[], ok: (value: number) => boolean]>, note = '') => {
    const figures = parts.map(([label, measured, ok]) => {
      const rounds = Array.isArray(measured) ? measured : []
      const value = Array.isArray(measured) ? median(measured) : measured
      const spread = rounds.length > 1 ? ` (rounds ${fixed(Math.min(...rounds))} to ${fixed(Math.max(...rounds))})` : ''
      return { value, ok, text: `${label} ${fixed(value)}${spread}` }
    })
    if (!figures.some(({ value }) => value !== null && value !== undefined)) return
    const pass = figures.every(({ value, ok }) => value !== null && value !== undefined && ok(value))
    const missing = figures.some(({ value }) => value === null || value === undefined)
    goals.push({ goal, pattern, measured: figures.map(({ text }) => text).join(', ') + note, pass: missing && !pass ? null : pass })
  }
  const rounds = (pattern: string, target: string, reference: string, metric: (result: JobResult) => number | null) =>
    perRoundRatios(records, pattern, target, reference, metric)
  for (const pattern of requestResponsePatterns) {
    check('(c) calls/s >= Socket.IO (e), nuxt-orpc client', pattern, [['c-nuxt/e', rounds(pattern, 'c-nuxt', 'e', perSecondOf), value => value >= 1]])
  }
  /**
   * Not part of the verdict: the same ratios in user-mode CPU only. A server that waits for its client sleeps
   * between calls, and on a VM each sleep and wake-up costs kernel time; the cheaper server sleeps more often.
   */
  const userOnly = (pattern: string, pairs: Array<[target: string, reference: string]>) => {
    const figures = pairs.flatMap(([target, reference]) => {
      const value = median(rounds(pattern, target, reference, serverUserCpuOf))
      return value === null ? [] : [`${target}/${reference} ${fixed(value)}`]
    })
    return figures.length ? `; user-mode CPU only: ${figures.join(', ')}` : ''
  }
  for (const pattern of [...requestResponsePatterns, 'paced']) {
    // ">= 0.9x the raw echo in server CPU per call": the echo's CPU per call over nuxt-orpc's is at least 0.9.
    check('(c) server CPU per call: a/c >= 0.9', pattern, [['a/c-nuxt', rounds(pattern, 'a', 'c-nuxt', serverCpuOf), value => value >= 0.9]], userOnly(pattern, [['a', 'c-nuxt']]))
  }
  for (const pattern of [...requestResponsePatterns, 'paced']) {
    check('(c) server CPU per call <= 2/3 of (b), either client', pattern, [
      ['c-orpc/b-orpc', rounds(pattern, 'c-orpc', 'b-orpc', serverCpuOf), value => value <= 2 / 3],
      ['c-nuxt/b-nuxt', rounds(pattern, 'c-nuxt', 'b-nuxt', serverCpuOf), value => value <= 2 / 3],
    ], userOnly(pattern, [['c-orpc', 'b-orpc'], ['c-nuxt', 'b-nuxt']]))
  }
  /**
   * Not part of the verdict: (c) driven by oRPC's `RPCLink` against (d). In these patterns the load process is
   * mostly the limit, so that ratio follows the two oRPC clients' CPU per call (the fetch link's over the
   * WebSocket link's), whatever the server does; that ratio is printed beside it.
   */
  const withRpcLink = (pattern: string) => {
    const value = median(rounds(pattern, 'c-orpc', 'd', perSecondOf))
    const clients = median(rounds(pattern, 'd', 'c-orpc', clientCpuOf))
    return value === null ? '' : `; not in the verdict, with RPCLink: c-orpc/d ${fixed(value)}, and the two clients' CPU per call, d's over c-orpc's, ${fixed(clients)}`
  }
  for (const pattern of ['concurrent-1', 'concurrent-many', 'sustained']) {
    // Like a/c above, a target that names no client is read with nuxt-orpc's own.
    check('(c) calls/s >= 8x oRPC over HTTP (d), nuxt-orpc client', pattern, [
      ['c-nuxt/d', rounds(pattern, 'c-nuxt', 'd', perSecondOf), value => value >= 8],
    ], withRpcLink(pattern))
  }
  for (const idle of summary.idle.filter(entry => entry.target === 'c-nuxt')) {
    check('idle heap per connection (c) <= (b) and < (e)', idle.pattern, [
      ['c/b', idle.heapRatio.b, value => value <= 1],
      ['c/e', idle.heapRatio.e, value => value < 1],
    ])
    if (idle.requested >= 10_000) {
      goals.push({ goal: '10,000 idle connections held', pattern: idle.pattern, measured: `${idle.held} of ${idle.requested} held`, pass: idle.held >= idle.requested })
    }
  }
  check('stream events/s >= 0.9x the raw echo (a)', 'stream', [
    ['c-orpc/a', rounds('stream', 'c-orpc', 'a', perSecondOf), value => value >= 0.9],
    ['c-nuxt/a', rounds('stream', 'c-nuxt', 'a', perSecondOf), value => value >= 0.9],
  ])
  for (const pattern of [...new Set(summary.fanout.map(row => row.pattern))]) {
    const rowOf = (target: string) => summary.fanout.find(row => row.pattern === pattern && row.target === target)
    const nuxt = rowOf('c-nuxt')
    if (!nuxt) continue
    const socketIo = rowOf('e')
    // The p99s behind the ratio, split by where the subscribers were.
    const split = socketIo
      ? `; p99 ms, nuxt-orpc / Socket.IO: all ${fixed(nuxt.all.p99)} / ${fixed(socketIo.all.p99)}, publishing instance ${fixed(nuxt.sameInstance.p99)} / ${fixed(socketIo.sameInstance.p99)}${nuxt.otherInstance ? `, other instance ${fixed(nuxt.otherInstance.p99)} / ${fixed(socketIo.otherInstance?.p99)}` : ''}`
      : ''
    check('(c) fan-out deliveries/s >= Socket.IO with its Redis adapter (e)', pattern, [['c-nuxt/e', rounds(pattern, 'c-nuxt', 'e', fanoutDeliveriesOf), value => value >= 1]])
    check('(c) fan-out p99 latency <= Socket.IO with its Redis adapter (e)', pattern, [['c-nuxt/e', rounds(pattern, 'c-nuxt', 'e', fanoutP99Of), value => value <= 1]], split)
    check('(c) fan-out server CPU per delivery <= 2x a raw ws send (ws)', pattern, [['c-nuxt/ws', rounds(pattern, 'c-nuxt', 'ws', fanoutServerCpuOf), value => value <= 2]],
      `; us per delivery: nuxt-orpc ${fixed(nuxt.serverCpuUsPerDeliveryAll, 1)}, raw ws ${fixed(rowOf('ws')?.serverCpuUsPerDeliveryAll, 1)} (one process, no Redis)`)
    const exactness = (row: FanoutRow | undefined, name: string) => row ? `${name} ${row.missing} missing, ${row.duplicates} duplicated, ${row.errors} errors` : ''
    goals.push({
      goal: '(c) fan-out: nothing lost or duplicated, every round',
      pattern,
      measured: [exactness(nuxt, 'nuxt-orpc'), exactness(socketIo, 'Socket.IO'), exactness(rowOf('ws'), 'raw ws')].filter(Boolean).join('; ') + ` (${nuxt.rounds} usable round(s), warm-ups included)`,
      pass: nuxt.missing === 0 && nuxt.duplicates === 0 && nuxt.errors === 0,
    })
  }
  return goals
}

/** Jobs that failed, lost calls or lost idle connections: the smoke test fails on these. */
export function failures(report: BenchReport): string[] {
  return report.records.flatMap((record) => {
    const where = `round ${record.round} ${record.pattern} ${record.target}`
    if (record.error) return [`${where}: ${record.error.split('\n')[0]}`]
    const result = record.result!
    if (result.kind === 'throughput' && result.errors > 0) return [`${where}: ${result.errors} calls failed`]
    if (result.kind === 'idle' && result.held < result.requested) return [`${where}: ${result.held} of ${result.requested} connections held`]
    if (result.kind === 'fanout' && (result.missing || result.duplicates || result.errors)) {
      const samples = result.errorSamples.length ? ` (${result.errorSamples.join('; ')})` : ''
      return [`${where}: ${result.missing} deliveries MISSING, ${result.duplicates} DUPLICATED, ${result.errors} errors${samples}`]
    }
    return []
  })
}

const count = (value: number | null) => value === null ? 'n/a' : Math.round(value).toLocaleString('en')
const kilobytes = (value: number | null) => value === null ? 'n/a' : (value / 1024).toFixed(1)

/** How many rounds the medians of these rows come from. */
function roundsLabel(rows: Array<{ rounds: number }>): string {
  const counts = [...new Set(rows.map(row => row.rounds))].sort()
  return `${counts.join('-')} round${counts.at(-1) === 1 ? '' : 's'}`
}

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}

export function renderReport(report: BenchReport): string {
  const summary = report.summary!
  const label = (key: string) => targetByKey(key).label
  const out: string[] = []
  const machine = report.machine
  out.push(`## nuxt-orpc bench, ${report.startedAt.slice(0, 16).replace('T', ' ')} UTC${report.conditions.quick ? ' (--quick: smoke counts, not a measurement)' : ''}`)
  out.push('')
  out.push(`Machine: ${machine.cores} cores (${machine.cpu}), ${machine.memoryGiB} GiB, Linux ${machine.kernel}, Node ${machine.node}, ulimit -n ${machine.openFilesLimit}, load average ${(machine.loadAverageBefore as number[]).join('/')} before, ${(machine.loadAverageAfter as number[]).join('/')} after.`)
  out.push('')
  out.push(`Versions: ${Object.entries(report.versions).map(([name, version]) => `${name} ${version}`).join(', ')}.`)
  out.push('')
  const merged = report.conditions.mergedFrom
  out.push(`Conditions: ${merged ? `${merged.length} runs merged (${merged.join(', ')}), ` : ''}${report.conditions.rounds} round(s) in all; each table says how many rounds its medians come from.`)
  for (const note of report.conditions.notes) out.push(`- ${note}`)
  for (const skipped of report.conditions.skipped ?? []) out.push(`- SKIPPED ${skipped}`)

  const patterns = [...new Set(summary.throughput.map(row => row.pattern))]
  if (patterns.length) {
    out.push('', '### Calls and streams', '')
    out.push('calls/s is events/s for the stream. server us/call is user + system CPU, "of it user" its user-mode part; server sleeps/call counts the times the server process waited for work (voluntary context switches) per call. Ratios: xa, xb, xe = throughput over (a), (b), (e) (higher is better); CPU/a, CPU/b = server CPU per call over theirs (lower is better). (b) for a (b)/(c) row is the bare route driven by the same client; otherwise (b) with RPCLink.')
  }
  for (const pattern of patterns) {
    const rows = summary.throughput.filter(row => row.pattern === pattern)
    out.push('', `#### ${rows[0]!.title} (${roundsLabel(rows)})`, '')
    out.push(table(
      ['target', 'calls/s', 'p50 ms', 'p99 ms', 'server us/call', 'of it user', 'server sleeps/call', 'client us/call', 'xa', 'xb', 'xe', 'CPU/a', 'CPU/b'],
      rows.map(row => [
        label(row.target) + (row.errors ? ` (${row.errors} errors)` : ''),
        count(row.perSecond),
        fixed(row.p50),
        fixed(row.p99),
        fixed(row.serverCpuUs, 1),
        fixed(row.serverUserUs, 1),
        fixed(row.serverSleepsPerCall),
        fixed(row.clientCpuUs, 1),
        fixed(row.ratio.a),
        fixed(row.ratio.b),
        fixed(row.ratio.e),
        fixed(row.serverCpuRatio.a),
        fixed(row.serverCpuRatio.b),
      ]),
    ))
  }

  if (summary.idle.length) {
    out.push('', `### Idle connections (${roundsLabel(summary.idle)})`, '')
    out.push('Server heap (after gc) and RSS growth per open connection, on a fresh server process. heap/b and heap/e: over bare oRPC\'s and Socket.IO\'s (lower is better).', '')
    out.push(table(
      ['connections', 'target', 'held', 'heap KB/conn', 'RSS KB/conn', 'heap/b', 'heap/e', 'opens/s'],
      summary.idle.map(row => [
        row.requested.toLocaleString('en'),
        label(row.target),
        `${row.held}/${row.requested}`,
        kilobytes(row.heapPerConnection),
        kilobytes(row.rssPerConnection),
        fixed(row.heapRatio.b),
        fixed(row.heapRatio.e),
        count(row.opensPerSecond),
      ]),
    ))
  }

  if (summary.cold.length) {
    out.push('', `### Cold start (${roundsLabel(summary.cold)})`, '')
    out.push('From spawning `node` to the first answered call (a fresh process each time; (a)-(d) all start the same Nuxt server).', '')
    out.push(table(
      ['target', 'median ms', 'min ms', 'max ms', '/a'],
      summary.cold.map(row => [label(row.target), count(row.ms), count(row.min), count(row.max), fixed(row.ratio.a)]),
    ))
  }

  const fanoutLabels: Record<string, string> = {
    'c-nuxt': 'nuxt-orpc (redis publisher; its client)',
    'e': 'Socket.IO 4 (redis adapter; socket.io-client)',
    'ws': 'raw ws send (1 process, no Redis)',
  }
  const fanoutLabel = (key: string) => fanoutLabels[key] ?? label(key)
  for (const pattern of [...new Set(summary.fanout.map(row => row.pattern))]) {
    const rows = summary.fanout.filter(row => row.pattern === pattern)
    const title = rows[0]!.title
    out.push('', `### ${title[0]!.toUpperCase()}${title.slice(1)} (${roundsLabel(rows)})`, '')
    out.push('A delivery\'s latency runs from the publish call\'s start (on instance 1) to the event in the subscriber\'s load process; p50 and p99 are medians of the rounds\', max the largest. deliveries/s: the measured publishes\' deliveries over the sum of their times until their last delivery. server us/delivery: all instances\' CPU over all deliveries. Memory: server heap (after gc) and RSS growth per subscriber. xe: deliveries/s over Socket.IO\'s (higher is better); p99/e: p99 over Socket.IO\'s (lower is better); CPU/ws: server us/delivery over the raw ws send\'s (lower is better); medians of per-round ratios. The raw ws baseline runs one process without Redis whatever the layout.', '')
    out.push(table(
      ['target', 'delivered', 'deliveries/s', 'p50 ms', 'p99 ms', 'max ms', 'publish call p50 ms', 'server us/delivery', 'client us/delivery', 'heap KB/sub', 'RSS KB/sub', 'xe', 'p99/e', 'CPU/ws'],
      rows.map(row => [
        fanoutLabel(row.target) + (row.errors ? ` (${row.errors} errors)` : ''),
        `${row.all.delivered.toLocaleString('en')}/${row.all.expected.toLocaleString('en')}${row.all.delivered < row.all.expected ? ' (MISSING)' : ''}`,
        count(row.deliveriesPerSecond),
        fixed(row.all.p50),
        fixed(row.all.p99),
        fixed(row.all.max),
        fixed(row.publishCallP50),
        fixed(row.serverCpuUsPerDeliveryAll, 1),
        fixed(row.clientCpuUsPerDelivery, 1),
        kilobytes(row.heapPerSubscriber),
        kilobytes(row.rssPerSubscriber),
        fixed(row.ratio.perSecondE),
        fixed(row.ratio.p99E),
        fixed(row.ratio.serverCpuWs),
      ]),
    ))
    out.push('')
    const latencyCells = (name: string, latency: FanoutLatencyRow) => [
      name,
      `${latency.delivered.toLocaleString('en')}/${latency.expected.toLocaleString('en')}${latency.delivered < latency.expected ? ' (MISSING)' : ''}`,
      fixed(latency.p50),
      fixed(latency.p99),
      fixed(latency.max),
    ]
    out.push(table(
      ['target', 'subscribers', 'delivered', 'p50 ms', 'p99 ms', 'max ms'],
      rows.flatMap((row) => {
        const near = row.otherInstance ? row.subscribers / 2 : row.subscribers
        const groups: Array<[string, FanoutLatencyRow]> = [[`${near.toLocaleString('en')} on ${row.instances === 1 ? 'the one instance' : 'instance 1, the publishing one'}`, row.sameInstance]]
        if (row.otherInstance) groups.push([`${(row.subscribers - near).toLocaleString('en')} on instance 2, through Redis`, row.otherInstance])
        return groups.map(([name, latency]) => [fanoutLabel(row.target), ...latencyCells(name, latency)])
      }),
    ))
    out.push('')
    for (const row of rows) {
      const exact = row.missing || row.duplicates || row.errors
        ? `**delivery was NOT exact: ${row.missing} missing, ${row.duplicates} duplicated, ${row.errors} errors (warm-ups included)**`
        : 'every delivery arrived exactly once (warm-ups included)'
      const perInstance = row.serverCpuUsPerDelivery.length > 1
        ? `; server us/delivery by instance ${row.serverCpuUsPerDelivery.map(value => fixed(value, 1)).join(' / ')} (instance 1 with the publish calls)`
        : ''
      out.push(`- ${fanoutLabel(row.target)}: ${exact}; the first 1% of deliveries within ${fixed(row.all.p1)} ms (p1), and until the last subscriber had a publish ${fixed(row.lastDeliveryP50)} ms median, ${fixed(row.lastDeliveryMax)} ms slowest; publish call p99 ${fixed(row.publishCallP99)} ms${perInstance}; subscribing all ${row.subscribers.toLocaleString('en')} took ${fixed(row.subscribeSeconds, 1)} s; clock skew at most ${fixed(row.clockSkewMs, 3)} ms; ${row.reconnects} reconnected socket(s)${row.reconnects ? ' (RECONNECTED)' : ''}.`)
    }
  }

  if (summary.goals.length) {
    out.push('', '### The issue\'s targets', '')
    out.push(table(
      ['target', 'pattern', 'measured (median of per-round ratios)', 'met'],
      summary.goals.map(goal => [goal.goal, goal.pattern, goal.measured, goal.pass === null ? 'n/a' : goal.pass ? 'yes' : 'no']),
    ))
  }
  return out.join('\n')
}
