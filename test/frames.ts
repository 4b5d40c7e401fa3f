import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import type { Socket } from 'node:net'

/** A WebSocket client at the frame level, for frames a library client will not send (fragment floods). */
export async function openRawTcpWebSocket(port: number, path: string): Promise<{ socket: Socket, closeCode: Promise<number | undefined> }> {
  const socket = connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve())
    socket.once('error', reject)
  })
  socket.write([
    `GET ${path} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    '',
    '',
  ].join('\r\n'))
  let buffered = Buffer.alloc(0)
  let upgraded = false
  const closeCode = new Promise<number | undefined>((resolve) => {
    socket.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk])
      if (!upgraded) {
        const end = buffered.indexOf('\r\n\r\n')
        if (end === -1) return
        upgraded = true
        buffered = buffered.subarray(end + 4)
      }
      // A server close frame: 0x88, length, then the 2-byte code.
      const index = buffered.indexOf(0x88)
      if (index !== -1 && buffered.length >= index + 4) resolve(buffered.readUInt16BE(index + 2))
    })
    socket.on('close', () => resolve(undefined))
    socket.on('error', () => resolve(undefined))
  })
  await new Promise<void>((resolve) => {
    const check = () => upgraded ? resolve() : setTimeout(check, 5)
    check()
  })
  return { socket, closeCode }
}

/** One masked client frame carrying one byte: `first` starts a text message, the rest continue it. */
export function oneByteFragment(first: boolean): Buffer {
  const mask = randomBytes(4)
  return Buffer.from([first ? 0x01 : 0x00, 0x80 | 1, ...mask, 0x61 ^ mask[0]!])
}
