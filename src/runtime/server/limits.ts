import type { RpcServerLimits } from '../shared/options'

/** The limits one connection enforces. */
export type RpcSocketLimits = Pick<RpcServerLimits, 'maxCallsInFlight' | 'rateLimit' | 'maxBufferedBytes' | 'maxBufferedInputBytes'>

/** A token bucket holding up to `capacity` tokens, refilled continuously with `ratePerWindow` per `windowMs`. */
export class TokenBucket {
  private tokens: number
  private updatedAt = Date.now()

  constructor(private readonly capacity: number, private readonly windowMs: number, private readonly ratePerWindow = capacity) {
    this.tokens = capacity
  }

  take(): boolean {
    const now = Date.now()
    // A clock set back (NTP) refills nothing rather than draining the bucket for as long as it jumped.
    const elapsed = Math.max(0, now - this.updatedAt)
    this.tokens = Math.min(this.capacity, this.tokens + elapsed * this.ratePerWindow / this.windowMs)
    this.updatedAt = now
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }
}
