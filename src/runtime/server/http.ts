import { ORPCError } from '@orpc/client'
import { StandardRPCJsonSerializer, StandardRPCSerializer } from '@orpc/client/standard'
import type { AnyRouter } from '@orpc/server'
import { BodyLimitPlugin, RPCHandler } from '@orpc/server/fetch'
import type { H3Event } from 'h3'
import { defineEventHandler, getRequestHeader, getRequestIP, getRequestURL, getRequestWebStream, setResponseHeaders } from 'h3'
import type { RpcContext, RpcContextFunction } from '../types'
import { defaultMaxMessageBytes } from '../shared/options'
import { httpProbeHeader, httpProbePath } from '../shared/protocol'
import { ipKeyOf, isOriginAllowed, normalizeHosts, normalizeOrigins } from './admission'
import { BucketsByClient } from './limits'
import { contextInputFromEvent, errorFromRefusal, refusalFromError } from './context'
import { toCallerError } from './plain-call'

/** What serving the router over HTTP takes: the socket route's router, context function and rules. */
export interface RpcHttpHandlerOptions {
  router: AnyRouter
  createContext?: RpcContextFunction
  /** The path the calls are under (`/_orpc` serves `/_orpc/greet`). */
  prefix: `/${string}`
  /** As the socket's: a browser request from another origin is refused with 403. */
  allowedOrigins?: readonly string[]
  allowedHosts?: readonly string[]
  /** The largest request body, in bytes (the socket's `maxMessageBytes`); past it: 413. */
  maxMessageBytes?: number
  /**
   * The socket's per-connection rate limit, applied per client address here (a client over HTTP is no one
   * connection); past it: TOO_MANY_REQUESTS. A request whose address the runtime does not tell is not limited.
   */
  rateLimit?: { max: number, windowMs: number } | false
}

/**
 * The router over HTTP, for clients that cannot open the socket (a host or a proxy without WebSockets): oRPC's
 * own fetch handler, so calls are oRPC's RPC protocol and streams are server-sent events. Each request runs the
 * context function with `transport: 'http'` and passes the socket's origin rule and size limit first; a
 * refusal is the typed error the socket's client would see.
 */
export function defineRpcHttpHandler(options: RpcHttpHandlerOptions) {
  const allowedOrigins = normalizeOrigins(options.allowedOrigins ?? [])
  const allowedHosts = normalizeHosts(options.allowedHosts ?? [])
  const maxBodySize = options.maxMessageBytes ?? defaultMaxMessageBytes
  const handler = new RPCHandler(options.router, { plugins: [new BodyLimitPlugin({ maxBodySize })] })
  const { createContext, prefix, rateLimit } = options
  const probePath = `${prefix}/${httpProbePath}`
  const buckets = rateLimit ? new BucketsByClient(rateLimit.max, rateLimit.windowMs) : undefined

  return defineEventHandler(async (event) => {
    const url = getRequestURL(event)
    const origin = getRequestHeader(event, 'origin') ?? null
    if (!isOriginAllowed(origin, url.href, allowedOrigins, allowedHosts)) {
      return errorResponse(new ORPCError('FORBIDDEN', { status: 403, message: `Origin ${origin} is not allowed` }))
    }
    // A page of `allowedOrigins` calls from another origin: CORS lets its browser read the answers.
    if (origin !== null && allowedOrigins.has(origin)) {
      setResponseHeaders(event, { 'access-control-allow-origin': origin, 'access-control-allow-credentials': 'true', 'access-control-expose-headers': httpProbeHeader, 'vary': 'origin' })
      if (event.method === 'OPTIONS') {
        setResponseHeaders(event, {
          'access-control-allow-methods': 'GET, POST',
          'access-control-allow-headers': getRequestHeader(event, 'access-control-request-headers') ?? 'content-type',
          'access-control-max-age': 600,
        })
        return new Response(null, { status: 204 })
      }
    }
    if (event.method === 'GET' && url.pathname === probePath) return new Response(null, { status: 204, headers: { [httpProbeHeader]: 'http' } })
    const address = buckets && getRequestIP(event)
    if (rateLimit && address && !buckets.take(ipKeyOf(address))) {
      const { max, windowMs } = rateLimit
      return errorResponse(new ORPCError('TOO_MANY_REQUESTS', {
        status: 429,
        message: `Rate limit exceeded for this client (${max} calls per ${windowMs} ms); slow down.`,
        data: { limit: 'rateLimit', max, windowMs },
      }))
    }
    let context: RpcContext
    try {
      context = (await createContext?.(contextInputFromEvent(event, 'http', url)) ?? {}) as RpcContext
    }
    catch (error) {
      return errorResponse(errorFromRefusal(refusalFromError(error)))
    }
    const { matched, response } = await handler.handle(requestOf(event, url), { prefix, context })
    return matched ? response : errorResponse(new ORPCError('NOT_FOUND', { message: `No procedure at ${url.pathname}` }))
  })
}

/**
 * The web request of `event`, as h3's `toWebRequest` makes it but with a signal that aborts when the client
 * goes away: a procedure, a stream above all, sees its `signal` abort as over the socket.
 */
function requestOf(event: H3Event, url: URL): Request {
  const controller = new AbortController()
  event.node.res.once('close', () => controller.abort())
  const init: RequestInit & { duplex: 'half' } = {
    duplex: 'half',
    method: event.method,
    headers: event.headers,
    body: getRequestWebStream(event),
    signal: controller.signal,
  }
  return new Request(url, init)
}

const serializer = new StandardRPCSerializer(new StandardRPCJsonSerializer())

/** An error as oRPC's RPC protocol answers one (its serializer), so `RPCLink` and nuxt-orpc's client throw it typed. */
function errorResponse(error: ORPCError<string, unknown>): Response {
  return new Response(JSON.stringify(serializer.serialize(toCallerError(error).toJSON())), {
    status: error.status,
    headers: { 'content-type': 'application/json' },
  })
}
