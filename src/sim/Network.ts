/**
 * A simulated network between numbered nodes, generic over the message type. It owns no clock and
 * no queue: `send(from, to, msg, now)` decides (from its PRNG) whether and when the message arrives
 * and hands each delivery to the driver's `schedule(time, delivery)`; when the driver pops one, it
 * asks `accept(delivery)` whether the message still gets through, then hands it to the node.
 *
 * Faults:
 * - per directed link, drawn once from the seed (`prng.fork("link:FROM>TO")`, independent of the
 *   order links are first used): drop probability, duplicate probability, a delay range, and a
 *   probability of a "slow" message (extra delay). Random delays reorder messages.
 * - partitions, as cut directed links: symmetric (`partition`, `isolate`), one-way (`cutOneWay`),
 *   bridge (`bridge`: two halves that each reach one bridge node). `heal` removes them all.
 * - a message in flight across a link that is cut when it arrives is dropped.
 * - `healAll()` also turns off drops and duplicates (the liveness phase); `setLossless(false)` undoes it.
 *
 * Crashes and restarts follow the real transport (`PeerTransport`, `SendQueue`):
 * - `crash(node, now)`: the node sends nothing more and receives nothing; what was in flight to it
 *   is lost, also after it restarts (the connection it arrived on is gone, with its unacknowledged
 *   batches). What its senders send it while it is down waits in each sender's per-peer queue —
 *   bounded as `SendQueue` is (a message count and a size estimate), the OLDEST dropped when full —
 *   and the queues it held itself for its peers die with its process.
 * - `discard(from, to, now)`: the sender drops its queue for `to` (`Transport.discard`); what
 *   went out with it but has not left yet (the sender still reconnecting) is dropped too.
 * - `restart(node, now)`: each sender reconnects on its own back-off schedule, which started when
 *   the connection failed at the crash (50 ms doubling to 2 s, each delay jittered to 50–100 %, as
 *   `PeerTransport` retries), at its first attempt after the restart; then what it queued is
 *   delivered in order, in one batch, and what it sends until then joins that batch. So a restarted
 *   node receives answers to requests its previous process made.
 * - messages a node sent before it crashed that were still in flight arrive (its kernel still
 *   holds them); with `lateAfterCrash`, some arrive up to `maxMs` late (retransmitted on the dead
 *   process's connection, so after its next incarnation has started talking) or twice.
 *
 * Data-directory incarnations follow the real transport too (`Transport`'s doc): `empty(node)` while
 * it is down gives its next start another incarnation of its data. A sender's first message to a
 * peer's process (after either restarted), or its reconnection to flush a queue, stands for a
 * connection's handshake, which tells each end the other's data incarnation. An end that finds one
 * other than it last saw drops what it queued for the peer (and the message it was sending), is told
 * through `NetworkOptions.restarted` (at the reconnection's time), and has every message to the peer
 * dropped until `resume`; what still arrives from the peer's earlier life is dropped.
 *
 * What the real transport does that this does not model: a partition drops messages here, while
 * the real sender keeps them (in the TCP connection until the acknowledgement timeout, then in its
 * queue) and delivers them after the heal; a crashed machine is noticed at once here, while a
 * sender notices only at its acknowledgement timeout (its in-flight batches are then lost); the
 * queue's byte bound counts `sizeOf` (0 when not given); messages sent while a sender reconnects are
 * not bounded; a peer that crashes again before a sender reconnects loses that sender's whole queue
 * (the real one keeps it for the next attempt), and still has that sender learn its new data
 * incarnation at the reconnection's time (the real one learns at its next successful connection);
 * late messages come from any crashed node here, though a crashed machine's kernel retransmits
 * nothing; the transport's `unreachable` reports; peers that name no incarnation (an older
 * release), and two processes of one id running at once (the real transport then sees the id's
 * incarnation flip at each connection); a deposed leader's queue kept across a partition (dropped
 * here with the partition: what it sends after the heal is built from its progress then, which the
 * handshake covers the same way); and
 * the links' random drops, duplicates and reordering (a message sent after a reconnect may overtake
 * the queued batch) are harsher than one TCP connection, which neither loses nor reorders, on purpose.
 *
 * Node ids are integers in [0, MAX_NODE_ID].
 */
