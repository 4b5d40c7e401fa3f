import { RpcCloseCode } from '../shared/protocol'
import type { RpcContext } from '../types'

// The connections of this process, open or finishing their handshake: what `closeRpcConnections` and a
// graceful shutdown reach.

/** WebSocket close reasons are limited to 123 bytes of UTF-8. */
export function toCloseReason(text: string): string {
  const bytes = new TextEncoder().encode(text)
  if (bytes.length <= 123) return text
  return new TextDecoder().decode(bytes.subarray(0, 120)).replace(/\uFFFD$/, '') + '...'
}

/** Close codes a server may send (RFC 6455 7.4: not 1004-1006, none reserved past 1014 below 3000). */
export function isValidCloseCode(code: number): boolean {
  return Number.isInteger(code) && ((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999))
}

/** What `closeRpcConnections` and other server code can see of a connection. */
export interface RpcConnectionInfo {
  /** crossws's peer id; empty while the handshake is finishing. */
  readonly id: string
  /** The context the context function returned for this connection. */
  readonly context: RpcContext
  readonly remoteAddress: string | undefined
}

/** What the registry needs of an open connection. */
export interface RegisteredConnection extends RpcConnectionInfo {
  /** Whether a call on it still waits for its response (a graceful shutdown lets those finish). */
  readonly answering: boolean
  close: (code: number, reason: string) => void
}

/** Every open connection of this process, for `closeRpcConnections` and shutdown. */
export const liveSockets = new Set<RegisteredConnection>()

/**
 * A connection whose context is made but whose socket is not open yet: its handshake is finishing. Seen by
 * `closeRpcConnections`, so a session revoked in that window does not open a socket afterwards.
 */
export class PendingConnection implements RpcConnectionInfo {
  /** Empty: crossws gives the peer its id when the socket opens. */
  readonly id = ''
  /** Set by `closeRpcConnections`: the socket is closed with this as soon as it opens. */
  revoked: { code: number, reason: string } | undefined

  /** `contextValue`: the context function's result; undefined without a context function. */
  constructor(readonly contextValue: RpcContext | undefined, readonly remoteAddress: string | undefined) {}

  get context(): RpcContext {
    return this.contextValue ?? {} as RpcContext
  }
}

/** Every pending connection of this process (see `PendingConnection`). */
export const pendingConnections = new Set<PendingConnection>()

/**
 * Closes every open connection whose info matches `filter` (all of them without one), e.g. a user's sockets
 * on logout: `closeRpcConnections(connection => connection.context.user?.id === userId)`. Their calls in
 * flight are aborted; clients get `UNAUTHORIZED` (code 4401) by default. Returns how many were closed.
 * Connections on other server instances are not reached.
 */
export function closeRpcConnections(
  filter?: (connection: RpcConnectionInfo) => boolean,
  { code = RpcCloseCode.Unauthorized, reason = 'Session ended' }: { code?: number, reason?: string } = {},
): number {
  if (!isValidCloseCode(code)) {
    throw new TypeError(`[nuxt-orpc] closeRpcConnections: ${code} is not a close code a server may send (1000 to 1014 but 1004 to 1006, or 3000 to 4999; 4401 by default).`)
  }
  const closeReason = toCloseReason(reason)
  let count = 0
  // Handshakes that are finishing are closed as soon as they open.
  for (const pending of pendingConnections) {
    if (filter && !filter(pending)) continue
    pending.revoked = { code, reason: closeReason }
    count++
  }
  for (const socket of [...liveSockets]) {
    if (filter && !filter(socket)) continue
    try {
      socket.close(code, closeReason)
    }
    catch (error) {
      // Its calls are aborted all the same (`close` disposes in a `finally`); the other sockets are still closed.
      console.error('[nuxt-orpc] closeRpcConnections: a socket failed to close.', error)
    }
    count++
  }
  return count
}

let shuttingDown: Promise<void> | undefined
/** While a shutdown waits: the connections whose calls it waits for, told when one of their calls settles. */
let awaitingAnswers: { connections: Set<RegisteredConnection>, settled: (connection: RegisteredConnection) => void } | undefined

/**
 * A connection calls this when one of its calls stops waiting for a response (answered, stream begun,
 * ended): a graceful shutdown waits on these, not on a timer.
 */
export function callSettled(connection: RegisteredConnection) {
  awaitingAnswers?.settled(connection)
}

/**
 * Graceful shutdown: waits (up to `timeout` ms) until the connections that had calls waiting for their response
 * when it began have none waiting, then closes every connection with 1001 so clients reconnect elsewhere.
 * Streams are not waited for: they end with the socket.
 */
export function shutdownRpcConnections(timeout: number): Promise<void> {
  return shuttingDown ??= new Promise<void>((resolve) => {
    const connections = new Set([...liveSockets].filter(connection => connection.answering))
    const finish = () => {
      clearTimeout(timer)
      awaitingAnswers = undefined
      closeRpcConnections(undefined, { code: RpcCloseCode.GoingAway, reason: 'Server shutting down' })
      resolve()
    }
    const timer = setTimeout(finish, timeout)
    if (!connections.size) {
      finish()
      return
    }
    awaitingAnswers = {
      connections,
      settled(connection) {
        if (connection.answering || !connections.delete(connection)) return
        if (!connections.size) finish()
      },
    }
  })
}

/** True once a shutdown began: new connections are refused with 1001. */
export const isShuttingDown = () => shuttingDown !== undefined
