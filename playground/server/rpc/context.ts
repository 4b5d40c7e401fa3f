import type { RpcContextInput } from '#nuxt-orpc'

// Runs once per WebSocket connection (at the upgrade) and once per SSR page request.
export default async function createContext({ event }: RpcContextInput) {
  const session = await getUserSession(event)
  return { user: session.user ?? null }
}