import { defaultSendQueueLimits, SendQueue, type SendQueueLimits } from "../net/SendQueue.js"
import type { Prng } from "./Prng.js"

export const MAX_NODE_ID = 1023

/** Ranges that per-link fault parameters are drawn from (probabilities in [0, 1], times in ms). */
export interface LinkFaultRanges {
  readonly drop: readonly [number, number]
  readonly duplicate: readonly [number, number]
  /** Each link draws its own [minDelay, maxDelay] inside this range. */
  readonly delay: readonly [number, number]
  readonly slow: readonly [number, number]
  /** A slow message gets an extra delay uniform in [1, slowDelay]. */
  readonly slowDelay: number
}

/** Moderate noise: up to 5 % drops, 2 % duplicates, 1–20 ms, 1 % messages up to 200 ms late. */
export const defaultLinkFaults: LinkFaultRanges = {
  drop: [0, 0.05],
  duplicate: [0, 0.02],
  delay: [1, 20],
  slow: [0, 0.01],
  slowDelay: 200
}

/** No drops, duplicates or slow messages; 1 ms delay. */
export const reliableLinks: LinkFaultRanges = {
  drop: [0, 0],
  duplicate: [0, 0],
  delay: [1, 1],
  slow: [0, 0],
  slowDelay: 0
}

/** The parameters one directed link drew. */
export interface LinkProfile {
  readonly drop: number
  readonly duplicate: number
  readonly minDelay: number
  readonly maxDelay: number
  readonly slow: number
  readonly slowDelay: number
}

/** A message on its way. */
export interface Delivery<M> {
  readonly from: number
  readonly to: number
  readonly msg: M
  /** When it was sent (for a message a sender queued for a down peer: when the queue went out). */
  readonly sentAt: number
  /** When it is due to arrive (the time it was scheduled for). */
  readonly at: number
  /** The destination's incarnation when it left the sender; a restart in between makes it stale. */
  readonly incarnation: number
  /** The sender's incarnation when sent: a crash of the sender before `leftAt` means it never left. */
  readonly fromIncarnation: number
  /** The sender's data incarnation when sent: dropped at a receiver that has seen a newer one. */
  readonly fromData: number
  /** When it left the sender: `sentAt`, or when a queue held for a down peer was flushed. */
  readonly leftAt: number
  /** Already held back once as a message of a crashed sender (`lateAfterCrash`). */
  readonly late: boolean
  /** For a message that went out with a sender's queue: discarded when the sender dropped that queue (`discard`). */
  readonly queue?: QueueToken
}

/** One queue a sender held for a peer; `discard` marks it, and its messages still on their way are dropped. */
interface QueueToken {
  /** When the sender dropped the queue: what had left by then is on the wire and still arrives. */
  discardedAt: number | undefined
}

export interface NetworkStats {
  sent: number
  /** Dropped at send (drop, partition, crashed sender, full queue) or at arrival (stale, partition, crashed). */
  dropped: number
  duplicated: number
  delivered: number
  /** Sent to a node that was down: queued by the sender, delivered after the node came back. */
  queued: number
  /** Messages of a crashed sender held back to arrive late (`lateAfterCrash`). */
  late: number
  /** Times a node found a peer back as another data incarnation (`NetworkOptions.restarted`). */
  restartsSeen: number
}

/** How a crashed node's messages still in flight arrive (`NetworkOptions.lateAfterCrash`). */
export interface LateAfterCrash {
  /** The chance that such a message is held back, to arrive up to `maxMs` later. */
  readonly chance: number
  /** The chance that it also arrives on time (so twice). */
  readonly duplicate: number
  readonly maxMs: number
}

/**
 * The simulator's default: a fifth of a crashed node's messages still in flight arrive up to a
 * second late, a quarter of those on time as well.
 */
export const defaultLateAfterCrash: LateAfterCrash = { chance: 0.2, duplicate: 0.25, maxMs: 1000 }

/** The real transport's reconnect back-off (`PeerTransport`'s defaults). */
const backoffInitialMs = 50
const backoffMaxMs = 2000

