import { ORPCError, toORPCError } from '@orpc/client'
import { StandardRPCJsonSerializer, StandardRPCSerializer } from '@orpc/client/standard'
import type { AnyProcedure, AnyRouter, Context } from '@orpc/server'
import { createProcedureClient } from '@orpc/server'
import type { StandardRPCHandlerOptions } from '@orpc/server/standard'
import { StandardRPCCodec, StandardRPCMatcher } from '@orpc/server/standard'
import { isAsyncIteratorObject, stringifyJSON, toArray } from '@orpc/shared'
import type { StandardResponse } from '@orpc/standard-server'
import { isPlainJson } from '../shared/plain-json'
import type { PublishedEvent, Subscriber } from './publisher/core'
import { subscriberOf } from './publisher/core'

/** A plain call's response; `subscriber` when the procedure returned a publisher subscription itself. */
export interface PlainCallResponse extends StandardResponse {
  subscriber?: Subscriber
}

/**
 * A request frame that needs none of oRPC's transport machinery: a POST (the default method) with a JSON
 * body, no header but `last-event-id` (so no file, form or event-stream input) and a plain path.
 */
export interface PlainCallFrame {
  id: string
  url: string
  body: unknown
  /** A stream resumed after this event id (oRPC's `last-event-id` header). */
  lastEventId: string | undefined
}

/** The `last-event-id` of a request's headers when it is their only one; undefined when there are none; false otherwise. */
function onlyLastEventId(headers: unknown): string | undefined | false {
  if (headers === undefined) return undefined
  if (typeof headers !== 'object' || headers === null) return false
  const keys = Object.keys(headers)
  const lastEventId = (headers as Record<string, unknown>)['last-event-id']
  return keys.length === 1 && typeof lastEventId === 'string' ? lastEventId : false
}

// Paths `new URL` would not change (no dot segments, escapes, query or fragment), so the lookup below sees
// what oRPC's handler would see.
const plainPath = /^(?:\/[\w$-]+)+\/?$/

/** The request frame as a plain call, or undefined when it must go through oRPC's stock peer. */
export function asPlainCall(frame: unknown): PlainCallFrame | undefined {
  if (typeof frame !== 'object' || frame === null) return
  const { i: id, t: type, p: payload } = frame as { i?: unknown, t?: unknown, p?: unknown }
  if (typeof id !== 'string' || (type !== undefined && type !== 1) || typeof payload !== 'object' || payload === null) return
  const { u: url, h: headers, m: method, b: body } = payload as { u?: unknown, h?: unknown, m?: unknown, b?: unknown }
  if (method !== undefined || typeof url !== 'string' || !plainPath.test(url)) return
  const lastEventId = onlyLastEventId(headers)
  if (lastEventId === false) return
  return { id, url, body, lastEventId }
}

/**
 * What a caller may see of an error a call threw: an ORPCError as it is; anything else is logged here and
 * becomes `INTERNAL_SERVER_ERROR` "Internal server error" (oRPC's own mapping), so a database error's
 * address or credentials stay on the server. The socket and the in-process SSR client both answer with it.
 */
export function toCallerError(error: unknown): ORPCError<string, unknown> {
  if (error instanceof ORPCError) return error
  console.error('[nuxt-orpc] A procedure failed; the caller gets INTERNAL_SERVER_ERROR.', error)
  return toORPCError(error)
}

/** What oRPC's RPC handler answers for a path no procedure matches. */
const notFound: StandardResponse = { status: 404, headers: {}, body: 'No procedure matched' }

type ProcedureClient = (input: unknown, options: { context: Context, signal: AbortSignal, lastEventId: string | undefined }) => Promise<unknown>

interface MatchedProcedure {
  procedure: AnyProcedure
  client: ProcedureClient
}

/**
 * Runs plain calls the way oRPC's `StandardRPCHandler` does (same matcher, procedure client, serializer and
 * error mapping, so middleware, validation, context and typed errors behave the same) without the layers a
 * plain call does not need: per-call URL, spans, interceptor chains with nothing in them, the peer's queues.
 * One procedure client per path is made once and reused; the connection's context is passed per call.
 *
 * Handler options with `interceptors` or `rootInterceptors` (also those a plugin adds) switch this off:
 * they expect the stock handler's request and response, so every call then goes through it.
 */
