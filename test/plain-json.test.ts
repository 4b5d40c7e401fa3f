import { StandardRPCJsonSerializer, StandardRPCSerializer } from '@orpc/client/standard'
import { os } from '@orpc/server'
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
]

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
})

describe('PlainCallHandler output', () => {
  const router = {
    echo: os.handler(({ input }) => input),
    money: os.handler(() => ({ price: { cents: 250 } })),
    when: os.handler(() => ({ at: new Date(0) })),
  }
  const signal = new AbortController().signal

  it('answers plain output as `{ json }`, and other output through the serializer (meta included)', async () => {
    const handler = new PlainCallHandler(router, {})
    const echoed = await handler.call('/echo', { json: { a: [1, 'b'] } }, {}, signal)
    expect(echoed).toEqual({ status: 200, headers: {}, body: { json: { a: [1, 'b'] } } })
    const dated = await handler.call('/when', undefined, {}, signal)
    expect(JSON.stringify(dated.body)).toBe(JSON.stringify(serializer.serialize({ at: new Date(0) })))
    expect((dated.body as { meta?: unknown[] }).meta).toEqual([[1, 'at']])
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
