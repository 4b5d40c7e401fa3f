import { ORPCError } from '@orpc/server'
import type { H3Event } from 'h3'
import { getRequestURL, isError } from 'h3'
import type { RpcContextFunction, RpcContextInput, RpcUpgradeRequest } from '../types'
import { toCloseReason } from './registry'
import type { RpcTransport } from './transports'

/** Why a connection (or an SSR call) was refused: a WebSocket close code and a reason. */
export interface RpcRefusal {
  closeCode: number
  reason: string
  status: number
}

/** WebSocket close code for a refusal with HTTP status `status`: 4000 + status (4401, 4403, ...). */
export const closeCodeForStatus = (status: number) => 4000 + status

/** HTTP status carried by an error thrown from the context function: ORPCError, H3 error or a Response. */
function statusOf(error: unknown): number | undefined {
  if (error instanceof ORPCError) return error.status
  if (isError(error)) return error.statusCode
  if (error instanceof Response) return error.status
  return undefined
}

function messageOf(error: unknown): string {
  if (error instanceof Response) return error.statusText || 'Connection refused'
  if (error instanceof Error && error.message) return error.message
  return 'Connection refused'
}

/**
 * Turns an error thrown by the context function into a refusal. A 4xx status (401 and 403 above all) is the
 * app's answer and goes to the caller; anything else is a server fault: logged, and refused as 1011.
 */
export function refusalFromError(error: unknown): RpcRefusal {
  const status = statusOf(error)
  if (status !== undefined && status >= 400 && status < 500) {
    return { status, closeCode: closeCodeForStatus(status), reason: toCloseReason(messageOf(error)) }
  }
  console.error('[nuxt-orpc] The context function failed; the connection is refused.', error)
  return { status: 500, closeCode: 1011, reason: 'Connection context failed' }
}

/** The ORPCError a caller sees for a refusal, on both transports. */
export function errorFromRefusal(refusal: RpcRefusal): ORPCError<string, unknown> {
  const code = refusal.status === 401 ? 'UNAUTHORIZED' : refusal.status === 403 ? 'FORBIDDEN' : refusal.status >= 500 ? 'INTERNAL_SERVER_ERROR' : 'BAD_REQUEST'
  return new ORPCError(code, { status: refusal.status, message: refusal.reason })
}

/**
 * Builds the context function's input for a WebSocket upgrade: a real H3 event made by the runtime's transport
 * (on Node around the upgrade's IncomingMessage, elsewhere from the web request), so h3 helpers and session
 * libraries behave as they do for an HTTP request. Headers and address are read only if the function asks.
 */
export function contextInputFromUpgrade(request: RpcUpgradeRequest, transport: RpcTransport): RpcContextInput {
  return {
    event: transport.eventOf(request),
    url: new URL(request.url),
    get headers() {
      return request.headers
    },
    get remoteAddress() {
      return transport.upgradeAddressOf(request)
    },
    transport: 'websocket',
  }
}

/** The context function's input for an HTTP request: a page rendered (SSR) or a call over HTTP. */
export function contextInputFromEvent(event: H3Event, transport: 'ssr' | 'http' = 'ssr', url = getRequestURL(event)): RpcContextInput {
  return {
    event,
    url,
    headers: event.headers,
    remoteAddress: event.node.req.socket?.remoteAddress,
    transport,
  }
}

export type { RpcContextFunction }
