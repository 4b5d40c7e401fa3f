// What the orchestrator (run.ts) and the load process (client.ts) agree on: targets, patterns, jobs, results.

/** The client library that drives a target. */
export type ClientKind = 'raw' | 'orpc' | 'nuxt' | 'http' | 'socketio'

/**
 * Where a target is served: the Nuxt fixture (a-d), the Socket.IO process (e), or the fan-out's plain `ws`
 * process (its baseline; fan-out jobs start their own servers, see bench/fanout.ts).
 */
export type ServerKind = 'nuxt' | 'socketio' | 'ws'

export interface Target {
  /** Stable id in results and on the command line (`--targets a,c-nuxt`). */
  key: string
  /** The issue's letter: a raw echo, b bare oRPC crossws, c nuxt-orpc, d oRPC over HTTP, e Socket.IO. */
  letter: 'a' | 'b' | 'c' | 'd' | 'e'
  client: ClientKind
  server: ServerKind
  label: string
}

export const targets: Target[] = [
  { key: 'a', letter: 'a', client: 'raw', server: 'nuxt', label: '(a) raw crossws echo' },
  { key: 'b-orpc', letter: 'b', client: 'orpc', server: 'nuxt', label: '(b) oRPC crossws, bare; RPCLink' },
  { key: 'b-nuxt', letter: 'b', client: 'nuxt', server: 'nuxt', label: '(b) oRPC crossws, bare; nuxt-orpc client' },
  { key: 'c-orpc', letter: 'c', client: 'orpc', server: 'nuxt', label: '(c) nuxt-orpc; RPCLink' },
  { key: 'c-nuxt', letter: 'c', client: 'nuxt', server: 'nuxt', label: '(c) nuxt-orpc; nuxt-orpc client' },
  { key: 'd', letter: 'd', client: 'http', server: 'nuxt', label: '(d) oRPC over HTTP (node adapter); RPCLink' },
  { key: 'd-nuxt', letter: 'd', client: 'http', server: 'nuxt', label: '(d) nuxt-orpc over HTTP (its fallback route); nuxt-orpc client' },
  { key: 'e', letter: 'e', client: 'socketio', server: 'socketio', label: '(e) Socket.IO 4 ack echo' },
  // Fan-out only: the baseline of server CPU per delivery, a plain `ws` server writing nuxt-orpc's event frame.
  { key: 'ws', letter: 'a', client: 'raw', server: 'ws', label: 'raw ws send (fan-out baseline)' },
]

/** The fan-out patterns' targets: nuxt-orpc with its own client, Socket.IO with its Redis adapter, raw `ws`. */
export const fanoutTargetKeys = ['c-nuxt', 'e', 'ws']

/** Idle connections are opened the way each server's own client opens them; the client kind matters no further. */
export const idleTargetKeys = ['a', 'b-orpc', 'c-nuxt', 'e']

export type PatternSpec
  = | { kind: 'sequential', calls: number, warmupCalls: number }
    | { kind: 'concurrent', callers: number, callsEach: number, sockets: number, warmupCallsEach: number, repeatForMs: number }
    | { kind: 'sustained', clients: number, durationMs: number, warmupMs: number }
    | { kind: 'paced', sockets: number, rate: number, durationMs: number, warmupMs: number }
    | { kind: 'stream', events: number, warmupEvents: number }
    | { kind: 'idle', connections: number, holdMs: number }
    | { kind: 'cold' }
    /**
     * `instances` servers share Redis (the raw `ws` baseline: one server, no Redis); each has
     * `subscribersPerInstance` subscribers, split evenly over `loadProcessesPerInstance` load processes of their own.
     */
    | { kind: 'fanout', instances: number, subscribersPerInstance: number, loadProcessesPerInstance: number, publishes: number, warmupPublishes: number, gapMs: number }

export interface Pattern {
  id: string
  title: string
  spec: PatternSpec
  targetKeys: string[]
}

const allKeys = targets.filter(target => target.server !== 'ws').map(target => target.key)

