/**
 * A synchronous network of Raft cores for scenario tests (etcd's `network` in raft_test.go).
 *
 * Each node is a `RawNode` over a `MemoryStorage`, driven by the documented Ready protocol:
 * persist (snapshot, entries, hard state) → queue messages → apply committed entries → advance.
 * The state machine is the list of applied `normal` entries' data. Messages are delivered in FIFO
 * order; links can be cut, nodes isolated or crashed, and messages dropped or rewritten by hooks.
 */
import type { Message } from "../../src/raft/Message.js"
import { leavesBeforePersist } from "../../src/raft/RaftNode.js"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import type { RaftConfig } from "../../src/raft/Raft.js"
import type { Ready } from "../../src/raft/RawNode.js"
import { RawNode } from "../../src/raft/RawNode.js"
import type { ConfState, Entry, ReadState } from "../../src/raft/Types.js"

/** A tiny seeded PRNG (mulberry32): returns an int in [0, n). */
export const seededRandom = (seed: number): ((n: number) => number) => {
  let a = seed >>> 0
  return (n: number) => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    const r = ((t ^ (t >>> 14)) >>> 0) / 4294967296
    return Math.floor(r * n)
  }
}

export type NodeOptions = Partial<Omit<RaftConfig, "id" | "storage" | "random">>

/** The options etcd's scenario tests use by default: no PreVote, no CheckQuorum. */
export const plain: NodeOptions = { electionTick: 10, heartbeatTick: 1, preVote: false, checkQuorum: false }

export class Network {
  readonly nodes = new Map<number, RawNode>()
  readonly storages = new Map<number, MemoryStorage>()
  /** The replicated state machine of each node: the data of applied `normal` entries. */
  readonly state = new Map<number, Array<string>>()
  /** Every entry each node applied, by index (survives crashes: it is the observer's record). */
  readonly appliedLog = new Map<number, Map<number, Entry>>()
  readonly readStates = new Map<number, Array<ReadState>>()
  /** Messages delivered so far, in order. */
  readonly delivered: Array<Message> = []
  private queue: Array<Message> = []
  private readonly cut = new Set<string>()
  private readonly down = new Set<number>()
  private readonly options = new Map<number, NodeOptions>()
  /** Messages that left their sender before it crashed: they still arrive. */
  private readonly onTheWire = new WeakSet<Message>()
  /** Return true to drop a message. */
  drop: ((m: Message) => boolean) | undefined = undefined
  /** Rewrite a message in flight (return it unchanged to keep it). */
  rewrite: ((m: Message) => Message) | undefined = undefined
  /**
   * Return true to crash `id` while it saves `rd` (a Ready with something to write): in the
   * driver's production order (`RaftNode`), the messages that leave before the save have left, and
   * the save is lost.
   */
  crashDuringSave: ((id: number, rd: Ready) => boolean) | undefined = undefined

  constructor(
    ids: ReadonlyArray<number>,
    options: NodeOptions = plain,
    readonly seed = 1,
    storages?: ReadonlyMap<number, MemoryStorage>
  ) {
    const confState: ConfState = { voters: [...ids], learners: [] }
    for (const id of ids) {
      this.add(id, storages?.get(id) ?? MemoryStorage.bootstrap(confState, "[]"), options)
    }
  }

  /** Add a node with the given storage (a joining node: `new MemoryStorage()`). */
  add(id: number, storage: MemoryStorage, options: NodeOptions = plain): RawNode {
    this.storages.set(id, storage)
    this.options.set(id, options)
    const data = storage.snapshotData()
    this.state.set(id, data === "" ? [] : (JSON.parse(data) as Array<string>))
    if (!this.appliedLog.has(id)) this.appliedLog.set(id, new Map())
    if (!this.readStates.has(id)) this.readStates.set(id, [])
    const node = new RawNode({
      ...options,
      id,
      storage,
      random: seededRandom(this.seed * 7919 + id),
      applied: storage.snapshot().metadata.index
    })
    this.nodes.set(id, node)
    this.down.delete(id)
    return node
  }

  node(id: number): RawNode {
    const n = this.nodes.get(id)
    if (n === undefined) throw new Error(`no node ${id}`)
    return n
  }

  /** Run one node's Ready loop: persist, queue messages, apply, advance. */
  processReady(id: number): void {
    const n = this.nodes.get(id)
    if (n === undefined || this.down.has(id)) return
    const st = this.storages.get(id)!
    while (n.hasReady()) {
      const rd = n.ready()
      const saves = rd.snapshot !== undefined || rd.entries.length > 0 || rd.mustSync
      if (saves && this.crashDuringSave !== undefined && this.crashDuringSave(id, rd)) {
        for (const m of rd.messages) {
          if (!leavesBeforePersist(m)) continue
          this.onTheWire.add(m)
          this.queue.push(m)
        }
        this.crash(id)
        return
      }
      if (rd.snapshot !== undefined) {
        st.applySnapshot(rd.snapshot)
        this.state.set(id, rd.snapshot.data === "" ? [] : (JSON.parse(rd.snapshot.data) as Array<string>))
      }
      st.append(rd.entries)
      if (rd.hardState !== undefined) st.setHardState(rd.hardState)
      for (const m of rd.messages) this.queue.push(m)
      const sm = this.state.get(id)!
      const log = this.appliedLog.get(id)!
      for (const e of rd.committedEntries) {
        log.set(e.index, e)
        if (e.kind === "normal") sm.push(e.data)
      }
      for (const r of rd.readStates) this.readStates.get(id)!.push(r)
      n.advance(rd)
    }
  }

