import type { EncodedMessage } from '@orpc/standard-server-peer'
import type { Peer } from 'crossws'
import { RpcCloseCode } from '../shared/protocol'
import type { RpcRoute } from './socket'
import type { RpcTransport } from './transports'
import { inspector } from './devtools/inspector'

/**
 * How many sockets one group of corked writes holds: past it, the group's sockets are uncorked before the next
 * one is corked. A fan-out writes a frame to each of its subscribers' sockets in one tick: corked until the
 * tick ended, none of 10,000 would get anything before the last frame was made (30 ms on the bench machine);
 * not corked at all, each write wakes the reader for one frame. Groups start the writes early and still
 * send them back to back.
 */
const corkGroupSize = 128

/** The sockets corked in this tick's group (their outputs, and how to uncork each), written out together. */
const corkedOutputs: ConnectionOutput[] = []
const corkedUncorks: Array<() => void> = []

/**
 * What a connection sends and how it keeps the send buffer bounded: a tick's replies corked into one write,
 * reading paused while more than `maxBufferedBytes` waits unsent, one drain wait that every paused stream
 * shares, and the heartbeat's view of whether the peer still reads. `RpcSocket` adds frames and calls.
 */
export abstract class ConnectionOutput {
  // Fields are `declare`d and assigned in the constructor: bundlers lower class fields to helper calls (Nitro's
  // does), and V8 then sizes the object for about ten of them, keeping the rest in a second array (0.1 KB
  // more per connection). Assigned in constructors, they all sit in the object itself.
  readonly declare connection: Peer
  /** The transport's handle on the socket (on Node ws's WebSocket). */
  readonly declare websocket: unknown
  readonly declare route: RpcRoute
  /** Whether the socket has closed, or is being closed from here. */
  declare closed: boolean
  /** Whether the socket is corked in the tick's group (see `send`). */
  private declare corked: boolean
  /** While the socket holds more than `maxBufferedBytes` unsent, it is not read (no new call makes more). */
  private declare readingPaused: boolean
  /** The one wait for the socket's buffer to drain that every paused stream and the paused reader share. */
  private declare drainWait: { drained: Promise<void>, wake: () => void } | undefined
  /** Bytes read from the peer when the heartbeat last pinged it (-1: not pinged yet). */
  private declare readAtPing: number
  /** Bytes the peer had taken when the heartbeat last pinged it. */
  private declare flushedAtPing: number

  constructor(connection: Peer, route: RpcRoute) {
    this.connection = connection
    this.websocket = route.transport.socketOf(connection)
    this.route = route
    this.closed = false
    this.corked = false
    this.readingPaused = false
    this.drainWait = undefined
    this.readAtPing = -1
    this.flushedAtPing = 0
  }

  abstract close(code: number, reason: string): void

  protected get transport(): RpcTransport {
    return this.route.transport
  }

  /** The heartbeat's ping, where the transport has one; it notes how far the socket's counters were. */
  ping() {
    const progress = this.transport.ping(this.websocket)
    if (!progress) return
    this.readAtPing = progress.read
    this.flushedAtPing = progress.flushed
  }

  /**
   * Whether the peer looks dead since the last ping: nothing arrived from it (no pong, no frame) while the
   * socket was being read, or bytes waited to be sent and none went out. Counting bytes needs no listener or
   * timestamp per connection. A client that sends a byte now and then but never reads is caught by the
   * second rule.
   */
  get unresponsive(): boolean {
    if (this.readAtPing === -1) return false
    const progress = this.transport.progressOf(this.websocket)
    if (!progress) return false
    if (!this.readingPaused && progress.read === this.readAtPing) return true
    return progress.waiting > 0 && progress.flushed === this.flushedAtPing
  }

  /** Ends the connection at once (a dead peer). */
  terminate() {
    this.transport.terminate(this.connection, this.websocket)
  }

