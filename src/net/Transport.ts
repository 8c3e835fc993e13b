/**
 * `Transport`: how a node's Raft messages reach its peers. Sending never blocks the Raft loop and
 * may lose messages (Raft retransmits); receiving yields messages already validated against the
 * `Message` schema.
 *
 * Layers: the network transport (`PeerTransport`: a websocket per peer on the node's port), and
 * `MemoryNetwork`, an in-process network for tests and the simulator, which can drop, partition
 * and isolate nodes.
 */
import { Context, Effect, Layer, Queue } from "effect"
import type { Message } from "../raft/Message.js"

export interface TransportShape {
  /** Hands messages to the network. Never waits for delivery; a message to an unknown peer is dropped. */
  readonly send: (messages: ReadonlyArray<Message>) => Effect.Effect<void>
  /** Waits for the next message addressed to this node. */
  readonly receive: Effect.Effect<Message>
  /** Peers the transport found unreachable since the last call (for `reportUnreachable`). */
  readonly unreachable: Effect.Effect<ReadonlyArray<number>>
  /**
   * Drops what waits to be sent to `peer` (its queue while it is down or being reconnected to): it
   * left the configuration, and what was said to it then (say, a heartbeat carrying a commit index
   * its old log had) must not reach the next process to use its id, which may be back empty.
   */
  readonly discard: (peer: number) => Effect.Effect<void>
}

export class Transport extends Context.Tag("blixard/Transport")<Transport, TransportShape>() {}

/**
 * An in-process network connecting nodes by id. A message passes when neither end is isolated,
 * the link is not cut and `filter` (if set) lets it through.
 */
export class MemoryNetwork {
  private readonly inboxes = new Map<number, Queue.Queue<Message>>()
  private readonly cut = new Set<string>()
  private readonly isolated = new Set<number>()
  /** Optional test hook: return false to drop a message. */
  filter: ((m: Message) => boolean) | undefined = undefined
  /** Messages delivered, per type, for assertions. */
  readonly delivered = new Map<string, number>()
  /** Nodes marked down: what is sent to them waits in the sender's queue, as `PeerTransport`'s does. */
  private readonly down = new Set<number>()
  /** Per directed link ("from>to"): the sender's queue for a node that is down. */
  private readonly held = new Map<string, Array<Message>>()

  /** Marks `id` down: messages to it are queued by their senders until `markUp`. */
  markDown(id: number): void {
    this.down.add(id)
  }

  /** `id` is back: every sender's queue for it goes out to its (current) inbox. */
  markUp(id: number): void {
    this.down.delete(id)
    for (const [link, queue] of [...this.held]) {
      if (!link.endsWith(`>${id}`)) continue
      this.held.delete(link)
      this.deliver(queue)
    }
  }

  /** Cuts the link between `a` and `b`, both ways. */
  partition(a: number, b: number): void {
    this.cut.add(`${a}>${b}`)
    this.cut.add(`${b}>${a}`)
  }

  /** Cuts every link of `id`. */
  isolate(id: number): void {
    this.isolated.add(id)
  }

  heal(): void {
    this.cut.clear()
    this.isolated.clear()
  }

  private passes(m: Message): boolean {
    if (this.isolated.has(m.from) || this.isolated.has(m.to)) return false
    if (this.cut.has(`${m.from}>${m.to}`)) return false
    return this.filter === undefined || this.filter(m)
  }

  private deliver(messages: ReadonlyArray<Message>): void {
    for (const m of messages) {
      if (this.down.has(m.to)) {
        const link = `${m.from}>${m.to}`
        const queue = this.held.get(link) ?? []
        queue.push(m)
        this.held.set(link, queue)
        continue
      }
      const target = this.inboxes.get(m.to)
      if (target === undefined || !this.passes(m)) continue
      this.delivered.set(m.type, (this.delivered.get(m.type) ?? 0) + 1)
      target.unsafeOffer(m)
    }
  }

  /** The transport of node `id` on this network. Re-registering (a restarted node) replaces its inbox. */
  transport(id: number): Effect.Effect<TransportShape> {
    return Effect.map(Queue.unbounded<Message>(), (inbox) => {
      this.inboxes.set(id, inbox)
      return {
        send: (messages) => Effect.sync(() => this.deliver(messages)),
        receive: Queue.take(inbox),
        unreachable: Effect.succeed([]),
        discard: (peer) => Effect.sync(() => void this.held.delete(`${id}>${peer}`))
      }
    })
  }

  layer(id: number): Layer.Layer<Transport> {
    return Layer.effect(Transport, this.transport(id))
  }
}