/** The issue's patterns; `quick` shrinks every count to a smoke test that finishes in seconds. */
export function definePatterns(quick: boolean, sustainedSeconds: number): Pattern[] {
  const calls = quick ? 200 : 5000
  const callers = quick ? 10 : 100
  const callsEach = quick ? 10 : 50
  // One block of 100 callers x 50 calls lasts 0.1 to 0.7 s over WebSockets here: too short to time against this
  // machine's noise (per-round ratios spread from 0.59 to 2.3 in two runs). A job repeats the block back to back
  // for this long.
  const repeatForMs = quick ? 0 : 2000
  const clients = quick ? 8 : 64
  const durationMs = quick ? 500 : sustainedSeconds * 1000
  const events = quick ? 2000 : 100_000
  const pacedRate = quick ? 1000 : 5000
  const pacedMs = quick ? 500 : 5000
  const idleCounts = quick ? [100] : [1000, 10_000]
  const fanoutPerInstance = quick ? 50 : 500
  const fanoutPublishes = quick ? 10 : 50
  // The one-instance layout: 10,000 subscribers (--quick: 1,000), fewer publishes, as each reaches 10x as many.
  const fanoutSingle = quick ? 1000 : 10_000
  const fanoutSinglePublishes = quick ? 5 : 20
  return [
    {
      id: 'sequential',
      title: `${calls.toLocaleString('en')} sequential calls, 1 socket`,
      spec: { kind: 'sequential', calls, warmupCalls: Math.ceil(calls / 10) },
      targetKeys: allKeys,
    },
    {
      id: 'concurrent-1',
      title: `${callers} callers x ${callsEach} calls, 1 socket${repeatForMs ? `, repeated for ${repeatForMs / 1000} s` : ''}`,
      spec: { kind: 'concurrent', callers, callsEach, sockets: 1, warmupCallsEach: Math.ceil(callsEach / 10), repeatForMs },
      targetKeys: allKeys,
    },
    {
      id: 'concurrent-many',
      title: `${callers} callers x ${callsEach} calls, ${callers} sockets${repeatForMs ? `, repeated for ${repeatForMs / 1000} s` : ''}`,
      spec: { kind: 'concurrent', callers, callsEach, sockets: callers, warmupCallsEach: Math.ceil(callsEach / 10), repeatForMs },
      targetKeys: allKeys,
    },
    {
      id: 'sustained',
      title: `${clients} clients sustained for ${durationMs / 1000} s`,
      spec: { kind: 'sustained', clients, durationMs, warmupMs: Math.min(1000, durationMs / 5) },
      targetKeys: allKeys,
    },
    {
      // Not one of the issue's patterns: every target gets the same offered load, so server CPU per call is
      // compared at equal batching (in the closed-loop patterns a faster client also makes the server cheaper).
      id: 'paced',
      title: `${callers} sockets at ${pacedRate.toLocaleString('en')} calls/s for ${pacedMs / 1000} s`,
      spec: { kind: 'paced', sockets: callers, rate: pacedRate, durationMs: pacedMs, warmupMs: Math.min(1000, pacedMs / 5) },
      targetKeys: allKeys,
    },
    {
      id: 'stream',
      title: `1 stream of ${events.toLocaleString('en')} events`,
      spec: { kind: 'stream', events, warmupEvents: Math.ceil(events / 20) },
      targetKeys: allKeys,
    },
    ...idleCounts.map((connections): Pattern => ({
      id: `idle-${connections}`,
      title: `${connections.toLocaleString('en')} idle connections`,
      spec: { kind: 'idle', connections, holdMs: quick ? 200 : 2000 },
      targetKeys: idleTargetKeys,
    })),
    {
      id: 'cold',
      title: 'cold start: process start to first answered call',
      spec: { kind: 'cold' },
      targetKeys: allKeys,
    },
    {
      // nuxt-orpc's Redis publisher against Socket.IO's Redis adapter, on two server instances sharing Redis,
      // each with its own client; and a raw `ws` send of the same frames (one process, no Redis) for CPU.
      // `--patterns fanout` runs both fan-out layouts.
      id: 'fanout',
      title: `fan-out: 1 publish to ${(2 * fanoutPerInstance).toLocaleString('en')} subscribers on 2 instances through Redis, x${fanoutPublishes}`,
      spec: { kind: 'fanout', instances: 2, subscribersPerInstance: fanoutPerInstance, loadProcessesPerInstance: 1, publishes: fanoutPublishes, warmupPublishes: quick ? 3 : 10, gapMs: quick ? 20 : 100 },
      targetKeys: fanoutTargetKeys,
    },
    {
      id: 'fanout-single',
      title: `fan-out: 1 publish to ${fanoutSingle.toLocaleString('en')} subscribers on 1 instance through Redis, x${fanoutSinglePublishes}`,
      spec: { kind: 'fanout', instances: 1, subscribersPerInstance: fanoutSingle, loadProcessesPerInstance: 2, publishes: fanoutSinglePublishes, warmupPublishes: quick ? 2 : 5, gapMs: quick ? 20 : 100 },
      targetKeys: fanoutTargetKeys,
    },
  ]
}

