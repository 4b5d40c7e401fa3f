import { ORPCError } from '@orpc/client'
import type { PlainCallHandler } from './plain-call'
import type { RpcSocketLimits, TokenBucket } from './limits'

/**
 * A call in flight. A plain call: its abort controller, wrapped as `{ streaming }` once its response has gone
 * out and its stream runs. A call oRPC's peer runs: whether its response went out. A call whose response has
 * not gone out holds up a graceful shutdown; a stream that has begun does not.
 */
export type CallInFlight = AbortController | { streaming: AbortController } | 'unanswered' | 'answered'

export const controllerOf = (call: CallInFlight | undefined): AbortController | undefined =>
  call instanceof AbortController ? call : typeof call === 'object' ? call.streaming : undefined

/** Whether a call still waits for its response. */
export const isUnanswered = (call: CallInFlight): boolean => call instanceof AbortController || call === 'unanswered'

/**
 * The typed error that refuses a new call over the connection's limits (calls in flight, rate limit), or
 * undefined when it may run. Takes a token from `budget` when it may.
 */
export function refusalOf(inFlight: number, budget: TokenBucket | undefined, limits: RpcSocketLimits, plainCalls: PlainCallHandler) {
  if (inFlight >= limits.maxCallsInFlight) {
    return plainCalls.encodeError(new ORPCError('TOO_MANY_REQUESTS', {
      status: 429,
      message: `Too many calls in flight on this connection (limit ${limits.maxCallsInFlight}); wait for some to finish.`,
      data: { limit: 'maxCallsInFlight', max: limits.maxCallsInFlight },
    }))
  }
  if (budget && !budget.take()) {
    const { max, windowMs } = limits.rateLimit as { max: number, windowMs: number }
    return plainCalls.encodeError(new ORPCError('TOO_MANY_REQUESTS', {
      status: 429,
      message: `Rate limit exceeded on this connection (${max} calls per ${windowMs} ms); slow down.`,
      data: { limit: 'rateLimit', max, windowMs },
    }))
  }
}
