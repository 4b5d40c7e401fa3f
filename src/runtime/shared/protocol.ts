// What nuxt-orpc's server and browser client agree on besides oRPC's own message format. Plain values, no
// imports: both sides (and other runtimes) load this file.

/** WebSocket close codes nuxt-orpc uses; clients map them to typed errors. */
export const RpcCloseCode = {
  /** The server is shutting down: reconnect (to another instance). */
  GoingAway: 1001,
  /** The frame was not JSON (or not valid UTF-8). */
  MalformedFrame: 1007,
  /** Origin not allowed, a frame that is JSON but not an oRPC message, or too much streamed input waiting. */
  PolicyViolation: 1008,
  /** A frame larger than `maxMessageBytes`, or a fragment flood (sent by the WebSocket server itself). */
  MessageTooBig: 1009,
  /** The server failed unexpectedly (the context function threw a non-HTTP error). */
  InternalError: 1011,
  /**
   * The server no longer knows this connection (a Cloudflare Durable Object woke up with the socket but found
   * no record of it): reconnect. No frame of such a connection is run. Streams the server lost while the
   * socket stayed open end with it too (see `restartFrame`).
   */
  ServiceRestart: 1012,
  /** Too many connections (in all, or from this IP), or a client that does not read its replies: try again later. */
  TryAgainLater: 1013,
  /** The context function refused the connection with 401, or the app closed the user's connections. */
  Unauthorized: 4401,
  /** The context function refused the connection with 403. */
  Forbidden: 4403,
} as const

/**
 * The WebSocket subprotocols nuxt-orpc's client offers, in this order: a server that just takes the first
 * (ws's default, a stock oRPC server) gets plain oRPC; nuxt-orpc's server picks `nuxt-orpc`, which adds the
 * ready signal: the client sends nothing until it arrives, so a connection refused right after the handshake
 * (caps, origin, auth) has never carried a call.
 */
export const rpcSubprotocols = ['orpc', 'nuxt-orpc'] as const

/** The subprotocol with the ready signal. */
export const readySubprotocol = rpcSubprotocols[1]

/**
 * The heartbeat frame: oRPC's abort message for id -1, a call that never exists. Every oRPC client (ours or
 * the stock `RPCLink`) ignores it; nuxt-orpc's client counts it as a sign of life, so it notices a server that
 * went silent without closing. Sent once right after a connection is accepted, it is also the "ready" signal.
 */
export const heartbeatFrame = '{"i":-1,"t":4}'

/**
 * The refusal frame, sent instead of the ready frame where a server cannot close a socket before the client
 * has sent anything on it (Cloudflare's hibernatable sockets never finish such a close): it carries the close
 * code and reason, and nuxt-orpc's client closes the socket itself and treats it as closed with them. Like the
 * heartbeat, an abort for call -1, which any oRPC client ignores.
 */
export const refusalFrame = (code: number, reason: string) => JSON.stringify({ i: -1, t: 4, p: { closeCode: code, closeReason: reason } })

/**
 * The restart frame: the server lost its running streams but kept the socket (a Cloudflare Durable Object woke
 * from hibernation; every socket it wakes with gets it). nuxt-orpc's client ends each stream of the socket
 * with `CONNECTION_CLOSED`, so a stream whose events carry ids resumes at once after its last one; plain
 * calls in flight are still answered. Any other oRPC client ignores it (an abort for call -1).
 */
export const restartFrame = '{"i":-1,"t":4,"p":"restart"}'

/** The close code and reason of a refusal frame, or undefined for any other frame. */
export function refusalOf(frame: unknown): { code: number, reason: string } | undefined {
  if (typeof frame !== 'string' || !frame.startsWith('{"i":-1,"t":4,"p":')) return
  try {
    const { p } = JSON.parse(frame) as { p?: { closeCode?: unknown, closeReason?: unknown } }
    if (Number.isInteger(p?.closeCode) && typeof p?.closeReason === 'string') return { code: p.closeCode as number, reason: p.closeReason }
  }
  catch {
    // Not one.
  }
}

/**
 * The HTTP route's probe: `GET <route>/<httpProbePath>` is answered 204 with the `httpProbeHeader` header, so a
 * client whose socket cannot open tells nuxt-orpc's HTTP route (calls may go there) from any other answer
 * (a stock oRPC server, a proxy's error page).
 */
export const httpProbePath = '_probe'
export const httpProbeHeader = 'x-nuxt-orpc'

/** The JSON-and-bytes separator of oRPC's binary frames (files, forms); it never occurs in UTF-8 text. */
export const binaryDelimiter = 0xFF
