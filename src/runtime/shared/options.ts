// One declaration and one set of defaults for the options that the build-time modules (src/nitro.ts,
// src/module.ts) and the runtime (the WebSocket hooks, the browser connection) both read.

/** The server's limits and timers: module options of the same names, and `defineRpcWebSocketHandler` options. */
export interface RpcServerLimits {
  /**
   * Calls one connection may have running at once. Past it a new call is refused at once with
   * `TOO_MANY_REQUESTS` (the socket stays open).
   * @default 128
   */
  maxCallsInFlight: number
  /**
   * Per-connection rate limit: at most `max` new calls per `windowMs` (a token bucket), else the call is refused
   * with `TOO_MANY_REQUESTS`. Off by default; `{ max: 200, windowMs: 1000 }` suits most interactive apps.
   * @default false
   */
  rateLimit: { max: number, windowMs: number } | false
  /**
   * New connections this route accepts per second (a token bucket); past it a socket is closed with 1013 and
   * the client retries after its backoff, so a reconnect storm after a restart is let in at a steady rate.
   * @default 1000
   */
  maxHandshakesPerSecond: number
  /**
   * Open connections this server process accepts. Past it a new socket is closed with 1013.
   * @default 10000
   */
  maxConnections: number
  /**
   * Open connections from one IP address (as the socket sees it: behind a proxy, every client shares the
   * proxy's address, so raise this). Past it a new socket is closed with 1013.
   * @default 100
   */
  maxConnectionsPerIp: number
  /**
   * The server pings every connection this often (ms) and sends a heartbeat frame the browser client watches.
   * @default 25000
   */
  heartbeatInterval: number
  /**
   * A connection that does not answer a ping within this time (ms) is terminated, and so is one that had
   * bytes waiting to be sent and sent none. The browser client gives up on a silent server after
   * `heartbeatInterval + heartbeatTimeout` and reconnects.
   * @default 20000
   */
  heartbeatTimeout: number
  /**
   * Unsent bytes a socket may hold (a slow reader): past it its streams pause and the server stops reading it
   * until the buffer drains (where the runtime cannot pause reading, past twice this it is closed with 1013).
   * @default 1048576 (1 MiB)
   */
  maxBufferedBytes: number
  /**
   * Bytes of streamed input (events a client sends to a call whose input is an event iterator) one
   * connection may have waiting for its procedures to read them. Past it the socket is closed with 1008.
   * Events for calls that take no streamed input are dropped.
   * @default 4194304 (4 MiB)
   */
  maxBufferedInputBytes: number
}

export const serverLimitDefaults: RpcServerLimits = {
  maxCallsInFlight: 128,
  rateLimit: false,
  maxHandshakesPerSecond: 1000,
  maxConnections: 10_000,
  maxConnectionsPerIp: 100,
  heartbeatInterval: 25_000,
  heartbeatTimeout: 20_000,
  maxBufferedBytes: 1024 * 1024,
  maxBufferedInputBytes: 4 * 1024 * 1024,
}

/** What an empty `allowedHosts` means in development. */
export const devAllowedHosts = ['localhost', '127.0.0.1', '[::1]'] as const

/** The largest message the server reads, when nothing says otherwise (1 MiB). */
export const defaultMaxMessageBytes = 1024 * 1024

/** The browser connection's timers: module options of the same names, and `createRpcConnection` options. */
export interface RpcClientTimers {
  /**
   * Browser client: the first reconnect waits about this long (ms); each further attempt doubles it up to
   * `reconnectMaxDelay`. Every wait is drawn at random between half and all of that value, afresh per attempt.
   * @default 500
   */
  reconnectBaseDelay: number
  /**
   * Browser client: the longest wait between two reconnect attempts (ms).
   * @default 10000
   */
  reconnectMaxDelay: number
  /**
   * Browser client: how long a call made while the socket is (re)connecting waits for it before it rejects
   * with `CONNECTION_TIMEOUT` (ms). The call is sent once, when the socket opens, or never.
   * @default 10000
   */
  connectTimeout: number
}

export const clientTimerDefaults: RpcClientTimers = {
  reconnectBaseDelay: 500,
  reconnectMaxDelay: 10_000,
  connectTimeout: 10_000,
}
