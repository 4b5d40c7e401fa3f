import type { EncodedMessage } from '@orpc/standard-server-peer'
import type { RpcServerLimits } from '../../shared/options'
import { binaryDelimiter } from '../../shared/protocol'
import type { RpcPublisher } from '../publisher/core'
import { subscriberOf } from '../publisher/core'

// What the DevTools tab shows, gathered in development only. Every call into this file sits behind
// `import.meta.dev`, which Nitro replaces with `false` in a production build: the branches and this file are
// left out of it (test/basic.test.ts checks the built output), and the hot path pays nothing.
//
// It reads the connection's frames as they cross the wire (oRPC's message format), so the plain-call path,
// oRPC's stock peer and direct publisher writes are seen alike, and what is shown is what was sent.

/** Characters of a frame kept for "payload on demand"; the rest is cut. */
const payloadLimit = 32_768
const recentCallLimit = 200
const closedConnectionLimit = 50
const channelLimit = 500

export interface InspectedConnection {
  id: string
  origin: string | undefined
  remoteAddress: string | undefined
  openedAt: number
  closedAt: number | undefined
  closeCode: number | undefined
  closeReason: string | undefined
  bytesIn: number
  bytesOut: number
  /** Calls of this connection that have not ended (streams included). */
  callsInFlight: number
}

export type InspectedCallState = 'running' | 'streaming' | 'done' | 'error' | 'aborted' | 'closed'

export interface InspectedCall {
  /** Unique in this process: the key of its payload. */
  seq: number
  connection: string
  /** The call id on its connection. */
  id: string
  procedure: string
  startedAt: number
  /** Milliseconds to its response (a stream's first frame), then to its end for a stream. */
  duration: number | undefined
  state: InspectedCallState
  status: number | undefined
  /** The error code of a failed call (`UNAUTHORIZED`, `BAD_REQUEST`, ...). */
  code: string | undefined
  inputBytes: number
  outputBytes: number
  /** Events a stream sent (`message` events). */
  events: number
}

export interface InspectedChannel {
  name: string
  /** Subscriptions of this instance. */
  subscribers: number
  /** Events published from this instance. */
  published: number
  lastPublishedAt: number | undefined
}

export interface InspectorState {
  now: number
  connections: InspectedConnection[]
  calls: InspectedCall[]
  channels: InspectedChannel[]
  limits: Array<RpcServerLimits & { maxMessageBytes: number, allowedOrigins: readonly string[], allowedHosts: readonly string[] }>
}

interface CallRecord extends InspectedCall {
  started: number
  /** Whether it is among the recent calls, whose frames are kept. */
  kept: boolean
  input: string
  output: string
}

interface ConnectionRecord extends Omit<InspectedConnection, 'callsInFlight'> {
  calls: Map<string, CallRecord>
}

interface WireFrame {
  i?: unknown
  t?: unknown
  p?: { u?: unknown, s?: unknown, h?: Record<string, unknown>, b?: unknown, e?: unknown, d?: unknown } | null
}

const textDecoder = new TextDecoder()
const textEncoder = new TextEncoder()

const byteLength = (data: string | Uint8Array) => typeof data === 'string' ? textEncoder.encode(data).byteLength : data.byteLength

/** The JSON part of a frame (a binary frame carries its blob after a delimiter); undefined when it is not JSON. */
function parseFrame(data: string | Uint8Array): { text: string, frame: WireFrame } | undefined {
  let text: string
  if (typeof data === 'string') {
    text = data
  }
  else {
    const end = data.indexOf(binaryDelimiter)
    text = textDecoder.decode(end === -1 ? data : data.subarray(0, end))
  }
  try {
    const frame = JSON.parse(text) as unknown
    return typeof frame === 'object' && frame !== null && 'i' in frame ? { text, frame: frame as WireFrame } : undefined
  }
  catch {
    return undefined
  }
}

/** `/chat/send` (or `orpc://host/chat/send`) as the procedure's path, `chat.send`. */
function procedureOf(url: unknown): string {
  if (typeof url !== 'string') return '?'
  const path = url.replace(/^[a-z][\w+.-]*:(?:\/\/[^/]*)?/i, '').split(/[?#]/)[0] ?? ''
  return path.split('/').filter(Boolean).map(decodeSegment).join('.') || '?'
}

/** A client may send any URL: an escape that does not decode is shown as sent. */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment)
  }
  catch {
    return segment
  }
}

