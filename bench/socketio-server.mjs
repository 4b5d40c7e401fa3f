// (e) Socket.IO 4 in its own process: an ack echo and a stream of events over the websocket transport only,
// plus the same stats route as the Nuxt fixture. Prints "Listening on" like Nitro, so both start the same way.
import { createServer } from 'node:http'
import { Server } from 'socket.io'

const port = Number(process.env.PORT)
const host = process.env.HOST ?? '127.0.0.1'

function stats(url) {
  if (url.searchParams.has('gc')) {
    globalThis.gc?.()
    globalThis.gc?.()
  }
  return {
    cpu: process.cpuUsage(),
    sleeps: process.resourceUsage().voluntaryContextSwitches,
    memory: process.memoryUsage(),
    sockets: process.getActiveResourcesInfo().filter(resource => resource === 'TCPSocketWrap').length,
  }
}

const httpServer = createServer((request, response) => {
  const url = new URL(request.url ?? '/', 'http://localhost')
  if (url.pathname !== '/_bench/stats') {
    response.writeHead(404).end()
    return
  }
  response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats(url)))
})

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
