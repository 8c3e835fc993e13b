/**
 * The Raft log as the core sees it (etcd's `raftLog`): the stable part, read through the driver's
 * `LogStorage`, followed by the unstable part — entries (and possibly a snapshot) the core has
 * accepted but the driver has not yet persisted. `Ready.entries` is the unstable part; once the
 * driver has persisted it (and updated the `LogStorage` it handed us), `advance` marks it stable.
 */
import type { ConfState, Entry, HardState, Snapshot, StoredSnapshot } from "./Types.js"
import { entrySize, storedSnapshot } from "./Types.js"

/**
 * Read-only, synchronous view of what the driver has persisted. The driver owns writes (see
 * `MemoryStorage` for the reference implementation and for what an in-memory mirror must do).
 *
 * Index conventions follow etcd: the log holds entries `firstIndex() .. lastIndex()`; the entry at
 * `firstIndex() - 1` is the last one covered by the snapshot, and `term(firstIndex() - 1)` must return
 * the snapshot's term. An empty log has `lastIndex() === firstIndex() - 1`.
 */
export interface LogStorage {
  /**
   * The persisted hard state, and the membership configuration as of the snapshot (the entry at
   * `firstIndex() - 1`). The core replays conf-change entries after the snapshot up to the
   * configured `applied` index itself, so storage never has to persist the configuration apart from
   * snapshots.
   */
  initialState(): { readonly hardState: HardState; readonly confState: ConfState }
  firstIndex(): number
  lastIndex(): number
  /** Term of entry `i` for `firstIndex()-1 ≤ i ≤ lastIndex()`, otherwise `undefined`. */
  term(i: number): number | undefined
  /**
   * Entries `[lo, hi)` with `firstIndex() ≤ lo < hi ≤ lastIndex()+1`, stopping once their total
   * `entrySize` would exceed `maxBytes` — but always at least one entry.
   */
  entries(lo: number, hi: number, maxBytes: number): ReadonlyArray<Entry>
  /**
   * The most recent snapshot (index 0 if there is none). Its data may be left out (a driver's
   * mirror): the core then sends it in chunks without data, which the driver fills in.
   */
  snapshot(): StoredSnapshot
}

/** Keep a prefix of `entries` whose total size is ≤ `maxBytes`, always at least one entry. */
export const limitSize = (entries: ReadonlyArray<Entry>, maxBytes: number): ReadonlyArray<Entry> => {
  if (entries.length <= 1) return entries
  let size = entrySize(entries[0]!)
  let n = 1
  for (; n < entries.length; n++) {
    size += entrySize(entries[n]!)
    if (size > maxBytes) break
  }
  return n === entries.length ? entries : entries.slice(0, n)
}

/** Entries and snapshot not yet persisted. `entries[i]` has index `offset + i`. */
export class Unstable {
  snapshot: Snapshot | undefined = undefined
  entries: Array<Entry> = []

  constructor(public offset: number) {}

  maybeFirstIndex(): number | undefined {
    return this.snapshot === undefined ? undefined : this.snapshot.metadata.index + 1
  }

  maybeLastIndex(): number | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1
    return this.snapshot === undefined ? undefined : this.snapshot.metadata.index
  }

  maybeTerm(i: number): number | undefined {
    if (i < this.offset) {
      if (this.snapshot !== undefined && this.snapshot.metadata.index === i) return this.snapshot.metadata.term
      return undefined
    }
    const last = this.maybeLastIndex()
    if (last === undefined || i > last) return undefined
    return this.entries[i - this.offset]?.term
  }

  /** Entries up to (i, t) have been persisted. Ignored if (i, t) was since overwritten. */
  stableTo(i: number, t: number): void {
    const gt = this.maybeTerm(i)
    if (gt === undefined) return
    if (gt === t && i >= this.offset) {
      this.entries = this.entries.slice(i + 1 - this.offset)
      this.offset = i + 1
    }
  }

  stableSnapTo(i: number): void {
    if (this.snapshot !== undefined && this.snapshot.metadata.index === i) this.snapshot = undefined
  }

  restore(s: Snapshot): void {
    this.offset = s.metadata.index + 1
    this.entries = []
    this.snapshot = s
  }

  truncateAndAppend(ents: ReadonlyArray<Entry>): void {
    const after = ents[0]!.index
    if (after === this.offset + this.entries.length) {
      for (const e of ents) this.entries.push(e)
    } else if (after <= this.offset) {
      // Replaces everything unstable (and part of the stable log: the driver truncates it when persisting).
      this.offset = after
      this.entries = ents.slice()
    } else {
      this.entries = this.entries.slice(0, after - this.offset)
      for (const e of ents) this.entries.push(e)
    }
  }

  slice(lo: number, hi: number): Array<Entry> {
    return this.entries.slice(lo - this.offset, hi - this.offset)
  }
}

