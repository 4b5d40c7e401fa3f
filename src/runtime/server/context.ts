import { ORPCError } from '@orpc/server'
import { H3Event, getRequestURL, isError } from 'h3'
import type { IncomingMessage } from 'node:http'
import { ServerResponse } from 'node:http'
import type { RpcContextFunction, RpcContextInput, RpcUpgradeRequest } from '../types'
import { peerAddressOf, toCloseReason } from './socket'

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

/** crossws's Node request proxy keeps the IncomingMessage here (crossws 0.3.x, `NodeReqProxy._req`). */
interface NodeUpgradeRequest extends RpcUpgradeRequest {
  _req?: IncomingMessage
}

/**
 * Builds the context function's input for a WebSocket upgrade. On Node the upgrade's IncomingMessage is
 * wrapped in a real H3 event (with a detached response nobody reads), so h3 helpers and session libraries
 * behave as they do for an HTTP request; other runtimes get the crossws request itself.
 */
export function contextInputFromUpgrade(request: RpcUpgradeRequest): RpcContextInput {
  const nodeRequest = (request as NodeUpgradeRequest)._req
  let event: H3Event | RpcUpgradeRequest = request
  if (nodeRequest) {
    event = new H3Event(nodeRequest, new ServerResponse(nodeRequest))
    // What Nitro's request hook sets up; `useRuntimeConfig(event)` (and session libraries) read it.
    event.context.nitro = { errors: [] }
  }
  // Headers and address are built only if the context function asks; the address without Node's cache.
  return {
    event,
    url: new URL(request.url),
    get headers() {
      return request.headers
    },
    get remoteAddress() {
      return nodeRequest ? peerAddressOf(nodeRequest.socket) : undefined
    },
    transport: 'websocket',
  }
}

export function contextInputFromEvent(event: H3Event): RpcContextInput {
  return {
    event,
    url: getRequestURL(event),
    headers: event.headers,
    remoteAddress: event.node.req.socket?.remoteAddress,
    transport: 'ssr',
  }
}

export type { RpcContextFunction }
