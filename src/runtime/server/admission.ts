import type { RpcRefusal } from './context'
import type { RpcServerLimits } from '../shared/options'
import { RpcCloseCode } from '../shared/protocol'
import { TokenBucket } from './limits'
import { isShuttingDown } from './registry'

/**
 * Whether a handshake's Origin may open the socket. No Origin: not a browser, so no victim's cookies; allowed.
 * An origin in `allowedOrigins`: allowed. Otherwise only the same origin: the Origin's host equals the Host
 * the request was made to (as Phoenix checks it), and a page over plain http may not open a socket that came
 * in over TLS. The scheme is not compared otherwise, so TLS terminated at a proxy still counts as same origin.
 *
 * The Host header is the attacker's to choose in a DNS-rebinding attack (a page on `rebind.attacker.example`
 * that resolves to the server sends that name as both Host and Origin), so when `allowedHosts` is not empty
 * the same-origin rule holds only for a Host in it (`.example.com` also matches its subdomains).
 */
export function isOriginAllowed(
  origin: string | null,
  requestUrl: string,
  allowedOrigins: ReadonlySet<string>,
  allowedHosts: readonly string[] = [],
): boolean {
  if (origin === null) return true
  if (allowedOrigins.has(origin)) return true
  try {
    const page = new URL(origin)
    const request = new URL(requestUrl)
    if (page.host !== request.host) return false
    if (page.protocol === 'http:' && (request.protocol === 'https:' || request.protocol === 'wss:')) return false
    return allowedHosts.length === 0 || isHostAllowed(request.hostname, allowedHosts)
  }
  catch {
    return false
  }
}

/** Whether `hostname` is one of `allowedHosts` (`.example.com` also matches its subdomains). */
export function isHostAllowed(hostname: string, allowedHosts: readonly string[]): boolean {
  const host = hostname.toLowerCase()
  return allowedHosts.some(allowed => allowed.startsWith('.')
    ? host === allowed.slice(1) || host.endsWith(allowed)
    : host === allowed)
}

/** `allowedOrigins` as the origins a browser sends (`https://app.example.com`); a typo fails at startup. */
export function normalizeOrigins(origins: readonly string[]): Set<string> {
  return new Set(origins.map((origin) => {
    if (origin === 'null') return origin
    try {
      return new URL(origin).origin
    }
    catch {
      throw new TypeError(`[nuxt-orpc] allowedOrigins: "${origin}" is not an origin such as "https://app.example.com".`)
    }
  }))
}

/** `allowedHosts` as URL hostnames: lower case, IPv6 in brackets (`[::1]`), no port. */
export function normalizeHosts(hosts: readonly string[]): string[] {
  return hosts.map((host) => {
    const name = host.trim().toLowerCase()
    // A bare IPv6 address has two colons or more; one colon is a port, and a slash or @ a URL.
    const ipv6 = /^\[[\da-f:.]+\]$/.test(name) ? name : /^[\da-f]*:[\da-f]*:[\da-f:.]*$/.test(name) ? `[${name}]` : undefined
    if (ipv6) return ipv6
    if (!name || /[/:@[\]]/.test(name)) {
      throw new TypeError(`[nuxt-orpc] allowedHosts: "${host}" is not a host name such as "app.example.com" (no scheme, no port).`)
    }
    return name
  })
}

/** An IPv6 address part's 16-bit groups, as numbers; an embedded IPv4 address gives two. */
function groupsOf(part: string): number[] {
  if (!part) return []
  return part.split(':').flatMap((group) => {
    if (!group.includes('.')) return [Number.parseInt(group, 16)]
    const [a = 0, b = 0, c = 0, d = 0] = group.split('.').map(Number)
    return [a * 256 + b, c * 256 + d]
  })
}

/**
 * The key the per-IP cap counts an address under: an IPv4 address as it is (also when mapped into IPv6, in any
 * notation), an IPv6 address by its /64 prefix, since one subscriber usually holds a whole /64 and can pick any
 * address in it.
 */
export function ipKeyOf(address: string): string {
  if (!address.includes(':')) return address
  const [head = '', tail] = address.replace(/%.*$/, '').toLowerCase().split('::')
  const headGroups = groupsOf(head)
  const tailGroups = groupsOf(tail ?? '')
  const zeros = tail === undefined ? [] : Array.from({ length: Math.max(0, 8 - headGroups.length - tailGroups.length) }, () => 0)
  const groups = [...headGroups, ...zeros, ...tailGroups]
  // ::ffff:0:0/96 is IPv4 (a dual-stack socket's view of an IPv4 client).
  if (groups.length === 8 && groups.slice(0, 5).every(group => group === 0) && groups[5] === 0xFFFF) {
    return [groups[6]! >> 8, groups[6]! & 0xFF, groups[7]! >> 8, groups[7]! & 0xFF].join('.')
  }
  return `${groups.slice(0, 4).map(group => group.toString(16)).join(':')}::/64`
}