export interface NetworkOptions<M> {
  readonly nodes: ReadonlyArray<number>
  /** The network's own stream; per-message draws come from it, per-link profiles from its forks. */
  readonly prng: Prng
  readonly schedule: (time: number, delivery: Delivery<M>) => void
  readonly links?: LinkFaultRanges
  /** What a sender queues for a peer that is down: `SendQueue`'s bounds (default its defaults) and each message's size. */
  readonly queue?: { readonly limits?: SendQueueLimits; readonly sizeOf?: (message: M) => number }
  /** Messages of a node that crashed after sending them: held back or duplicated (default never). */
  readonly lateAfterCrash?: LateAfterCrash
  /**
   * `observer` found `subject` back as another data incarnation at a handshake at time `at` (now, or
   * a reconnection's time to come): the driver hands `observer` a `PeerRestarted` then (if it is
   * still the same process), and its `resume` lets messages to `subject` through again.
   */
  readonly restarted?: (observer: number, subject: number, at: number) => void
}

/** A sender's queue for a peer that is down, or that it is reconnecting to (`flushAt`). */
interface Held<M> {
  readonly queue: SendQueue<M>
  /** When the connection failed (the peer's crash): the back-off schedule starts there. */
  readonly failedAt: number
  /** Set at the peer's restart: when the sender reconnects and the queue goes out. */
  flushAt: number | undefined
  /** The peer's incarnation the flushed batch is for, and its delay. */
  flushIncarnation: number
  flushDelay: number
  /** Marks what this queue sent (the flush, and what joined it while reconnecting). */
  token: QueueToken
}

const SIZE = MAX_NODE_ID + 1

const checkNode = (node: number): void => {
  if (!(Number.isInteger(node) && node >= 0 && node <= MAX_NODE_ID)) {
    throw new RangeError(`network node ids are integers in [0, ${MAX_NODE_ID}], got ${node}`)
  }
}

const inRange = (prng: Prng, [lo, hi]: readonly [number, number]): number => lo + (hi - lo) * prng.float()

export class Network<M> {
  readonly stats: NetworkStats = { sent: 0, dropped: 0, duplicated: 0, delivered: 0, queued: 0, late: 0, restartsSeen: 0 }
  readonly nodes: ReadonlyArray<number>
  private readonly prng: Prng
  private readonly schedule: (time: number, delivery: Delivery<M>) => void
  private readonly ranges: LinkFaultRanges
  private readonly member = new Uint8Array(SIZE)
  private readonly up = new Uint8Array(SIZE)
  private readonly incarnations = new Int32Array(SIZE)
  /** cut[from * SIZE + to] = 1 when messages from → to are blocked. */
  private readonly cut = new Uint8Array(SIZE * SIZE)
  private cutCount = 0
  private readonly profiles = new Map<number, LinkProfile>()
  private lossless = false
  /** Per directed link (from * SIZE + to): the sender's queue while the peer is down or being reconnected to. */
  private readonly held = new Map<number, Held<M>>()
  /** When each incarnation of a node ended (key node * 2^20 + incarnation). */
  private readonly crashedAt = new Map<number, number>()
  private readonly queueLimits: SendQueueLimits
  private readonly sizeOf: (message: M) => number
  private readonly lateAfterCrash: LateAfterCrash | undefined
  /** Each node's data-directory incarnation (changed by `empty`). */
  private readonly data = new Int32Array(SIZE)
  /** Per directed link (from * SIZE + to): the process incarnation of `to` its current connection reaches. */
  private readonly linked = new Map<number, number>()
  /** Per (observer * SIZE + subject): the subject's data incarnation as the observer's process last saw it. */
  private readonly known = new Map<number, number>()
  /** Per (observer * SIZE + subject): restarts reported and not yet `resume`d; messages to the subject are dropped. */
  private readonly resetting = new Map<number, number>()
  private readonly restarted: ((observer: number, subject: number, at: number) => void) | undefined

