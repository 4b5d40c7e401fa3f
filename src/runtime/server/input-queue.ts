import { AsyncIdQueue } from '@orpc/shared'
import type { EventIteratorPayload } from '@orpc/standard-server-peer'

/**
 * The events of every streamed input on one connection that their procedures have not pulled yet, with the
 * bytes of the frames that brought them. oRPC's peer keeps such events in a queue of its own, opened for every
 * call whether it takes streamed input or not, and with no bound; this one is opened only for a call whose
 * request declares streamed input, and the socket closes when it holds more than `maxBufferedInputBytes`.
 */
export class InputEventQueue extends AsyncIdQueue<EventIteratorPayload> {
  /** Bytes of the events queued, in all. */
  bytes = 0
  /** Per call, the size of each event queued, oldest first. */
  private readonly sizes = new Map<string, number[]>()

  pushEvent(id: string, event: EventIteratorPayload, bytes: number) {
    const sizes = this.sizes.get(id)
    if (sizes) sizes.push(bytes)
    else this.sizes.set(id, [bytes])
    this.bytes += bytes
    this.push(id, event)
  }

  override async pull(id: string): Promise<EventIteratorPayload> {
    const event = await super.pull(id)
    this.bytes -= this.sizes.get(id)?.shift() ?? 0
    return event
  }

  override close(options: { id?: string, reason?: unknown } = {}) {
    for (const [id, sizes] of this.sizes) {
      if (options.id !== undefined && id !== options.id) continue
      for (const size of sizes) this.bytes -= size
      this.sizes.delete(id)
    }
    super.close(options)
  }
}
