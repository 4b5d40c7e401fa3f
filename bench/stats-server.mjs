// What the bench's own server processes (Socket.IO, the fan-out peers) share with the Nuxt fixture: an HTTP server
// whose /_bench/stats route tells the process's CPU time, context switches, memory and open sockets (after a gc
// when asked: `?gc`). The processes are started with --expose-gc.
import { createServer } from 'node:http'

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

/** An HTTP server answering only the stats route (404 otherwise), for a WebSocket server to attach to. */
export function createStatsServer() {
  return createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://localhost')
    if (url.pathname !== '/_bench/stats') {
      response.writeHead(404).end()
      return
    }
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats(url)))
  })
}
