// (e) Socket.IO 4 in its own process: an ack echo and a stream of events over the websocket transport only,
// plus the same stats route as the Nuxt fixture. Prints "Listening on" like Nitro, so both start the same way.
import { Server } from 'socket.io'
import { createStatsServer } from './stats-server.mjs'

const port = Number(process.env.PORT)
const host = process.env.HOST ?? '127.0.0.1'

const httpServer = createStatsServer()

// Defaults otherwise (1 MB messages, ping every 25 s), as an app would run it.
const io = new Server(httpServer, { transports: ['websocket'], serveClient: false })

io.on('connection', (socket) => {
  socket.on('echo', (data, ack) => ack(data))
  // Same shape as the raw route's stream: `count` events, then the ack that ends it.
  socket.on('stream', async (count, ack) => {
    for (let n = 0; n < count; n++) {
      socket.emit('event', n)
      if (n % 256 === 255) await new Promise(resolve => setImmediate(resolve))
    }
    ack(count)
  })
})

httpServer.listen(port, host, () => {
  console.log(`Listening on http://${host}:${port}`)
})

// Stop on the signals the harness sends, like Nitro's node-server.
for (const signal of ['SIGTERM', 'SIGINT']) process.once(signal, () => io.close(() => process.exit(0)))
