import { IncomingMessage, ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import { H3Event } from 'h3'
import { RpcCloseCode } from '../../shared/protocol'
import type { RpcTransport } from './types'

/** The standard WebSocket members the web transport reads (through crossws's `peer.websocket`). */
interface WebSocketLike {
  bufferedAmount?: number
}

/**
 * The H3 event of an upgrade that came as a web `Request` (Bun, Deno): an IncomingMessage made from its
 * method, URL and headers, so h3 helpers (`getCookie`, `useSession`) and session libraries work as on Node.
 * There is no TCP socket behind it; the response is detached (nobody reads it).
 */
function eventFromRequest(request: Request): H3Event {
  const url = new URL(request.url)
  const nodeRequest = new IncomingMessage(new Socket())
  nodeRequest.method = request.method
  nodeRequest.url = url.pathname + url.search
  nodeRequest.headers = Object.fromEntries(request.headers)
  const event = new H3Event(nodeRequest, new ServerResponse(nodeRequest))
  event.context.nitro = { errors: [] }
  return event
}

/**
 * Bun and Deno, through crossws's public peer API and the standard WebSocket. What they lack is replaced:
 * - message size: the core refuses a frame over `maxMessageBytes` with 1009 once it has arrived (Bun reads
 *   at most its own `maxPayloadLength`, 16 MiB; Deno has no limit of its own);
 * - backpressure: Deno's `bufferedAmount` is read, waited on with a short timer (no drain event), and a client
 *   that does not read its replies is closed with 1013 past twice `maxBufferedBytes` (reading cannot be
 *   paused); Bun tells nothing of its
 *   buffer, and a frame Bun drops (past its `backpressureLimit`, 16 MiB) closes the socket with 1013;
 * - heartbeat: no server-side ping through crossws; Bun's own pings and idle timeout (120 s) end dead peers;
 * - per-IP caps: the address is known once the socket is open (Bun), or not at all (Deno under Nitro 2).
 */
export const webTransport: RpcTransport<WebSocketLike> = {
  name: 'web',

  originOf: request => request.headers.get('origin'),
  upgradeAddressOf: () => undefined,
  eventOf: request => eventFromRequest(request as unknown as Request),
  answersSubprotocol: true,
  refusesByFrame: false,
  serverHeartbeat: true,

  socketOf: peer => peer.websocket as WebSocketLike,
  remoteAddressOf(peer) {
    // crossws's Deno peer reads the address off the upgrade's connection info, which throws once it is gone.
    try {
      return peer.remoteAddress
    }
    catch {
      return undefined
    }
  },
  adopt: () => false,
  limitsMessageSize: false,

  sendText(peer, _socket, text) {
    // Bun answers 0 for a frame it dropped (its buffer is over `backpressureLimit`): never lose one silently.
    if ((peer.send(text) as unknown) === 0) peer.close(RpcCloseCode.TryAgainLater, 'Too many replies waiting: the client does not read')
  },
  cork: () => undefined,
  bufferedBytes: socket => typeof socket.bufferedAmount === 'number' ? socket.bufferedAmount : undefined,
  pauseReading: () => false,
  resumeReading: () => {},
  onDrain: () => undefined,
  ping: () => undefined,
  progressOf: () => undefined,
  terminate: peer => peer.terminate(),
}

interface DenoUpgradeOptions {
  protocol?: string
  headers?: HeadersInit
}

type DenoUpgrade = ((request: Request, options?: DenoUpgradeOptions) => unknown) & { nuxtOrpc?: true }

/**
 * crossws 0.3's Deno adapter hands the upgrade hook's headers to `Deno.upgradeWebSocket`, which answers a
 * subprotocol only through its `protocol` option: every client that offers one (nuxt-orpc's own, Chrome)
 * then fails the handshake ("Server did not respond with sent protocols"). crossws 0.4 passes it
 * (h3js/crossws#203); until Nitro 2 ships that, the option is filled here, once per process: the protocol the
 * upgrade hook chose, else (another WebSocket route) the first offered, as ws picks on Node. Deno reads the
 * offered list split at ", " only: a client that joins it with "," alone (the `ws` package) offers one
 * unknown protocol, and such a handshake is answered with none (the client then refuses it) rather than
 * failing inside Deno. Does nothing outside Deno.
 */
export function answerSubprotocolsOnDeno() {
  const deno = (globalThis as { Deno?: { upgradeWebSocket?: DenoUpgrade } }).Deno
  const upgrade = deno?.upgradeWebSocket
  if (!deno || !upgrade || upgrade.nuxtOrpc) return
  const answering: DenoUpgrade = (request, options = {}) => {
    const offered = request.headers.get('sec-websocket-protocol')?.split(', ') ?? []
    const chosen = options.protocol ?? new Headers(options.headers).get('sec-websocket-protocol') ?? offered[0]
    const protocol = chosen && offered.includes(chosen) ? chosen : undefined
    return upgrade.call(deno, request, { ...options, protocol })
  }
  answering.nuxtOrpc = true
  deno.upgradeWebSocket = answering
}
