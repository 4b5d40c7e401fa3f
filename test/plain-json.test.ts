import { StandardRPCJsonSerializer, StandardRPCSerializer } from '@orpc/client/standard'
import { os } from '@orpc/server'
import { ResponseHeadersPlugin } from '@orpc/server/plugins'
import { StandardRPCHandler } from '@orpc/server/standard'
import { describe, expect, it } from 'vitest'
import { reactive } from 'vue'
import { PlainCallHandler } from '../src/runtime/server/plain-call'
import { isPlainJson } from '../src/runtime/shared/plain-json'

const serializer = new StandardRPCSerializer(new StandardRPCJsonSerializer())

class Point {
  constructor(readonly x: number, readonly y: number) {}
}

const nullPrototype = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1, nested: { b: [true, null] } })

const plain: Array<[string, unknown]> = [
  ['undefined (no input)', undefined],
  ['null', null],
  ['a boolean', false],
  ['zero', 0],
  ['negative zero', -0],
  ['a fraction', 1.5],
  ['Infinity (JSON null either way)', Number.POSITIVE_INFINITY],
  ['a string', 'héllo "quoted" \u2028'],
  ['an empty array', []],
  ['an empty object', {}],
  ['a mixed array', [1, 'a', null, { b: [2] }]],
  ['nested objects', { id: 42, text: 'hello', tags: ['a', 'b'], meta: { deep: { deeper: [{ x: 1 }] } } }],
  ['an undefined field', { a: undefined, b: 1 }],
  ['a null-prototype object', nullPrototype],
  ['a Vue reactive object', reactive({ room: 'general', filters: { since: 3, kinds: ['a'] } })],
  ['data 64 levels deep', nested(64)],
]

const notPlain: Array<[string, unknown]> = [
  ['NaN', Number.NaN],
  ['NaN inside', { a: [Number.NaN] }],
  ['a bigint', 1n],
  ['a Date', new Date(0)],
  ['a Date inside', { at: new Date(0) }],
  ['a Map', new Map([['a', 1]])],
  ['a Set', new Set([1])],
  ['a URL', new URL('https://example.com/')],
  ['a RegExp', /a+/g],
  ['a Blob', new Blob(['x'])],
  ['a File inside', { file: new File(['x'], 'x.txt') }],
  ['undefined in an array', [1, undefined]],
  // eslint-disable-next-line no-sparse-arrays
  ['a hole in an array', [1, , 3]],
  ['an object with toJSON', { toJSON: () => 'x' }],
  ['a class instance', new Point(1, 2)],
  ['a function', () => 1],
  ['a symbol', Symbol('s')],
  ['an array with its own toJSON', Object.assign([1, 2], { toJSON: () => 'x' })],
  ['an object with a toJSON that is not enumerable', Object.defineProperty({ a: 1 }, 'toJSON', { value: () => 'y' })],
  ['an own __proto__ key (from JSON.parse)', JSON.parse('{"__proto__":{"admin":true},"b":1}')],
  ['an async iterator', Object.defineProperty({}, Symbol.asyncIterator, { value: async function* () {} })],
  ['data deeper than 64 levels', nested(65)],
]

/** `{ a: { a: ... { a: 1 } } }`, `levels` objects deep. */
function nested(levels: number): unknown {
  let value: unknown = 1
  for (let level = 0; level < levels; level++) value = { a: value }
  return value
}

describe('isPlainJson', () => {
  it.each(plain)('takes %s, and `{ json }` is the JSON oRPC\'s serializer makes of it', (_, value) => {
    expect(isPlainJson(value)).toBe(true)
    const serialized = serializer.serialize(value) as { json: unknown, meta?: unknown[] }
    expect(serialized.meta).toBeUndefined()
    expect(JSON.stringify({ json: value })).toBe(JSON.stringify(serialized))
  })

  it.each(notPlain)('leaves %s to oRPC\'s serializer', (_, value) => {
    expect(isPlainJson(value)).toBe(false)
  })

  it('leaves an object to the serializer when Object.prototype has an enumerable key (it copies inherited keys)', () => {
    const prototype = Object.prototype as Record<string, unknown>
    prototype.polluted = 1
    try {
      expect(isPlainJson({ a: 1 })).toBe(false)
    }
    finally {
      delete prototype.polluted
    }
    expect(isPlainJson({ a: 1 })).toBe(true)
  })
})

describe('PlainCallHandler output', () => {
  const router = {
    echo: os.handler(({ input }) => input),
    money: os.handler(() => ({ price: { cents: 250 } })),
    when: os.handler(() => ({ at: new Date(0) })),
    deep: os.handler(() => nested(20_000)),
  }
  const signal = new AbortController().signal

  it('answers plain output as `{ json }`, and other output through the serializer (meta included)', async () => {
    const handler = new PlainCallHandler(router, {})
    const echoed = await handler.call('/echo', { json: { a: [1, 'b'] } }, {}, signal)
    expect(echoed).toStrictEqual({ status: 200, headers: {}, body: { json: { a: [1, 'b'] } } })
    const dated = await handler.call('/when', undefined, {}, signal)
    expect(JSON.stringify(dated.body)).toBe(JSON.stringify(serializer.serialize({ at: new Date(0) })))
    expect((dated.body as { meta?: unknown[] }).meta).toEqual([[1, 'at']])
  })

  it('answers output too deep to serialize with a typed error, not a throw', async () => {
    const handler = new PlainCallHandler(router, {})
    const answer = await handler.call('/deep', undefined, {}, signal)
    expect(answer.status).toBe(500)
    expect(answer.body).toMatchObject({ json: { code: 'INTERNAL_SERVER_ERROR' } })
  })

  it('leaves every output to the serializer when the handler has custom JSON serializers', async () => {
    const handler = new PlainCallHandler(router, {
      customJsonSerializers: [{
        type: 21,
        condition: (data: unknown) => typeof data === 'object' && data !== null && 'cents' in data,
        serialize: (data: { cents: number }) => `${data.cents / 100} EUR`,
        deserialize: (text: string) => ({ cents: Number.parseFloat(text) * 100 }),
      }],
    })
    const answer = await handler.call('/money', undefined, {}, signal)
    expect(answer.body).toEqual({ json: { price: '2.5 EUR' }, meta: [[21, 'price']] })
  })
})

describe('PlainCallHandler beside oRPC plugins', () => {
  it('steps aside when a plugin adds interceptors to the handler options it shares with oRPC\'s handler', () => {
    const router = { ping: os.handler(() => 'pong') }
    const bare = {}
    new StandardRPCHandler(router, bare)
    expect(new PlainCallHandler(router, bare).enabled).toBe(true)
    // The plugin's init mutates the options object: the plain path must see what it added.
    const withPlugin = { plugins: [new ResponseHeadersPlugin()] }
    new StandardRPCHandler(router, withPlugin)
    expect(new PlainCallHandler(router, withPlugin).enabled).toBe(false)
  })
})