  constructor(options: NetworkOptions<M>) {
    for (const node of options.nodes) {
      checkNode(node)
      if (this.member[node] === 1) throw new Error(`network: node ${node} listed twice`)
      this.member[node] = 1
      this.up[node] = 1
    }
    this.nodes = [...options.nodes]
    this.prng = options.prng
    this.schedule = options.schedule
    this.ranges = options.links ?? defaultLinkFaults
    this.queueLimits = options.queue?.limits ?? defaultSendQueueLimits
    this.sizeOf = options.queue?.sizeOf ?? (() => 0)
    this.lateAfterCrash = options.lateAfterCrash
    this.restarted = options.restarted
  }

  private checkMember(node: number): void {
    if (!(node >= 0 && node <= MAX_NODE_ID && this.member[node] === 1)) throw new RangeError(`network: unknown node ${node}`)
  }

  /** The fault parameters of the directed link from → to (drawn on first use, stable per seed). */
  profile(from: number, to: number): LinkProfile {
    const key = from * SIZE + to
    let p = this.profiles.get(key)
    if (p === undefined) {
      const r = this.ranges
      const prng = this.prng.fork(`link:${from}>${to}`)
      const a = Math.round(inRange(prng, r.delay))
      const b = Math.round(inRange(prng, r.delay))
      p = {
        drop: inRange(prng, r.drop),
        duplicate: inRange(prng, r.duplicate),
        minDelay: Math.min(a, b),
        maxDelay: Math.max(a, b),
        slow: inRange(prng, r.slow),
        slowDelay: r.slowDelay
      }
      this.profiles.set(key, p)
    }
    return p
  }

  /** Sends one message; schedules zero, one or two deliveries, or queues it for a peer that is down. */
  send(from: number, to: number, msg: M, now: number): void {
    this.checkMember(from)
    this.checkMember(to)
    const stats = this.stats
    stats.sent++
    if (this.up[from] === 0) {
      stats.dropped++
      return
    }
    if (this.resetting.size > 0 && this.resetting.has(from * SIZE + to)) {
      // Built before the sender's Raft took in the peer's new data incarnation.
      stats.dropped++
      return
    }
    if (this.up[to] === 0) return this.hold(from, to, msg, now)
    if (this.held.size > 0) {
      const held = this.held.get(from * SIZE + to)
      if (held !== undefined && held.flushAt !== undefined) {
        if (held.flushAt > now) {
          // Still reconnecting: the message goes out with the queue.
          this.schedule(held.flushAt + held.flushDelay, { ...this.delivery(from, to, msg, now, held.flushAt + held.flushDelay, held.flushAt), queue: held.token })
          return
        }
        this.held.delete(from * SIZE + to)
      }
    }
    if (this.cutCount > 0 && this.cut[from * SIZE + to] === 1) {
      stats.dropped++
      return
    }
    if (this.linked.get(from * SIZE + to) !== this.incarnations[to] && !this.connect(from, to, now)) {
      stats.dropped++
      return
    }
    const link = this.profile(from, to)
    const prng = this.prng
    if (!this.lossless && link.drop > 0 && prng.float() < link.drop) {
      stats.dropped++
      return
    }
    const copies = !this.lossless && link.duplicate > 0 && prng.float() < link.duplicate ? 2 : 1
    if (copies === 2) stats.duplicated++
    for (let c = 0; c < copies; c++) {
      let delay = link.minDelay === link.maxDelay ? link.minDelay : link.minDelay + prng.int(link.maxDelay - link.minDelay + 1)
      if (!this.lossless && link.slow > 0 && link.slowDelay >= 1 && prng.float() < link.slow) delay += 1 + prng.int(link.slowDelay)
      this.schedule(now + delay, this.delivery(from, to, msg, now, now + delay, now))
    }
  }

  private delivery(from: number, to: number, msg: M, sentAt: number, at: number, leftAt: number): Delivery<M> {
    return { from, to, msg, sentAt, at, incarnation: this.incarnations[to]!, fromIncarnation: this.incarnations[from]!, fromData: this.data[from]!, leftAt, late: false }
  }

  /**
   * The connection from → to is made (its handshake, at `at`): each end learns the other's data
   * incarnation. False if the sender found another life than it last saw (what it was sending is
   * dropped).
   */
  private connect(from: number, to: number, at: number): boolean {
    this.linked.set(from * SIZE + to, this.incarnations[to]!)
    const current = this.learn(from, to, at)
    this.learn(to, from, at)
    return current
  }

