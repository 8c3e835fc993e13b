/**
 * Blixard's Raft consensus core, modelled on etcd-io/raft: a pure, synchronous, deterministic state
 * machine. It does no I/O, reads no clock and draws no randomness except from the `random` source it
 * is handed. Drive it through `RawNode` (which adds the `Ready`/`advance` protocol); this class holds
 * the protocol rules and is what the tests exercise rule by rule.
 *
 * ## Membership: single-server changes
 *
 * Blixard changes membership one server at a time (`addLearner`, `promote`, `remove`) instead of
 * etcd's joint consensus. Any two majorities of configurations that differ by one voter overlap, so
 * a single change can never let two leaders be elected for the same term, provided changes do not
 * overlap. Hence the rules this core enforces:
 * - one at a time: the leader refuses a new change while an earlier one is not yet applied;
 * - the fix to the thesis' single-server algorithm (Ongaro, raft-dev, 2015): a new leader must commit
 *   an entry of its own term before proposing a change — our leader's initial empty entry counts as
 *   a pending change until it is applied;
 * - a new server first joins as a learner (gets the log, never votes, never counts for quorum) and
 *   is promoted once caught up, so it cannot stall commits while it catches up.
 *
 * Changes take effect **when applied** (like etcd): `RawNode.advance` applies the `confChange`
 * entries among the committed entries it acknowledges, in log order. A leader whose own removal is
 * applied steps down; a node that is not a voter never campaigns.
 */
import { committedIndex, voteResult } from "./Quorum.js"
import type { VoteResult } from "./Quorum.js"
import type { LogStorage } from "./Log.js"
import { RaftLog } from "./Log.js"
import type { Message, MsgApp, MsgAppResp, MsgHeartbeat, MsgHeartbeatResp, MsgSnap, MsgSnapAck } from "./Message.js"
import { snapshotChunk } from "./Message.js"
import { Progress } from "./Progress.js"
import type { ProgressStatus } from "./Progress.js"
import { ReadOnly } from "./ReadOnly.js"
import type {
  ConfChange,
  ConfState,
  Entry,
  EntryKind,
  HardState,
  ReadState,
  Snapshot,
  SoftState,
  StateRole,
  StoredSnapshot
} from "./Types.js"
import { applyChangeToConfState, None, payloadSize } from "./Types.js"

export interface RaftConfig {
  /** This node's id (positive). */
  readonly id: number
  /** Persisted state, read synchronously. */
  readonly storage: LogStorage
  /**
   * Seeded randomness: returns an integer in [0, n). Used only for the election timeout, drawn
   * uniformly from [electionTick, 2·electionTick).
   */
  readonly random: (n: number) => number
  /** Ticks without hearing from a leader before a follower campaigns (default 10). */
  readonly electionTick?: number
  /** Ticks between leader heartbeats (default 1). Must be < electionTick. */
  readonly heartbeatTick?: number
  /** The last index the application has applied (on restart); entries after it are re-delivered. */
  readonly applied?: number
  /** Run a PreVote round before incrementing the term (default true). */
  readonly preVote?: boolean
  /** Leader steps down without quorum contact for an election timeout; followers keep a lease (default true). */
  readonly checkQuorum?: boolean
  /**
   * An advanced commit index goes to each follower with the next message to it, alone at the next
   * tick at the latest (`sendOwedCommits`), instead of in an AppendEntries broadcast at once as
   * etcd-raft does (default false: etcd's behaviour, which the rule-by-rule tests trace). The daemon
   * and both simulator tiers turn it on (`RaftNode.makeCore`, the explorer).
   */
  readonly lazyCommit?: boolean
  /** Max size of one AppendEntries' entries, and of one snapshot chunk (default 1 MiB). */
  readonly maxSizePerMsg?: number
  /**
   * Snapshot chunks sent to one follower and not yet acknowledged (default 4: 4 MiB in flight with
   * the default chunk size). See `sendSnapshotChunks`.
   */
  readonly maxSnapshotChunksInflight?: number
  /** Max AppendEntries in flight per follower in replicate state (default 256). */
  readonly maxInflightMsgs?: number
  /** Cap on the payload bytes of the leader's uncommitted entries; 0 = unlimited (default 0). */
  readonly maxUncommittedEntriesSize?: number
  /** Max size of committed entries handed out in one Ready (default unlimited). */
  readonly maxCommittedSizePerReady?: number
  /**
   * DELIBERATELY UNSAFE, for the simulator only: the leader answers a ReadIndex at once with its
   * commit index instead of confirming its leadership with a heartbeat round (etcd's
   * `ReadOnlyLeaseBased`, which this core had as `readOnlyOption: "leaseBased"` and no longer offers).
   * A lease is not sound here even with perfect clocks: a leadership transfer's votes override the
   * followers' leases, a restarted follower has no lease to honour, and a leader's CheckQuorum round
   * counts contact from up to two election timeouts back while a follower's lease lasts one. A
   * deposed leader then answers with a commit index older than a write the new leader completed.
   */
  readonly unsafeLeaseBasedReads?: boolean
  /**
   * DELIBERATELY UNSAFE, for the simulator only: a leadership-transfer request restarts the
   * election timer that also times CheckQuorum (the old behaviour), so transfer requests arriving
   * more often than an election timeout keep a leader that lost its quorum in office forever.
   */
  readonly unsafeTransferPostponesCheckQuorum?: boolean
  /**
   * DELIBERATELY UNSAFE, for the simulator only: re-introduces the bug of Raft paper Figure 8 by
   * letting the leader commit entries of previous terms by counting replicas. A committed entry can
   * then be overwritten. Never enable outside tests that check the simulator catches it.
   *
   * As in the paper's figure, the leader then also skips the empty entry it normally appends on
   * election: with that entry, older entries nearly always reach followers together with an entry
   * of the leader's term, which masks the bug from a random search.
   */
  readonly unsafeCommitPreviousTermByCounting?: boolean
  /**
   * DELIBERATELY UNSAFE, for the simulator only: the leader counts its own entries toward commit
   * as soon as it appends them, and a candidate that is the only voter wins its election at once —
   * both before the driver has made them durable. A driver that sends a leader's appends before its
   * save (as `RaftNode` does) then lets a learner apply an entry its leader loses in a crash, and
   * the restarted leader win the same term again with different entries. Never enable outside
   * tests that check the simulator catches it.
   */
  readonly unsafeCountSelfBeforeDurable?: boolean
  /**
   * DELIBERATELY UNSAFE, for the simulator only: conf changes of a Ready still outstanding when a
   * snapshot was installed take effect on top of the snapshot's newer configuration (etcd#11510),
   * e.g. re-adding a member the snapshot had removed. Never enable outside tests that check the
   * simulator catches it.
   */
  readonly unsafeReapplyConfChanges?: boolean
  /**
   * DELIBERATELY UNSAFE, for the simulator only: a ReadIndex context repeated while its request is
   * pending is matched to that request, so the later request gets the earlier read point (a stale
   * read). Never enable outside tests that check the simulator catches it.
   */
  readonly unsafeMatchRepeatedReadContexts?: boolean
}

/** Why a proposal was refused. The proposal was not appended and can be retried (elsewhere). */
export type ProposeError =
  | { readonly reason: "notLeader"; readonly leader: number }
  | { readonly reason: "transferInProgress"; readonly transferee: number }
  | { readonly reason: "uncommittedSizeExceeded" }
  | { readonly reason: "confChangePending"; readonly pendingIndex: number }
  | { readonly reason: "invalidConfChange"; readonly detail: string }

