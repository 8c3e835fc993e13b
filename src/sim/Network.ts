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
 * - `crash(node)` / `restart(node)`: a crashed node sends nothing and receives nothing; messages
 *   in flight to it are dropped, including after it restarts (its incarnation changed).
 * - a message in flight across a link that is cut when it arrives is dropped.
 * - `healAll()` also turns off drops and duplicates (the liveness phase); `setLossless(false)` undoes it.
 *
 * Node ids are integers in [0, MAX_NODE_ID].
 */
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
  readonly sentAt: number
  /** The destination's incarnation when sent; a restart in between makes the delivery stale. */
  readonly incarnation: number
}

export interface NetworkStats {
  sent: number
  /** Dropped at send (drop, partition, crashed end) or at arrival (stale, partition, crashed). */
  dropped: number
  duplicated: number
  delivered: number
}

export interface NetworkOptions<M> {
  readonly nodes: ReadonlyArray<number>
  /** The network's own stream; per-message draws come from it, per-link profiles from its forks. */
  readonly prng: Prng
  readonly schedule: (time: number, delivery: Delivery<M>) => void
  readonly links?: LinkFaultRanges
}

const SIZE = MAX_NODE_ID + 1

const checkNode = (node: number): void => {
  if (!(Number.isInteger(node) && node >= 0 && node <= MAX_NODE_ID)) {
    throw new RangeError(`network node ids are integers in [0, ${MAX_NODE_ID}], got ${node}`)
  }
}

const inRange = (prng: Prng, [lo, hi]: readonly [number, number]): number => lo + (hi - lo) * prng.float()

export class Network<M> {
  readonly stats: NetworkStats = { sent: 0, dropped: 0, duplicated: 0, delivered: 0 }
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

  /** Sends one message; schedules zero, one or two deliveries. */
  send(from: number, to: number, msg: M, now: number): void {
    this.checkMember(from)
    this.checkMember(to)
    const stats = this.stats
    stats.sent++
    if (this.up[from] === 0 || this.up[to] === 0 || (this.cutCount > 0 && this.cut[from * SIZE + to] === 1)) {
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
    const incarnation = this.incarnations[to]!
    for (let c = 0; c < copies; c++) {
      let delay = link.minDelay === link.maxDelay ? link.minDelay : link.minDelay + prng.int(link.maxDelay - link.minDelay + 1)
      if (!this.lossless && link.slow > 0 && link.slowDelay >= 1 && prng.float() < link.slow) delay += 1 + prng.int(link.slowDelay)
      this.schedule(now + delay, { from, to, msg, sentAt: now, incarnation })
    }
  }

  /** At arrival: true if the message reaches its destination (counted delivered), false if dropped. */
  accept(delivery: Delivery<M>): boolean {
    const { from, to } = delivery
    if (this.up[to] === 0 || this.incarnations[to] !== delivery.incarnation || (this.cutCount > 0 && this.cut[from * SIZE + to] === 1)) {
      this.stats.dropped++
      return false
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

  /** The node stops: it sends and receives nothing until `restart`. */
  crash(node: number): void {
    this.checkMember(node)
    if (this.up[node] === 0) throw new Error(`network.crash: node ${node} is already down`)
    this.up[node] = 0
  }

  /** The node comes back as a new incarnation; messages sent to its old incarnation are lost. */
  restart(node: number): void {
    this.checkMember(node)
    if (this.up[node] === 1) throw new Error(`network.restart: node ${node} is up`)
    this.up[node] = 1
    this.incarnations[node]!++
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
 * Applies the network part of a fault. Crash/Restart also change the network (the driver must still
 * stop/restart the node itself); ClockSkew is not a network fault: returns false for it.
 */
export const applyFault = <M>(network: Network<M>, action: FaultAction): boolean => {
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
      network.crash(action.node)
      return true
    case "Restart":
      network.restart(action.node)
      return true
    case "ClockSkew":
      return false
  }
}
