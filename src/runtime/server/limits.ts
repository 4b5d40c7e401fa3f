import type { RpcServerLimits } from '../shared/options'

/** The limits one connection enforces. */
export type RpcSocketLimits = Pick<RpcServerLimits, 'maxCallsInFlight' | 'rateLimit' | 'maxBufferedBytes' | 'maxBufferedInputBytes'>

/**
 * One token bucket per client address (as `ipKeyOf` keys it), for limits that have no connection to hang on
 * (calls over HTTP). At most `maxClients` buckets are kept; past that the oldest is dropped (its client starts
 * afresh), so many addresses cannot grow the map without bound.
 */
export class BucketsByClient {
  private readonly buckets = new Map<string, TokenBucket>()

  constructor(private readonly max: number, private readonly windowMs: number, private readonly maxClients = 10_000) {}

  take(key: string): boolean {
    let bucket = this.buckets.get(key)
    if (!bucket) {
      if (this.buckets.size >= this.maxClients) this.buckets.delete(this.buckets.keys().next().value!)
      this.buckets.set(key, bucket = new TokenBucket(this.max, this.windowMs))
    }
    return bucket.take()
  }

  get size() {
    return this.buckets.size
  }
}

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
