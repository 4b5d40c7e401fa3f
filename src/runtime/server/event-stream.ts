import type { EncodedMessage, EventIteratorPayload } from '@orpc/standard-server-peer'
import { encodeResponseMessage, MessageType, serializeResponseMessage } from '@orpc/standard-server-peer'
import { stringifyJSON } from '@orpc/shared'
import type { StandardResponse } from '@orpc/standard-server'
import { ErrorEvent, getEventMeta } from '@orpc/standard-server'

/** What sending a stream needs of its connection. */
export interface EventStreamSink {
  readonly closed: boolean
  send: (encoded: EncodedMessage) => void
  /** Resolves once the send buffer is back under its bound, the socket closed or `signal` aborted. */
  drained: (signal: AbortSignal) => Promise<void>
  /** The stream's response has gone out: the call no longer holds up a graceful shutdown. */
  streaming: (id: string, controller: AbortController) => void
}

export function encodeEvent(id: string, event: EventIteratorPayload): string {
  return stringifyJSON(serializeResponseMessage(id, MessageType.EVENT_ITERATOR, event))
}

/**
 * The event stream answering a plain call, sent as oRPC's server peer sends one: the response, then a
 * `message` frame per event, then a `done` or an `error` frame; encoded by oRPC's own functions, without the
 * peer's promise layers around every event. Each event waits until the socket's send buffer is under its
 * bound, so a slow reader cannot make the server buffer without bound. An abort (an abort frame, the socket
 * closing) stops it and returns the iterator; nothing is sent after that, as with the peer.
 */
export async function sendEventStream(sink: EventStreamSink, id: string, response: StandardResponse, iterator: AsyncIterator<unknown>, controller: AbortController) {
  const { signal } = controller
  // Until the iterator has ended by itself, leaving this function (an abort, a closed socket, a failed send)
  // returns it, so the procedure's generator runs its cleanup.
  let ended = false
  try {
    const head = await encodeResponseMessage(id, MessageType.RESPONSE, response)
    if (signal.aborted || sink.closed) return
    sink.send(head)
    sink.streaming(id, controller)
    while (true) {
      let event: EventIteratorPayload
      try {
        const { done, value } = await iterator.next()
        ended = done === true
        event = { event: done ? 'done' : 'message', data: value, meta: getEventMeta(value) }
      }
      catch (error) {
        ended = true
        if (signal.aborted || sink.closed) return
        // oRPC's serializer turns every error of a stream into an ErrorEvent; anything else is a failure of
        // the stream itself, which the peer reports the same way.
        if (!(error instanceof ErrorEvent)) {
          sink.send(encodeEvent(id, { event: 'error', data: undefined }))
          throw error
        }
        event = { event: 'error', data: error.data, meta: getEventMeta(error) }
      }
      await sink.drained(signal)
      if (signal.aborted || sink.closed) return
      sink.send(encodeEvent(id, event))
      if (event.event !== 'message') return
    }
  }
  finally {
    if (!ended) await iterator.return?.()
  }
}
