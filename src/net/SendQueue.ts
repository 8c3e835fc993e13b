/**
 * `SendQueue`: the bounded queue of Raft messages waiting for one peer's sender fiber.
 *
 * Bounded by a message count and by an estimate of the encoded size. When a push would exceed either
 * bound the OLDEST messages are dropped: Raft retransmits whatever a peer still needs (appends are
 * re-sent from the peer's progress, heartbeats recur, elections time out and retry), and the newest
 * messages carry the newest term, commit index and log tail, so they are the ones worth delivering
 * when a slow or dead peer comes back. Dropping the newest instead would keep stale traffic and lose
 * the current state. The newest message is always kept, even when it alone exceeds the byte bound.
 *
 * A ring buffer: push and take are O(1) per message, with no array shifting. Generic over the message
 * (with its size estimate) so the simulator's network queues exactly as the real transport does.
 */
import type { Message } from "../raft/Message.js"

/** Approximate encoded size of a message in bytes (fixed fields plus the variable-length strings). */
export const messageBytes = (m: Message): number => {
  let n = 96
  switch (m.type) {
    case "app":
      for (const e of m.entries) n += e.data.length + 32
      break
    case "snap":
      n += m.data.length + 32 * (m.metadata.confState.voters.length + m.metadata.confState.learners.length)
      break
    case "heartbeat":
    case "heartbeatResp":
      n += m.context?.length ?? 0
      break
    case "readIndex":
    case "readIndexResp":
      n += m.context.length
      break
    default:
      break
  }
  return n
}

export interface SendQueueLimits {
  /** At most this many messages wait (default 4096). */
  readonly maxMessages: number
  /** At most about this many bytes wait (default 64 MiB). */
  readonly maxBytes: number
}

export const defaultSendQueueLimits: SendQueueLimits = { maxMessages: 4096, maxBytes: 64 * 1024 * 1024 }

export class SendQueue<M = Message> {
  private ring: Array<M | undefined>
  private sizes: Array<number>
  private head = 0
  private count = 0
  private bytesQueued = 0
  /** Messages dropped because the queue was full, since creation. */
  dropped = 0

  constructor(
    readonly limits: SendQueueLimits = defaultSendQueueLimits,
    private readonly sizeOf: (message: M) => number = messageBytes as unknown as (message: M) => number
  ) {
    const capacity = Math.max(1, limits.maxMessages)
    this.ring = new Array<M | undefined>(capacity)
    this.sizes = new Array<number>(capacity).fill(0)
  }

  get length(): number {
    return this.count
  }

  get bytes(): number {
    return this.bytesQueued
  }

  push(message: M): void {
    const size = this.sizeOf(message)
    while (this.count > 0 && (this.count >= this.ring.length || this.bytesQueued + size > this.limits.maxBytes)) {
      this.dropOldest()
    }
    const slot = (this.head + this.count) % this.ring.length
    this.ring[slot] = message
    this.sizes[slot] = size
    this.count++
    this.bytesQueued += size
  }

  /** Removes and returns up to `maxMessages` messages (and at least one) totalling about `maxBytes`, oldest first. */
  take(maxMessages: number, maxBytes: number): Array<M> {
    const out: Array<M> = []
    let bytes = 0
    while (this.count > 0 && out.length < maxMessages) {
      const size = this.sizes[this.head]!
      if (out.length > 0 && bytes + size > maxBytes) break
      out.push(this.ring[this.head]!)
      bytes += size
      this.removeHead()
    }
    return out
  }

  clear(): void {
    while (this.count > 0) this.removeHead()
  }

  private dropOldest(): void {
    this.removeHead()
    this.dropped++
  }

  private removeHead(): void {
    this.bytesQueued -= this.sizes[this.head]!
    this.ring[this.head] = undefined
    this.sizes[this.head] = 0
    this.head = (this.head + 1) % this.ring.length
    this.count--
  }
}