/** `ok`: appended at `index` in `term`; it is applied at that index if that entry is still there. */
export type ProposeResult =
  | { readonly ok: true; readonly index: number; readonly term: number }
  | ({ readonly ok: false } & ProposeError)

export type RequestResult = { readonly ok: true } | { readonly ok: false; readonly reason: "noLeader" | "notVoter" }

export interface Status {
  readonly id: number
  readonly term: number
  readonly vote: number
  readonly lead: number
  readonly role: StateRole
  readonly commit: number
  readonly applied: number
  readonly firstIndex: number
  readonly lastIndex: number
  readonly confState: ConfState
  /**
   * A leader: the index of the last membership change in its log, or of its first entry (its log
   * may hold changes it has not applied): `confState` is the leader's membership once `applied`
   * has reached it; before, a change may still take effect (and no new one is accepted).
   */
  readonly pendingConfIndex: number
  readonly leadTransferee: number
  /** Per-peer replication progress (leader only; empty otherwise), sorted by id, self included. */
  readonly progress: ReadonlyArray<ProgressStatus>
}

type CampaignType = "preElection" | "election" | "transfer"

interface SnapAssembly {
  readonly term: number
  readonly snap: MsgSnap["metadata"]
  readonly totalSize: number
  /** Chunks received so far, by offset: they may arrive in any order. */
  readonly parts: Map<number, string>
  received: number
  /** Characters held without a gap from offset 0: what `snapAck` reports. */
  contiguous: number
}

const sortedIds = (ids: Iterable<number>): Array<number> => [...ids].sort((a, b) => a - b)

/** Encode a conf change deterministically (fixed key order) as an entry's data. */
export const encodeConfChange = (cc: ConfChange): string =>
  JSON.stringify(
    cc.address === undefined
      ? { type: cc.type, nodeId: cc.nodeId }
      : { type: cc.type, nodeId: cc.nodeId, address: cc.address }
  )

/** Decode a conf-change entry's data (written by `encodeConfChange`). */
export const decodeConfChange = (data: string): ConfChange => {
  const raw: unknown = JSON.parse(data)
  if (typeof raw !== "object" || raw === null) throw new Error("raft: malformed conf change entry")
  const o = raw as Record<string, unknown>
  const type = o["type"]
  const nodeId = o["nodeId"]
  if ((type !== "addLearner" && type !== "promote" && type !== "remove") || typeof nodeId !== "number") {
    throw new Error(`raft: malformed conf change entry ${data}`)
  }
  const address = o["address"]
  return typeof address === "string" ? { type, nodeId, address } : { type, nodeId }
}

export class Raft {
  readonly id: number
  term = 0
  vote = None
  lead = None
  role: StateRole = "follower"
  readonly log: RaftLog

  /** Configuration, kept sorted for deterministic iteration. */
  private voters: Array<number> = []
  private learners: Array<number> = []
  private members: Array<number> = []
  /**
   * The log index whose configuration is in effect: a snapshot's, or the last conf change applied.
   * A conf change at or below it is already part of the configuration (a snapshot installed while
   * the Ready carrying the change was outstanding) and must not be applied again.
   */
  private confIndex = 0
  readonly prs = new Map<number, Progress>()

  private readonly votes = new Map<number, boolean>()
  /** Outgoing messages, handed out (and cleared) by `RawNode.ready()`; sent after persisting. */
  msgs: Array<Message> = []
  /**
   * Messages to this node itself that vouch for writes of the Ready they come with (etcd's
   * `msgsAfterAppend`): a leader's acknowledgement of its own appends, a sole voter's own vote.
   * `RawNode` takes them with the Ready and steps them in `advance`, once that Ready is durable.
   */
  msgsAfterAppend: Array<Message> = []
  /** Read states, handed out (and cleared) by `RawNode.ready()`. */
  readStates: Array<ReadState> = []
  private readOnly: ReadOnly
  /** ReadIndex requests received before this leader committed an entry of its term. */
  private pendingReadIndex: Array<{ context: string; from: number }> = []

  readonly electionTimeout: number
  readonly heartbeatTimeout: number
  electionElapsed = 0
  private heartbeatElapsed = 0
  private randomizedElectionTimeout = 0

  readonly preVote: boolean
  readonly checkQuorum: boolean
  private readonly lazyCommit: boolean
  readonly maxSizePerMsg: number
  private readonly maxInflight: number
  private readonly maxSnapshotChunksInflight: number
  private readonly maxUncommittedSize: number
  private readonly unsafeLeaseReads: boolean
  private readonly unsafeTransferTimer: boolean
  private readonly unsafeCommit: boolean
  private readonly unsafeSelf: boolean
  private readonly unsafeReapplyConf: boolean
  private readonly unsafeMatchRepeated: boolean
  private readonly random: (n: number) => number

  /** Index of the latest conf change (or of the leader's initial empty entry) not yet known applied. */
  pendingConfIndex = 0
  /** Payload bytes of uncommitted entries appended by this leader. */
  uncommittedSize = 0
  leadTransferee = None
  /**
   * Ticks since the current leadership transfer began. Its own counter, not `electionElapsed`: that
   * one times CheckQuorum, and a transfer request must never postpone the leader's quorum check.
   */
  private transferElapsed = 0
  /** Appends to broadcast: set by proposals and membership changes, flushed by `flush()` (batching). */
  private needBroadcast = false
  /**
   * The commit index advanced past what some follower was sent: it rides on the next AppendEntries
   * or heartbeat to it, and at the latest goes out alone at the next tick (`sendOwedCommits`).
   */
  private commitOwed = false
  private snapAssembly: SnapAssembly | undefined = undefined
  /** The snapshot transmission we already reported as broken (its remaining chunks are ignored). */

  constructor(config: RaftConfig) {
    const electionTick = config.electionTick ?? 10
    const heartbeatTick = config.heartbeatTick ?? 1
    if (!Number.isInteger(config.id) || config.id <= 0) throw new Error("raft: id must be a positive integer")
    if (heartbeatTick <= 0) throw new Error("raft: heartbeatTick must be > 0")
    if (electionTick <= heartbeatTick) throw new Error("raft: electionTick must be > heartbeatTick")
    const checkQuorum = config.checkQuorum ?? true
    this.id = config.id
    this.electionTimeout = electionTick
    this.heartbeatTimeout = heartbeatTick
    this.preVote = config.preVote ?? true
    this.checkQuorum = checkQuorum
    this.lazyCommit = config.lazyCommit ?? false
    this.maxSizePerMsg = config.maxSizePerMsg ?? 1024 * 1024
    if (this.maxSizePerMsg <= 0) throw new Error("raft: maxSizePerMsg must be > 0")
    this.maxInflight = config.maxInflightMsgs ?? 256
    if (this.maxInflight <= 0) throw new Error("raft: maxInflightMsgs must be > 0")
    this.maxSnapshotChunksInflight = config.maxSnapshotChunksInflight ?? 4
    if (this.maxSnapshotChunksInflight <= 0) throw new Error("raft: maxSnapshotChunksInflight must be > 0")
    this.maxUncommittedSize = config.maxUncommittedEntriesSize ?? 0
    this.unsafeLeaseReads = config.unsafeLeaseBasedReads ?? false
    this.unsafeTransferTimer = config.unsafeTransferPostponesCheckQuorum ?? false
    this.readOnly = new ReadOnly()
    this.unsafeCommit = config.unsafeCommitPreviousTermByCounting ?? false
    this.unsafeSelf = config.unsafeCountSelfBeforeDurable ?? false
    this.unsafeReapplyConf = config.unsafeReapplyConfChanges ?? false
    this.unsafeMatchRepeated = config.unsafeMatchRepeatedReadContexts ?? false
    this.random = config.random
    this.log = new RaftLog(config.storage, config.maxCommittedSizePerReady ?? Number.MAX_SAFE_INTEGER)

    const { hardState, confState } = config.storage.initialState()
    if (hardState.commit < this.log.committed || hardState.commit > this.log.lastIndex()) {
      throw new Error(
        `raft: hard state commit ${hardState.commit} is outside [${this.log.committed}, ${this.log.lastIndex()}]`
      )
    }
    this.log.committed = hardState.commit
    this.term = hardState.term
    this.vote = hardState.vote
    let cs = confState
    this.confIndex = config.storage.snapshot().metadata.index
    const applied = config.applied ?? 0
    if (applied > 0) {
      this.log.appliedTo(applied)
      // Replay membership changes after the snapshot up to `applied` (they took effect when applied).
      const from = this.log.firstIndex()
      if (applied >= from) {
        for (const e of this.log.slice(from, applied + 1, Number.MAX_SAFE_INTEGER) ?? []) {
          if (e.kind !== "confChange") continue
          cs = applyChangeToConfState(cs, decodeConfChange(e.data))
          this.confIndex = e.index
        }
      }
    }
    this.setConf(cs)
    this.becomeFollower(this.term, None)
  }

