import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { connect } from 'node:net'

/**
 * A proxy in front of `target` (an http URL) that forwards HTTP and refuses WebSocket upgrades with 403 until
 * `state.allowUpgrades` is set, as some corporate proxies and hosts do. `cut()` drops every connection through
 * it (a network failure).
 */
export async function startUpgradeRefusingProxy(target: URL) {
  const state = { allowUpgrades: false, upgradesRefused: 0 }
  const server = createServer((request, response) => {
    const forwarded = httpRequest({ host: target.hostname, port: target.port, path: request.url, method: request.method, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode!, answer.headers)
      answer.pipe(response)
    })
    forwarded.on('error', () => response.destroy())
    request.pipe(forwarded)
  })
  server.on('upgrade', (request, socket: Socket, head: Buffer) => {
    if (!state.allowUpgrades) {
      state.upgradesRefused++
      socket.end('HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
      return
    }
    const upstream = connect(Number(target.port), target.hostname, () => {
      const lines = [`${request.method} ${request.url} HTTP/1.1`, ...Object.entries(request.headers).map(([name, value]) => `${name}: ${value}`)]
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`)
      upstream.write(head)
      upstream.pipe(socket).pipe(upstream)
    })
    upstream.on('error', () => socket.destroy())
    socket.on('error', () => upstream.destroy())
  })
  const live = new Set<Socket>()
  server.on('connection', (socket) => {
    live.add(socket)
    socket.on('close', () => live.delete(socket))
  })
  const cut = () => live.forEach(socket => socket.destroy())
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    state,
    url: `http://127.0.0.1:${port}`,
    cut,
    close: () => {
      cut()
      server.close()
    },
  }
}
