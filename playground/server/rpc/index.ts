import { ORPCError } from '@orpc/server'
import { z } from 'zod'

export const router = {
  /** A typed call with schema-validated input. */
  greet: rpc
    .input(z.object({ name: z.string().trim().min(1, 'Tell me your name').max(40) }))
    .handler(({ input }) => ({ message: `Hello, ${input.name}!`, at: new Date().toISOString() })),

  /** A live stream: the server's clock, once a second, until the client stops listening. */
  clock: rpc.handler(async function* ({ signal }) {
    while (!signal?.aborted) {
      yield new Date().toISOString()
      await new Promise(resolve => setTimeout(resolve, 1000))
    }
  }),

  /** Needs the cookie session that `rpc/context.ts` read. */
  me: rpc.handler(({ context }) => {
    if (!context.user) throw new ORPCError('UNAUTHORIZED', { message: 'Sign in to see this.' })
    return { name: context.user.name }
  }),

  /** A chat across instances: `usePublisher()` (memory, or Redis with NUXT_ORPC_PUBLISHER_DRIVER=redis). */
  chat: {
    send: rpc
      .input(z.object({ room: z.string().min(1).max(40), author: z.string().trim().min(1).max(40), text: z.string().trim().min(1).max(500) }))
      .handler(async ({ input, context }) => {
        const author = context.user?.name ?? input.author
        return usePublisher().publish(`chat:${input.room}`, { author, text: input.text, via: `pid ${process.pid}`, sentAt: new Date() })
      }),
    /** The room's recent messages, then live ones. After a reconnect the client resumes from `lastEventId`. */
    messages: rpc
      .input(z.object({ room: z.string().min(1).max(40) }))
      .handler(async function* ({ input, signal, lastEventId }) {
        yield* usePublisher().subscribe(`chat:${input.room}`, { signal, lastEventId, history: true })
      }),
    instance: rpc.handler(() => `pid ${process.pid}`),
  },
}