/** Patterns whose unit is a call (or an event): the throughput table. */
export const isThroughputPattern = (spec: PatternSpec) => !['idle', 'cold', 'fanout'].includes(spec.kind)

/** One measurement, sent to the load process. */
export interface Job {
  pattern: Pattern
  target: Target
  /** Base URL (http://127.0.0.1:port) of the server that serves the target. */
  serverUrl: string
  /** Cold start: when the server process was spawned (performance.timeOrigin + performance.now()). */
  spawnedAt?: number
}

export interface ServerStats {
  /** Null on workerd (Cloudflare), which does not tell a Worker its CPU time; bench/client.ts reads it so. */
  cpu: { user: number, system: number }
  /** Voluntary context switches of the server process so far: how often it slept waiting for work. */
  sleeps: number
  memory: { rss: number, heapUsed: number, heapTotal: number, external: number }
  /** Open TCP sockets of the server process. */
  sockets: number
}

export interface ThroughputResult {
  kind: 'throughput'
  /** Calls (or stream events) measured. */
  operations: number
  seconds: number
  perSecond: number
  /** Latency of one call in ms (not measured for streams). */
  p50: number | null
  p99: number | null
  /** CPU time of the whole server process (user + system) during the run, per operation; null where not read. */
  serverCpuUs: number | null
  /** The user-mode part of it (absent in results recorded before it was). */
  serverUserUs?: number
  /** How often the server process slept waiting for work, per operation (absent in older results). */
  serverSleepsPerCall?: number
  /** CPU time of the load process during the run, per operation. */
  clientCpuUs: number
  errors: number
}

export interface IdleResult {
  kind: 'idle'
  requested: number
  opened: number
  /** Still open on the client after the hold time. */
  held: number
  /** Open TCP sockets the server counted, minus its count before. */
  serverSockets: number
  heapPerConnection: number
  rssPerConnection: number
  /** How fast the load process opened them (handshakes/s, 64 at a time). */
  opensPerSecond: number
}

export interface ColdResult {
  kind: 'cold'
  /** Process spawn to the first answered call, ms. */
  ms: number
  attempts: number
}

/** Latencies of deliveries, publish call start to the event in the subscriber, ms. */
export interface DeliveryLatency {
  /** Subscribers x measured publishes. */
  expected: number
  /** Distinct (subscriber, publish) pairs that arrived. */
  delivered: number
  /** How soon the first deliveries arrive (absent in results recorded before it was). */
  p1?: number | null
  p50: number | null
  p99: number | null
  max: number | null
}

