/**
 * The leader's view of each follower's log (etcd's `tracker`): how far it matches, what to send
 * next, and how many AppendEntries are in flight.
 *
 * A follower is in one of three states:
 * - `probe`: we do not know where its log matches; send one AppendEntries per heartbeat interval
 *   (or per answer) and walk `next` back on rejection.
 * - `replicate`: it is known to match up to `match`; stream entries optimistically (pipelining),
 *   advancing `next` as soon as a message is sent, bounded by the in-flight window.
 * - `snapshot`: it needs a snapshot; nothing else is sent until the snapshot succeeds or fails.
 */

/**
 * A bounded ring of the last indexes of in-flight AppendEntries, oldest first. When full, the
 * leader sends no more entries to that follower until an acknowledgement frees slots.
 */
export class Inflights {
  private readonly buffer: Array<number>
  private start = 0
  private _count = 0

  constructor(readonly capacity: number) {
    this.buffer = new Array<number>(capacity).fill(0)
  }

  get count(): number {
    return this._count
  }

  full(): boolean {
    return this._count >= this.capacity
  }

  /** Record a message whose last entry has index `index` (indexes must be added in increasing order). */
  add(index: number): void {
    if (this.full()) throw new Error("raft: cannot add to a full inflights window")
    this.buffer[(this.start + this._count) % this.capacity] = index
    this._count++
  }

  /** Free every in-flight message whose last index is ≤ `to` (they have been acknowledged). */
  freeLE(to: number): void {
    while (this._count > 0 && this.buffer[this.start]! <= to) {
      this.start = (this.start + 1) % this.capacity
      this._count--
    }
    if (this._count === 0) this.start = 0
  }

  reset(): void {
    this.start = 0
    this._count = 0
  }
}

export type ProgressState = "probe" | "replicate" | "snapshot"

export class Progress {
  /** Highest index known to be replicated on the follower. */
  match = 0
  /** Index of the next entry to send. */
  next: number
  state: ProgressState = "probe"
  /** In `snapshot` state: the index of the snapshot being sent. */
  pendingSnapshot = 0
  /**
   * In `snapshot` state: the offset of the next chunk to send, and how much of the snapshot the
   * follower acknowledged holding (`snapAck`). The leader keeps at most a window of chunks between
   * the two.
   */
  snapshotSent = 0
  snapshotAcked = 0
  /**
   * Heartbeat answers seen while stalled (in `snapshot` state, or with a full in-flight window):
   * after an election timeout's worth the leader assumes the messages were lost and probes again.
   */
  stalledHeartbeats = 0
  /** True if the follower answered since the last CheckQuorum round. */
  recentActive = false
  /** In `probe` state: a probe is outstanding; do not send another until an answer or heartbeat. */
  probeSent = false
  /**
   * The highest commit index sent to the follower (in an AppendEntries, or a heartbeat's, which is
   * capped at `match`): whether a commit-only AppendEntries could tell it anything (`canBumpCommit`).
   */
  sentCommit = 0
  readonly inflights: Inflights

  constructor(
    next: number,
    maxInflight: number,
    public isLearner: boolean
  ) {
    this.next = next
    this.inflights = new Inflights(maxInflight)
  }

  private resetState(state: ProgressState): void {
    this.probeSent = false
    this.pendingSnapshot = 0
    this.snapshotSent = 0
    this.snapshotAcked = 0
    this.stalledHeartbeats = 0
    this.state = state
    this.inflights.reset()
  }

  becomeProbe(): void {
    if (this.state === "snapshot") {
      // After a snapshot, resume right after it (or after match if that is further).
      const pending = this.pendingSnapshot
      this.resetState("probe")
      this.next = Math.max(this.match + 1, pending + 1)
    } else {
      this.resetState("probe")
      this.next = this.match + 1
    }
  }

  becomeReplicate(): void {
    this.resetState("replicate")
    this.next = this.match + 1
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState("snapshot")
    this.pendingSnapshot = snapshotIndex
    this.next = snapshotIndex + 1
  }

  /**
   * An acknowledgement up to `n` arrived. Returns false if it is stale (`n` ≤ match). Also
   * re-enables probing.
   */
  maybeUpdate(n: number): boolean {
    let updated = false
    if (this.match < n) {
      this.match = n
      updated = true
      this.probeSent = false
      this.stalledHeartbeats = 0
    }
    this.next = Math.max(this.next, n + 1)
    return updated
  }

  /**
   * The follower rejected an AppendEntries at `rejected`, hinting that its log may match up to
   * `matchHint`. Returns false if the rejection is stale (it answers an older message).
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === "replicate") {
      // In replicate state `next` ran ahead; a rejection is stale unless it is above match.
      if (rejected <= this.match) return false
      this.next = this.match + 1
      return true
    }
    // probe (or snapshot): only the answer to the outstanding probe counts.
    if (this.next - 1 !== rejected) return false
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1)
    this.probeSent = false
    return true
  }

  /** Bookkeeping after sending an AppendEntries with `entries` entries, the last at `lastIndex`. */
  sentEntries(entries: number, lastIndex: number): void {
    if (this.state === "replicate") {
      if (entries > 0) {
        this.next = lastIndex + 1
        this.inflights.add(lastIndex)
      }
    } else if (this.state === "probe") {
      this.probeSent = true
    }
  }

  /** A commit index was sent to the follower. */
  sentCommitOf(commit: number): void {
    if (commit > this.sentCommit) this.sentCommit = commit
  }

  /**
   * True if sending commit index `commit` could advance the follower's: it is above what was sent,
   * and what was sent is below the last entry sent, up to which the follower may commit (etcd-raft's
   * `CanBumpCommit`).
   */
  canBumpCommit(commit: number): boolean {
    return commit > this.sentCommit && this.sentCommit < this.next - 1
  }

  /** True if the leader should not send entries to this follower now. */
  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent
      case "replicate":
        return this.inflights.full()
      case "snapshot":
        return true
    }
  }
}

/** A read-only copy of a follower's progress, for `status()`. */
export interface ProgressStatus {
  readonly id: number
  readonly match: number
  readonly next: number
  readonly state: ProgressState
  readonly isLearner: boolean
  readonly recentActive: boolean
  readonly inflight: number
  readonly pendingSnapshot: number
}