/** The caps `Admission` enforces. */
export type AdmissionLimits = Pick<RpcServerLimits, 'maxHandshakesPerSecond' | 'maxConnections' | 'maxConnectionsPerIp'>

/**
 * A handshake's place under the caps, from the upgrade that reserved it until its socket opens (or the
 * handshake is refused or given up). `ipKey` is undefined while the address is not known. An open connection
 * keeps only its `ipKey`, for `closed`.
 */
export interface AdmissionSlot {
  ipKey: string | undefined
  opened: boolean
  released: boolean
}

/**
 * The connection caps of one route: connections in all, per IP address (IPv6 per /64), and new ones per
 * second. A slot is reserved synchronously when an upgrade begins, before the context function runs, so a
 * flood of handshakes neither runs it nor overshoots a cap while it awaits; slots of handshakes still under
 * way count like open connections.
 */
export class Admission {
  private pending = 0
  private open = 0
  private readonly perIp = new Map<string, number>()
  // A small burst (a tenth of a second's worth), so no one-second window sees much more than the cap.
  private readonly handshakes: TokenBucket

  constructor(private readonly limits: AdmissionLimits) {
    this.handshakes = new TokenBucket(Math.max(1, Math.ceil(limits.maxHandshakesPerSecond / 10)), 1000, limits.maxHandshakesPerSecond)
  }

  /** Connections open now. */
  get size() {
    return this.open
  }

  /** Reserves a slot for a new connection from `address` (undefined: not known yet), or says why not. */
  reserve(address: string | undefined): AdmissionSlot | RpcRefusal {
    if (isShuttingDown()) return { status: 503, closeCode: RpcCloseCode.GoingAway, reason: 'Server shutting down' }
    if (this.open + this.pending >= this.limits.maxConnections) {
      return { status: 503, closeCode: RpcCloseCode.TryAgainLater, reason: 'Too many connections' }
    }
    const ipKey = address === undefined ? undefined : ipKeyOf(address)
    if (ipKey !== undefined && (this.perIp.get(ipKey) ?? 0) >= this.limits.maxConnectionsPerIp) {
      return { status: 429, closeCode: RpcCloseCode.TryAgainLater, reason: 'Too many connections from this address' }
    }
    // Last, so refused handshakes do not use up the budget: a reconnect storm is let in at a steady rate.
    if (!this.handshakes.take()) return { status: 503, closeCode: RpcCloseCode.TryAgainLater, reason: 'Too many new connections' }
    this.pending++
    if (ipKey !== undefined) this.perIp.set(ipKey, (this.perIp.get(ipKey) ?? 0) + 1)
    return { ipKey, opened: false, released: false }
  }

  /**
   * The slot's socket opened from `address`. Where the upgrade could not tell the address (other runtimes
   * than Node), the per-IP cap is checked now; a refusal releases the slot.
   */
  opened(slot: AdmissionSlot, address: string | undefined): RpcRefusal | undefined {
    if (slot.released || slot.opened) return { status: 500, closeCode: RpcCloseCode.InternalError, reason: 'No connection state' }
    if (slot.ipKey === undefined && address !== undefined) {
      const ipKey = ipKeyOf(address)
      const count = this.perIp.get(ipKey) ?? 0
      if (count >= this.limits.maxConnectionsPerIp) {
        this.release(slot)
        return { status: 429, closeCode: RpcCloseCode.TryAgainLater, reason: 'Too many connections from this address' }
      }
      this.perIp.set(ipKey, count + 1)
      slot.ipKey = ipKey
    }
    slot.opened = true
    this.pending--
    this.open++
  }

  /** Frees the slot of a handshake that was refused or given up. Idempotent; a slot whose socket opened stays. */
  release(slot: AdmissionSlot) {
    if (slot.released || slot.opened) return
    slot.released = true
    this.pending--
    this.forgetOne(slot.ipKey)
  }

  /**
   * Counts a connection that was admitted before the server forgot it (a Durable Object woke up with it), from
   * `address`, without refusing it; returns its IP key, for `closed`.
   */
  adopt(address: string | undefined): string | undefined {
    const ipKey = address === undefined ? undefined : ipKeyOf(address)
    this.open++
    if (ipKey !== undefined) this.perIp.set(ipKey, (this.perIp.get(ipKey) ?? 0) + 1)
    return ipKey
  }

  /** Forgets every connection, open or under way (all of them were abandoned; see `adopt`). */
  reset() {
    this.pending = 0
    this.open = 0
    this.perIp.clear()
  }

  /** An open connection (whose slot had `ipKey`) closed. Called once per connection. */
  closed(ipKey: string | undefined) {
    this.open--
    this.forgetOne(ipKey)
  }

  private forgetOne(ipKey: string | undefined) {
    if (ipKey === undefined) return
    const count = (this.perIp.get(ipKey) ?? 1) - 1
    if (count === 0) this.perIp.delete(ipKey)
    else this.perIp.set(ipKey, count)
  }
}

export const isRefusal = (value: AdmissionSlot | RpcRefusal): value is RpcRefusal => 'closeCode' in value