  /**
   * Replies made in the same tick leave in one write where the transport can cork (Node): the first send of a
   * tick corks the socket, and it is uncorked when the tick ends (a write per frame is most of a reply's cost
   * under load), or sooner, with the rest of its group, once `corkGroupSize` sockets are corked. A frame known
   * to be `alone` in its tick is written at once: corking would only add work.
   */
  send(encoded: EncodedMessage, alone = false) {
    if (this.closed) return
    if (import.meta.dev) inspector.sent(this.connection.id, encoded)
    const transport = this.transport
    if (!this.corked && !alone) {
      // A full group leaves before another socket joins.
      if (corkedOutputs.length >= corkGroupSize) ConnectionOutput.uncorkGroup()
      const uncork = transport.cork(this.websocket)
      if (uncork) {
        // The first socket of a group has the tick's end uncork whatever is corked by then.
        if (corkedOutputs.length === 0) process.nextTick(ConnectionOutput.uncorkGroup)
        this.corked = true
        corkedOutputs.push(this)
        corkedUncorks.push(uncork)
      }
    }
    if (typeof encoded === 'string') transport.sendText(this.connection, this.websocket, encoded)
    else this.connection.send(encoded)
    // Under a cork the tick's writes are looked at once, when it is lifted.
    if (!this.corked) this.checkBuffered()
  }

  /**
   * Uncorks every socket of the group (the tick ended, or the group is full). A socket that throws does not
   * keep the others corked: the first error is thrown once all are uncorked.
   */
  private static uncorkGroup() {
    const outputs = corkedOutputs.splice(0)
    const uncorks = corkedUncorks.splice(0)
    let failure: { error: unknown } | undefined
    for (let index = 0; index < outputs.length; index++) {
      const output = outputs[index]!
      output.corked = false
      try {
        uncorks[index]!()
        output.checkBuffered()
      }
      catch (error) {
        failure ??= { error }
      }
    }
    if (failure) throw failure.error
  }

  private checkBuffered() {
    if (this.readingPaused || this.closed) return
    const buffered = this.transport.bufferedBytes(this.websocket) ?? 0
    if (buffered > this.route.limits.maxBufferedBytes) this.pauseReading(buffered)
  }

  /** Whether more than `maxBufferedBytes` waits unsent. */
  get overBuffered(): boolean {
    return (this.transport.bufferedBytes(this.websocket) ?? 0) > this.route.limits.maxBufferedBytes
  }

  /**
   * A client that sends calls but does not read their answers would have the server queue every reply. Past
   * `maxBufferedBytes` unsent, the socket is not read until its buffer drains: the client's frames wait in
   * its own TCP buffers, and only calls already running can still add replies. Where the transport cannot
   * pause reading, the socket is closed with 1013 once twice that waits: streams stop at `maxBufferedBytes`
   * (one event over at most), so only replies to a client that keeps calling get there.
   */
  private pauseReading(buffered: number) {
    const transport = this.transport
    if (!transport.pauseReading(this.websocket)) {
      if (buffered > 2 * this.route.limits.maxBufferedBytes) this.close(RpcCloseCode.TryAgainLater, 'Too many replies waiting: the client does not read')
      return
    }
    this.readingPaused = true
    void this.drained().then(() => {
      this.readingPaused = false
      if (!this.closed) transport.resumeReading(this.websocket)
    })
  }

  /**
   * Resolves once the socket holds at most `maxBufferedBytes` unsent, it closes, or `signal` aborts. Streams
   * wait here before each event (oRPC's peer awaits its send, which waits here, before pulling the next), so a
   * slow reader cannot make the server buffer without bound.
   */
  async drained(signal?: AbortSignal) {
    if (!this.overBuffered) return
    const wake = () => this.drainWait?.wake()
    signal?.addEventListener('abort', wake, { once: true })
    try {
      while (!this.closed && !signal?.aborted && this.overBuffered) await this.nextDrain()
    }
    finally {
      signal?.removeEventListener('abort', wake)
    }
  }

  /**
   * One wait per socket, however many streams are paused on it: the transport's drain event (the buffer is
   * empty again) where it has one, else a short timer (a queue inside ws, runtimes without the event).
   */
  private nextDrain(): Promise<void> {
    if (this.drainWait) return this.drainWait.drained
    let wake!: () => void
    const drained = new Promise<void>((resolve) => {
      wake = () => {
        if (this.drainWait?.drained !== drained) return
        this.drainWait = undefined
        stopListening?.()
        clearTimeout(timer)
        resolve()
      }
    })
    const stopListening = this.transport.onDrain(this.websocket, wake)
    const timer = stopListening ? undefined : setTimeout(wake, 10)
    this.drainWait = { drained, wake }
    return drained
  }

  /** Lets every wait for the drain go (the socket closed). */
  protected wakeDrainWaiters() {
    this.drainWait?.wake()
  }
}