export class PlainCallHandler {
  readonly enabled: boolean
  /**
   * Without custom JSON serializers, plain output (`isPlainJson`) is answered as `{ json: output }`: what the
   * codec makes of it, without the serializer's copy.
   */
  private readonly plainOutput: boolean
  private readonly serializer: StandardRPCSerializer
  private readonly jsonSerializer: StandardRPCJsonSerializer
  /** The `p` part of each published event's frame, encoded once for all the event's subscribers here. */
  private readonly encodedEvents = new WeakMap<PublishedEvent, string>()
  /** oRPC's own response encoder of the RPC protocol (values, streams, errors). */
  private readonly codec: StandardRPCCodec
  private readonly matcher: StandardRPCMatcher
  private readonly clientInterceptors: StandardRPCHandlerOptions<Context>['clientInterceptors']
  private readonly procedures = new Map<string, MatchedProcedure>()

  /** `options` must be the object oRPC's handler was built with: its plugins have added their interceptors to it. */
  constructor(router: AnyRouter, options: StandardRPCHandlerOptions<Context>) {
    this.enabled = toArray(options.interceptors).length === 0 && toArray(options.rootInterceptors).length === 0
    this.plainOutput = toArray(options.customJsonSerializers).length === 0
    this.jsonSerializer = new StandardRPCJsonSerializer(options)
    this.serializer = new StandardRPCSerializer(this.jsonSerializer)
    this.codec = new StandardRPCCodec(this.serializer)
    this.matcher = new StandardRPCMatcher(options)
    this.matcher.init(router)
    this.clientInterceptors = options.clientInterceptors
  }

  /**
   * Calls the procedure at `url` with the serialized `body`. Never throws: a failure is the error response
   * oRPC would send. The response body is serialized; it is plain JSON unless `isPlainBody` says not.
   */
  async call(url: string, body: unknown, context: Context, signal: AbortSignal, lastEventId?: string): Promise<PlainCallResponse> {
    try {
      const matched = this.procedures.get(url) ?? await this.resolve(url)
      if (!matched) return notFound
      const output = await matched.client(this.decode(body), { context, signal, lastEventId })
      if (this.plainOutput && isPlainJson(output)) return { status: 200, headers: {}, body: { json: output } }
      const response: PlainCallResponse = this.codec.encode(output, matched.procedure)
      const subscriber = subscriberOf(output)
      if (subscriber) response.subscriber = subscriber
      return response
    }
    catch (error) {
      return this.encodeError(error)
    }
  }

  /**
   * The `p` part of a published event's frame, as oRPC's encoding of a stream event makes it
   * (`{ e: 'message', d: <serialized payload>, m: { id } }`), encoded once per event and serializer.
   */
  encodeEvent(event: PublishedEvent): string {
    let encoded = this.encodedEvents.get(event)
    if (encoded === undefined) {
      const [json, meta] = this.jsonSerializer.serialize(event.payload)
      encoded = stringifyJSON({ e: 'message', d: { json, meta: meta.length === 0 ? undefined : meta }, m: { id: event.id } })
      this.encodedEvents.set(event, encoded)
    }
    return encoded
  }

  /** The response oRPC sends for `error` (anything thrown becomes an ORPCError: `toCallerError`). */
  encodeError(error: unknown): StandardResponse {
    return this.codec.encodeError(toCallerError(error))
  }

  private decode(body: unknown): unknown {
    try {
      return this.serializer.deserialize(body as Parameters<StandardRPCSerializer['deserialize']>[0])
    }
    catch (error) {
      if (error instanceof ORPCError) throw error
      throw new ORPCError('BAD_REQUEST', {
        message: 'Malformed request. Ensure the request body is properly formatted and the \'Content-Type\' header is set correctly.',
        cause: error,
      })
    }
  }

  private async resolve(url: string): Promise<MatchedProcedure | undefined> {
    const match = await this.matcher.match('POST', `/${url.replace(/^\/|\/$/g, '')}`)
    if (!match) return
    const procedure = match.procedure as AnyProcedure
    const client = createProcedureClient(procedure, {
      context: (clientContext: Context) => clientContext,
      path: match.path,
      interceptors: this.clientInterceptors,
    }) as unknown as ProcedureClient
    // Only matched paths are kept, so the cache is bounded by the router, not by what clients send.
    const matched = { procedure, client }
    this.procedures.set(url, matched)
    return matched
  }
}

/**
 * Whether a serialized response body is plain JSON, sent as one frame. The others: an event stream (an
 * iterator, which the socket streams, or a ReadableStream the codec passes through) or a form (what the
 * serializer makes of data holding files), which oRPC's peer encodes.
 */
export function isPlainBody(body: unknown): boolean {
  // What the serializer makes of plain data (`{ json, meta }`) is answered first, without the class checks.
  if (typeof body !== 'object' || body === null || Object.getPrototypeOf(body) === Object.prototype) return true
  return !(isAsyncIteratorObject(body) || body instanceof ReadableStream || body instanceof FormData)
}