export class RaftLog {
  readonly unstable: Unstable
  /** Highest index known to be committed. */
  committed: number
  /** Highest index the application has applied (acknowledged through `advance`). */
  applied: number

  constructor(
    readonly storage: LogStorage,
    readonly maxNextEntsSize: number = Number.MAX_SAFE_INTEGER
  ) {
    const first = storage.firstIndex()
    const last = storage.lastIndex()
    this.unstable = new Unstable(last + 1)
    this.committed = first - 1
    this.applied = first - 1
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex()
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex()
  }

  /** Term of entry `i`, or `undefined` if it is compacted away or beyond the end of the log. */
  term(i: number): number | undefined {
    const dummy = this.firstIndex() - 1
    if (i < dummy || i > this.lastIndex()) return undefined
    const t = this.unstable.maybeTerm(i)
    if (t !== undefined) return t
    return this.storage.term(i)
  }

  /** The last index of the prefix of this log that the driver has made durable. */
  durableLastIndex(): number {
    // Entries from the unstable offset on are not durable; nor is a snapshot still being installed
    // (the driver's storage then holds an older log).
    return this.unstable.snapshot !== undefined ? this.storage.lastIndex() : this.unstable.offset - 1
  }

  lastTerm(): number {
    const t = this.term(this.lastIndex())
    if (t === undefined) throw new Error("raft: term of the last log entry is unavailable")
    return t
  }

  matchTerm(i: number, t: number): boolean {
    return this.term(i) === t
  }

