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
  // A hibernatable socket (Nitro accepts them so) that the Durable Object closes before the client has sent
  // anything sends its close frame but never ends: the client stays in CLOSING (workerd 2026-04-26, under
  // wrangler and under bare miniflare alike; a close after the client's first frame ends normally).
  refusesByFrame: true,
}
