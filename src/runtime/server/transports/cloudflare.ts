import { heartbeatFrame, restartFrame } from '../../shared/protocol'
import type { RpcConnectionRecord, RpcConnectionStore, RpcTransport } from './types'
import { webTransport } from './web'

/** Whether this process is a Cloudflare Worker (workerd), where sockets live in Nitro's Durable Object. */
export const isCloudflareWorker = typeof (globalThis as { WebSocketPair?: unknown }).WebSocketPair === 'function'

/** The parts of Cloudflare's `DurableObjectState` nuxt-orpc uses. */
export interface DurableObjectStateLike {
  storage: {
    list: (options: { prefix: string, start?: string, end?: string, limit?: number, reverse?: boolean }) => Promise<Map<string, unknown>>
    put: (key: string, value: unknown) => Promise<void>
    delete: (keys: string | string[]) => Promise<unknown>
  }
  setWebSocketAutoResponse: (pair?: unknown) => void
  getWebSockets: () => Array<{ send: (data: string) => void }>
}

/** Listeners of wakes with sockets open (see `RpcConnectionStore.onWake`). */
const wakeListeners = new Set<() => void>()
/** Whether the Durable Object was made with sockets open in this isolate. */
let wokeWithSockets = false

/** Calls `listener` each time the Durable Object wakes with sockets open, and at once if it did before. */
export function onDurableObjectWake(listener: () => void) {
  if (!isCloudflareWorker) return
  wakeListeners.add(listener)
  if (wokeWithSockets) listener()
}

/**
 * The state of the Durable Object Nitro serves sockets from, taken in its constructor (before any of its
 * events) and again at every wake; undefined in an isolate that does not run it (the Worker in front of it).
 */
let durableState: DurableObjectStateLike | undefined

/** Whether this isolate runs the Durable Object. */
export const runsDurableObject = () => durableState !== undefined

/** The storage of the Durable Object this isolate runs (see `runsDurableObject`); the socket hooks run only there. */
export function durableStorage(): DurableObjectStateLike['storage'] {
  if (!durableState) throw new Error('[nuxt-orpc] No Durable Object state: Nitro\'s cloudflare:durable:init hook did not run before the object\'s first event.')
  return durableState.storage
}

const keyPrefix = 'nuxt-orpc:connection:'

/**
 * Called (synchronously, see server/plugin.ts) whenever Nitro makes its Durable Object: at first use, and at
 * every wake from hibernation or after an eviction. Keeps its state, and has Cloudflare answer the client's
 * ping (the heartbeat frame) with the same frame itself, without waking the object.
 *
 * Sockets it finds open were open before: their connections are restored from their records, but what ran
 * on them is gone. Streams waiting for events (a subscription) cannot be carried over, and a frame sent
 * through an object from before does not arrive (seen on workerd 2026-04-26). So every socket gets the
 * restart frame (nuxt-orpc's client resumes its streams at once; see `restartFrame`) and the wake listeners
 * run. Without sockets, records left by sockets that went away unseen (a deploy, a reset) are deleted.
 */
export function attachDurableObject(state: DurableObjectStateLike) {
  durableState = state
  const Pair = (globalThis as { WebSocketRequestResponsePair?: new (request: string, response: string) => unknown }).WebSocketRequestResponsePair
  if (Pair) state.setWebSocketAutoResponse(new Pair(heartbeatFrame, heartbeatFrame))
  const sockets = state.getWebSockets()
  if (sockets.length === 0) {
    void state.storage.list({ prefix: keyPrefix })
      .then(stale => stale.size ? state.storage.delete([...stale.keys()]) : undefined)
      .catch(() => {
        // Tried again at the next start.
      })
    return
  }
  wokeWithSockets = true
  for (const socket of sockets) {
    try {
      socket.send(restartFrame)
    }
    catch {
      // Closing already.
    }
  }
  for (const listener of wakeListeners) listener()
}

/**
 * Connection records in the Durable Object's storage, by crossws's peer id, which crossws keeps in the
 * socket's attachment and so survives hibernation. One write when a connection opens, one delete when it
 * closes, one list of them all when the object wakes with sockets open. (The attachment itself is
 * crossws's, and its Cloudflare peer hides the socket behind a Proxy on which `serializeAttachment` throws
 * "Illegal invocation".)
 */
const durableStore: RpcConnectionStore = {
  save: async (peer, record) => durableStorage().put(keyPrefix + peer.id, record),
  async list() {
    const records = await durableStorage().list({ prefix: keyPrefix })
    return new Map([...records].map(([key, record]) => [key.slice(keyPrefix.length), record as RpcConnectionRecord]))
  },
  drop(peer) {
    Promise.resolve().then(() => durableStorage().delete(keyPrefix + peer.id)).catch(() => {
      // Gone with the object.
    })
  },
  onWake: onDurableObjectWake,
}

/**
 * Cloudflare Durable Objects (Nitro's `cloudflare-durable` preset), through crossws's public peer API, as the
 * web transport, except:
 * - the client's address is the `CF-Connecting-IP` header, which Cloudflare sets on every request (a client
 *   cannot forge it there; `wrangler dev` sets it too); crossws knows no peer address here;
 * - message size: the core refuses a frame over `maxMessageBytes` with 1009 once it has arrived (Cloudflare's
 *   own limit is 32 MiB per message);
 * - backpressure: workerd tells nothing of a socket's send buffer, and Cloudflare buffers what it cannot send
 *   yet; streams are not paused;
 * - heartbeat: no timer (a pending one keeps the object from hibernating); the client pings after a silence
 *   and Cloudflare answers without waking the object (`attachDurableObject`);
 * - hibernation: each connection's record (its context) is kept in the object's storage while it is open, and
 *   a socket the object wakes up with goes on with it (`attachDurableObject`).
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
  serverHeartbeat: false,
  store: durableStore,
}