  /** Messages waiting to be delivered (after processing every node's Ready). */
  pending(): ReadonlyArray<Message> {
    for (const id of this.ids()) this.processReady(id)
    return this.queue
  }

  /** Take the queued messages out (e.g. to inspect or reorder them) without delivering. */
  takeQueue(): Array<Message> {
    this.pending()
    const q = this.queue
    this.queue = []
    return q
  }

  ids(): Array<number> {
    return [...this.nodes.keys()].sort((a, b) => a - b)
  }

  /** Deliver one message now (subject to cuts, drops and rewrites). */
  deliver(m: Message): void {
    if (this.down.has(m.to) || (this.down.has(m.from) && !this.onTheWire.has(m)) || this.cut.has(`${m.from}->${m.to}`)) return
    if (this.drop !== undefined && this.drop(m)) return
    const msg = this.rewrite !== undefined ? this.rewrite(m) : m
    const n = this.nodes.get(msg.to)
    if (n === undefined) return
    this.delivered.push(msg)
    n.step(msg)
  }

  /** Deliver messages until the network is quiet. */
  stabilize(maxRounds = 10_000): void {
    for (let round = 0; round < maxRounds; round++) {
      const batch = this.takeQueue()
      if (batch.length === 0) return
      for (const m of batch) this.deliver(m)
    }
    throw new Error("network did not stabilize")
  }

  /** Inject messages (e.g. hand-crafted ones) and stabilize. */
  send(...msgs: ReadonlyArray<Message>): void {
    for (const m of msgs) this.queue.push(m)
    this.stabilize()
  }

  tick(id: number, times = 1): void {
    for (let i = 0; i < times; i++) {
      if (!this.down.has(id)) this.node(id).tick()
    }
  }

  /** Tick every live node `times` times, stabilizing after each round of ticks. */
  tickAll(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const id of this.ids()) if (!this.down.has(id)) this.node(id).tick()
      this.stabilize()
    }
  }

  campaign(id: number): void {
    this.node(id).campaign()
    this.stabilize()
  }

  leader(): number | undefined {
    const leaders = this.ids().filter((id) => !this.down.has(id) && this.node(id).status().role === "leader")
    if (leaders.length === 0) return undefined
    // The leader of the highest term (a stale leader may remain in a minority partition).
    return leaders.sort((a, b) => this.node(b).status().term - this.node(a).status().term)[0]
  }

  /** Cut both directions between a and b. */
  cutLink(a: number, b: number): void {
    this.cut.add(`${a}->${b}`)
    this.cut.add(`${b}->${a}`)
  }

  /** Cut every link of `id`. */
  isolate(id: number): void {
    for (const other of this.ids()) if (other !== id) this.cutLink(id, other)
  }

  /** Split into groups: links between groups are cut. */
  partition(...groups: ReadonlyArray<ReadonlyArray<number>>): void {
    for (const g of groups) {
      for (const h of groups) {
        if (g === h) continue
        for (const a of g) for (const b of h) this.cut.add(`${a}->${b}`)
      }
    }
  }

  heal(): void {
    this.cut.clear()
  }

  /** Stop a node: its volatile state is lost, its storage (everything persisted) is kept. */
  crash(id: number): void {
    this.down.add(id)
  }

  /** Restart a crashed node from its storage (the state machine restarts from its snapshot). */
  restart(id: number): RawNode {
    return this.add(id, this.storages.get(id)!, this.options.get(id) ?? plain)
  }

  isDown(id: number): boolean {
    return this.down.has(id)
  }

  /** Take a snapshot of `id`'s state machine at its applied index and compact its log to it. */
  compact(id: number): void {
    this.processReady(id)
    const n = this.node(id)
    const snap = n.createSnapshot(JSON.stringify(this.state.get(id)!))
    const st = this.storages.get(id)!
    st.createSnapshot(snap)
    st.compact(snap.metadata.index)
  }

  /**
   * State Machine Safety: no two nodes applied different entries at the same index. Returns the
   * violations found (empty when safe).
   */
  safetyViolations(): Array<string> {
    const seen = new Map<number, { node: number; e: Entry }>()
    const out: Array<string> = []
    for (const id of [...this.appliedLog.keys()].sort((a, b) => a - b)) {
      for (const [index, e] of this.appliedLog.get(id)!) {
        const prev = seen.get(index)
        if (prev === undefined) seen.set(index, { node: id, e })
        else if (prev.e.term !== e.term || prev.e.data !== e.data) {
          out.push(`index ${index}: node ${prev.node} applied term ${prev.e.term}, node ${id} applied term ${e.term}`)
        }
      }
    }
    return out
  }
}
