/**
 * `Transport`: how a node's Raft messages reach its peers. Sending never blocks the Raft loop and
 * may lose messages (Raft retransmits); receiving yields messages already validated against the
 * `Message` schema.
 *
 * Layers: the network transport (`PeerTransport`: a websocket per peer on the node's port), and
 * `MemoryNetwork`, an in-process network for tests, which can drop, partition and isolate nodes and
 * bring them back as other incarnations. (The simulator's is `sim/Network.ts`.)
 *
 * Incarnations. A node's data directory has an incarnation (`NodeMeta.claim`); a node back on an
 * empty directory is another incarnation of its id, which lacks everything the earlier one
 * acknowledged. What a node says to a peer depends on what that peer said before: a leader's
 * heartbeat carries a commit index up to what the peer's log acknowledged, and a follower stops on a
 * commit index beyond its log (`Raft.handleHeartbeat`). So the transport learns each peer's
 * incarnation at every connection, both ways (`PeerAuth`), and when it finds one other than the one it
 * last saw, the peer's earlier life is over for this node:
 *   - what waits to be sent to it is dropped (written for the earlier life), and what still arrives
 *     from the earlier life (a connection not yet closed) is dropped too;
 *   - `receive` hands out a `PeerRestarted`, in order after every message received before it; the
 *     Raft driver resets what its core knows of the peer (`Raft.reportRestarted`: a leader probes it
 *     from scratch, match 0) and drops what it had not yet sent it, then calls `resume`;
 *   - until `resume`, every message to the peer is dropped: it was built before the reset.
 * A peer (of a release without incarnations) that names none is treated as before: nothing learned.
 */
import { Context, Effect, Layer, Queue } from "effect"
import type { Message } from "../raft/Message.js"

/**
 * A peer was found to be another incarnation of its id than the one this node last saw (see the
 * module's doc). Local to the node: never on the wire.
 */
export interface PeerRestarted {
  readonly type: "peerRestarted"
  readonly peer: number
  /** The incarnation it is now. */
  readonly incarnation: string
}

/** What `receive` hands out: a message addressed to this node, or a peer's new incarnation. */
export type Received = Message | PeerRestarted

export interface TransportShape {
  /** Hands messages to the network. Never waits for delivery; a message to an unknown peer is dropped. */
  readonly send: (messages: ReadonlyArray<Message>) => Effect.Effect<void>
  /** Waits for the next message addressed to this node, or the next `PeerRestarted`. */
  readonly receive: Effect.Effect<Received>
  /** Peers the transport found unreachable since the last call (for `reportUnreachable`). */
  readonly unreachable: Effect.Effect<ReadonlyArray<number>>
  /**
   * Drops what waits to be sent to `peer` (its queue while it is down or being reconnected to): it
   * left the configuration, and what was said to it then (say, a heartbeat carrying a commit index
   * its old log had) must not reach the next process to use its id, which may be back empty.
   */
  readonly discard: (peer: number) => Effect.Effect<void>
  /**
   * The receiver of a `PeerRestarted` for `peer` has reset what it built for the earlier life:
   * messages to `peer` flow again (once per `PeerRestarted` handed out).
   */
  readonly resume: (peer: number) => Effect.Effect<void>
}

export class Transport extends Context.Tag("blixard/Transport")<Transport, TransportShape>() {}

/**
 * An in-process network connecting nodes by id. A message passes when neither end is isolated,
 * the link is not cut and `filter` (if set) lets it through.
 *
 * It models `PeerTransport`'s queues and incarnations: a node marked down has what is sent to it
 * queued by each sender until `markUp`, which may bring it back as another incarnation. A delivery
 * stands for a connection's handshake: it tells each end the other's incarnation, and an end that
 * finds one other than it last saw drops its queue and the message, and is handed a `PeerRestarted`
 * (see `Transport`).
 */
export class MemoryNetwork {
  private readonly inboxes = new Map<number, Queue.Queue<Received>>()
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
  /** Each node's incarnation ("" until `markUp` names one). */
  private readonly incarnations = new Map<number, string>()
  /** Per directed link ("a>b"): b's incarnation as a last saw it. */
  private readonly known = new Map<string, string>()
  /** Per directed link ("a>b"): `PeerRestarted` notices about b handed to a and not yet resumed. */
  private readonly resetting = new Map<string, number>()

  /** Marks `id` down: messages to it are queued by their senders until `markUp`. */
  markDown(id: number): void {
    this.down.add(id)
  }

  /**
   * `id` is back, as `incarnation` if given (another one: its data directory was replaced): every
   * sender's queue for it goes out to its (current) inbox, unless the sender finds it another life.
   */
  markUp(id: number, incarnation?: string): void {
    this.down.delete(id)
    if (incarnation !== undefined) this.incarnations.set(id, incarnation)
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

  /** `a` learns `b`'s incarnation; false (and a `PeerRestarted` handed to `a`) if it is another life than `a` last saw. */
  private learn(a: number, b: number): boolean {
    const link = `${a}>${b}`
    const now = this.incarnations.get(b) ?? ""
    const before = this.known.get(link)
    this.known.set(link, now)
    if (before === undefined || before === now) return true
    this.held.delete(link)
    this.resetting.set(link, (this.resetting.get(link) ?? 0) + 1)
    this.inboxes.get(a)?.unsafeOffer({ type: "peerRestarted", peer: b, incarnation: now })
    return false
  }

  private deliver(messages: ReadonlyArray<Message>): void {
    for (const m of messages) {
      if ((this.resetting.get(`${m.from}>${m.to}`) ?? 0) > 0) continue
      if (this.down.has(m.to)) {
        const link = `${m.from}>${m.to}`
        const queue = this.held.get(link) ?? []
        queue.push(m)
        this.held.set(link, queue)
        continue
      }
      const target = this.inboxes.get(m.to)
      if (target === undefined || !this.passes(m)) continue
      // The connection's handshake, both ways: a message built for the receiver's earlier life is dropped.
      const current = this.learn(m.from, m.to)
      this.learn(m.to, m.from)
      if (!current) continue
      this.delivered.set(m.type, (this.delivered.get(m.type) ?? 0) + 1)
      target.unsafeOffer(m)
    }
  }

  /** The transport of node `id` on this network. Re-registering (a restarted node) replaces its inbox and forgets what it knew. */
  transport(id: number): Effect.Effect<TransportShape> {
    return Effect.map(Queue.unbounded<Received>(), (inbox) => {
      this.inboxes.set(id, inbox)
      for (const link of [...this.known.keys(), ...this.resetting.keys()]) {
        if (!link.startsWith(`${id}>`)) continue
        this.known.delete(link)
        this.resetting.delete(link)
      }
      return {
        send: (messages) => Effect.sync(() => this.deliver(messages)),
        receive: Queue.take(inbox),
        unreachable: Effect.succeed([]),
        discard: (peer) => Effect.sync(() => void this.held.delete(`${id}>${peer}`)),
        resume: (peer) =>
          Effect.sync(() => {
            const link = `${id}>${peer}`
            const n = (this.resetting.get(link) ?? 0) - 1
            if (n > 0) this.resetting.set(link, n)
            else this.resetting.delete(link)
          })
      }
    })
  }

  layer(id: number): Layer.Layer<Transport> {
    return Layer.effect(Transport, this.transport(id))
  }
}