/** The code of an error as oRPC's RPC serializer writes it (`{ json: { code, ... } }`). */
function errorCodeOf(body: unknown): string | undefined {
  const code = (body as { json?: { code?: unknown } } | null | undefined)?.json?.code
  return typeof code === 'string' ? code : undefined
}

/** A frame's JSON, cut at `payloadLimit` characters (a file's bytes after it are not kept). */
const clip = (text: string) => text.length > payloadLimit ? `${text.slice(0, payloadLimit)}… (${text.length - payloadLimit} more characters)` : text

export class RpcInspector {
  private readonly connections = new Map<string, ConnectionRecord>()
  private readonly closedConnections: ConnectionRecord[] = []
  private readonly recentCalls: CallRecord[] = []
  private readonly channels = new Map<string, InspectedChannel>()
  private readonly routes: InspectorState['limits'] = []
  private nextSeq = 1

  route(limits: InspectorState['limits'][number]) {
    this.routes.push(limits)
  }

  opened(id: string, origin: string | undefined, remoteAddress: string | undefined) {
    this.connections.set(id, {
      id,
      origin,
      remoteAddress,
      openedAt: Date.now(),
      closedAt: undefined,
      closeCode: undefined,
      closeReason: undefined,
      bytesIn: 0,
      bytesOut: 0,
      calls: new Map(),
    })
  }

  closed(id: string, code: number | undefined, reason: string | undefined) {
    const connection = this.connections.get(id)
    if (!connection) return
    this.connections.delete(id)
    connection.closedAt = Date.now()
    connection.closeCode = code
    connection.closeReason = reason || undefined
    for (const call of connection.calls.values()) this.end(call, 'closed')
    connection.calls.clear()
    this.closedConnections.push(connection)
    if (this.closedConnections.length > closedConnectionLimit) this.closedConnections.shift()
  }

  /** A frame from the client (the client's pings are not counted). */
  received(id: string, data: string | Uint8Array) {
    // Whatever a client sends, reading it here must not change what the server does with it.
    try {
      this.read(id, data)
    }
    catch (error) {
      console.warn('[nuxt-orpc] The DevTools inspector could not read a frame:', error)
    }
  }

  private read(id: string, data: string | Uint8Array) {
    const connection = this.connections.get(id)
    if (!connection) return
    const bytes = byteLength(data)
    connection.bytesIn += bytes
    const parsed = parseFrame(data)
    if (!parsed) return
    const { frame, text } = parsed
    const callId = String(frame.i)
    const call = connection.calls.get(callId)
    if (frame.t === undefined || frame.t === 1) {
      if (call) return
      const record: CallRecord = {
        seq: this.nextSeq++,
        connection: id,
        id: callId,
        procedure: procedureOf(frame.p?.u),
        startedAt: Date.now(),
        started: performance.now(),
        duration: undefined,
        state: 'running',
        status: undefined,
        code: undefined,
        inputBytes: bytes,
        outputBytes: 0,
        events: 0,
        kept: true,
        input: clip(text),
        output: '',
      }
      connection.calls.set(callId, record)
      this.recentCalls.push(record)
      const dropped = this.recentCalls.length > recentCallLimit ? this.recentCalls.shift() : undefined
      // A stream still open stays listed (see `state`); its payload, no longer asked for, goes.
      if (dropped) {
        dropped.kept = false
        dropped.input = dropped.output = ''
      }
    }
    else if (call && frame.t === 3) {
      call.inputBytes += bytes
    }
    else if (call && frame.t === 4) {
      this.end(call, 'aborted')
      connection.calls.delete(callId)
    }
  }

  /** A frame to the client (the server's heartbeat frames are not counted). */
  sent(id: string, encoded: EncodedMessage) {
    try {
      this.write(id, encoded)
    }
    catch (error) {
      console.warn('[nuxt-orpc] The DevTools inspector could not read a frame:', error)
    }
  }

