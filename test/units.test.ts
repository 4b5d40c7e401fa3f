import type { IncomingMessage } from 'node:http'
import { types } from 'node:util'
import { ORPCError } from '@orpc/server'
import type { Peer } from 'crossws'
import { createError } from 'h3'
import { reactive, readonly } from 'vue'
import { ErrorEvent, getEventMeta } from '@orpc/standard-server'
import type { MockInstance } from 'vitest'
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { createRpcColadaUtils } from '../src/runtime/app/query/colada-utils'
import { createRpcClient, errorForClose, isRefusalCloseCode } from '../src/runtime/client/connection'
import type { PlainStream } from '../src/runtime/client/plain-calls'
import { eventMetaKey, eventValue, PlainCallClient } from '../src/runtime/client/plain-calls'
import type { AdmissionLimits, AdmissionSlot } from '../src/runtime/server/admission'
import { Admission, isRefusal } from '../src/runtime/server/admission'
import type { RpcRefusal } from '../src/runtime/server/context'
import { closeCodeForStatus, errorFromRefusal, refusalFromError } from '../src/runtime/server/context'
import { createRpcWebSocketHooks, selectSubprotocol } from '../src/runtime/server/handler'
import { ConnectionOutput } from '../src/runtime/server/output'
import type { RpcRoute } from '../src/runtime/server/socket'
import { RpcInspector } from '../src/runtime/server/devtools/inspector'
import { BucketsByClient, TokenBucket } from '../src/runtime/server/limits'
import { binaryDelimiter, heartbeatFrame, refusalFrame, refusalOf } from '../src/runtime/shared/protocol'
import { isValidCloseCode, toCloseReason } from '../src/runtime/server/registry'
import type { NodeWebSocket } from '../src/runtime/server/transports/node'
import { nodeTransport, probeNodeShapes } from '../src/runtime/server/transports/node'
import { applyPresenceEvent } from '../src/runtime/shared/presence'

// The pure pieces that the e2e suites cover only from the outside, each with the smallest fake it needs.

const byteLength = (text: string) => new TextEncoder().encode(text).byteLength