  /** `observer` learns `subject`'s data incarnation; false if another than it last saw (reported, queue dropped). */
  private learn(observer: number, subject: number, at: number): boolean {
    const key = observer * SIZE + subject
    const now = this.data[subject]!
    const before = this.known.get(key)
    this.known.set(key, now)
    if (before === undefined || before === now) return true
    const held = this.held.get(key)
    if (held !== undefined) {
      this.stats.dropped += held.queue.length
      held.queue.clear()
      held.token.discardedAt = -Infinity
      this.held.delete(key)
    }
    this.resetting.set(key, (this.resetting.get(key) ?? 0) + 1)
    this.stats.restartsSeen++
    this.restarted?.(observer, subject, at)
    return false
  }

  /** `observer`'s Raft took in a restart of `subject` it was told of: messages to it flow again. */
  resume(observer: number, subject: number): void {
    const key = observer * SIZE + subject
    const n = (this.resetting.get(key) ?? 0) - 1
    if (n > 0) this.resetting.set(key, n)
    else this.resetting.delete(key)
  }

  /** `node` (down) will start on an emptied data directory: another data incarnation. */
  empty(node: number): void {
    this.checkMember(node)
    if (this.up[node] === 1) throw new Error(`network.empty: node ${node} is up`)
    this.data[node]!++
  }

  /** The node's data incarnation: how many times its data directory was emptied. */
  dataIncarnation(node: number): number {
    this.checkMember(node)
    return this.data[node]!
  }

  /** `to` is down: the sender queues the message (oldest dropped when the queue is full). */
  private hold(from: number, to: number, msg: M, now: number): void {
    const key = from * SIZE + to
    let held = this.held.get(key)
    if (held === undefined || held.flushAt !== undefined) {
      held = { queue: new SendQueue<M>(this.queueLimits, this.sizeOf), failedAt: this.crashedAt.get(to * 2 ** 20 + this.incarnations[to]!) ?? now, flushAt: undefined, flushIncarnation: 0, flushDelay: 0, token: { discardedAt: undefined } }
      this.held.set(key, held)
    }
    const before = held.queue.dropped
    held.queue.push(msg)
    this.stats.queued++
    this.stats.dropped += held.queue.dropped - before
  }