  /**
   * The follower side of AppendEntries: if our entry at `index` has term `logTerm`, append
   * `entries` (truncating a conflicting suffix), advance commit to min(`commit`, last new index)
   * and return the last new index; otherwise return undefined (reject).
   */
  maybeAppend(index: number, logTerm: number, commit: number, entries: ReadonlyArray<Entry>): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined
    const lastNew = index + entries.length
    const ci = this.findConflict(entries)
    if (ci !== 0) {
      if (ci <= this.committed) {
        throw new Error(`raft: entry ${ci} conflicts with committed entry (committed ${this.committed})`)
      }
      this.append(entries.slice(ci - (index + 1)))
    }
    this.commitTo(Math.min(commit, lastNew))
    return lastNew
  }

  append(entries: ReadonlyArray<Entry>): number {
    if (entries.length === 0) return this.lastIndex()
    const after = entries[0]!.index - 1
    if (after < this.committed) {
      throw new Error(`raft: appending after ${after} is below committed ${this.committed}`)
    }
    this.unstable.truncateAndAppend(entries)
    return this.lastIndex()
  }

  /**
   * The index of the first entry in `entries` that conflicts with (or extends) our log, or 0 if
   * all of them are already present with the same terms.
   */
  findConflict(entries: ReadonlyArray<Entry>): number {
    for (const e of entries) {
      if (!this.matchTerm(e.index, e.term)) return e.index
    }
    return 0
  }

  /**
   * Fast back-off (thesis §5.3 optimisation, etcd's findConflictByTerm): the largest index ≤
   * `index` whose term is ≤ `term`, and that term. Entries above it cannot match a log whose entry
   * at `index` has term `term`. Returns [index, 0] when terms are unavailable (compacted).
   */
  findConflictByTerm(index: number, term: number): [number, number] {
    for (let i = index; i > 0; i--) {
      const t = this.term(i)
      if (t === undefined) return [i, 0]
      if (t <= term) return [i, t]
    }
    return [0, 0]
  }

  unstableEntries(): ReadonlyArray<Entry> {
    return this.unstable.entries
  }

  /** Committed entries not yet handed to the application, up to `maxNextEntsSize`. */
  nextCommittedEntries(): ReadonlyArray<Entry> {
    const off = Math.max(this.applied + 1, this.firstIndex())
    if (this.committed + 1 > off) {
      return this.slice(off, this.committed + 1, this.maxNextEntsSize) ?? []
    }
    return []
  }

  hasNextCommittedEntries(): boolean {
    const off = Math.max(this.applied + 1, this.firstIndex())
    return this.committed + 1 > off
  }

  hasPendingSnapshot(): boolean {
    return this.unstable.snapshot !== undefined
  }

  /** The latest snapshot: an unstable one being installed, else the driver's. */
  snapshot(): StoredSnapshot {
    return this.unstable.snapshot !== undefined ? storedSnapshot(this.unstable.snapshot) : this.storage.snapshot()
  }

  commitTo(toCommit: number): void {
    if (this.committed < toCommit) {
      if (this.lastIndex() < toCommit) {
        throw new Error(`raft: commit ${toCommit} is beyond the last index ${this.lastIndex()}`)
      }
      this.committed = toCommit
    }
  }

  appliedTo(i: number): void {
    if (i === 0) return
    if (this.committed < i || i < this.applied) {
      throw new Error(`raft: applied ${i} is outside [${this.applied}, ${this.committed}]`)
    }
    this.applied = i
  }

  stableTo(i: number, t: number): void {
    this.unstable.stableTo(i, t)
  }

  stableSnapTo(i: number): void {
    this.unstable.stableSnapTo(i)
  }

  /** Election restriction (§5.4.1): is a log ending at (lastIndex, term) at least as up to date as ours? */
  isUpToDate(lastIndex: number, term: number): boolean {
    const ourTerm = this.lastTerm()
    return term > ourTerm || (term === ourTerm && lastIndex >= this.lastIndex())
  }

  /** Entries from `i` to the end, at most `maxBytes` (at least one); undefined if `i` is compacted. */
  entries(i: number, maxBytes: number): ReadonlyArray<Entry> | undefined {
    if (i > this.lastIndex()) return []
    return this.slice(i, this.lastIndex() + 1, maxBytes)
  }

  /** Entries `[lo, hi)`, at most `maxBytes` (at least one); undefined if `lo` is compacted. */
  slice(lo: number, hi: number, maxBytes: number): ReadonlyArray<Entry> | undefined {
    if (lo >= hi) return []
    if (lo < this.firstIndex()) return undefined
    if (hi > this.lastIndex() + 1) throw new Error(`raft: slice [${lo}, ${hi}) beyond last index ${this.lastIndex()}`)
    let out: ReadonlyArray<Entry> = []
    const uoff = this.unstable.offset
    if (lo < uoff) {
      const stored = this.storage.entries(lo, Math.min(hi, uoff), maxBytes)
      // Storage stopped early because of the size limit: do not add unstable entries after a gap.
      if (stored.length < Math.min(hi, uoff) - lo) return stored
      out = stored
    }
    if (hi > uoff) {
      const u = this.unstable.slice(Math.max(lo, uoff), hi)
      out = out.length > 0 ? out.concat(u) : u
    }
    return limitSize(out, maxBytes)
  }

  /** Leader side of the commit rule: commit `maxIndex` only if its entry is from `term`. */
  maybeCommit(maxIndex: number, term: number): boolean {
    if (maxIndex > this.committed && this.term(maxIndex) === term) {
      this.commitTo(maxIndex)
      return true
    }
    return false
  }

  restore(s: Snapshot): void {
    this.committed = s.metadata.index
    this.unstable.restore(s)
  }
}