  // ---------------------------------------------------------------------------------------------
  // Observers

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed }
  }

  softState(): SoftState {
    return { lead: this.lead, role: this.role }
  }

  confState(): ConfState {
    return { voters: this.voters.slice(), learners: this.learners.slice() }
  }

  /** True if this node is a voter and may campaign (a learner or a removed node never does). */
  promotable(): boolean {
    return this.prs.has(this.id) && this.voters.includes(this.id) && !this.log.hasPendingSnapshot()
  }

  status(): Status {
    const progress: Array<ProgressStatus> = []
    if (this.role === "leader") {
      for (const id of this.members) {
        const pr = this.prs.get(id)!
        progress.push({
          id,
          match: pr.match,
          next: pr.next,
          state: pr.state,
          isLearner: pr.isLearner,
          recentActive: pr.recentActive,
          inflight: pr.inflights.count,
          pendingSnapshot: pr.pendingSnapshot
        })
      }
    }
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      lead: this.lead,
      role: this.role,
      commit: this.log.committed,
      applied: this.log.applied,
      firstIndex: this.log.firstIndex(),
      lastIndex: this.log.lastIndex(),
      confState: this.confState(),
      pendingConfIndex: this.role === "leader" ? this.pendingConfIndex : 0,
      leadTransferee: this.leadTransferee,
      progress
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Configuration

  private setConf(cs: ConfState): void {
    this.voters = sortedIds(new Set(cs.voters))
    this.learners = sortedIds(new Set(cs.learners.filter((id) => !cs.voters.includes(id))))
    this.members = sortedIds([...this.voters, ...this.learners])
    const next = this.log.lastIndex() + 1
    for (const id of [...this.prs.keys()]) {
      if (!this.members.includes(id)) this.prs.delete(id)
    }
    for (const id of this.members) {
      const isLearner = this.learners.includes(id)
      const pr = this.prs.get(id)
      if (pr !== undefined) {
        pr.isLearner = isLearner
      } else {
        const fresh = new Progress(next, this.maxInflight, isLearner)
        // A new member counts as active so that CheckQuorum does not trip before it answers.
        fresh.recentActive = true
        if (id === this.id) fresh.match = this.selfMatch()
        this.prs.set(id, fresh)
      }
    }
  }

  /**
   * Apply the committed membership change at log `index` (called by `RawNode.advance` for each
   * applied `confChange` entry, in log order). Invalid changes, and changes the configuration
   * already reflects (at or below `confIndex`), are ignored. Returns the resulting configuration.
   */
  applyConfChange(cc: ConfChange, index: number): ConfState {
    if (index <= this.confIndex && !this.unsafeReapplyConf) return this.confState()
    this.confIndex = Math.max(this.confIndex, index)
    const current: ConfState = { voters: this.voters, learners: this.learners }
    const cs = applyChangeToConfState(current, cc)
    if (cs === current) return this.confState()
    this.setConf(cs)
    if (this.role === "leader") {
      if (!this.voters.includes(this.id)) {
        this.handOverAfterRemoval()
        return this.confState()
      }
      if (this.leadTransferee !== None && !this.voters.includes(this.leadTransferee)) this.abortLeaderTransfer()
      // The quorum may have shrunk: that may commit entries. New members need the log.
      if (this.maybeCommit()) this.releasePendingReadIndex()
      this.needBroadcast = true
    }
    return this.confState()
  }

  /**
   * Our own removal (or demotion) took effect while we lead. Stepping down at once could leave the
   * rest unable to elect anyone: they may not have learned that the removal committed (the commit
   * index rides on our next message, which may be lost), so they still count us as a voter, and our
   * log may hold entries theirs lacks, so we would refuse them our vote. (Seen with two voters: the
   * one left needed our vote and never got it; `shrink` seeds 144 and 263.) So the most caught-up
   * remaining voter is first brought up to our last entry, as in a transfer (no proposals
   * meanwhile), and told to campaign (TimeoutNow); then we step down. Its log is then at least as
   * up to date as ours: should it ignore the TimeoutNow (a membership change it knows committed but
   * has not applied) or never get it, the election it starts later gets our vote. If it cannot be
   * brought up to date within an election timeout, we step down regardless (`tickHeartbeat`); at
   * once if no voter remains.
   */
  private handOverAfterRemoval(): void {
    let successor = None
    let best = -1
    for (const id of this.voters) {
      const match = this.prs.get(id)?.match ?? -1
      if (match > best) {
        best = match
        successor = id
      }
    }
    if (successor === None) {
      this.becomeFollower(this.term, None)
      return
    }
    this.handleTransferLeader(successor)
    if (best === this.log.lastIndex()) this.becomeFollower(this.term, None) // told already (TimeoutNow)
  }

  // ---------------------------------------------------------------------------------------------
  // Role transitions

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeout = this.electionTimeout + this.random(this.electionTimeout)
  }

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term
      this.vote = None
    }
    this.lead = None
    this.electionElapsed = 0
    this.heartbeatElapsed = 0
    this.resetRandomizedElectionTimeout()
    this.abortLeaderTransfer()
    this.votes.clear()
    const last = this.log.lastIndex()
    for (const id of this.members) {
      const pr = new Progress(last + 1, this.maxInflight, this.learners.includes(id))
      if (id === this.id) pr.match = this.selfMatch()
      this.prs.set(id, pr)
    }
    this.pendingConfIndex = 0
    this.uncommittedSize = 0
    this.readOnly = new ReadOnly()
    this.pendingReadIndex = []
    this.needBroadcast = false
    this.commitOwed = false
  }

  /** What this node's own progress may claim: only entries known durable count toward commit. */
  private selfMatch(): number {
    return this.unsafeSelf ? this.log.lastIndex() : this.log.durableLastIndex()
  }

  private becomeFollower(term: number, lead: number): void {
    this.reset(term)
    this.lead = lead
    this.role = "follower"
  }

  private becomeCandidate(): void {
    if (this.role === "leader") throw new Error("raft: invalid transition leader -> candidate")
    this.reset(this.term + 1)
    this.vote = this.id
    this.role = "candidate"
  }

  private becomePreCandidate(): void {
    if (this.role === "leader") throw new Error("raft: invalid transition leader -> preCandidate")
    // Changes neither the term nor the vote: a PreVote round is harmless to the cluster.
    this.votes.clear()
    this.lead = None
    this.role = "preCandidate"
  }

  private becomeLeader(): void {
    if (this.role === "follower") throw new Error("raft: invalid transition follower -> leader")
    this.reset(this.term)
    this.lead = this.id
    this.role = "leader"
    const self = this.prs.get(this.id)!
    self.becomeReplicate()
    self.recentActive = true
    // §5.4.2 / §8: a new leader commits entries of earlier terms only through an entry of its own
    // term, so it appends an empty one at once. Until that entry is applied it also blocks conf
    // changes (the fix to the single-server membership algorithm). It carries the leader's id, so
    // every node that applies it can tell who led from there on (the "leader.changed" event).
    if (!this.unsafeCommit) this.appendEntries([{ kind: "empty", data: String(this.id) }])
    this.pendingConfIndex = this.log.lastIndex()
    this.needBroadcast = true
  }

  // ---------------------------------------------------------------------------------------------
  // Ticks and elections

  /** Advance the logical clock by one tick. */
  tick(): void {
    if (this.role === "leader") this.tickHeartbeat()
    else this.tickElection()
  }

  /**
   * In how many ticks `tick()` next does more than count (a heartbeat, a CheckQuorum round, an
   * aborted transfer, an election), if nothing is stepped meanwhile; Infinity if it never will. A
   * driver may sleep that long and then tick that many times at once: the same as ticking each time.
   */
  ticksUntilAction(): number {
    if (this.role === "leader") {
      if (this.commitOwed) return 1
      let next = Math.min(this.heartbeatTimeout - this.heartbeatElapsed, this.electionTimeout - this.electionElapsed)
      if (this.leadTransferee !== None) next = Math.min(next, this.electionTimeout - this.transferElapsed)
      return Math.max(1, next)
    }
    return this.promotable() ? Math.max(1, this.randomizedElectionTimeout - this.electionElapsed) : Number.POSITIVE_INFINITY
  }

  private tickElection(): void {
    this.electionElapsed++
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0
      this.hup("election")
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++
    this.electionElapsed++
    if (this.electionElapsed >= this.electionTimeout) {
      this.electionElapsed = 0
      if (this.checkQuorum) this.checkQuorumRound()
    }
    if (this.role !== "leader") return
    // A transfer that has not completed within an election timeout is aborted (as in etcd): the
    // transferee is likely down, and the leader takes proposals again.
    if (this.leadTransferee !== None && ++this.transferElapsed >= this.electionTimeout) this.abortLeaderTransfer()
    // A leader no longer a voter leads only to hand over (`handOverAfterRemoval`): done, or given up.
    if (this.leadTransferee === None && !this.voters.includes(this.id)) {
      this.becomeFollower(this.term, None)
      return
    }
    if (this.heartbeatElapsed >= this.heartbeatTimeout) {
      this.heartbeatElapsed = 0
      // Re-send the latest pending ReadIndex context, in case its heartbeat round was lost.
      this.bcastHeartbeat(this.readOnly.lastPendingContext())
    }
    if (this.commitOwed) this.sendOwedCommits()
  }

  /**
   * The commit index advanced from `before`. Lazily (`lazyCommit`) unless that committed a
   * membership change or this leader's first entry (`pendingConfIndex`): those go out at once, so
   * the followers' configuration (what a node back without its data is told about itself,
   * `Daemon.refuseAmnesia`) and their knowledge of the new leader's commit index lag no more than
   * etcd-raft's.
   */
  private commitAdvanced(before: number): void {
    const confCommitted = before < this.pendingConfIndex && this.pendingConfIndex <= this.log.committed
    if (this.lazyCommit && !confCommitted) this.commitOwed = true
    else this.needBroadcast = true
  }

  /**
   * The commit index to every follower it could tell something (`Progress.canBumpCommit`) and that
   * got no AppendEntries or heartbeat carrying it since it advanced. etcd-raft broadcasts an
   * AppendEntries the moment the commit index advances; here the commit waits for the next message
   * to each follower, a tick at most: under load the next append carries it, and a one-client write
   * costs two peer messages and their answers fewer (bench/RESULTS.md). A follower applies up to a
   * tick later; nothing the leader answers waits on that (a follower's ReadIndex learns the commit
   * index from its heartbeat round).
   */
  private sendOwedCommits(): void {
    this.commitOwed = false
    const commit = this.log.committed
    for (const id of this.members) {
      if (id === this.id) continue
      const pr = this.prs.get(id)!
      if (!pr.isPaused() && pr.canBumpCommit(commit)) this.sendAppend(id)
    }
  }

  /** CheckQuorum: step down unless a majority of voters was heard from since the last round. */
  private checkQuorumRound(): void {
    const active = new Map<number, boolean>()
    for (const id of this.voters) {
      const pr = this.prs.get(id)
      if (pr !== undefined && (id === this.id || pr.recentActive)) active.set(id, true)
    }
    if (voteResult(this.voters, active) !== "won") this.becomeFollower(this.term, None)
    for (const [id, pr] of this.prs) if (id !== this.id) pr.recentActive = false
  }

  /** Start an election now (etcd's `Campaign`): a PreVote round first if enabled. */
  campaign(): void {
    this.hup("election")
  }

  private hup(kind: "election" | "transfer"): void {
    if (this.role === "leader") return
    if (!this.promotable()) return
    // Do not campaign with committed-but-unapplied conf changes: our configuration may be stale.
    if (this.hasUnappliedConfChanges()) return
    if (kind === "transfer") this.runCampaign("transfer")
    else this.runCampaign(this.preVote ? "preElection" : "election")
  }

  private hasUnappliedConfChanges(): boolean {
    if (this.log.committed <= this.log.applied) return false
    const ents = this.log.slice(this.log.applied + 1, this.log.committed + 1, Number.MAX_SAFE_INTEGER) ?? []
    return ents.some((e) => e.kind === "confChange")
  }

  private runCampaign(t: CampaignType): void {
    let term: number
    let type: "vote" | "preVote"
    if (t === "preElection") {
      this.becomePreCandidate()
      type = "preVote"
      term = this.term + 1
    } else {
      this.becomeCandidate()
      type = "vote"
      term = this.term
    }
    if (this.poll(this.id, true) === "won") {
      // A sole voter wins by its own vote. A PreVote changes nothing durable, so it goes on at once;
      // an election is won only once the new term and vote are durable (stepped in
      // `RawNode.advance`): a leader whose term is not on disk could, after a crash, lead that term
      // again with other entries, which its learners would take for the ones they already have.
      if (t === "preElection") this.runCampaign("election")
      else if (this.unsafeSelf) this.becomeLeader()
      else this.msgsAfterAppend.push({ type: "voteResp", term, from: this.id, to: this.id, reject: false })
      return
    }
    const index = this.log.lastIndex()
    const logTerm = this.log.lastTerm()
    for (const id of this.voters) {
      if (id === this.id) continue
      this.msgs.push({ type, term, from: this.id, to: id, index, logTerm, transfer: t === "transfer" })
    }
  }

  private poll(id: number, granted: boolean): VoteResult {
    if (!this.votes.has(id)) this.votes.set(id, granted)
    return voteResult(this.voters, this.votes)
  }

  // ---------------------------------------------------------------------------------------------
  // Messages

  /** Handle a message from a peer. Messages for another node are ignored. */
  step(m: Message): void {
    if (m.to !== this.id) return
    if (m.term === 0) {
      // Forwarded requests (readIndex, transferLeader) are handled like local ones; any other
      // message must carry a term.
      if (m.type !== "readIndex" && m.type !== "transferLeader") return
    } else if (m.term > this.term) {
      if (m.type === "vote" || m.type === "preVote") {
        // Leader lease (CheckQuorum, thesis §4.2.3): a node that heard from a live leader within the
        // election timeout ignores vote requests, unless a leadership transfer asked for them.
        const inLease = this.checkQuorum && this.lead !== None && this.electionElapsed < this.electionTimeout
        if (!m.transfer && inLease) return
      }
      if (m.type === "preVote") {
        // Never change term on a PreVote request.
      } else if (m.type === "preVoteResp" && !m.reject) {
        // The term is only bumped once the PreVote round is won.
      } else if (m.type === "app" || m.type === "heartbeat" || m.type === "snap") {
        this.becomeFollower(m.term, m.from)
      } else {
        this.becomeFollower(m.term, None)
      }
    } else if (m.term < this.term) {
      if ((this.checkQuorum || this.preVote) && (m.type === "heartbeat" || m.type === "app")) {
        // A stale leader (e.g. after a partition) learns our term from this and steps down. Without
        // it, with PreVote/CheckQuorum, a node with a higher term could never be heard again.
        this.msgs.push(this.appResp(m.from, 0, false, 0, 0))
      } else if (m.type === "preVote") {
        this.msgs.push({ type: "preVoteResp", term: this.term, from: this.id, to: m.from, reject: true })
      }
      return
    }

    if (m.type === "vote" || m.type === "preVote") {
      const canVote =
        this.vote === m.from ||
        (this.vote === None && this.lead === None) ||
        (m.type === "preVote" && m.term > this.term)
      const respType = m.type === "vote" ? "voteResp" : "preVoteResp"
      if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
        // Answer with the term of the request so a pre-candidate can count it.
        this.msgs.push({ type: respType, term: m.term, from: this.id, to: m.from, reject: false })
        if (m.type === "vote") {
          this.electionElapsed = 0
          this.vote = m.from
        }
      } else {
        this.msgs.push({ type: respType, term: this.term, from: this.id, to: m.from, reject: true })
      }
      return
    }

    switch (this.role) {
      case "leader":
        return this.stepLeader(m)
      case "candidate":
      case "preCandidate":
        return this.stepCandidate(m)
      case "follower":
        return this.stepFollower(m)
    }
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case "readIndex":
        return this.handleReadIndexRequest(m.context, m.from)
      case "transferLeader":
        this.handleTransferLeader(m.transferee)
        return
      case "appResp":
        return this.handleAppendResponse(m)
      case "heartbeatResp":
        return this.handleHeartbeatResponse(m)
      case "snapAck":
        return this.handleSnapAck(m)
      default:
        return
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case "app":
        this.becomeFollower(m.term, m.from)
        return this.handleAppendEntries(m)
      case "heartbeat":
        this.becomeFollower(m.term, m.from)
        return this.handleHeartbeat(m)
      case "snap":
        this.becomeFollower(m.term, m.from)
        return this.handleSnapChunk(m)
      case "voteResp":
      case "preVoteResp": {
        if ((m.type === "voteResp") !== (this.role === "candidate")) return
        const res = this.poll(m.from, !m.reject)
        if (res === "won") {
          if (this.role === "preCandidate") this.runCampaign("election")
          else this.becomeLeader()
        } else if (res === "lost") {
          this.becomeFollower(this.term, None)
        }
        return
      }
      default:
        return
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case "app":
        this.electionElapsed = 0
        this.lead = m.from
        return this.handleAppendEntries(m)
      case "heartbeat":
        this.electionElapsed = 0
        this.lead = m.from
        return this.handleHeartbeat(m)
      case "snap":
        this.electionElapsed = 0
        this.lead = m.from
        return this.handleSnapChunk(m)
      case "timeoutNow":
        // Leadership transfer: campaign at once, skipping PreVote, with the lease override.
        return this.hup("transfer")
      case "transferLeader":
        if (this.lead !== None) this.msgs.push({ ...m, to: this.lead, from: this.id })
        return
      case "readIndex":
        if (this.lead !== None) this.msgs.push({ ...m, to: this.lead })
        return
      case "readIndexResp":
        this.readStates.push({ index: m.index, context: m.context })
        return
      default:
        return
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Follower side of replication

  private appResp(to: number, index: number, reject: boolean, rejectHint: number, logTerm: number): MsgAppResp {
    return { type: "appResp", term: this.term, from: this.id, to, index, reject, rejectHint, logTerm }
  }

  private handleAppendEntries(m: MsgApp): void {
    if (m.index < this.log.committed) {
      this.msgs.push(this.appResp(m.from, this.log.committed, false, 0, 0))
      return
    }
    const last = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries)
    if (last !== undefined) {
      this.msgs.push(this.appResp(m.from, last, false, 0, 0))
      return
    }
    // Reject, with a hint for fast back-off: the largest index ≤ m.index whose term is ≤ m.logTerm.
    const hintIndex = Math.min(m.index, this.log.lastIndex())
    const [hint, hintTerm] = this.log.findConflictByTerm(hintIndex, m.logTerm)
    this.msgs.push(this.appResp(m.from, m.index, true, hint, hintTerm))
  }

  private handleHeartbeat(m: MsgHeartbeat): void {
    // A leader sends at most what this node's log acknowledged (its match). More means this log lost
    // entries it acknowledged: the data directory was replaced while the leader's progress was built
    // for the earlier one (which `reportRestarted` now prevents, with a leader that learns
    // incarnations). Committing up to our last index instead could commit entries that are not the
    // leader's; ignoring it would leave the leader's progress wrong for good. So, as etcd does, stop.
    if (m.commit > this.log.lastIndex()) {
      throw new Error(
        `raft: commit ${m.commit} from leader ${m.from} (term ${m.term}) is beyond the last index ${this.log.lastIndex()} of node ${this.id}: ` +
          `this node lost entries it had acknowledged (its data directory was emptied or replaced); remove node ${this.id} from the cluster and add it back as a new member`
      )
    }
    this.log.commitTo(m.commit)
    const resp: MsgHeartbeatResp =
      m.context === undefined
        ? { type: "heartbeatResp", term: this.term, from: this.id, to: m.from }
        : { type: "heartbeatResp", term: this.term, from: this.id, to: m.from, context: m.context }
    this.msgs.push(resp)
  }

  /**
   * Reassemble a chunked snapshot; install it once complete. Chunks may arrive in any order (the
   * network reorders); duplicates are ignored. A lost chunk leaves the assembly incomplete, and the
   * leader, hearing no progress, sends the snapshot again (see `stalledRetryAfter`).
   */
  private handleSnapChunk(m: MsgSnap): void {
    let asm = this.snapAssembly
    const same =
      asm !== undefined && asm.term === m.term && asm.snap.index === m.metadata.index && asm.snap.term === m.metadata.term
    if (!same) {
      asm = { term: m.term, snap: m.metadata, totalSize: m.totalSize, parts: new Map(), received: 0, contiguous: 0 }
      this.snapAssembly = asm
    }
    const a = asm!
    if (m.totalSize !== a.totalSize || m.offset + m.data.length > a.totalSize) {
      this.rejectSnapshot(m) // chunks that do not fit the announced size: malformed
      return
    }
    if (!a.parts.has(m.offset)) {
      a.parts.set(m.offset, m.data)
      a.received += m.data.length
      for (let next = a.parts.get(a.contiguous); next !== undefined && next.length > 0; next = a.parts.get(a.contiguous)) {
        a.contiguous += next.length
      }
    }
    if (a.received < a.totalSize) {
      // Every chunk is acknowledged, a duplicate too: a leader that starts the transmission over
      // (it thought it lost) learns at once where to resume.
      this.msgs.push({ type: "snapAck", term: this.term, from: this.id, to: m.from, index: m.metadata.index, received: a.contiguous })
      return
    }
    const pieces: Array<string> = []
    let expected = 0
    for (const offset of [...a.parts.keys()].sort((x, y) => x - y)) {
      if (offset !== expected) {
        this.rejectSnapshot(m) // overlapping chunks: malformed
        return
      }
      const piece = a.parts.get(offset)!
      pieces.push(piece)
      expected += piece.length
    }
    this.snapAssembly = undefined
    const snap: Snapshot = { metadata: a.snap, data: pieces.length === 1 ? pieces[0]! : pieces.join("") }
    if (this.restore(snap)) {
      this.msgs.push(this.appResp(m.from, this.log.lastIndex(), false, 0, 0))
    } else {
      this.msgs.push(this.appResp(m.from, this.log.committed, false, 0, 0))
    }
  }

  /** Discard a malformed snapshot transmission and tell the leader, which starts over. */
  private rejectSnapshot(m: MsgSnap): void {
    this.snapAssembly = undefined
    this.msgs.push(this.appResp(m.from, m.metadata.index, true, this.log.lastIndex(), 0))
  }

  /** Install a snapshot from the leader. Returns false if it is not newer than what we have. */
  private restore(s: Snapshot): boolean {
    if (s.metadata.index <= this.log.committed) return false
    if (this.role !== "follower") {
      // Only a follower receives snapshots; be defensive rather than corrupt state.
      this.becomeFollower(this.term + 1, None)
      return false
    }
    if (this.log.matchTerm(s.metadata.index, s.metadata.term)) {
      // We already have the entry: just fast-forward the commit index.
      this.log.commitTo(s.metadata.index)
      return false
    }
    this.log.restore(s)
    this.setConf(s.metadata.confState)
    this.confIndex = s.metadata.index
    // Progress for the new configuration, as a follower never uses it beyond membership.
    const last = this.log.lastIndex()
    for (const [id, pr] of this.prs) {
      pr.match = id === this.id ? last : 0
      pr.next = last + 1
    }
    return true
  }

  // ---------------------------------------------------------------------------------------------
  // Leader side of replication

  /** Append entries to the leader's log; false (nothing appended) if the uncommitted cap refuses. */
  private appendEntries(ents: ReadonlyArray<{ readonly kind: EntryKind; readonly data: string }>): boolean {
    let size = 0
    for (const e of ents) size += e.data.length
    if (this.maxUncommittedSize > 0 && this.uncommittedSize > 0 && size > 0) {
      if (this.uncommittedSize + size > this.maxUncommittedSize) return false
    }
    this.uncommittedSize += size
    const li = this.log.lastIndex()
    const out: Array<Entry> = new Array(ents.length)
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i]!
      out[i] = { index: li + 1 + i, term: this.term, kind: e.kind, data: e.data }
    }
    this.log.append(out)
    if (this.unsafeSelf) {
      this.prs.get(this.id)?.maybeUpdate(this.log.lastIndex())
      this.maybeCommit()
    } else {
      // The leader counts its own copy toward commit once it is durable (etcd's self-MsgAppResp,
      // stepped in `RawNode.advance`), so a commit index — in its own log or in any message — never
      // exceeds what a quorum, this leader included, has on disk. With one voter that is the
      // leader's disk alone.
      this.msgsAfterAppend.push(this.appResp(this.id, this.log.lastIndex(), false, 0, 0))
    }
    return true
  }

  /** Committed entries were handed to the application: they no longer count as uncommitted. */
  reduceUncommittedSize(ents: ReadonlyArray<Entry>): void {
    if (this.uncommittedSize === 0) return
    let size = 0
    for (const e of ents) size += payloadSize(e)
    this.uncommittedSize = size > this.uncommittedSize ? 0 : this.uncommittedSize - size
  }

  /**
   * Advance the commit index to the largest index replicated on a majority of voters — only if
   * that entry is from the current term (§5.4.2; Figure 8). Entries of earlier terms are then
   * committed indirectly (Log Matching).
   */
  private maybeCommit(): boolean {
    const mci = committedIndex(this.voters, (id) => this.prs.get(id)?.match ?? 0)
    if (this.unsafeCommit) {
      // The Figure 8 bug, on purpose (see RaftConfig.unsafeCommitPreviousTermByCounting).
      if (mci > this.log.committed) {
        this.log.commitTo(mci)
        return true
      }
      return false
    }
    return this.log.maybeCommit(mci, this.term)
  }

  /** Send pending appends to every follower (batched: one flush per Ready). */
  flush(): void {
    if (!this.needBroadcast) return
    this.needBroadcast = false
    if (this.role !== "leader") return
    for (const id of this.members) {
      if (id === this.id) continue
      if (this.maybeSendAppend(id, true)) {
        while (this.maybeSendAppend(id, false)) {
          // fill the in-flight window (pipelining)
        }
      }
    }
  }

  private sendAppend(to: number): void {
    this.maybeSendAppend(to, true)
  }

  /**
   * Send the next AppendEntries to `to` if its progress allows; a snapshot if the entries it needs
   * are compacted. With `sendIfEmpty` false, nothing is sent when there are no new entries.
   */
  private maybeSendAppend(to: number, sendIfEmpty: boolean): boolean {
    const pr = this.prs.get(to)
    if (pr === undefined || pr.isPaused()) return false
    const prevIndex = pr.next - 1
    const prevTerm = this.log.term(prevIndex)
    let ents: ReadonlyArray<Entry> | undefined = undefined
    if (prevTerm !== undefined) {
      ents = this.log.entries(pr.next, this.maxSizePerMsg)
      if (ents !== undefined && ents.length === 0 && !sendIfEmpty) return false
    }
    if (prevTerm === undefined || ents === undefined) return this.sendSnapshot(to, pr)
    this.msgs.push({
      type: "app",
      term: this.term,
      from: this.id,
      to,
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.log.committed
    })
    pr.sentEntries(ents.length, ents.length > 0 ? ents[ents.length - 1]!.index : prevIndex)
    pr.sentCommitOf(this.log.committed)
    return true
  }

  /** Start sending the latest snapshot to `to`, in chunks of at most maxSizePerMsg characters. */
  private sendSnapshot(to: number, pr: Progress): boolean {
    if (!pr.recentActive) return false
    const snap = this.log.snapshot()
    if (snap.metadata.index === 0) throw new Error("raft: entries are compacted but there is no snapshot")
    pr.becomeSnapshot(snap.metadata.index)
    this.sendSnapshotChunks(to, pr, snap)
    return true
  }

  /**
   * Flow control for snapshots: send the next chunks while fewer than `maxSnapshotChunksInflight`
   * are unacknowledged; each `snapAck` opens the window again. The same pacing etcd-raft gives
   * appends with its inflights window. Emitting every chunk at once instead (as this core once did)
   * handed the transport a snapshot larger than its bounded, drop-oldest send queue all at once: the
   * oldest chunks were dropped, and every retry dropped them again, so a snapshot beyond the queue
   * (64 MiB, ~150,000 VMs) never arrived. Paced here, the snapshot is held once (by the core's
   * storage, or, when that keeps only the metadata, by the driver while it sends: the chunks leave
   * the core empty and the driver fills them in, `SnapshotSending.ts`) and the transport's queue
   * never holds more than the window; a slow follower slows the snapshot down
   * instead of losing it, and heartbeats and appends to others keep flowing beside it.
   * etcd itself streams a snapshot whole over a dedicated connection outside its message pipeline;
   * pacing chunks in the core keeps one transport, one retry rule (the stall rule in
   * `handleHeartbeatResponse`) and lets the simulator drive the very same code.
   */
  private sendSnapshotChunks(to: number, pr: Progress, snap: StoredSnapshot): void {
    const total = snap.size
    const size = this.maxSizePerMsg
    const window = this.maxSnapshotChunksInflight * size
    do {
      const offset = pr.snapshotSent
      // A storage that keeps only the metadata (a driver's mirror): the driver fills the chunk in.
      const data = snap.data === undefined ? "" : snapshotChunk(snap.data, offset, size)
      this.msgs.push({ type: "snap", term: this.term, from: this.id, to, metadata: snap.metadata, offset, totalSize: total, data })
      pr.snapshotSent = offset + size
    } while (pr.snapshotSent < total && pr.snapshotSent - pr.snapshotAcked < window)
  }

  /** The follower holds the first `received` characters of the snapshot being sent: send more. */
  private handleSnapAck(m: MsgSnapAck): void {
    const pr = this.prs.get(m.from)
    if (pr === undefined) return
    pr.recentActive = true
    if (pr.state !== "snapshot" || m.index !== pr.pendingSnapshot || m.received <= pr.snapshotAcked) return
    pr.snapshotAcked = m.received
    pr.stalledHeartbeats = 0
    const snap = this.log.snapshot()
    if (snap.metadata.index !== pr.pendingSnapshot) {
      // The leader compacted meanwhile: the follower needs the newer snapshot (or entries) instead.
      pr.becomeProbe()
      this.sendAppend(m.from)
      return
    }
    // After a restarted transmission the follower may hold more than was sent: resume from there.
    if (pr.snapshotSent < m.received) pr.snapshotSent = m.received
    if (pr.snapshotSent < snap.size) this.sendSnapshotChunks(m.from, pr, snap)
  }

  private bcastHeartbeat(context: string | undefined): void {
    for (const id of this.members) {
      if (id === this.id) continue
      const pr = this.prs.get(id)!
      const commit = Math.min(pr.match, this.log.committed)
      pr.sentCommitOf(commit)
      const m: MsgHeartbeat =
        context === undefined
          ? { type: "heartbeat", term: this.term, from: this.id, to: id, commit }
          : { type: "heartbeat", term: this.term, from: this.id, to: id, commit, context }
      this.msgs.push(m)
    }
  }

  private stalledRetryAfter(): number {
    return Math.max(1, Math.ceil(this.electionTimeout / this.heartbeatTimeout))
  }

  private handleAppendResponse(m: MsgAppResp): void {
    const pr = this.prs.get(m.from)
    if (pr === undefined) return
    if (m.from === this.id) {
      // Our own appends are durable up to m.index (see appendEntries).
      const before = this.log.committed
      if (pr.maybeUpdate(m.index) && this.maybeCommit()) {
        this.releasePendingReadIndex()
        this.commitAdvanced(before)
      }
      return
    }
    pr.recentActive = true
    if (m.reject) {
      if (pr.state === "snapshot") {
        if (m.index === pr.pendingSnapshot) {
          // The follower lost a chunk: start over from a probe (which re-sends the snapshot).
          pr.pendingSnapshot = 0
          pr.becomeProbe()
          this.sendAppend(m.from)
        }
        return
      }
      // Fast back-off: skip every entry of terms the follower cannot have at the probed index.
      let nextProbe = m.rejectHint
      if (m.logTerm > 0) nextProbe = this.log.findConflictByTerm(m.rejectHint, m.logTerm)[0]
      if (pr.maybeDecrTo(m.index, nextProbe)) {
        if (pr.state === "replicate") pr.becomeProbe()
        this.sendAppend(m.from)
      }
      return
    }
    const oldPaused = pr.isPaused()
    if (pr.maybeUpdate(m.index) || (pr.match === m.index && pr.state === "probe")) {
      if (pr.state === "probe") {
        pr.becomeReplicate()
      } else if (pr.state === "snapshot" && pr.match + 1 >= this.log.firstIndex()) {
        pr.becomeProbe()
        pr.becomeReplicate()
      } else if (pr.state === "snapshot" && pr.match >= pr.pendingSnapshot) {
        // The follower installed the snapshot it was sent, but this leader compacted past it
        // meanwhile: send the newer one now (the probe below finds the entries compacted). etcd-raft
        // gets here through the transport's MsgSnapStatus; waiting for the stall rule instead cost
        // an election timeout per snapshot, and a follower behind a log compacted at every entry
        // never caught up (simulator profile `snapreconfig`).
        pr.becomeProbe()
      } else if (pr.state === "replicate") {
        pr.inflights.freeLE(m.index)
      }
      const before = this.log.committed
      if (this.maybeCommit()) {
        this.releasePendingReadIndex()
        this.commitAdvanced(before)
      } else if (oldPaused && !this.needBroadcast) {
        // It was paused, so it may lack the latest commit index (a pending broadcast covers it).
        this.sendAppend(m.from)
      }
      while (this.maybeSendAppend(m.from, false)) {
        // keep the pipeline full
      }
      if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
        this.sendTimeoutNow(m.from)
        if (!this.voters.includes(this.id)) this.becomeFollower(this.term, None) // handed over (`handOverAfterRemoval`)
      }
    }
  }

  private handleHeartbeatResponse(m: MsgHeartbeatResp): void {
    const pr = this.prs.get(m.from)
    if (pr === undefined) return
    pr.recentActive = true
    pr.probeSent = false
    if (pr.state === "snapshot" || (pr.state === "replicate" && pr.inflights.full())) {
      // Stalled: after an election timeout of heartbeats without progress, assume the snapshot or
      // the in-flight appends were lost, and probe again.
      pr.stalledHeartbeats++
      if (pr.stalledHeartbeats >= this.stalledRetryAfter()) {
        pr.pendingSnapshot = 0
        pr.becomeProbe()
      }
    }
    if (pr.match < this.log.lastIndex() || pr.state === "probe") this.sendAppend(m.from)

    if (m.context === undefined) return
    const acks = this.readOnly.recvAck(m.from, m.context)
    if (acks === undefined || voteResult(this.voters, acks) !== "won") return
    for (const rs of this.readOnly.advance(m.context)) this.respondReadIndex(rs.from, rs.index, rs.context)
  }

  // ---------------------------------------------------------------------------------------------
  // Proposals

  private refuseProposal(): ProposeResult | undefined {
    if (this.role !== "leader") return { ok: false, reason: "notLeader", leader: this.lead }
    if (!this.voters.includes(this.id)) return { ok: false, reason: "notLeader", leader: None }
    if (this.leadTransferee !== None) return { ok: false, reason: "transferInProgress", transferee: this.leadTransferee }
    return undefined
  }

  /** Propose one state-machine command. Never throws; see `ProposeResult`. */
  propose(data: string): ProposeResult {
    return this.proposeBatch([data])
  }

  /** Propose several commands as consecutive entries, all or none. `index` is the last one's. */
  proposeBatch(data: ReadonlyArray<string>): ProposeResult {
    const refused = this.refuseProposal()
    if (refused !== undefined) return refused
    if (data.length === 0) return { ok: true, index: this.log.lastIndex(), term: this.term }
    if (!this.appendEntries(data.map((d) => ({ kind: "normal" as const, data: d })))) {
      return { ok: false, reason: "uncommittedSizeExceeded" }
    }
    this.needBroadcast = true
    return { ok: true, index: this.log.lastIndex(), term: this.term }
  }

  /** Propose a single-server membership change (see the module comment for the rules). */
  proposeConfChange(cc: ConfChange): ProposeResult {
    const refused = this.refuseProposal()
    if (refused !== undefined) return refused
    if (this.pendingConfIndex > this.log.applied) {
      return { ok: false, reason: "confChangePending", pendingIndex: this.pendingConfIndex }
    }
    const isVoter = this.voters.includes(cc.nodeId)
    const isLearner = this.learners.includes(cc.nodeId)
    switch (cc.type) {
      case "addLearner":
        if (isVoter || isLearner) {
          return { ok: false, reason: "invalidConfChange", detail: `node ${cc.nodeId} is already a member` }
        }
        break
      case "promote":
        if (!isLearner) return { ok: false, reason: "invalidConfChange", detail: `node ${cc.nodeId} is not a learner` }
        break
      case "remove":
        if (!isVoter && !isLearner) {
          return { ok: false, reason: "invalidConfChange", detail: `node ${cc.nodeId} is not a member` }
        }
        if (isVoter && this.voters.length === 1) {
          return { ok: false, reason: "invalidConfChange", detail: "cannot remove the last voter" }
        }
        break
    }
    if (!this.appendEntries([{ kind: "confChange", data: encodeConfChange(cc) }])) {
      return { ok: false, reason: "uncommittedSizeExceeded" }
    }
    this.pendingConfIndex = this.log.lastIndex()
    this.needBroadcast = true
    return { ok: true, index: this.log.lastIndex(), term: this.term }
  }

  // ---------------------------------------------------------------------------------------------
  // ReadIndex

  /**
   * Request a linearizable read point (thesis §6.4). The answer arrives later as a `ReadState`
   * with the same `context` (which must be unique per request). A follower forwards to the leader.
   */
  readIndex(context: string): RequestResult {
    if (this.role === "leader") {
      this.handleReadIndexRequest(context, this.id)
      return { ok: true }
    }
    if (this.lead === None) return { ok: false, reason: "noLeader" }
    this.msgs.push({ type: "readIndex", term: 0, from: this.id, to: this.lead, context })
    return { ok: true }
  }

  private handleReadIndexRequest(context: string, from: number): void {
    if (this.voters.length === 1 && this.voters[0] === this.id) {
      this.respondReadIndex(from, this.log.committed, context)
      return
    }
    // The leader's commit index is only known to be current once it committed an entry of its term.
    if (this.log.term(this.log.committed) !== this.term) {
      this.pendingReadIndex.push({ context, from })
      return
    }
    this.startReadIndex(context, from)
  }

  private startReadIndex(context: string, from: number): void {
    if (this.unsafeLeaseReads) {
      // The removed lease mode, on purpose (see RaftConfig.unsafeLeaseBasedReads).
      this.respondReadIndex(from, this.log.committed, context)
      return
    }
    this.readOnly.addRequest(this.log.committed, context, from, this.unsafeMatchRepeated)
    if (!this.readOnly.isPending(context)) return
    this.readOnly.recvAck(this.id, context)
    this.bcastHeartbeat(context)
  }

  private releasePendingReadIndex(): void {
    if (this.pendingReadIndex.length === 0 || this.log.term(this.log.committed) !== this.term) return
    const pending = this.pendingReadIndex
    this.pendingReadIndex = []
    for (const r of pending) this.startReadIndex(r.context, r.from)
  }

  private respondReadIndex(from: number, index: number, context: string): void {
    if (from === None || from === this.id) this.readStates.push({ index, context })
    else this.msgs.push({ type: "readIndexResp", term: this.term, from: this.id, to: from, index, context })
  }

  // ---------------------------------------------------------------------------------------------
  // Leadership transfer

  /**
   * Ask leadership to move to voter `to` (thesis §3.10). The leader stops accepting proposals,
   * brings `to` up to date, then sends it TimeoutNow; the transfer aborts after an election timeout.
   * A follower forwards the request to its leader.
   */
  transferLeader(to: number): RequestResult {
    if (this.role !== "leader") {
      if (this.lead === None) return { ok: false, reason: "noLeader" }
      this.msgs.push({ type: "transferLeader", term: 0, from: this.id, to: this.lead, transferee: to })
      return { ok: true }
    }
    return this.handleTransferLeader(to)
  }

  private handleTransferLeader(transferee: number): RequestResult {
    const pr = this.prs.get(transferee)
    if (pr === undefined || pr.isLearner) return { ok: false, reason: "notVoter" }
    if (this.leadTransferee !== None) {
      if (this.leadTransferee === transferee) return { ok: true }
      this.abortLeaderTransfer()
    }
    if (transferee === this.id) return { ok: true }
    // The transfer must finish within an election timeout (checked in tickHeartbeat).
    this.transferElapsed = 0
    // The old bug, on purpose (see RaftConfig.unsafeTransferPostponesCheckQuorum).
    if (this.unsafeTransferTimer) this.electionElapsed = 0
    this.leadTransferee = transferee
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(transferee)
    else this.sendAppend(transferee)
    return { ok: true }
  }

  private sendTimeoutNow(to: number): void {
    this.msgs.push({ type: "timeoutNow", term: this.term, from: this.id, to })
  }

  private abortLeaderTransfer(): void {
    this.leadTransferee = None
    this.transferElapsed = 0
  }

  // ---------------------------------------------------------------------------------------------
  // Reports from the driver

  /** The transport could not reach `id`: stop optimistic pipelining to it and probe instead. */
  reportUnreachable(id: number): void {
    if (this.role !== "leader") return
    const pr = this.prs.get(id)
    if (pr !== undefined && pr.state === "replicate") pr.becomeProbe()
  }

  /**
   * `id` is back as another incarnation (`Transport.PeerRestarted`: its data directory was replaced,
   * say emptied): nothing it acknowledged or granted before can be counted on, and its log may be
   * empty. Messages to it not yet handed out were built for its earlier life: they are dropped. A
   * leader starts its progress over — match 0, probing back from its own last index as for a new
   * follower — so no heartbeat carries a commit index the new log lacks (the follower would stop on
   * it, see `handleHeartbeat`) and no append assumes the entries the earlier life held; a transfer to
   * it is aborted. A candidate forgets its vote (an emptied voter remembers none and may grant
   * another; that hazard is why such a voter is refused at start-up, `Daemon.refuseAmnesia`).
   */
  reportRestarted(id: number): void {
    if (id === this.id) return
    if (this.msgs.some((m) => m.to === id)) this.msgs = this.msgs.filter((m) => m.to !== id)
    if (this.role === "candidate" || this.role === "preCandidate") this.votes.delete(id)
    if (this.role !== "leader") return
    const before = this.prs.get(id)
    if (before === undefined) return
    if (this.leadTransferee === id) this.abortLeaderTransfer()
    const pr = new Progress(this.log.lastIndex() + 1, this.maxInflight, before.isLearner)
    // It answered recently or not, whatever its log: CheckQuorum counts contact, not entries.
    pr.recentActive = before.recentActive
    this.prs.set(id, pr)
    this.sendAppend(id)
  }

  /** The transport finished (ok) or failed sending a snapshot to `id`. */
  reportSnapshot(id: number, ok: boolean): void {
    if (this.role !== "leader") return
    const pr = this.prs.get(id)
    if (pr === undefined || pr.state !== "snapshot") return
    if (!ok) pr.pendingSnapshot = 0
    pr.becomeProbe()
    // Wait for the next heartbeat answer before probing (as etcd does).
    pr.probeSent = true
  }
}