describe('TokenBucket', () => {
  beforeEach(() => {
    vi.useFakeTimers()
    vi.setSystemTime(new Date('2025-01-01T00:00:00Z'))
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  const takeAll = (bucket: TokenBucket) => {
    let taken = 0
    while (bucket.take()) taken++
    return taken
  }

  it('starts full: gives capacity tokens at once, then refuses', () => {
    const bucket = new TokenBucket(5, 1000)
    expect(takeAll(bucket)).toBe(5)
    expect(bucket.take()).toBe(false)
  })

  it('refills at ratePerWindow per windowMs, continuously', () => {
    const bucket = new TokenBucket(10, 1000)
    takeAll(bucket)
    vi.advanceTimersByTime(99)
    expect(bucket.take()).toBe(false)
    vi.advanceTimersByTime(1)
    expect(bucket.take()).toBe(true)
    expect(bucket.take()).toBe(false)
    vi.advanceTimersByTime(500)
    expect(takeAll(bucket)).toBe(5)
  })

  it('refills at a rate other than its capacity', () => {
    // A burst of 2, 100 tokens a second: one every 10 ms.
    const bucket = new TokenBucket(2, 1000, 100)
    expect(takeAll(bucket)).toBe(2)
    vi.advanceTimersByTime(30)
    expect(takeAll(bucket)).toBe(2)
    vi.advanceTimersByTime(10)
    expect(takeAll(bucket)).toBe(1)
  })

  it('never holds more than its capacity, however long it waits', () => {
    const bucket = new TokenBucket(3, 1000)
    takeAll(bucket)
    vi.advanceTimersByTime(60_000)
    expect(takeAll(bucket)).toBe(3)
  })

  it('is not drained by a clock set back (NTP): it goes on refilling from there', () => {
    const bucket = new TokenBucket(10, 1000)
    takeAll(bucket)
    vi.setSystemTime(Date.now() - 60_000)
    expect(bucket.take()).toBe(false)
    vi.advanceTimersByTime(100)
    expect(bucket.take()).toBe(true)
  })

  it('keeps fractions of a token between takes', () => {
    const bucket = new TokenBucket(1, 1000)
    takeAll(bucket)
    vi.advanceTimersByTime(600)
    expect(bucket.take()).toBe(false)
    vi.advanceTimersByTime(400)
    expect(bucket.take()).toBe(true)
  })
})

describe('toCloseReason', () => {
  it('keeps a reason of up to 123 bytes as it is', () => {
    expect(toCloseReason('')).toBe('')
    expect(toCloseReason('Session ended')).toBe('Session ended')
    const exact = 'x'.repeat(123)
    expect(toCloseReason(exact)).toBe(exact)
    // 41 three-byte characters: 123 bytes but only 41 UTF-16 units.
    const euros = '€'.repeat(41)
    expect(toCloseReason(euros)).toBe(euros)
  })

  it('cuts a longer reason to 120 bytes plus an ellipsis', () => {
    const reason = toCloseReason('x'.repeat(124))
    expect(reason).toBe('x'.repeat(120) + '...')
    expect(byteLength(reason)).toBe(123)
  })

  it('measures UTF-8 bytes, not UTF-16 units', () => {
    // 42 characters, 126 bytes.
    const reason = toCloseReason('€'.repeat(42))
    expect(reason).toBe('€'.repeat(40) + '...')
    expect(byteLength(reason)).toBeLessThanOrEqual(123)
  })

  it.each([
    ['a two-byte character', 'é', 119],
    ['a three-byte character', '€', 118],
    ['a three-byte character', '€', 119],
    ['a four-byte character', '😀', 117],
    ['a four-byte character', '😀', 118],
    ['a four-byte character', '😀', 119],
  ])('does not cut %s in half (%s after %i ASCII bytes)', (_, character, before) => {
    const reason = toCloseReason('a'.repeat(before) + character.repeat(20))
    expect(reason).toBe('a'.repeat(before) + '...')
    expect(reason).not.toContain('\uFFFD')
    expect(byteLength(reason)).toBeLessThanOrEqual(123)
  })

  it('keeps a multi-byte character that ends exactly at the cut', () => {
    const reason = toCloseReason('a'.repeat(116) + '😀' + 'b'.repeat(10))
    expect(reason).toBe('a'.repeat(116) + '😀...')
    expect(byteLength(reason)).toBe(123)
  })
})

describe('isValidCloseCode', () => {
  it.each([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4401, 4403, 4999])('accepts %i', (code) => {
    expect(isValidCloseCode(code)).toBe(true)
  })

  it.each([0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535, -1])('refuses %i (reserved, or out of range)', (code) => {
    expect(isValidCloseCode(code)).toBe(false)
  })

  it.each([1000.5, 4401.1, Number.NaN, Number.POSITIVE_INFINITY])('refuses a non-integer (%s)', (code) => {
    expect(isValidCloseCode(code)).toBe(false)
  })
})

describe('closeCodeForStatus', () => {
  it('is 4000 plus the HTTP status', () => {
    expect(closeCodeForStatus(401)).toBe(4401)
    expect(closeCodeForStatus(403)).toBe(4403)
    expect(closeCodeForStatus(429)).toBe(4429)
  })

  it('gives a code a server may send for every 4xx status', () => {
    for (let status = 400; status < 500; status++) expect(isValidCloseCode(closeCodeForStatus(status))).toBe(true)
  })
})

describe('refusalFromError', () => {
  let logged: MockInstance<typeof console.error>
  beforeEach(() => {
    logged = vi.spyOn(console, 'error').mockImplementation(() => {})
  })
  afterEach(() => {
    logged.mockRestore()
  })

  it.each<[string, unknown, RpcRefusal]>([
    ['an ORPCError 401', new ORPCError('UNAUTHORIZED', { message: 'Log in first' }), { status: 401, closeCode: 4401, reason: 'Log in first' }],
    ['an ORPCError 403', new ORPCError('FORBIDDEN', { message: 'Admins only' }), { status: 403, closeCode: 4403, reason: 'Admins only' }],
    ['an ORPCError 404 with its default message', new ORPCError('NOT_FOUND'), { status: 404, closeCode: 4404, reason: 'Not Found' }],
    ['an h3 error 401 (statusMessage)', createError({ statusCode: 401, statusMessage: 'Session expired' }), { status: 401, closeCode: 4401, reason: 'Session expired' }],
    ['an h3 error 403 (message)', createError({ statusCode: 403, message: 'Banned' }), { status: 403, closeCode: 4403, reason: 'Banned' }],
    ['an h3 error 400 without a message', createError({ statusCode: 400 }), { status: 400, closeCode: 4400, reason: 'Connection refused' }],
    ['a Response 429', new Response(null, { status: 429, statusText: 'Slow down' }), { status: 429, closeCode: 4429, reason: 'Slow down' }],
    ['a Response 401 without statusText', new Response(null, { status: 401 }), { status: 401, closeCode: 4401, reason: 'Connection refused' }],
  ])('passes %s on to the caller, unlogged', (_, error, refusal) => {
    expect(refusalFromError(error)).toEqual(refusal)
    expect(logged).not.toHaveBeenCalled()
  })

  it('fits a long 4xx message into a close reason', () => {
    const refusal = refusalFromError(new ORPCError('FORBIDDEN', { message: 'é'.repeat(100) }))
    expect(refusal.closeCode).toBe(4403)
    expect(refusal.reason).toBe('é'.repeat(60) + '...')
    expect(byteLength(refusal.reason)).toBeLessThanOrEqual(123)
  })

  it.each<[string, unknown]>([
    ['a plain Error', new Error('database down')],
    ['an ORPCError 500', new ORPCError('INTERNAL_SERVER_ERROR', { message: 'secret detail' })],
    ['an h3 error 503', createError({ statusCode: 503, statusMessage: 'secret detail' })],
    ['a Response 500', new Response(null, { status: 500, statusText: 'secret detail' })],
    ['a Response 302', new Response(null, { status: 302, headers: { location: '/login' } })],
    ['a thrown string', 'nope'],
    ['undefined', undefined],
  ])('refuses %s as a server fault (1011), logged, its message not sent', (_, error) => {
    expect(refusalFromError(error)).toEqual({ status: 500, closeCode: 1011, reason: 'Connection context failed' })
    expect(logged).toHaveBeenCalledOnce()
    expect(logged.mock.calls[0]).toContain(error)
  })
})

describe('errorFromRefusal', () => {
  it.each([
    [401, 'UNAUTHORIZED'],
    [403, 'FORBIDDEN'],
    [400, 'BAD_REQUEST'],
    [429, 'BAD_REQUEST'],
    [500, 'INTERNAL_SERVER_ERROR'],
    [503, 'INTERNAL_SERVER_ERROR'],
  ])('status %i is %s, with the status and the reason kept', (status, code) => {
    const error = errorFromRefusal({ status, closeCode: 4000 + status, reason: 'Because' })
    expect(error).toBeInstanceOf(ORPCError)
    expect(error.code).toBe(code)
    expect(error.status).toBe(status)
    expect(error.message).toBe('Because')
  })

  it('gives an SSR caller the error the context function threw (401 and 403)', () => {
    const unauthorized = errorFromRefusal(refusalFromError(new ORPCError('UNAUTHORIZED', { message: 'Log in first' })))
    expect([unauthorized.code, unauthorized.status, unauthorized.message]).toEqual(['UNAUTHORIZED', 401, 'Log in first'])
    const forbidden = errorFromRefusal(refusalFromError(createError({ statusCode: 403, message: 'Banned' })))
    expect([forbidden.code, forbidden.status, forbidden.message]).toEqual(['FORBIDDEN', 403, 'Banned'])
  })
})

describe('selectSubprotocol', () => {
  const connectionStateKey = Symbol.for('nuxt-orpc.connection')
  /** What ws's `handleProtocols` is given: crossws's Node adapter keeps the upgrade hook's context as `_context`. */
  const upgradeRequest = (context?: Record<PropertyKey, unknown>) => ({ _context: context }) as unknown as IncomingMessage
  const withState = upgradeRequest({ [connectionStateKey]: { accepted: true } })

  it('picks nuxt-orpc when offered on a request that carries nuxt-orpc\'s connection state', () => {
    expect(selectSubprotocol(new Set(['orpc', 'nuxt-orpc']), withState)).toBe('nuxt-orpc')
    expect(selectSubprotocol(new Set(['chat', 'nuxt-orpc']), withState)).toBe('nuxt-orpc')
  })

  it('picks the first offered when the request carries no connection state', () => {
    const offered = new Set(['orpc', 'nuxt-orpc'])
    expect(selectSubprotocol(offered, upgradeRequest())).toBe('orpc')
    expect(selectSubprotocol(offered, upgradeRequest({}))).toBe('orpc')
    expect(selectSubprotocol(offered, upgradeRequest({ [connectionStateKey]: undefined }))).toBe('orpc')
    expect(selectSubprotocol(offered, upgradeRequest({ [Symbol('nuxt-orpc.connection')]: {} }))).toBe('orpc')
  })

  it('picks the first offered when nuxt-orpc is not offered', () => {
    expect(selectSubprotocol(new Set(['orpc']), withState)).toBe('orpc')
    expect(selectSubprotocol(new Set(['chat', 'orpc']), withState)).toBe('chat')
  })

  it('answers false when nothing is offered', () => {
    expect(selectSubprotocol(new Set(), withState)).toBe(false)
    expect(selectSubprotocol(new Set(), upgradeRequest())).toBe(false)
  })
})

describe('errorForClose and isRefusalCloseCode', () => {
  it('4401 is UNAUTHORIZED', () => {
    const error = errorForClose(4401, 'Session ended')
    expect([error.code, error.status, error.message]).toEqual(['UNAUTHORIZED', 401, 'Session ended'])
    expect(error.data).toEqual({ closeCode: 4401, closeReason: 'Session ended' })
    expect(errorForClose(4401, '').message).toBe('Unauthorized')
  })

  it.each([4403, 1008])('%i is FORBIDDEN', (code) => {
    const error = errorForClose(code, 'Origin not allowed')
    expect([error.code, error.status, error.message]).toEqual(['FORBIDDEN', 403, 'Origin not allowed'])
    expect(error.data).toEqual({ closeCode: code, closeReason: 'Origin not allowed' })
    expect(errorForClose(code, '').message).toBe('Forbidden')
  })

  it.each([1000, 1001, 1006, 1011, 1013, 4429, 4000])('%i is CONNECTION_CLOSED with the code and reason as data', (code) => {
    const error = errorForClose(code, 'Bye')
    expect(error).toBeInstanceOf(ORPCError)
    expect(error.code).toBe('CONNECTION_CLOSED')
    expect(error.status).toBe(503)
    expect(error.data).toEqual({ closeCode: code, closeReason: 'Bye' })
    expect(error.message).toContain(`code ${code}: Bye`)
  })

  it('keeps an empty reason as data and leaves it out of the message', () => {
    const error = errorForClose(1006, '')
    expect(error.data).toEqual({ closeCode: 1006, closeReason: '' })
    expect(error.message).toContain('(code 1006)')
  })

  it.each([1008, 4000, 4401, 4403, 4429, 4999])('%i is a refusal: the client does not reconnect', (code) => {
    expect(isRefusalCloseCode(code)).toBe(true)
  })

  it.each([1000, 1001, 1006, 1007, 1009, 1011, 1013, 3000, 3999, 5000])('%i is not a refusal: the client reconnects', (code) => {
    expect(isRefusalCloseCode(code)).toBe(false)
  })
})

describe('Admission', () => {
  const roomy: AdmissionLimits = { maxHandshakesPerSecond: 10_000, maxConnections: 1000, maxConnectionsPerIp: 1000 }

  beforeEach(() => {
    vi.useFakeTimers()
    vi.setSystemTime(new Date('2025-01-01T00:00:00Z'))
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  const slot = (value: AdmissionSlot | RpcRefusal): AdmissionSlot => {
    if (isRefusal(value)) throw new Error(`Expected a slot, got a refusal: ${value.reason}`)
    return value
  }
  const refusalOf = (value: AdmissionSlot | RpcRefusal | undefined) => value && isRefusal(value) ? value : undefined
  const perIpRefusal = { status: 429, closeCode: 1013, reason: 'Too many connections from this address' }

  it('reserves a pending slot under the address\'s key', () => {
    const admission = new Admission(roomy)
    expect(admission.reserve('203.0.113.7')).toEqual({ ipKey: '203.0.113.7', opened: false, released: false })
    expect(admission.reserve('::ffff:203.0.113.7')).toMatchObject({ ipKey: '203.0.113.7' })
    expect(admission.reserve(undefined)).toEqual({ ipKey: undefined, opened: false, released: false })
    // Pending slots are not open connections.
    expect(admission.size).toBe(0)
  })

  it('counts pending and open slots against the per-IP cap', () => {
    const admission = new Admission({ ...roomy, maxConnectionsPerIp: 2 })
    const first = slot(admission.reserve('203.0.113.7'))
    expect(admission.opened(first, '203.0.113.7')).toBeUndefined()
    slot(admission.reserve('203.0.113.7'))
    expect(admission.size).toBe(1)
    expect(admission.reserve('203.0.113.7')).toEqual(perIpRefusal)
    // Another address, and the same address mapped into IPv6, are told apart correctly.
    expect(admission.reserve('::ffff:203.0.113.7')).toEqual(perIpRefusal)
    expect(isRefusal(admission.reserve('203.0.113.8'))).toBe(false)
  })

  it('counts an IPv6 /64 as one address', () => {
    const admission = new Admission({ ...roomy, maxConnectionsPerIp: 1 })
    slot(admission.reserve('2001:db8:1:2::1'))
    expect(admission.reserve('2001:db8:1:2:ffff::9')).toEqual(perIpRefusal)
    expect(isRefusal(admission.reserve('2001:db8:1:3::1'))).toBe(false)
  })

  it('frees the per-IP count of a released slot, once however often it is released', () => {
    const admission = new Admission({ ...roomy, maxConnectionsPerIp: 2 })
    const first = slot(admission.reserve('203.0.113.7'))
    slot(admission.reserve('203.0.113.7'))
    admission.release(first)
    admission.release(first)
    admission.release(first)
    expect(first.released).toBe(true)
    // One place freed, not three.
    slot(admission.reserve('203.0.113.7'))
    expect(admission.reserve('203.0.113.7')).toEqual(perIpRefusal)
  })

  it('keeps an opened slot when it is released, and frees it when it closes', () => {
    const admission = new Admission({ ...roomy, maxConnectionsPerIp: 1 })
    const first = slot(admission.reserve('203.0.113.7'))
    admission.opened(first, '203.0.113.7')
    admission.release(first)
    expect(first.released).toBe(false)
    expect(admission.size).toBe(1)
    expect(admission.reserve('203.0.113.7')).toEqual(perIpRefusal)
    admission.closed(first.ipKey)
    expect(admission.size).toBe(0)
    expect(isRefusal(admission.reserve('203.0.113.7'))).toBe(false)
  })

  it('refuses to open a slot twice, or one that was released', () => {
    const admission = new Admission(roomy)
    const opened = slot(admission.reserve('203.0.113.7'))
    admission.opened(opened, '203.0.113.7')
    expect(admission.opened(opened, '203.0.113.7')).toEqual({ status: 500, closeCode: 1011, reason: 'No connection state' })
    const released = slot(admission.reserve('203.0.113.7'))
    admission.release(released)
    expect(admission.opened(released, '203.0.113.7')).toEqual({ status: 500, closeCode: 1011, reason: 'No connection state' })
    expect(admission.size).toBe(1)
  })

  it('checks the per-IP cap when a slot reserved without an address opens', () => {
    const admission = new Admission({ ...roomy, maxConnectionsPerIp: 1, maxConnections: 2 })
    const first = slot(admission.reserve(undefined))
    const second = slot(admission.reserve(undefined))
    expect(admission.opened(first, '203.0.113.7')).toBeUndefined()
    expect(first.ipKey).toBe('203.0.113.7')
    expect(admission.opened(second, '203.0.113.7')).toEqual(perIpRefusal)
    // The refusal released the slot: it no longer counts against maxConnections.
    expect(second.released).toBe(true)
    expect(admission.size).toBe(1)
    const third = slot(admission.reserve(undefined))
    expect(admission.opened(third, '203.0.113.8')).toBeUndefined()
    expect(admission.size).toBe(2)
  })

  it('opens a slot whose address stays unknown without a per-IP count', () => {
    const admission = new Admission({ ...roomy, maxConnectionsPerIp: 1 })
    const first = slot(admission.reserve(undefined))
    expect(admission.opened(first, undefined)).toBeUndefined()
    expect(first.ipKey).toBeUndefined()
    expect(admission.size).toBe(1)
  })

  it('counts pending and open slots against maxConnections', () => {
    const admission = new Admission({ ...roomy, maxConnections: 3 })
    const open = slot(admission.reserve('203.0.113.1'))
    admission.opened(open, '203.0.113.1')
    const pending = slot(admission.reserve('203.0.113.2'))
    slot(admission.reserve(undefined))
    const full = { status: 503, closeCode: 1013, reason: 'Too many connections' }
    expect(admission.reserve('203.0.113.9')).toEqual(full)
    admission.release(pending)
    const next = slot(admission.reserve('203.0.113.9'))
    expect(admission.reserve('203.0.113.10')).toEqual(full)
    admission.opened(next, '203.0.113.9')
    admission.closed(open.ipKey)
    expect(isRefusal(admission.reserve('203.0.113.10'))).toBe(false)
  })

  it('refuses handshakes past a burst of a tenth of a second, then lets them in at the rate', () => {
    // 50 a second: a burst of 5, then one every 20 ms.
    const admission = new Admission({ ...roomy, maxHandshakesPerSecond: 50 })
    for (let index = 0; index < 5; index++) slot(admission.reserve(`203.0.113.${index}`))
    const tooFast = { status: 503, closeCode: 1013, reason: 'Too many new connections' }
    expect(admission.reserve('203.0.113.100')).toEqual(tooFast)
    vi.advanceTimersByTime(19)
    expect(admission.reserve('203.0.113.100')).toEqual(tooFast)
    vi.advanceTimersByTime(1)
    slot(admission.reserve('203.0.113.100'))
    expect(admission.reserve('203.0.113.101')).toEqual(tooFast)
  })

  it('does not spend the handshake budget on a handshake refused by another cap', () => {
    const admission = new Admission({ maxHandshakesPerSecond: 20, maxConnections: 1000, maxConnectionsPerIp: 1 })
    // A burst of 2.
    slot(admission.reserve('203.0.113.7'))
    for (let index = 0; index < 10; index++) expect(refusalOf(admission.reserve('203.0.113.7'))?.reason).toBe('Too many connections from this address')
    slot(admission.reserve('203.0.113.8'))
    expect(refusalOf(admission.reserve('203.0.113.9'))?.reason).toBe('Too many new connections')
  })

  it('does not count a handshake refused for its rate', () => {
    const admission = new Admission({ maxHandshakesPerSecond: 10, maxConnections: 2, maxConnectionsPerIp: 1 })
    slot(admission.reserve('203.0.113.7'))
    expect(refusalOf(admission.reserve('203.0.113.8'))?.reason).toBe('Too many new connections')
    vi.advanceTimersByTime(100)
    // Neither the per-IP count of .8 nor maxConnections kept the refused one.
    slot(admission.reserve('203.0.113.8'))
  })
})

describe('the Node transport\'s text-frame writer', () => {
  /** What `writeTextFrame` reads of ws's WebSocket; `written` holds every buffer given to the TCP socket. */
  function fakeWebSocket({ senderState = 0, readyState = 1, name = 'socket', log = [] as string[] } = {}) {
    const written: Buffer[] = []
    const ws = {
      send: () => {},
      ping: () => {},
      listeners: () => [() => {}],
      readyState,
      _sender: { _state: senderState },
      _socket: {
        write: (chunk: Uint8Array) => {
          written.push(Buffer.from(chunk))
          log.push(`write ${name}`)
          return true
        },
        cork: () => log.push(`cork ${name}`),
        uncork: () => log.push(`uncork ${name}`),
        bytesRead: 0,
        bytesWritten: 0,
        writableLength: 0,
        writableNeedDrain: false,
        _handle: { getpeername: () => 0 },
        _isIdle: true,
      },
    }
    return { ws: ws as unknown as NodeWebSocket, written }
  }

  /** crossws's Node peer as far as the transport reads it; `sent` holds what went through `peer.send` (ws frames it). */
  function fakePeer(ws: NodeWebSocket) {
    const sent: string[] = []
    const peer = {
      _internal: { ws, nodeReq: { socket: {} }, request: { url: 'ws://x/_orpc' } },
      send: (text: string) => {
        sent.push(text)
      },
    }
    return { peer: peer as unknown as Peer, sent }
  }

  /** One frame read back by RFC 6455 5.2, by hand. */
  function parseFrame(frame: Buffer) {
    const fin = (frame[0]! & 0x80) !== 0
    const reserved = (frame[0]! & 0x70) >> 4
    const opcode = frame[0]! & 0x0F
    const masked = (frame[1]! & 0x80) !== 0
    let length = frame[1]! & 0x7F
    let headerLength = 2
    if (length === 126) {
      length = frame.readUInt16BE(2)
      headerLength = 4
    }
    else if (length === 127) {
      length = Number(frame.readBigUInt64BE(2))
      headerLength = 10
    }
    return { fin, reserved, opcode, masked, length, headerLength, payload: frame.subarray(headerLength) }
  }

  function send(text: string, options?: { senderState?: number, readyState?: number }) {
    const { ws, written } = fakeWebSocket(options)
    const { peer, sent } = fakePeer(ws)
    nodeTransport.sendText(peer, ws, text)
    return { written, sent }
  }

  function expectOneTextFrame(text: string) {
    const { written, sent } = send(text)
    expect(sent).toEqual([])
    expect(written).toHaveLength(1)
    const frame = parseFrame(written[0]!)
    expect(frame).toMatchObject({ fin: true, reserved: 0, opcode: 1, masked: false, length: Buffer.byteLength(text) })
    expect(frame.payload.byteLength).toBe(frame.length)
    expect(frame.payload.toString('utf8')).toBe(text)
    return { frame, bytes: written[0]! }
  }

  beforeAll(() => {
    const warned = vi.spyOn(console, 'warn').mockImplementation(() => {})
    try {
      // The first probe is kept for the process: every private shape is present on this fake.
      const shapes = probeNodeShapes(fakePeer(fakeWebSocket().ws).peer)
      expect(Object.values(shapes).every(Boolean)).toBe(true)
      expect(shapes.senderState).toBe(true)
      expect(warned).not.toHaveBeenCalled()
    }
    finally {
      warned.mockRestore()
    }
  })

  it('frames a short text with a 7-bit length', () => {
    const { frame, bytes } = expectOneTextFrame('hello')
    expect(frame.headerLength).toBe(2)
    expect([...bytes]).toEqual([0x81, 0x05, ...Buffer.from('hello')])
  })

  it('frames an empty text', () => {
    const { bytes } = expectOneTextFrame('')
    expect([...bytes]).toEqual([0x81, 0x00])
  })

  it('keeps the 7-bit length up to 125 bytes', () => {
    expect(expectOneTextFrame('x'.repeat(125)).frame.headerLength).toBe(2)
  })

  it('frames 126 bytes and more with a 16-bit length', () => {
    expect(expectOneTextFrame('x'.repeat(126)).bytes.subarray(0, 4)).toEqual(Buffer.from([0x81, 0x7E, 0x00, 0x7E]))
    const { frame, bytes } = expectOneTextFrame('y'.repeat(200))
    expect(frame.headerLength).toBe(4)
    expect([...bytes.subarray(0, 4)]).toEqual([0x81, 0x7E, 0x00, 0xC8])
    expect(bytes.byteLength).toBe(204)
  })

  it('counts the length of multi-byte UTF-8 text in bytes', () => {
    const text = 'héllo € 😀'
    const { frame } = expectOneTextFrame(text)
    expect(text.length).toBe(10)
    expect(frame.length).toBe(15)
    // 50 UTF-16 units, 150 bytes: the 16-bit length, though the text is under 126 units.
    const euros = expectOneTextFrame('€'.repeat(50))
    expect(euros.frame.headerLength).toBe(4)
    expect(euros.frame.length).toBe(150)
  })

  it('frames up to 65,535 bytes itself', () => {
    const { bytes } = expectOneTextFrame('z'.repeat(0xFFFF))
    expect([...bytes.subarray(0, 4)]).toEqual([0x81, 0x7E, 0xFF, 0xFF])
  })

  it.each([
    ['65,536 bytes', 'z'.repeat(0x10000)],
    ['70,000 bytes', 'z'.repeat(70_000)],
    ['65,538 bytes of multi-byte text', '€'.repeat(21_846)],
  ])('leaves a text of %s to ws (peer.send)', (_, text) => {
    const { written, sent } = send(text)
    expect(written).toEqual([])
    expect(sent).toEqual([text])
  })

  it('leaves the text to ws while ws\'s own queue is in use', () => {
    const { written, sent } = send('hello', { senderState: 1 })
    expect(written).toEqual([])
    expect(sent).toEqual(['hello'])
  })

  it.each([0, 2, 3])('leaves the text to ws when the socket is not open (readyState %i)', (readyState) => {
    const { written, sent } = send('hello', { readyState })
    expect(written).toEqual([])
    expect(sent).toEqual(['hello'])
  })

  it('corks a tick\'s frames per socket, and uncorks each group of 128 sockets before corking the next', async () => {
    class Output extends ConnectionOutput {
      close() {}
    }
    const log: string[] = []
    const route = { transport: nodeTransport, limits: { maxBufferedBytes: 1 << 20 } } as unknown as RpcRoute
    const outputs = Array.from({ length: 300 }, (_, index) => {
      const { ws } = fakeWebSocket({ name: String(index), log })
      return new Output(fakePeer(ws).peer, route)
    })
    // A fan-out in one tick: two frames to each socket (a burst), socket after socket.
    for (const output of outputs) {
      output.send('a')
      output.send('b')
    }
    const position = (entry: string) => log.indexOf(entry)
    // Each socket: corked once, both frames under the cork.
    expect(log.filter(entry => entry === 'cork 0')).toHaveLength(1)
    expect(position('write 0')).toBeGreaterThan(position('cork 0'))
    // The first group (sockets 0 to 127) is uncorked before socket 128 is corked, in the same tick; the second
    // before socket 256; the rest waits for the tick's end.
    expect(position('uncork 0')).toBeGreaterThan(log.lastIndexOf('write 127'))
    for (const entry of ['uncork 127', 'cork 128', 'uncork 255', 'cork 256']) expect(position(entry)).toBeGreaterThan(-1)
    expect(position('uncork 127')).toBeLessThan(position('cork 128'))
    expect(position('uncork 255')).toBeLessThan(position('cork 256'))
    expect(position('uncork 256')).toBe(-1)
    await new Promise(resolve => process.nextTick(resolve))
    for (let index = 0; index < 300; index++) {
      expect(log.filter(entry => entry === `write ${index}`)).toHaveLength(2)
      expect(log.filter(entry => entry === `uncork ${index}`)).toHaveLength(1)
    }
    // The next tick starts a group of its own.
    outputs[5]!.send('c')
    expect(log.at(-2)).toBe('cork 5')
    expect(log.at(-1)).toBe('write 5')
    await new Promise(resolve => process.nextTick(resolve))
    expect(log.at(-1)).toBe('uncork 5')
  })

  it('leaves the text to ws when ws has no TCP socket', () => {
    const { ws } = fakeWebSocket()
    delete (ws as { _socket?: unknown })._socket
    const { peer, sent } = fakePeer(ws)
    nodeTransport.sendText(peer, ws, 'hello')
    expect(sent).toEqual(['hello'])
  })
})

describe('handler options', () => {
  it('refuses limits that would switch a guard off or lock everyone out', () => {
    const router = {}
    expect(() => createRpcWebSocketHooks({ router, rateLimit: { max: 10, windowMs: 0 } })).toThrow(/rateLimit.windowMs must be a number above 0/)
    expect(() => createRpcWebSocketHooks({ router, maxHandshakesPerSecond: 0 })).toThrow(/maxHandshakesPerSecond/)
    expect(() => createRpcWebSocketHooks({ router, maxCallsInFlight: Number.NaN })).toThrow(/maxCallsInFlight/)
    expect(createRpcWebSocketHooks({ router, rateLimit: false, maxConnections: 5 })).toHaveProperty('open')
  })
})

describe('connection state where crossws keeps no context (its Cloudflare Durable Object adapter)', () => {
  /** A peer as that adapter makes one: a context of its own, empty; the upgrade's request. */
  function durablePeer(request: { url: string, context?: Record<PropertyKey, unknown> }) {
    const sent: unknown[] = []
    const closed: Array<[number | undefined, string | undefined]> = []
    const peer = {
      id: 'peer-1',
      context: {},
      request,
      websocket: {},
      remoteAddress: undefined,
      send: (data: unknown) => void sent.push(data),
      close: (code?: number, reason?: string) => void closed.push([code, reason]),
      terminate: () => void closed.push([undefined, 'terminated']),
    }
    return { peer: peer as unknown as Peer, sent, closed }
  }
  const message = (text: string) => ({ rawData: text, uint8Array: () => new TextEncoder().encode(text) }) as never

  it('finds the upgrade\'s decision on the upgrade request and opens the connection with the ready signal', async () => {
    const hooks = createRpcWebSocketHooks({ router: {} })
    const request = Object.assign(new Request('http://localhost/_orpc', { headers: { 'sec-websocket-protocol': 'orpc, nuxt-orpc' } }), { context: {} })
    expect(await hooks.upgrade!(request as never)).toEqual({ headers: { 'sec-websocket-protocol': 'nuxt-orpc' } })
    const { peer, sent, closed } = durablePeer(request)
    await hooks.open!(peer)
    expect(closed).toEqual([])
    expect(sent).toEqual(['{"i":-1,"t":4}'])
    await hooks.close!(peer, {})
  })

  it('closes a connection it has no state for with 1012 (reconnect) at its first frame, running nothing', async () => {
    const hooks = createRpcWebSocketHooks({ router: {} })
    // After an eviction the adapter restores the peer with a request that is only the URL.
    const { peer, sent, closed } = durablePeer({ url: 'http://localhost/_orpc' })
    await hooks.message!(peer, message('{"i":1,"p":{"u":"/ping"}}'))
    expect(closed).toEqual([[1012, 'Connection state lost: reconnect']])
    expect(sent).toEqual([])
  })
})

describe('the refusal frame', () => {
  it('carries a close code and reason that the client reads back; other frames are not refusals', () => {
    expect(refusalOf(refusalFrame(4401, 'Sign in first'))).toEqual({ code: 4401, reason: 'Sign in first' })
    expect(refusalOf(refusalFrame(1008, 'Origin "x" is not allowed'))).toEqual({ code: 1008, reason: 'Origin "x" is not allowed' })
    expect(refusalOf(heartbeatFrame)).toBeUndefined()
    expect(refusalOf('{"i":-1,"t":4,"p":{"closeCode":"4401","closeReason":"x"}}')).toBeUndefined()
    expect(refusalOf('{"i":-1,"t":4,"p":{"closeCode":4401')).toBeUndefined()
    expect(refusalOf(new ArrayBuffer(8))).toBeUndefined()
  })
})

describe('BucketsByClient', () => {
  it('limits each client on its own and keeps at most maxClients buckets, dropping the oldest', () => {
    const buckets = new BucketsByClient(2, 60_000, 3)
    expect([buckets.take('a'), buckets.take('a'), buckets.take('a')]).toEqual([true, true, false])
    expect(buckets.take('b')).toBe(true)
    buckets.take('c')
    buckets.take('d')
    expect(buckets.size).toBe(3)
    // `a` was the oldest: dropped, it starts afresh.
    expect(buckets.take('a')).toBe(true)
  })
})

describe('Pinia Colada utilities (createRpcColadaUtils)', () => {
  /** A client over a link that notes each call and answers with its path and input. */
  function notingClient() {
    const calls: Array<{ path: string, input: unknown, signal: AbortSignal | undefined, context: unknown }> = []
    const client = createRpcClient({
      call: async (path, input, options) => {
        calls.push({ path: path.join('.'), input, signal: options.signal, context: options.context })
        return { path: path.join('.'), input }
      },
    }) as any
    return { utils: createRpcColadaUtils(client) as any, calls }
  }

  it('keys hold the path and the input as oRPC serializes it; a router\'s key is a prefix of its procedures\'', () => {
    const { utils } = notingClient()
    expect(utils.planet.key()).toEqual(['rpc', 'planet'])
    expect(utils.planet.find.key({ input: { id: 1 } })).toEqual(['rpc', 'planet', 'find', { input: { id: 1 } }])
    expect(utils.planet.find.key({ input: { at: new Date(0), big: 2n } })).toEqual(['rpc', 'planet', 'find', { input: { at: '1970-01-01T00:00:00.000Z', big: '2' }, meta: [[1, 'at'], [0, 'big']] }])
  })

  it('queryOptions calls the procedure with the query\'s signal and the context; mutationOptions with the variables', async () => {
    const { utils, calls } = notingClient()
    const options = utils.planet.find.queryOptions({ input: { id: 1 }, context: { retry: 2 }, staleTime: 5 })
    expect(options.key).toEqual(['rpc', 'planet', 'find', { input: { id: 1 } }])
    expect(options.staleTime).toBe(5)
    const signal = new AbortController().signal
    expect(await options.query({ signal })).toEqual({ path: 'planet.find', input: { id: 1 } })
    expect(calls[0]).toMatchObject({ path: 'planet.find', input: { id: 1 }, signal, context: { retry: 2 } })
    expect(await utils.planet.rename.mutationOptions().mutation({ id: 1, name: 'x' })).toEqual({ path: 'planet.rename', input: { id: 1, name: 'x' } })
  })

  it('a procedure or router named like a helper (key, call, queryOptions, constructor) stays reachable through it', async () => {
    const { utils } = notingClient()
    expect(utils.key()).toEqual(['rpc'])
    expect(utils.key.queryOptions({ input: 1 }).key).toEqual(['rpc', 'key', { input: 1 }])
    expect(utils.phone.call.key()).toEqual(['rpc', 'phone', 'call'])
    expect(await utils.phone.call.queryOptions({ input: 2 }).query({ signal: new AbortController().signal })).toEqual({ path: 'phone.call', input: 2 })
    expect(utils.constructor.key()).toEqual(['rpc', 'constructor'])
    // Inspection works, and Vue's marks are not taken for procedures.
    expect(String(utils.planet)).toBe('[object Object]')
    expect(utils.planet.__v_raw).toBeUndefined()
    expect(await utils.planet).toBe(utils.planet)
  })
})

describe('applyPresenceEvent', () => {
  const ada = { key: 'ada', data: { name: 'Ada' }, connections: 1 }
  const bob = { key: 'bob', data: { name: 'Bob' }, connections: 1 }

  it('replaces the members on sync, updates in place, adds at the end, removes on leave, and never changes its input', () => {
    const start = Object.freeze([ada])
    expect(applyPresenceEvent(start, { type: 'sync', members: [bob, ada] })).toEqual([bob, ada])
    const joined = applyPresenceEvent(start, { type: 'join', member: bob })
    expect(joined).toEqual([ada, bob])
    const renamed = applyPresenceEvent(joined, { type: 'update', member: { key: 'ada', data: { name: 'Ada L.' }, connections: 2 } })
    expect(renamed.map(member => `${member.key}:${member.data.name}/${member.connections}`)).toEqual(['ada:Ada L./2', 'bob:Bob/1'])
    expect(applyPresenceEvent(renamed, { type: 'leave', member: { ...ada, connections: 0 } })).toEqual([bob])
    // A leave of someone not listed (a stream that resumed after they joined) changes nothing.
    expect(applyPresenceEvent([bob], { type: 'leave', member: ada })).toEqual([bob])
    expect(start).toEqual([ada])
  })
})

describe('the DevTools inspector', () => {
  const request = (id: string, path: string, input: unknown = {}) => JSON.stringify({ i: id, p: { u: path, b: { json: input } } })
  const call = (inspector: RpcInspector, procedure: string) => inspector.state().calls.find(entry => entry.procedure === procedure)!

  it('follows a call from its request to its answer, typed errors and streams included', () => {
    const inspector = new RpcInspector()
    inspector.opened('c1', 'http://app.example', '10.0.0.1')
    inspector.received('c1', request('1', '/chat/send', { text: 'hi' }))
    inspector.received('c1', request('2', 'orpc://localhost/fail'))
    inspector.received('c1', request('3', '/chat/messages'))
    expect(inspector.state().connections[0]).toMatchObject({ id: 'c1', origin: 'http://app.example', remoteAddress: '10.0.0.1', callsInFlight: 3 })

    inspector.sent('c1', JSON.stringify({ i: '1', p: { b: { json: { ok: true } } } }))
    inspector.sent('c1', JSON.stringify({ i: '2', p: { s: 409, b: { json: { defined: false, code: 'CONFLICT', status: 409, message: 'No' } } } }))
    inspector.sent('c1', JSON.stringify({ i: '3', p: { h: { 'content-type': 'text/event-stream' } } }))
    for (let index = 0; index < 3; index++) inspector.sent('c1', JSON.stringify({ i: '3', t: 3, p: { e: 'message', d: { json: index } } }))
    expect(call(inspector, 'chat.send')).toMatchObject({ state: 'done', status: 200 })
    expect(call(inspector, 'fail')).toMatchObject({ state: 'error', status: 409, code: 'CONFLICT' })
    expect(call(inspector, 'chat.messages')).toMatchObject({ state: 'streaming', events: 3 })
    expect(inspector.state().connections[0]!.callsInFlight).toBe(1)

    inspector.sent('c1', JSON.stringify({ i: '3', t: 3, p: { e: 'error', d: { json: { code: 'SUBSCRIBER_OVERFLOW' } } } }))
    expect(call(inspector, 'chat.messages')).toMatchObject({ state: 'error', code: 'SUBSCRIBER_OVERFLOW', events: 3 })
    expect(inspector.state().connections[0]!.callsInFlight).toBe(0)
    const seq = call(inspector, 'chat.send').seq
    expect(JSON.parse(inspector.payload(seq)!.input)).toMatchObject({ p: { b: { json: { text: 'hi' } } } })
    expect(JSON.parse(inspector.payload(seq)!.output)).toMatchObject({ p: { b: { json: { ok: true } } } })
  })

  it('ends a call the client aborts, and every call of a connection that closes', () => {
    const inspector = new RpcInspector()
    inspector.opened('c1', undefined, undefined)
    inspector.received('c1', request('1', '/ticks'))
    inspector.received('c1', request('2', '/slow'))
    inspector.received('c1', JSON.stringify({ i: '1', t: 4 }))
    inspector.closed('c1', 1006, '')
    const [connection] = inspector.state().connections
    expect(connection).toMatchObject({ closeCode: 1006, callsInFlight: 0 })
    expect(connection!.closeReason).toBeUndefined()
    expect(call(inspector, 'ticks').state).toBe('aborted')
    expect(call(inspector, 'slow').state).toBe('closed')
    expect(call(inspector, 'slow').duration).toBeGreaterThanOrEqual(0)
  })

  it('counts what it cannot read as bytes only: heartbeats, garbage, frames of unknown calls and connections', () => {
    const inspector = new RpcInspector()
    inspector.opened('c1', undefined, undefined)
    inspector.received('c1', heartbeatFrame)
    inspector.received('c1', 'not json')
    inspector.received('c1', '[1,2]')
    inspector.received('c1', JSON.stringify({ i: 'x', t: 3, p: { e: 'message' } }))
    inspector.sent('c1', JSON.stringify({ i: 'nobody', p: { b: {} } }))
    inspector.received('gone', request('1', '/ping'))
    const state = inspector.state()
    expect(state.calls).toEqual([])
    expect(state.connections).toHaveLength(1)
    expect(state.connections[0]!.bytesIn).toBeGreaterThan(0)
    expect(state.connections[0]!.bytesOut).toBeGreaterThan(0)
  })

  it('reads the JSON head of a binary frame (a file) and counts all of its bytes', () => {
    const inspector = new RpcInspector()
    inspector.opened('c1', undefined, undefined)
    const head = new TextEncoder().encode(request('1', '/upload'))
    const frame = new Uint8Array([...head, binaryDelimiter, 1, 2, 3, 4])
    inspector.received('c1', frame)
    expect(call(inspector, 'upload')).toMatchObject({ state: 'running', inputBytes: frame.byteLength })
    inspector.sent('c1', frame.buffer)
    expect(inspector.state().connections[0]!.bytesOut).toBe(frame.byteLength)
  })

  it('stays bounded: recent calls, closed connections, idle channels, payloads', () => {
    const inspector = new RpcInspector()
    for (let index = 0; index < 60; index++) {
      inspector.opened(`c${index}`, undefined, undefined)
      inspector.closed(`c${index}`, 1000, 'bye')
    }
    inspector.opened('open', undefined, undefined)
    inspector.received('open', request('feed', '/feed'))
    inspector.sent('open', JSON.stringify({ i: 'feed', p: { h: { 'content-type': 'text/event-stream' } } }))
    for (let index = 0; index < 250; index++) {
      inspector.received('open', request(String(index), '/ping', 'x'.repeat(index === 249 ? 40_000 : 1)))
      inspector.sent('open', JSON.stringify({ i: String(index), p: { b: { json: 'pong' } } }))
    }
    inspector.sent('open', JSON.stringify({ i: 'feed', t: 3, p: { e: 'message', d: { json: 1 } } }))
    const state = inspector.state()
    expect(state.connections).toHaveLength(51)
    // The recent 200, and the stream opened before them: still open, still counted, its frames no longer kept.
    expect(state.calls).toHaveLength(201)
    expect(state.calls.at(-1)).toMatchObject({ procedure: 'feed', state: 'streaming', events: 1 })
    expect(inspector.payload(state.calls.at(-1)!.seq)).toBeUndefined()
    const last = inspector.payload(state.calls[0]!.seq)!
    expect(last.input.length).toBeLessThan(33_000)
    expect(last.input).toMatch(/more characters\)$/)

    inspector.subscribed('busy')
    for (let index = 0; index < 600; index++) inspector.published(`idle:${index}`)
    const channels = inspector.state().channels
    expect(channels.length).toBeLessThanOrEqual(500)
    expect(channels.find(channel => channel.name === 'busy')).toMatchObject({ subscribers: 1 })
  })
})

describe('stream event values on the client', () => {
  it('learns the key oRPC\'s getEventMeta reads (this fails when oRPC changes how it reads an event\'s meta)', () => {
    expect(typeof eventMetaKey).toBe('symbol')
  })

  it('puts the event\'s meta on the value itself: getEventMeta finds it, nothing else sees it, no Proxy', () => {
    const meta = { id: '1765000000000-3', retry: 500 }
    const value = eventValue({ json: { seq: 3, nested: { a: 1 } } }, meta) as object
    expect(types.isProxy(value)).toBe(false)
    expect(getEventMeta(value)).toEqual(meta)
    expect(JSON.stringify(value)).toBe('{"seq":3,"nested":{"a":1}}')
    expect(Object.keys(value)).toEqual(['seq', 'nested'])
    expect(getEventMeta({ ...value })).toBeUndefined()
    expect(structuredClone(value)).toEqual({ seq: 3, nested: { a: 1 } })
    // Held in Vue state (TanStack Vue Query makes its data reactive, then readonly): the meta is still found.
    expect(getEventMeta(reactive(value))).toEqual(meta)
    expect(getEventMeta(readonly(reactive(value)))).toEqual(meta)
  })

  it('leaves a value without meta, and a primitive, as they are', () => {
    expect(getEventMeta(eventValue({ json: { a: 1 } }, undefined))).toBeUndefined()
    expect(eventValue({ json: 5 }, { id: '1' })).toBe(5)
    // Dates and other types oRPC's serializer carries come back as such, with their meta.
    const dated = eventValue({ json: { at: '2026-12-07T00:00:00.000Z' }, meta: [[1, 'at']] }, { id: '2' }) as { at: Date }
    expect(dated.at).toBeInstanceOf(Date)
    expect(getEventMeta(dated)?.id).toBe('2')
    // A Date as the whole value keeps its methods (oRPC's Proxy made them throw: "this is not a Date object").
    const date = eventValue({ json: '2026-12-07T00:00:00.000Z', meta: [[1]] }, { id: '3' }) as Date
    expect(date.getTime()).toBe(Date.parse('2026-12-07T00:00:00.000Z'))
    expect(getEventMeta(date)?.id).toBe('3')
  })
})

describe('the client\'s plain calls (PlainCallClient) on frames a server sends', () => {
  /** A client whose frames go to `sent`, and a stream call on it answered with its response head. */
  async function streamOn(client: PlainCallClient, sent: string[]) {
    const output = client.call(Object.freeze(['feed']), {}, { context: {} })!
    const id = (JSON.parse(sent.at(-1)!) as { i: string }).i
    expect(client.receive(JSON.stringify({ i: id, p: { h: { 'content-type': 'text/event-stream' } } }))).toBe(true)
    return { id, stream: await output as AsyncIterator<unknown> }
  }

  it('fails only the stream a malformed event frame names, with an error; the socket\'s other streams go on', async () => {
    const sent: string[] = []
    const client = new PlainCallClient(frame => sent.push(frame), stream => stream)
    const broken = await streamOn(client, sent)
    const queuedBroken = await streamOn(client, sent)
    const healthy = await streamOn(client, sent)

    // One read waits when the frame comes, the other finds it queued.
    const waiting = broken.stream.next()
    expect(client.receive(`{"i":"${broken.id}","t":3}`)).toBe(true)
    expect(client.receive(`{"i":"${queuedBroken.id}","t":3,"p":null}`)).toBe(true)
    await expect(waiting).rejects.toBeInstanceOf(TypeError)
    await expect(queuedBroken.stream.next()).rejects.toBeInstanceOf(TypeError)
    expect(await broken.stream.next()).toEqual({ done: true, value: undefined })

    expect(client.receive(`{"i":"${healthy.id}","t":3,"p":{"e":"message","d":{"json":{"n":1}}}}`)).toBe(true)
    expect(await healthy.stream.next()).toEqual({ done: false, value: { n: 1 } })
  })

  it('fails a stream with the typed error an error event carries, its meta on it; other data as an ErrorEvent', async () => {
    const sent: string[] = []
    const client = new PlainCallClient(frame => sent.push(frame), stream => stream)
    const typed = await streamOn(client, sent)
    const other = await streamOn(client, sent)
    const error = new ORPCError('CONFLICT', { message: 'taken', data: { seat: 3 } }).toJSON()
    client.receive(JSON.stringify({ i: typed.id, t: 3, p: { e: 'error', d: { json: error }, m: { id: '9' } } }))
    client.receive(JSON.stringify({ i: other.id, t: 3, p: { e: 'error', d: { json: { reason: 'gone' } } } }))
    const typedError = await typed.stream.next().catch((caught: unknown) => caught)
    expect(typedError).toBeInstanceOf(ORPCError)
    expect(typedError).toMatchObject({ code: 'CONFLICT', message: 'taken', data: { seat: 3 } })
    expect(getEventMeta(typedError)).toEqual({ id: '9' })
    const otherError = await other.stream.next().catch((caught: unknown) => caught)
    expect(otherError).toBeInstanceOf(ErrorEvent)
    expect((otherError as ErrorEvent).data).toEqual({ reason: 'gone' })
    expect(getEventMeta(otherError)).toBeUndefined()
  })

  it('gives a listener the events already queued, then new ones, then the end; refuses reads meanwhile', async () => {
    const sent: string[] = []
    const client = new PlainCallClient(frame => sent.push(frame), stream => stream)
    const { id, stream } = await streamOn(client, sent)
    const plain = stream as PlainStream
    client.receive(`{"i":"${id}","t":3,"p":{"e":"message","d":{"json":1},"m":{"id":"a"}}}`)
    const heard: unknown[] = []
    plain.listen({ event: (value, eventId) => heard.push([value, eventId]), end: value => heard.push(['end', value]), fail: error => heard.push(['fail', error]) })
    expect(heard).toEqual([[1, 'a']])
    client.receive(`{"i":"${id}","t":3,"p":{"e":"message","d":{"json":2}}}`)
    await expect(plain.next()).rejects.toBeInstanceOf(TypeError)
    client.receive(`{"i":"${id}","t":3,"p":{"e":"done","d":{"json":"bye"}}}`)
    expect(heard).toEqual([[1, 'a'], [2, undefined], ['end', 'bye']])
    expect(plain.lastEventId).toBe('a')
    // A listener that comes after the end hears of it at once.
    const late: unknown[] = []
    plain.listen({ event: () => late.push('event'), end: () => late.push('end'), fail: () => late.push('fail') })
    expect(late).toEqual(['end'])
  })

  it('reads plain JSON data as oRPC\'s serializer does, and data with types through it', async () => {
    const sent: string[] = []
    const client = new PlainCallClient(frame => sent.push(frame), stream => stream)
    const { id, stream } = await streamOn(client, sent)
    const frames = [
      { e: 'message', d: { json: { n: 1, list: [1, 'a', null] } } },
      { e: 'message', d: { json: null } },
      { e: 'message', d: { json: { at: '2026-12-07T00:00:00.000Z' }, meta: [[1, 'at']] } },
      { e: 'message' },
      { e: 'done', d: { json: 'bye' } },
    ]
    for (const p of frames) client.receive(JSON.stringify({ i: id, t: 3, p }))
    expect(await stream.next()).toEqual({ done: false, value: { n: 1, list: [1, 'a', null] } })
    expect(await stream.next()).toEqual({ done: false, value: null })
    expect((await stream.next()).value).toEqual({ at: new Date('2026-12-07T00:00:00.000Z') })
    expect(await stream.next()).toEqual({ done: false, value: undefined })
    expect(await stream.next()).toEqual({ done: true, value: 'bye' })
  })
})