  private write(id: string, encoded: EncodedMessage) {
    const connection = this.connections.get(id)
    if (!connection) return
    const data = typeof encoded === 'string' || encoded instanceof Uint8Array ? encoded : new Uint8Array(encoded)
    const bytes = byteLength(data)
    connection.bytesOut += bytes
    const parsed = parseFrame(data)
    const call = parsed && connection.calls.get(String(parsed.frame.i))
    if (!parsed || !call) return
    const { frame, text } = parsed
    call.outputBytes += bytes
    if (frame.t === undefined || frame.t === 2) {
      const status = typeof frame.p?.s === 'number' ? frame.p.s : 200
      call.status = status
      if (call.kept) call.output = clip(text)
      call.duration = performance.now() - call.started
      if (String(frame.p?.h?.['content-type'] ?? '').startsWith('text/event-stream')) {
        call.state = 'streaming'
        return
      }
      if (status >= 400) call.code = errorCodeOf(frame.p?.b) ?? String(status)
      this.end(call, status >= 400 ? 'error' : 'done')
    }
    else if (frame.t === 3) {
      const event = frame.p?.e
      if (call.kept) call.output = clip(text)
      if (event === 'message') {
        call.events++
        return
      }
      if (event === 'error') call.code = errorCodeOf(frame.p?.d) ?? 'INTERNAL_SERVER_ERROR'
      this.end(call, event === 'error' ? 'error' : 'done')
    }
    else if (frame.t === 4) {
      this.end(call, 'aborted')
    }
    if (call.state !== 'running' && call.state !== 'streaming') connection.calls.delete(call.id)
  }

  private end(call: CallRecord, state: InspectedCallState) {
    if (call.state !== 'running' && call.state !== 'streaming') return
    call.state = state
    call.duration = performance.now() - call.started
  }

  subscribed(name: string) {
    this.channel(name).subscribers++
  }

  unsubscribed(name: string) {
    const channel = this.channels.get(name)
    if (channel) channel.subscribers--
  }

  published(name: string) {
    const channel = this.channel(name)
    channel.published++
    channel.lastPublishedAt = Date.now()
  }

  private channel(name: string): InspectedChannel {
    let channel = this.channels.get(name)
    if (channel) return channel
    // Channel names often come from input: the table keeps the channels with subscribers, and the last idle ones.
    if (this.channels.size >= channelLimit) {
      for (const [key, idle] of this.channels) {
        if (idle.subscribers <= 0) {
          this.channels.delete(key)
          break
        }
      }
    }
    channel = { name, subscribers: 0, published: 0, lastPublishedAt: undefined }
    this.channels.set(name, channel)
    return channel
  }

  state(): InspectorState {
    const connections = [...this.connections.values(), ...[...this.closedConnections].reverse()]
    return {
      now: Date.now(),
      connections: connections.map(({ calls, ...connection }) => ({ ...connection, callsInFlight: calls.size })),
      calls: this.listedCalls().map(({ started: _started, kept: _kept, input: _input, output: _output, ...call }) => ({ ...call })),
      channels: [...this.channels.values()].map(channel => ({ ...channel })),
      limits: this.routes,
    }
  }

  /** The recent calls and every call still in flight (a long stream outlives the recent list), newest first. */
  private listedCalls(): CallRecord[] {
    const listed = new Set(this.recentCalls)
    for (const connection of this.connections.values()) {
      for (const call of connection.calls.values()) listed.add(call)
    }
    return [...listed].sort((a, b) => b.seq - a.seq)
  }

  /** What a recent call sent and got (its first frame, its last one), cut at `payloadLimit` characters. */
  payload(seq: number): { input: string, output: string } | undefined {
    const call = this.recentCalls.find(record => record.seq === seq)
    return call && { input: call.input, output: call.output }
  }
}

/** The inspector of this process (development only: see the top of this file). */
export const inspector = /* @__PURE__ */ new RpcInspector()

/**
 * The publisher, with its channels counted by the inspector. Everything else (the driver's symbol-keyed parts
 * that presence reads) is the publisher's own, through the prototype.
 */
export function inspectPublisher<P extends RpcPublisher>(publisher: P): P {
  const inspected = Object.create(publisher) as P
  inspected.publish = (channel, payload) => {
    const published = publisher.publish(channel, payload)
    published.then(() => inspector.published(channel), () => {})
    return published
  }
  inspected.subscribe = (channel, options) => {
    const iterator = publisher.subscribe(channel, options)
    const subscriber = subscriberOf(iterator)
    if (subscriber && !subscriber.isEnded) {
      inspector.subscribed(channel)
      subscriber.onEnd(() => inspector.unsubscribed(channel))
    }
    return iterator
  }
  return inspected
}