  /** `to` is back: every running sender that queued for it reconnects on its back-off schedule and sends the queue. */
  private flushTo(to: number, now: number): void {
    for (const [key, held] of this.held) {
      if (key % SIZE !== to || held.flushAt !== undefined) continue
      const from = (key - to) / SIZE
      // The attempts since the connection failed; the first one after the restart connects.
      let at = held.failedAt
      for (let attempt = 0; at < now; attempt++) {
        at += Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(attempt, 30)) * (0.5 + this.prng.float() / 2)
      }
      const link = this.profile(from, to)
      const oneWay = () => (link.minDelay === link.maxDelay ? link.minDelay : link.minDelay + this.prng.int(link.maxDelay - link.minDelay + 1))
      // The handshake's round trip, then the batch.
      const flushAt = Math.round(at) + oneWay() + oneWay()
      // The reconnection's handshake: a queue built for an earlier data incarnation is dropped there.
      if (!this.connect(from, to, flushAt)) continue
      held.flushAt = flushAt
      held.flushIncarnation = this.incarnations[to]!
      held.flushDelay = oneWay()
      const queue = held.queue
      for (const msg of queue.take(queue.length, Infinity)) {
        this.schedule(flushAt + held.flushDelay, { ...this.delivery(from, to, msg, flushAt, flushAt + held.flushDelay, flushAt), queue: held.token })
      }
    }
  }

  /**
   * `from` drops what it holds for `to` (`Transport.discard`: `to` left the configuration): its queue,
   * and what went out with it but is still on its way because the connection is not up yet.
   */
  discard(from: number, to: number, now: number): void {
    const held = this.held.get(from * SIZE + to)
    if (held === undefined) return
    this.stats.dropped += held.queue.length
    held.queue.clear()
    held.token.discardedAt = now
    held.token = { discardedAt: undefined }
  }

  /** At arrival: true if the message reaches its destination (counted delivered), false if dropped or held back. */
  accept(delivery: Delivery<M>): boolean {
    const { from, to } = delivery
    const discardedAt = delivery.queue?.discardedAt
    if (discardedAt !== undefined && delivery.leftAt > discardedAt) {
      this.stats.dropped++
      return false
    }
    if (this.up[to] === 0 || this.incarnations[to] !== delivery.incarnation || (this.cutCount > 0 && this.cut[from * SIZE + to] === 1)) {
      this.stats.dropped++
      return false
    }
    if (this.data[from] !== delivery.fromData && (this.known.get(to * SIZE + from) ?? delivery.fromData) !== delivery.fromData) {
      // From the sender's earlier data incarnation, after the receiver met a later one: its
      // connection was closed then.
      this.stats.dropped++
      return false
    }
    if (this.up[from] === 0 || this.incarnations[from] !== delivery.fromIncarnation) {
      // The sender crashed since: a message that had not left its queue died with it; one on the wire
      // still arrives, maybe late (retransmitted on the dead process's connection) or twice.
      const ended = this.crashedAt.get(from * 2 ** 20 + delivery.fromIncarnation) ?? -Infinity
      if (ended < delivery.leftAt) {
        this.stats.dropped++
        return false
      }
      const late = this.lateAfterCrash
      if (late !== undefined && !delivery.late && this.prng.float() < late.chance) {
        this.stats.late++
        const at = delivery.at + 1 + this.prng.int(Math.max(1, late.maxMs))
        this.schedule(at, { ...delivery, at, late: true })
        if (this.prng.float() >= late.duplicate) return false
        this.stats.duplicated++
      }
    }
    this.stats.delivered++
    return true
  }

  /** Whether a message from → to would currently pass the partitions and crashes (ignoring noise). */
  canSend(from: number, to: number): boolean {
    return this.up[from] === 1 && this.up[to] === 1 && this.cut[from * SIZE + to] === 0
  }

  private block(from: number, to: number): void {
    if (from === to) return
    const k = from * SIZE + to
    if (this.cut[k] === 0) {
      this.cut[k] = 1
      this.cutCount++
    }
  }

  /** Cuts every link between nodes of different groups, both ways. Nodes not listed are unaffected. */
  partition(groups: ReadonlyArray<ReadonlyArray<number>>): void {
    for (const g of groups) for (const node of g) this.checkMember(node)
    for (let a = 0; a < groups.length; a++) {
      for (let b = 0; b < groups.length; b++) {
        if (a === b) continue
        for (const x of groups[a]!) for (const y of groups[b]!) this.block(x, y)
      }
    }
  }

  /** Cuts `node` off from every other node, both ways. */
  isolate(node: number): void {
    this.partition([[node], this.nodes.filter((n) => n !== node)])
  }

  /** Blocks messages from → to only (an asymmetric partition). */
  cutOneWay(from: number, to: number): void {
    this.checkMember(from)
    this.checkMember(to)
    this.block(from, to)
  }

  /** `left` and `right` cannot talk to each other; `via` (in neither) still talks to both. */
  bridge(left: ReadonlyArray<number>, right: ReadonlyArray<number>, via: number): void {
    this.checkMember(via)
    if (left.includes(via) || right.includes(via)) throw new Error(`network.bridge: bridge node ${via} is inside a half`)
    this.partition([left, right])
  }

  /** Removes every partition and cut link. */
  heal(): void {
    this.cut.fill(0)
    this.cutCount = 0
  }

  /** Removes every partition and turns off drops, duplicates and slow messages (delays remain). */
  healAll(): void {
    this.heal()
    this.lossless = true
  }

  /** Turns random drops, duplicates and slow messages off (true) or back on (false). */
  setLossless(lossless: boolean): void {
    this.lossless = lossless
  }

  /** The node stops: it sends and receives nothing until `restart`; the queues it held for its peers are gone. */
  crash(node: number, now: number): void {
    this.checkMember(node)
    if (this.up[node] === 0) throw new Error(`network.crash: node ${node} is already down`)
    this.up[node] = 0
    this.crashedAt.set(node * 2 ** 20 + this.incarnations[node]!, now)
    for (const key of this.held.keys()) if (Math.floor(key / SIZE) === node) this.held.delete(key)
    // Its connections, and what its process knew of its peers' incarnations, die with it.
    for (const map of [this.linked, this.known, this.resetting]) {
      for (const key of map.keys()) if (Math.floor(key / SIZE) === node) map.delete(key)
    }
  }

  /**
   * The node comes back as a new incarnation: messages in flight to its old incarnation are lost;
   * what its peers queued for it while it was down reaches it once they have reconnected.
   */
  restart(node: number, now: number): void {
    this.checkMember(node)
    if (this.up[node] === 1) throw new Error(`network.restart: node ${node} is up`)
    this.up[node] = 1
    this.incarnations[node]!++
    if (this.held.size > 0) this.flushTo(node, now)
  }

  isUp(node: number): boolean {
    this.checkMember(node)
    return this.up[node] === 1
  }

  /** How many times the node has restarted. */
  incarnation(node: number): number {
    this.checkMember(node)
    return this.incarnations[node]!
  }
}