export interface FanoutResult {
  kind: 'fanout'
  /** Server instances (absent in results recorded before the one-instance layout: 2). */
  instances?: number
  subscribers: number
  /** Measured publishes (warm-ups not counted). */
  publishes: number
  all: DeliveryLatency
  /** Subscribers of instance 1, where the publish procedure runs. */
  sameInstance: DeliveryLatency
  /** Subscribers of instance 2: the event went through Redis to another process; null on one instance. */
  otherInstance: DeliveryLatency | null
  /** Expected deliveries that never arrived, warm-ups included. */
  missing: number
  /** Deliveries that arrived more than once, warm-ups included. */
  duplicates: number
  /** Per publish, until the last of all subscribers had it: median and max over the measured publishes, ms. */
  lastDelivery: { p50: number | null, max: number | null }
  /**
   * Deliveries of the measured publishes over the sum, over those publishes, of the time from the publish
   * call's start to its last delivery: how fast one publish reaches everybody (absent in older results).
   */
  deliveriesPerSecond?: number | null
  /** The publish call's round trip (procedure on instance 1, XADD included), ms. */
  publishCall: { p50: number | null, p99: number | null }
  /** CPU (user + system) of each instance over the measured publishes, per delivery it made, us. */
  serverCpuUsPerDelivery: number[]
  /** CPU of all instances over the measured publishes, per delivery of all of them, us (absent in older results). */
  serverCpuUsPerDeliveryAll?: number
  /**
   * Growth of the instances' heap (after gc) and RSS from before the subscribers connected to when every
   * subscription was live, summed over the instances, per subscriber, bytes (absent in older results).
   */
  memoryPerSubscriber?: { heap: number, rss: number }
  /** CPU of the two subscriber processes over the measured publishes, per delivery they received, us. */
  clientCpuUsPerDelivery: number
  /** Seconds to open and subscribe every subscriber. */
  subscribeSeconds: number
  /** How far the load processes' clocks can be apart: measured offset plus its uncertainty, ms. */
  clockSkewMs: number
  /** Subscriber sockets that dropped and were reopened by the client (their streams resumed). */
  reconnects: number
  /** Failed publish calls and subscriptions that ended or failed, with the first messages. */
  errors: number
  errorSamples: string[]
}

export type JobResult = ThroughputResult | IdleResult | ColdResult | FanoutResult

/** Messages from the orchestrator to the load process and back. */
export type ToClient = { type: 'job', id: number, job: Job } | { type: 'settle', id: number, quietMs: number } | { type: 'exit' }
export type FromClient
  = | { type: 'ready' }
    | { type: 'result', id: number, result: JobResult }
    | { type: 'settled', id: number, waitedMs: number }
    | { type: 'error', id: number, message: string }

/** How a fan-out load process talks to its server: nuxt-orpc's client, socket.io-client, or plain `ws`. */
export type FanoutClientKind = 'nuxt' | 'socketio' | 'ws'

/** Messages from the orchestrator to a fan-out load process (bench/fanout-client.ts) and back. */
export type FanoutRequest
  = | { type: 'subscribe', client: FanoutClientKind, serverUrl: string, channel: string, count: number, publishes: number }
    | { type: 'publish', client: FanoutClientKind, serverUrl: string, channel: string, seq: number }
    | { type: 'clock' }
    | { type: 'cpu' }
    | { type: 'collect' }
    | { type: 'close' }

/** What a subscriber process saw, by measured-or-warm-up publish (index = seq). */
export interface SubscriberReport {
  /** Latencies of the deliveries that arrived (first arrival per subscriber), ms. */
  latencies: number[][]
  /** Subscribers that never got the publish. */
  missing: number[]
  /** Deliveries that came more than once. */
  duplicates: number[]
  reconnects: number
  errors: number
  errorSamples: string[]
}

export type FanoutAnswer
  = | { type: 'subscribed', opened: number }
    | { type: 'published', callMs: number }
    | { type: 'clock', now: number }
    | { type: 'cpu', micros: number }
    | { type: 'collected', report: SubscriberReport }
    | { type: 'closed' }

/** The answer each request gets. */
export interface FanoutAnswerTypes {
  subscribe: 'subscribed'
  publish: 'published'
  clock: 'clock'
  cpu: 'cpu'
  collect: 'collected'
  close: 'closed'
}

export type ToFanoutClient = { type: 'request', id: number, request: FanoutRequest } | { type: 'exit' }
export type FromFanoutClient
  = | { type: 'ready' }
    | { type: 'answer', id: number, answer: FanoutAnswer }
    | { type: 'error', id: number, message: string }
    /** Every subscriber of this process has the event (probes: every subscriber has had one). */
    | { type: 'delivered', seq: number }
    | { type: 'live' }

/**
 * ws's options for a handshake like a browser's: the page's Origin, and the offered subprotocols joined with
 * ", " (ws joins them with "," alone, which Deno does not split: see the README's runtime notes).
 */
export function browserLike(origin: string, protocols: readonly string[] = []) {
  return {
    origin,
    finishRequest: (request: { setHeader: (name: string, value: string) => void, end: () => void }) => {
      if (protocols.length) request.setHeader('Sec-WebSocket-Protocol', protocols.join(', '))
      request.end()
    },
  }
}
