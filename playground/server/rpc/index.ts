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
}