// ---------------------------------------------------------------------------------------------------
// Fault schedules

export type FaultAction =
  /** Replace the current partitions by these groups (cut between groups, both ways). */
  | { readonly _tag: "Partition"; readonly groups: ReadonlyArray<ReadonlyArray<number>> }
  /** Add a one-way cut from → to. */
  | { readonly _tag: "OneWay"; readonly from: number; readonly to: number }
  /** Replace the current partitions by a bridge: left ∤ right, `via` reaches both. */
  | { readonly _tag: "Bridge"; readonly left: ReadonlyArray<number>; readonly right: ReadonlyArray<number>; readonly via: number }
  /** Remove every partition. */
  | { readonly _tag: "Heal" }
  | { readonly _tag: "Crash"; readonly node: number }
  | { readonly _tag: "Restart"; readonly node: number }
  /** Set the node's clock offset from true simulated time, in ms (0 removes the skew). */
  | { readonly _tag: "ClockSkew"; readonly node: number; readonly skewMs: number }

export interface ScheduledFault {
  readonly at: number
  readonly action: FaultAction
}

export interface FaultScheduleOptions {
  readonly nodes: ReadonlyArray<number>
  /** Faults happen in [0, duration) of simulated ms. */
  readonly duration: number
  /** 0: no faults; 1: a fault every ~50 ms on average. Mean gap = 50 + 2000 * (1 - intensity) ms. */
  readonly intensity: number
  /**
   * The mean gap between faults, in ms, instead of the one `intensity` gives: for timeouts longer
   * than Raft's (a partition must outlast a node-down timeout to move VMs).
   */
  readonly meanGapMs?: number
  /** Whether one-way cuts are among the faults (default true). */
  readonly oneWay?: boolean
  /** At most this many nodes down at once (default: a minority, floor((n - 1) / 2)). */
  readonly maxCrashed?: number
  /** Clock skews are drawn in [-maxSkewMs, maxSkewMs]; 0 (default) generates none. */
  readonly maxSkewMs?: number
  /** At `duration`, heal, restart every crashed node and reset skews (default true). */
  readonly healAtEnd?: boolean
}

/**
 * A seeded sequence of fault actions over simulated time, sorted by time, always valid to apply in
 * order (never crashes a crashed node, never restarts a running one).
 */
