// The fan-out job's baseline (bench/fanout.ts): one plain `ws` server, no Redis, no framework. Every socket on
// /subscribe is a subscriber; a publish (a text frame `{"seq":..,"sentAt":..}` on /publish) writes each subscriber
// the frame nuxt-orpc writes for that event, byte for byte but the event id's digits, with one ws.send per
// socket, then answers the publisher with the seq. Same stats route as the Nuxt fixture; prints "Listening on".
import { WebSocketServer } from 'ws'
import { createStatsServer } from './stats-server.mjs'

const port = Number(process.env.PORT)
const host = process.env.HOST ?? '127.0.0.1'

const httpServer = createStatsServer()

// ws's defaults (no compression, 100 MiB messages), as nuxt-orpc's node-server build runs it through crossws.
const wss = new WebSocketServer({ server: httpServer })

/** Each subscriber with the head of its frames: nuxt-orpc's client numbers its first call on a connection `_1`. */
const subscribers = new Set()

/**
 * nuxt-orpc's frame of a published event: `{"i":<call id>,"t":3,"p":<encoded event>}`, the event encoded once
 * per publish (`{"e":"message","d":{"json":<payload>},"m":{"id":<Redis stream id>}}`) and the head per socket.
 */
function publish(seq, sentAt) {
  const encoded = JSON.stringify({ e: 'message', d: { json: { seq, sentAt } }, m: { id: `${Date.now()}-0` } })
  for (const subscriber of subscribers) subscriber.ws.send(`${subscriber.head}${encoded}}`)
}

wss.on('connection', (ws, request) => {
  const { pathname } = new URL(request.url ?? '/', 'http://localhost')
  if (pathname === '/publish') {
    ws.on('message', (data) => {
      const { seq, sentAt } = JSON.parse(String(data))
      publish(seq, sentAt)
      ws.send(String(seq))
    })
    return
  }
  const subscriber = { ws, head: `{"i":${JSON.stringify('_1')},"t":3,"p":` }
  subscribers.add(subscriber)
  ws.on('close', () => subscribers.delete(subscriber))
})

httpServer.listen(port, host, () => {
  console.log(`Listening on http://${host}:${port}`)
})

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    for (const client of wss.clients) client.terminate()
    wss.close(() => httpServer.close(() => process.exit(0)))
  })
}
