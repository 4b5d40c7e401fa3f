import type { RpcTransport } from './types'
import { webTransport } from './web'

/** Whether this process is a Cloudflare Worker (workerd), where sockets live in Nitro's Durable Object. */
export const isCloudflareWorker = typeof (globalThis as { WebSocketPair?: unknown }).WebSocketPair === 'function'

/**
 * Cloudflare Durable Objects (Nitro's `cloudflare-durable` preset), through crossws's public peer API, as the
 * web transport, except:
 * - the client's address is the `CF-Connecting-IP` header, which Cloudflare sets on every request (a client
 *   cannot forge it there; `wrangler dev` sets it too); crossws knows no peer address here;
 * - message size: the core refuses a frame over `maxMessageBytes` with 1009 once it has arrived (Cloudflare's
 *   own limit is 32 MiB per message);
 * - backpressure: workerd tells nothing of a socket's send buffer, and Cloudflare buffers what it cannot send
 *   yet; streams are not paused;
 * - heartbeat: no server-side ping (workerd has no ping; the heartbeat frame still goes out).
 */
export const cloudflareTransport: RpcTransport<Parameters<typeof webTransport.bufferedBytes>[0]> = {
  ...webTransport,
  name: 'cloudflare-durable',
  upgradeAddressOf: request => request.headers.get('cf-connecting-ip') ?? undefined,
  remoteAddressOf: () => undefined,
  // A socket the Durable Object closes before the client has sent anything (from crossws's `open` hook, or
  // later from a timer) reaches the client's close frame but never its end (seen with wrangler 4.86 and
  // workerd 2026-04-26: the client stays in CLOSING). Refused at the handshake, the client ends at once.
  refusesAtUpgrade: true,
}
