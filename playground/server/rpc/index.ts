import { ORPCError } from '@orpc/server'
import { z } from 'zod'

interface Todo { id: number, text: string, done: boolean, createdAt: Date }

/** The to-do list of the query pages (app/pages/tanstack.vue, colada.vue): in memory, one per server process. */
const todos: Todo[] = [
  { id: 1, text: 'Read the README', done: true, createdAt: new Date() },
  { id: 2, text: 'Call a procedure', done: false, createdAt: new Date() },
]

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

  /** Queries and mutations for TanStack Query and Pinia Colada. */
  todos: {
    list: rpc
      .input(z.object({ search: z.string().max(40).default('') }))
      .handler(({ input }) => todos.filter(todo => todo.text.toLowerCase().includes(input.search.toLowerCase()))),
    add: rpc
      .input(z.object({ text: z.string().trim().min(1, 'Write something').max(80) }))
      .handler(({ input }) => {
        const todo = { id: Math.max(0, ...todos.map(todo => todo.id)) + 1, text: input.text, done: false, createdAt: new Date() }
        todos.push(todo)
        return todo
      }),
    toggle: rpc
      .input(z.object({ id: z.number().int() }))
      .handler(({ input }) => {
        const todo = todos.find(todo => todo.id === input.id)
        if (!todo) throw new ORPCError('NOT_FOUND', { message: `No to-do ${input.id}` })
        todo.done = !todo.done
        return todo
      }),
  },

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
      // Returned, not yielded from a generator: the socket writes each message itself (see the README).
      .handler(({ input, signal, lastEventId }) => usePublisher().subscribe(`chat:${input.room}`, { signal, lastEventId, history: true })),
    /**
     * Who is in the room: the caller is in it while this stream is open (a signed-in user once, however many
     * tabs), and gets the room's members as they join and leave, on every instance.
     */
    presence: rpc
      .input(z.object({ room: z.string().min(1).max(40), name: z.string().trim().min(1).max(40) }))
      .handler(async function* ({ input, context, signal, lastEventId }) {
        const name = context.user?.name ?? input.name
        await usePresence().join(`chat:${input.room}`, { name, via: `pid ${process.pid}` }, { signal, key: context.user ? `user:${context.user.name}` : undefined })
        yield* usePresence().subscribe(`chat:${input.room}`, { signal, lastEventId })
      }),
    instance: rpc.handler(() => `pid ${process.pid}`),
  },
}
