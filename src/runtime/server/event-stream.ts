import type { EncodedMessage, EventIteratorPayload } from '@orpc/standard-server-peer'
import { encodeResponseMessage, MessageType, serializeResponseMessage } from '@orpc/standard-server-peer'
import { stringifyJSON } from '@orpc/shared'
import type { StandardResponse } from '@orpc/standard-server'
import { ErrorEvent, getEventMeta } from '@orpc/standard-server'
import type { DirectWriter, PublishedEvent, Subscriber } from './publisher/core'

/** What sending a stream needs of its connection. */
export interface EventStreamSink {
  readonly closed: boolean
  /** Whether more than `maxBufferedBytes` waits unsent. */
  readonly overBuffered: boolean
  send: (encoded: EncodedMessage) => void
  /** Resolves once the send buffer is back under its bound, the socket closed or `signal` aborted. */
  drained: (signal: AbortSignal) => Promise<void>
  /** The stream's response has gone out: the call no longer holds up a graceful shutdown. */
  streaming: (id: string, controller: AbortController) => void
}

/** A publisher subscription a procedure returned, and the encoder of its events' frames. */
export interface DirectStream {
  subscriber: Subscriber
  /** The `p` part of an event's frame (the same string for every subscriber of the event). */
  encode: (event: PublishedEvent) => string
}

/**
 * Writes a subscription's events as `{"i":<id>,"t":3,"p":<encoded>}`: what oRPC's encoding of the event gives,
 * byte for byte, with only the call id differing between subscribers. Refuses (false) while the socket holds
 * more than its bound unsent, or once it closed: the event then waits in the subscription's queue.
 */
function directWriter(sink: EventStreamSink, id: string, encode: (event: PublishedEvent) => string): DirectWriter {
  const prefix = `{"i":${stringifyJSON(id)},"t":${MessageType.EVENT_ITERATOR},"p":`
  return {
    write(event) {
      if (sink.closed || sink.overBuffered) return false
      sink.send(`${prefix}${encode(event)}}`)
      return true
    },
  }
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
export async function sendEventStream(sink: EventStreamSink, id: string, response: StandardResponse, iterator: AsyncIterator<unknown>, controller: AbortController, direct?: DirectStream) {
  const { signal } = controller
  // Until the iterator has ended by itself, leaving this function (an abort, a closed socket, a failed send)
  // returns it, so the procedure's generator runs its cleanup.
  let ended = false
  try {
    const head = await encodeResponseMessage(id, MessageType.RESPONSE, response)
    if (signal.aborted || sink.closed) return
    sink.send(head)
    sink.streaming(id, controller)
    const writer = direct && directWriter(sink, id, direct.encode)
    while (true) {
      // While nothing waits in its queue, a subscription's live events are written as they come; what is left
      // (events queued behind a full buffer, the catch-up, the end or the error) is read below.
      if (writer && direct.subscriber.canDeliverDirectly) {
        await direct.subscriber.deliverDirectly(writer, signal)
        if (signal.aborted || sink.closed) return
      }
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
