/**
 * `RawNode`: the Raft core plus the `Ready`/`advance` protocol (etcd's `RawNode`). This is the
 * object a driver (the `RaftNode` Effect service, the simulator) holds.
 *
 * ## Driving it
 *
 * ```ts
 * const node = new RawNode({ id, storage, random })
 * // on each timer tick:        node.tick()
 * // on each message received:  node.step(decodedMessage)
 * // on client requests:        node.propose(data) / node.readIndex(ctx) / node.proposeConfChange(cc)
 * while (node.hasReady()) {
 *   const rd = node.ready()
 *   // 1. persist, durably and in this order: rd.snapshot (if any), rd.entries (appending and
 *   //    truncating any conflicting suffix), rd.hardState (if any); then update the LogStorage
 *   //    the node reads (e.g. MemoryStorage.applySnapshot/append/setHardState).
 *   // 2. only then send rd.messages: a vote or an acknowledgement must never leave before what it
 *   //    vouches for is on disk (persist-before-send; etcd's contract).
 *   //    If the LogStorage keeps only the snapshot's metadata (`MemoryStorage.mirror`), its
 *   //    `snap` chunks come with empty data: fill each in from durable storage first
 *   //    (`snapshotChunk(data, m.offset, node.maxSizePerMsg)`).
 *   // 3. if rd.snapshot: restore the state machine from rd.snapshot.data;
 *   //    then apply rd.committedEntries in order ("normal": a command; "confChange": decode with
 *   //    decodeConfChange, e.g. to learn the new member's address; "empty": nothing).
 *   // 4. serve reads from rd.readStates once the applied index reaches each state's index.
 *   node.advance(rd)
 * }
 * ```
 *
 * `advance` marks the entries stable, the snapshot installed, and the committed entries applied;
 * it is also where membership changes take effect (see `Raft`), and where what the Ready vouched
 * for to the node itself counts: a leader's own entries toward commit, a sole voter's own vote
 * toward its election (etcd's self-acknowledgement after persistence). So a commit index never
 * exceeds what a quorum has on disk, and no message of a term leaves before that term is durable,
 * even when a leader sends its appends while it saves them (`RaftNode`) or is the only voter.
 * Call `advance` before the next `ready()`; ticks and steps may happen in between. A conf change
 * among a Ready's committed entries that a snapshot installed meanwhile already covers does not
 * take effect again.
 *
 * Compaction: after `advance`, `createSnapshot(stateMachineData)` returns a snapshot of the applied
 * state; the driver stores it and may then discard log entries up to its index
 * (`MemoryStorage.createSnapshot` + `compact`).
 */
import type { Message } from "./Message.js"
import type { ProposeResult, RaftConfig, RequestResult, Status } from "./Raft.js"
import { decodeConfChange, Raft } from "./Raft.js"
import type { ConfChange, ConfState, Entry, HardState, ReadState, Snapshot, SoftState, StateRole } from "./Types.js"

/** Everything the driver must do after some input: persist, send, apply. See the module comment. */
export interface Ready {
  /** Leader/role, when it changed since the previous Ready (not persisted; for observers). */
  readonly softState: SoftState | undefined
  /** Term, vote and commit to persist, when they changed since the previous Ready. */
  readonly hardState: HardState | undefined
  /** Linearizable read points that became available (see `readIndex`). */
  readonly readStates: ReadonlyArray<ReadState>
  /** Entries to append to stable storage (truncating any conflicting suffix) BEFORE sending messages. */
  readonly entries: ReadonlyArray<Entry>
  /** A snapshot received from the leader, to persist and install, or undefined. */
  readonly snapshot: Snapshot | undefined
  /** Entries to apply to the state machine, in order (already committed; persisted first). */
  readonly committedEntries: ReadonlyArray<Entry>
  /** Messages to send, AFTER entries, snapshot and hard state are durable. */
  readonly messages: ReadonlyArray<Message>
  /**
   * True when the write must be synced (fsync) before sending: the vote, term or entries changed, or
   * a membership change is to be applied (its commit index must be durable first).
   */
  readonly mustSync: boolean
}

const sameHardState = (a: HardState, b: HardState): boolean =>
  a.term === b.term && a.vote === b.vote && a.commit === b.commit

export class RawNode {
  readonly raft: Raft
  private prevSoftState: SoftState
  private prevHardState: HardState
  private outstanding: Ready | undefined = undefined
  /** The self-addressed messages taken with the outstanding Ready (see `Raft.msgsAfterAppend`). */
  private stepsOnAdvance: Array<Message> = []

  constructor(config: RaftConfig) {
    this.raft = new Raft(config)
    this.prevSoftState = this.raft.softState()
    this.prevHardState = this.raft.hardState()
  }

  get id(): number {
    return this.raft.id
  }

  /** Cheap accessors for hot paths (the explorer); `status()` has everything but allocates. */
  get role(): StateRole {
    return this.raft.role
  }

  get lead(): number {
    return this.raft.lead
  }

  get term(): number {
    return this.raft.term
  }

  /** The size of a snapshot chunk (and of one AppendEntries' entries), for a driver that fills chunks in. */
  get maxSizePerMsg(): number {
    return this.raft.maxSizePerMsg
  }

  get commitIndex(): number {
    return this.raft.log.committed
  }

  get appliedIndex(): number {
    return this.raft.log.applied
  }

  tick(): void {
    this.raft.tick()
  }

