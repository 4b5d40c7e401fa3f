import { createServerPeerHandleRequestFn } from '@orpc/server/standard-peer'
import type { DecodedRequestMessage, EventIteratorPayload } from '@orpc/standard-server-peer'
import { encodeResponseMessage, experimental_ServerPeerWithoutCodec as ServerPeerWithoutCodec, MessageType, serializeResponseMessage, toEventIterator } from '@orpc/standard-server-peer'
import { AbortError, stringifyJSON } from '@orpc/shared'
import type { StandardRequest, StandardResponse } from '@orpc/standard-server'
import { isEventIteratorHeaders } from '@orpc/standard-server'
import { RpcCloseCode } from '../shared/protocol'
import { InputEventQueue } from './input-queue'
import { callSettled } from './registry'
import type { RpcSocket } from './socket'

const textEncoder = new TextEncoder()

type RequestMessage = Extract<DecodedRequestMessage, [string, MessageType.REQUEST, unknown]>

/**
 * The calls of one connection that oRPC's stock server peer runs: requests with streamed input, files or forms
 * going in, or headers; a plain call's response that is a file, a form or a ReadableStream; aborts of those.
 * Made on the first such call: the peer holds four maps and queues, which most connections never need.
 */
export class StockCalls {
  private readonly peer: ServerPeerWithoutCodec
  /** Events of streamed inputs not yet pulled; made on the first call with streamed input. */
  private inputs: InputEventQueue | undefined

  constructor(private readonly socket: RpcSocket) {
    this.peer = new ServerPeerWithoutCodec(async ([id, type, payload]) => {
      const encoded = await encodeResponseMessage(id, type, payload)
      if (type === MessageType.EVENT_ITERATOR) await socket.drained()
      else if (type === MessageType.RESPONSE && socket.calls.has(id)) {
        socket.calls.set(id, 'answered')
        callSettled(socket)
      }
      socket.send(encoded)
    })
  }

  /** Runs a request (already counted against the connection's limits) until its response has gone out. */
  async run(decoded: RequestMessage) {
    const [id, type, request] = decoded
    const { calls } = this.socket
    calls.set(id, 'unanswered')
    try {
      await this.dispatch(isEventIteratorHeaders(request.headers) ? [id, type, this.withStreamedInput(id, request)] : decoded)
    }
    finally {
      calls.delete(id)
      this.inputs?.close({ id })
      callSettled(this.socket)
    }
  }

  /** An abort of a call the peer runs. */
  async abort(decoded: DecodedRequestMessage) {
    this.inputs?.close({ id: decoded[0], reason: new AbortError('Client aborted the request') })
    await this.dispatch(decoded)
  }

  /**
   * A plain call's response that only oRPC's peer encodes (a file, a form, a ReadableStream). From here on the
   * call is the peer's; its abort (client abort, socket closed) reaches the procedure's signal.
   */
  async respond(id: string, response: StandardResponse, controller: AbortController) {
    this.socket.calls.set(id, 'unanswered')
    const peerSignal = this.peer.open(id).signal
    peerSignal.addEventListener('abort', () => controller.abort(peerSignal.reason), { once: true })
    await this.peer.response(id, response)
  }

  /**
   * An event of a streamed input, for the call it belongs to. Ignored unless that call is running and declared
   * streamed input (as frames for unknown calls are). Past `maxBufferedInputBytes` waiting on this socket, the
   * client is sending faster than its procedures read: the socket is closed with 1008.
   */
  queueInputEvent(id: string, event: EventIteratorPayload, raw: string | Uint8Array) {
    const inputs = this.inputs
    if (!inputs?.isOpen(id)) return
    inputs.pushEvent(id, event, typeof raw === 'string' ? textEncoder.encode(raw).byteLength : raw.byteLength)
    const { maxBufferedInputBytes } = this.socket.route.limits
    if (inputs.bytes > maxBufferedInputBytes) {
      this.socket.close(RpcCloseCode.PolicyViolation, `Streamed input over ${maxBufferedInputBytes} bytes waiting to be read`)
    }
  }

  /** The socket closed: every call the peer runs is aborted. */
  close() {
    this.peer.close()
    this.inputs?.close()
  }

  /**
   * The request with its streamed input read from this socket's bounded queue. Without the event-stream
   * content type, oRPC's peer takes the body as it is instead of opening its own queue for it.
   */
  private withStreamedInput(id: string, request: Omit<StandardRequest, 'signal'>): Omit<StandardRequest, 'signal'> {
    const inputs = this.inputs ??= new InputEventQueue()
    inputs.open(id)
    const { 'content-type': _eventStream, ...headers } = request.headers
    // As oRPC's peer does: a procedure that stops reading its input early tells the client to stop sending.
    // The cast: @orpc/standard-server-peer's declarations inline a copy of AsyncIdQueue's type (private members
    // make it nominal), while its code takes @orpc/shared's class, which InputEventQueue extends.
    const body = toEventIterator(inputs as unknown as Parameters<typeof toEventIterator>[0], id, async (reason) => {
      if (reason === 'next') return
      // Nothing reads this input any more: what still arrives for it is dropped, not counted against the bound.
      inputs.close({ id })
      if (this.socket.calls.has(id)) this.socket.send(stringifyJSON(serializeResponseMessage(id, MessageType.ABORT_SIGNAL, undefined)))
    })
    return { ...request, headers, body }
  }

  private async dispatch(decoded: DecodedRequestMessage) {
    try {
      // Made per request: this path is for files, headers and streamed input, where it is a small part of the
      // cost. Aborts and input events need none.
      const handleRequest = decoded[1] === MessageType.REQUEST
        ? createServerPeerHandleRequestFn(this.socket.route.standardHandler, { context: this.socket.context })
        : undefined
      await this.peer.message(decoded, handleRequest)
    }
    catch (error) {
      // The call failed outside its procedure: the socket closed under it, or its output cannot be encoded.
      if (!this.socket.closed) console.error('[nuxt-orpc] A call failed outside its procedure.', error)
    }
  }
}
