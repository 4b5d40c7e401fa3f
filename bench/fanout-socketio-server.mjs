// The fan-out job's peer (bench/fanout.ts): Socket.IO 4 over the websocket transport only, its instances sharing
// Redis through @socket.io/redis-adapter (two ioredis clients, a channel prefix of the run's own), with the same
// stats route as the Nuxt fixture. Prints "Listening on" like Nitro, so both start the same way.
//   join (room, ack): the socket joins the room, then the ack.
//   publish ({ room, seq, sentAt }, ack): io.to(room).emit('event', { seq, sentAt }), then the ack.
import { createAdapter } from '@socket.io/redis-adapter'
import { Redis } from 'ioredis'
import { Server } from 'socket.io'
import { createStatsServer } from './stats-server.mjs'

const port = Number(process.env.PORT)
const host = process.env.HOST ?? '127.0.0.1'
const redisUrl = process.env.FANOUT_REDIS_URL ?? 'redis://127.0.0.1:6379'
const key = process.env.FANOUT_KEY ?? 'socket.io'

const httpServer = createStatsServer()

// The adapter's two clients, as its docs set them up: one publishes, its duplicate subscribes.
const pubClient = new Redis(redisUrl, { lazyConnect: true })
const subClient = pubClient.duplicate()
for (const client of [pubClient, subClient]) client.on('error', error => console.error(`redis: ${error.message}`))
await Promise.all([pubClient.connect(), subClient.connect()])

// Defaults otherwise (1 MB messages, ping every 25 s), as an app would run it.
const io = new Server(httpServer, { transports: ['websocket'], serveClient: false, adapter: createAdapter(pubClient, subClient, { key }) })

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    socket.join(room)
    ack?.()
  })
  socket.on('publish', ({ room, seq, sentAt }, ack) => {
    io.to(room).emit('event', { seq, sentAt })
    ack?.()
  })
})

httpServer.listen(port, host, () => {
  console.log(`Listening on http://${host}:${port}`)
})

// Stop on the signals the harness sends, like Nitro's node-server; the Redis clients quit too.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => io.close(async () => {
    await Promise.allSettled([pubClient.quit(), subClient.quit()])
    process.exit(0)
  }))
}