export const faultSchedule = (prng: Prng, options: FaultScheduleOptions): Array<ScheduledFault> => {
  const nodes = [...options.nodes]
  const n = nodes.length
  const intensity = Math.min(1, Math.max(0, options.intensity))
  const maxCrashed = Math.min(n, options.maxCrashed ?? Math.floor((n - 1) / 2))
  const maxSkew = options.maxSkewMs ?? 0
  const out: Array<ScheduledFault> = []
  if (intensity === 0 || n === 0) return out
  const meanGap = options.meanGapMs ?? 50 + 2000 * (1 - intensity)
  const crashed: Array<number> = []
  const skewed = new Set<number>()
  let partitioned = false
  let t = 0
  for (;;) {
    t += 1 + prng.int(Math.round(2 * meanGap))
    if (t >= options.duration) break
    const running = nodes.filter((x) => !crashed.includes(x))
    // Weighted choice among the actions that make sense now.
    const choices: Array<[FaultAction["_tag"], number]> = []
    if (n >= 2) choices.push(["Partition", 3])
    if (n >= 2 && (options.oneWay ?? true)) choices.push(["OneWay", 1])
    if (n >= 3) choices.push(["Bridge", 1])
    if (partitioned) choices.push(["Heal", 3])
    if (crashed.length < maxCrashed && running.length > 0) choices.push(["Crash", 2])
    if (crashed.length > 0) choices.push(["Restart", 3])
    if (maxSkew > 0) choices.push(["ClockSkew", 1])
    if (choices.length === 0) break
    let roll = prng.int(choices.reduce((s, [, w]) => s + w, 0))
    let tag: FaultAction["_tag"] = choices[0]![0]
    for (const [c, w] of choices) {
      if (roll < w) {
        tag = c
        break
      }
      roll -= w
    }
    let action: FaultAction
    switch (tag) {
      case "Partition": {
        const shuffled = prng.shuffle([...nodes])
        const groups: Array<Array<number>> = []
        if (n >= 3 && prng.chance(0.25)) {
          const a = prng.between(1, n - 2)
          const b = prng.between(a + 1, n - 1)
          groups.push(shuffled.slice(0, a), shuffled.slice(a, b), shuffled.slice(b))
        } else {
          const a = prng.between(1, n - 1)
          groups.push(shuffled.slice(0, a), shuffled.slice(a))
        }
        action = { _tag: "Partition", groups }
        partitioned = true
        break
      }
      case "OneWay": {
        const from = prng.pick(nodes)
        const to = prng.pick(nodes.filter((x) => x !== from))
        action = { _tag: "OneWay", from, to }
        partitioned = true
        break
      }
      case "Bridge": {
        const shuffled = prng.shuffle([...nodes])
        const via = shuffled[0]!
        const split = prng.between(2, n - 1)
        action = { _tag: "Bridge", left: shuffled.slice(1, split), right: shuffled.slice(split), via }
        partitioned = true
        break
      }
      case "Heal":
        action = { _tag: "Heal" }
        partitioned = false
        break
      case "Crash": {
        const node = prng.pick(running)
        crashed.push(node)
        action = { _tag: "Crash", node }
        break
      }
      case "Restart": {
        const node = crashed.splice(prng.int(crashed.length), 1)[0]!
        action = { _tag: "Restart", node }
        break
      }
      case "ClockSkew": {
        const node = prng.pick(nodes)
        const skewMs = prng.between(-maxSkew, maxSkew)
        if (skewMs === 0) skewed.delete(node)
        else skewed.add(node)
        action = { _tag: "ClockSkew", node, skewMs }
        break
      }
    }
    out.push({ at: t, action })
  }
  if (options.healAtEnd ?? true) {
    const at = options.duration
    if (partitioned) out.push({ at, action: { _tag: "Heal" } })
    for (const node of [...crashed].sort((a, b) => a - b)) out.push({ at, action: { _tag: "Restart", node } })
    for (const node of [...skewed].sort((a, b) => a - b)) out.push({ at, action: { _tag: "ClockSkew", node, skewMs: 0 } })
  }
  return out
}

/**
 * Applies the network part of a fault at simulated time `now`. Crash/Restart also change the network
 * (the driver must still stop/restart the node itself); ClockSkew is not a network fault: returns false for it.
 */
export const applyFault = <M>(network: Network<M>, action: FaultAction, now: number): boolean => {
  switch (action._tag) {
    case "Partition":
      network.heal()
      network.partition(action.groups)
      return true
    case "OneWay":
      network.cutOneWay(action.from, action.to)
      return true
    case "Bridge":
      network.heal()
      network.bridge(action.left, action.right, action.via)
      return true
    case "Heal":
      network.heal()
      return true
    case "Crash":
      network.crash(action.node, now)
      return true
    case "Restart":
      network.restart(action.node, now)
      return true
    case "ClockSkew":
      return false
  }
}
