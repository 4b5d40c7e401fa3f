import type { Peer } from 'crossws'
import { heartbeatFrame, restartFrame } from '../../shared/protocol'
import type { RpcConnectionRecord, RpcConnectionStore, RpcTransport } from './types'
import { webTransport } from './web'

/** Whether this process is a Cloudflare Worker (workerd), where sockets live in Nitro's Durable Object. */
export const isCloudflareWorker = typeof (globalThis as { WebSocketPair?: unknown }).WebSocketPair === 'function'

/** The parts of Cloudflare's `DurableObjectState` nuxt-orpc uses. */
export interface DurableObjectStateLike {
  storage: {
    get: (key: string) => Promise<unknown>
    put: (key: string, value: unknown) => Promise<void>
    delete: (key: string) => Promise<boolean>
  }
  setWebSocketAutoResponse: (pair?: unknown) => void
  getWebSockets: () => Array<{ send: (data: string) => void }>
}

/** What must happen when the Durable Object is made again: the server's memory of open sockets is stale. */
const wakeListeners = new Set<() => void>()
/** Whether the Durable Object was made before in this isolate (it woke from hibernation since). */
let made = false

/** Calls `listener` each time the Durable Object wakes from hibernation in this isolate (see `attachDurableObject`). */
export function onDurableObjectWake(listener: () => void) {
  if (isCloudflareWorker) wakeListeners.add(listener)
}

let resolveDurableState: (state: DurableObjectStateLike) => void
/** The state of the Durable Object Nitro serves sockets from, once its constructor ran (after every wake too). */
let durableState = new Promise<DurableObjectStateLike>((resolve) => {
  resolveDurableState = resolve
})

/**
 * Called from Nitro's `cloudflare:durable:init` hook, when the Durable Object is made: at first use and at every
 * wake from hibernation. Keeps its state, and has Cloudflare answer the client's ping (the heartbeat frame)
 * with the same frame itself, without waking the object.
 *
 * Sockets it finds open were open before it hibernated. Their connections are restored from the store when
 * they next send a frame, but what ran on them is gone: streams waiting for events (a subscription) cannot be
 * carried over, and a frame sent through an object from before hibernation does not arrive (seen on
 * workerd 2026-04-26). Every connection the isolate still holds is let go without a word, and every
 * socket gets the restart frame: nuxt-orpc's client resumes its streams at once (`restartFrame`).
 */
export function attachDurableObject(state: DurableObjectStateLike) {
  resolveDurableState(state)
  durableState = Promise.resolve(state)
  const Pair = (globalThis as { WebSocketRequestResponsePair?: new (request: string, response: string) => unknown }).WebSocketRequestResponsePair
  if (Pair) state.setWebSocketAutoResponse(new Pair(heartbeatFrame, heartbeatFrame))
  if (made) {
    for (const listener of wakeListeners) listener()
  }
  made = true
  for (const socket of state.getWebSockets()) socket.send(restartFrame)
}

const keyOf = (peer: Peer) => `nuxt-orpc:connection:${peer.id}`

/**
 * Connection records in the Durable Object's storage, by crossws's peer id, which crossws keeps in the
 * socket's attachment and so survives hibernation. One write when a connection opens, one read when the
 * object wakes with it, one delete when it closes. (The attachment itself is crossws's, and its Cloudflare
 * peer hides the socket behind a Proxy on which `serializeAttachment` throws "Illegal invocation".)
 */
const durableStore: RpcConnectionStore = {
  save: async (peer, record) => (await durableState).storage.put(keyOf(peer), record),
  load: async peer => (await (await durableState).storage.get(keyOf(peer))) as RpcConnectionRecord | undefined,
  onWake: onDurableObjectWake,
  drop(peer) {
    void durableState.then(state => state.storage.delete(keyOf(peer))).catch(() => {
      // Gone with the object.
    })
  },
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
 * - hibernation: each connection's record (its context) is kept in the object's storage, and a socket the
 *   object wakes up with goes on with it.
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