  /** In how many ticks the next one acts, if nothing is stepped meanwhile (`Raft.ticksUntilAction`). */
  ticksUntilAction(): number {
    return this.raft.ticksUntilAction()
  }

  /** Feed a message received from a peer (already decoded with the `Message` schema). */
  step(m: Message): void {
    this.raft.step(m)
  }

  /** Campaign now (e.g. to bootstrap a single node quickly); usually elections start from ticks. */
  campaign(): void {
    this.raft.campaign()
  }

  propose(data: string): ProposeResult {
    return this.raft.propose(data)
  }

  proposeBatch(data: ReadonlyArray<string>): ProposeResult {
    return this.raft.proposeBatch(data)
  }

  proposeConfChange(cc: ConfChange): ProposeResult {
    return this.raft.proposeConfChange(cc)
  }

  readIndex(context: string): RequestResult {
    return this.raft.readIndex(context)
  }

  transferLeader(to: number): RequestResult {
    return this.raft.transferLeader(to)
  }

  reportUnreachable(id: number): void {
    this.raft.reportUnreachable(id)
  }

  /** `id` is back as another incarnation: see `Raft.reportRestarted`. */
  reportRestarted(id: number): void {
    this.raft.reportRestarted(id)
  }

  reportSnapshot(id: number, ok: boolean): void {
    this.raft.reportSnapshot(id, ok)
  }

  status(): Status {
    return this.raft.status()
  }

  confState(): ConfState {
    return this.raft.confState()
  }

  /**
   * A snapshot of the application's state at the applied index: the driver passes its state
   * machine's serialised state (which must reflect exactly the entries applied so far).
   */
  createSnapshot(data: string): Snapshot {
    const index = this.raft.log.applied
    const term = this.raft.log.term(index)
    if (term === undefined) throw new Error(`raft: cannot snapshot at ${index}: its term is unavailable`)
    return { metadata: { index, term, confState: this.raft.confState() }, data }
  }

  /** True if `ready()` has something. False while a Ready is outstanding (not yet advanced). */
  hasReady(): boolean {
    if (this.outstanding !== undefined) return false
    const r = this.raft
    r.flush()
    if (r.msgs.length > 0 || r.readStates.length > 0 || r.msgsAfterAppend.length > 0) return true
    if (r.log.unstable.entries.length > 0 || r.log.hasPendingSnapshot()) return true
    if (r.log.hasNextCommittedEntries()) return true
    if (r.lead !== this.prevSoftState.lead || r.role !== this.prevSoftState.role) return true
    const hs = this.prevHardState
    return r.term !== hs.term || r.vote !== hs.vote || r.log.committed !== hs.commit
  }

  /** Collect what to persist, send and apply. Messages and read states are handed over (cleared). */
  ready(): Ready {
    if (this.outstanding !== undefined) throw new Error("raft: call advance() for the previous Ready first")
    const r = this.raft
    r.flush()
    const ss = r.softState()
    const hs = r.hardState()
    const softChanged = ss.lead !== this.prevSoftState.lead || ss.role !== this.prevSoftState.role
    const hardChanged = !sameHardState(hs, this.prevHardState)
    const entries = r.log.unstable.entries.slice()
    const snapshot = r.log.unstable.snapshot
    const committedEntries = r.log.nextCommittedEntries()
    const rd: Ready = {
      softState: softChanged ? ss : undefined,
      hardState: hardChanged ? hs : undefined,
      readStates: r.readStates,
      entries,
      snapshot,
      committedEntries,
      messages: r.msgs,
      mustSync:
        entries.length > 0 ||
        snapshot !== undefined ||
        (hardChanged && (hs.term !== this.prevHardState.term || hs.vote !== this.prevHardState.vote)) ||
        // A membership change is applied only once the commit index covering it is durable: a node
        // that forgot it (a crash before the next sync) would count the old membership again, and
        // a voter removed since may hold the vote it needs and refuse it (`shrink` seed 263).
        committedEntries.some((e) => e.kind === "confChange")
    }
    r.msgs = []
    r.readStates = []
    this.stepsOnAdvance = r.msgsAfterAppend
    r.msgsAfterAppend = []
    if (softChanged) this.prevSoftState = ss
    if (hardChanged) this.prevHardState = hs
    r.reduceUncommittedSize(committedEntries)
    this.outstanding = rd
    return rd
  }

  /**
   * The driver has persisted `rd`, sent its messages and applied its committed entries.
   * Membership changes among them take effect now, in log order.
   */
  advance(rd: Ready): void {
    if (rd !== this.outstanding) throw new Error("raft: advance() must be given the last Ready")
    this.outstanding = undefined
    const r = this.raft
    if (rd.snapshot !== undefined) {
      r.log.stableSnapTo(rd.snapshot.metadata.index)
      if (rd.snapshot.metadata.index > r.log.applied) r.log.appliedTo(rd.snapshot.metadata.index)
    }
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1]!
      r.log.stableTo(last.index, last.term)
    }
    // What this Ready vouched for is durable now: a leader's own appends count toward commit, a
    // sole voter's own vote wins its election. Stale ones (an older term) are ignored by `step`.
    const steps = this.stepsOnAdvance
    this.stepsOnAdvance = []
    for (const m of steps) r.step(m)
    for (const e of rd.committedEntries) {
      if (e.index <= r.log.applied) continue
      r.log.appliedTo(e.index)
      if (e.kind === "confChange") r.applyConfChange(decodeConfChange(e.data), e.index)
    }
  }
}
