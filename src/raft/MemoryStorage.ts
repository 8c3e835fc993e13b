/**
 * An in-memory `LogStorage` (etcd's MemoryStorage): the reference for what a driver's mirror of
 * its durable storage must do, and the storage used by tests and by the explorer.
 *
 * The driver calls, in this order, for each `Ready`: `applySnapshot(rd.snapshot)` if present,
 * `append(rd.entries)`, `setHardState(rd.hardState)` if present — after (or as) they are durable.
 * To compact: `createSnapshot(snapshot)` with the value from `RawNode.createSnapshot`, then
 * `compact(snapshot.metadata.index)`.
 *
 * A driver's mirror (`MemoryStorage.mirror()`) keeps only a snapshot's metadata and size, not its
 * data: the driver's durable storage holds that (it saved it before handing it here), and a state
 * snapshot is the largest thing a node holds (~42 MB at 100,000 VMs). The core then sends a
 * snapshot in chunks without data, and the driver fills them in from durable storage
 * (`SnapshotSending.ts`). The storage of tests and of the explorer keeps the data.
 *
 * A mirror also keeps only a bounded tail of the log's data (`spill`): the log since the last
 * snapshot may be several times the state's size (`snapshotRatio`; ~130 MB of entries at 100,000
 * VMs), all of it already in durable storage. Committed entries beyond the newest `keepBytes` keep
 * only their terms here (a run per term); reading one (a follower that lags, a restart replaying
 * membership changes) reads it from durable storage, synchronously. Only committed entries spill:
 * a conflicting suffix, which a follower truncates, is never committed, so it is always in memory.
 */
import type { LogStorage } from "./Log.js"
import { limitSize } from "./Log.js"
import type { ConfState, Entry, HardState, Snapshot, StoredSnapshot } from "./Types.js"
import { emptyHardState, entrySize, storedSnapshot } from "./Types.js"

/**
 * Durable entries `[lo, hi)`, at least one, then up to `maxBytes` in all, read synchronously
 * (`RaftStorageShape.entriesNow`). Throws if the storage cannot give them: the driver stops.
 */
export type EntryReader = (lo: number, hi: number, maxBytes: number) => ReadonlyArray<Entry>

export class MemoryStorage implements LogStorage {
  hardState: HardState = emptyHardState
  private snap: StoredSnapshot
  /**
   * ents[0] is a dummy entry holding the index and term of the entry before the in-memory tail: the
   * compaction point (the snapshot's index), or the newest spilled entry.
   */
  private ents: Array<Entry>
  /** Whether a snapshot's data is kept (false: a driver's mirror, see `mirror`). */
  private keepsData = true
  /** The index of the last entry compacted away (`firstIndex() - 1`); below ents[0] when entries spilled. */
  private compacted = 0
  /**
   * The terms of the spilled entries `[compacted, ents[0].index)`: runs, `runStart[k]` being the
   * first index of run k (the first is `compacted`), each running to the next (the last to ents[0]).
   */
  private runStart: Array<number> = []
  private runTerm: Array<number> = []
  /** `entrySize` of the in-memory entries (ents[1..]). */
  private tailBytes = 0
  /** Where spilled entries are read back, and how many bytes of entries stay in memory. */
  private spillTo: { readonly read: EntryReader; readonly keepBytes: number } | undefined = undefined

  constructor(confState: ConfState = { voters: [], learners: [] }) {
    this.snap = { metadata: { index: 0, term: 0, confState }, size: 0, data: "" }
    this.ents = [{ index: 0, term: 0, kind: "empty", data: "" }]
  }

  /**
   * A driver's in-memory mirror of its durable log: like `new MemoryStorage()`, but of each snapshot
   * it keeps only the metadata and the data's size (the data stays in durable storage).
   */
  static mirror(): MemoryStorage {
    const s = new MemoryStorage()
    s.keepsData = false
    s.snap = { metadata: s.snap.metadata, size: 0, data: undefined }
    return s
  }

  /**
   * The storage of an initial member of a new cluster: a snapshot at index 1, term 1 holding the
   * initial configuration and the empty state machine (`data`). Every initial member bootstraps
   * identically. A node that joins later starts with `new MemoryStorage()` (no configuration); it
   * cannot replay the log from index 1, so the leader sends it a snapshot, which carries the
   * configuration.
   */
  static bootstrap(confState: ConfState, data = ""): MemoryStorage {
    const s = new MemoryStorage(confState)
    s.snap = storedSnapshot({ metadata: { index: 1, term: 1, confState }, data })
    s.ents = [{ index: 1, term: 1, kind: "empty", data: "" }]
    s.compacted = 1
    s.hardState = { term: 1, vote: 0, commit: 1 }
    return s
  }

  /** A storage whose log is `entries` (indexes from 1) with the given voters, for tests. */
  static withLog(voters: ReadonlyArray<number>, entries: ReadonlyArray<Entry>, hardState?: HardState): MemoryStorage {
    const s = new MemoryStorage({ voters: [...voters], learners: [] })
    s.append(entries)
    if (hardState !== undefined) s.hardState = hardState
    return s
  }

  /**
   * From now on, committed entries beyond the newest `keepBytes` (by `entrySize`) leave memory and
   * are read back through `read` when asked for. Every entry this storage holds must be durable in
   * what `read` reads (a driver's mirror: it appends only what its storage saved) until compacted.
   */
  spill(read: EntryReader, keepBytes: number): void {
    this.spillTo = { read, keepBytes }
    this.spillOld()
  }

  /** How many entries, and their bytes, are held in memory (not spilled, not compacted). */
  inMemory(): { readonly entries: number; readonly bytes: number } {
    return { entries: this.ents.length - 1, bytes: this.tailBytes }
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: this.hardState, confState: this.snap.metadata.confState }
  }

  firstIndex(): number {
    return this.compacted + 1
  }

  lastIndex(): number {
    return this.ents[0]!.index + this.ents.length - 1
  }

  term(i: number): number | undefined {
    const off = this.ents[0]!.index
    if (i < this.compacted || i > this.lastIndex()) return undefined
    if (i >= off) return this.ents[i - off]!.term
    // A spilled entry: the last run starting at or before i.
    let lo = 0
    let hi = this.runStart.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.runStart[mid]! <= i) lo = mid
      else hi = mid - 1
    }
    return this.runTerm[lo]
  }

  entries(lo: number, hi: number, maxBytes: number): ReadonlyArray<Entry> {
    const off = this.ents[0]!.index
    if (lo <= this.compacted) throw new Error(`storage: entries from ${lo} are compacted (first index ${this.compacted + 1})`)
    if (hi > this.lastIndex() + 1) throw new Error(`storage: entries up to ${hi} are beyond ${this.lastIndex()}`)
    if (lo > off) return limitSize(this.ents.slice(lo - off, hi - off), maxBytes)
    // From a spilled entry (off itself is one): durable storage, then on in memory if within maxBytes.
    const spilledHi = Math.min(hi, off + 1)
    const read = this.spillTo!.read(lo, spilledHi, maxBytes)
    if (read.length < spilledHi - lo || hi === spilledHi) return read
    return limitSize([...read, ...this.ents.slice(1, hi - off)], maxBytes)
  }

  snapshot(): StoredSnapshot {
    return this.snap
  }

  /** The snapshot's data, for a storage that keeps it (tests, the explorer); a mirror has none to give. */
  snapshotData(): string {
    if (this.snap.data === undefined) throw new Error("storage: a mirror keeps no snapshot data (it is in durable storage)")
    return this.snap.data
  }

  /** What this storage keeps of a snapshot: all of it, or (a mirror) all but the data. */
  private kept(s: Snapshot): StoredSnapshot {
    return this.keepsData ? storedSnapshot(s) : { metadata: s.metadata, size: s.data.length, data: undefined }
  }

  setHardState(hs: HardState): void {
    this.hardState = hs
    this.spillOld()
  }

  /** Replace everything with a snapshot received from the leader. Ignored if older than ours. */
  applySnapshot(s: Snapshot): void {
    if (s.metadata.index <= this.snap.metadata.index) return
    this.snap = this.kept(s)
    this.ents = [{ index: s.metadata.index, term: s.metadata.term, kind: "empty", data: "" }]
    this.compacted = s.metadata.index
    this.runStart = []
    this.runTerm = []
    this.tailBytes = 0
  }

  /** Record a snapshot taken by the application (index ≤ applied); does not compact by itself. */
  createSnapshot(s: Snapshot): void {
    if (s.metadata.index <= this.snap.metadata.index) return
    if (s.metadata.index > this.lastIndex()) throw new Error("storage: snapshot beyond the last index")
    this.snap = this.kept(s)
  }

  /** Discard entries up to and including `index` (which must be covered by a snapshot). */
  compact(index: number): void {
    if (index <= this.compacted) return
    if (index > this.lastIndex()) throw new Error(`storage: compact ${index} beyond last index ${this.lastIndex()}`)
    const off = this.ents[0]!.index
    if (index < off) {
      // Within the spilled entries: their runs now start at `index`.
      let k = 0
      while (k + 1 < this.runStart.length && this.runStart[k + 1]! <= index) k++
      this.runStart = this.runStart.slice(k)
      this.runTerm = this.runTerm.slice(k)
      this.runStart[0] = index
    } else {
      const t = this.ents[index - off]!.term
      for (let i = 1; i <= index - off; i++) this.tailBytes -= entrySize(this.ents[i]!)
      this.ents = [{ index, term: t, kind: "empty", data: "" }, ...this.ents.slice(index - off + 1)]
      this.runStart = []
      this.runTerm = []
    }
    this.compacted = index
  }

  /** Persist entries, truncating any conflicting suffix (what a follower's log does on conflict). */
  append(entries: ReadonlyArray<Entry>): void {
    if (entries.length === 0) return
    const first = this.firstIndex()
    const last = entries[entries.length - 1]!.index
    if (last < first) return // all already compacted
    let ents = entries[0]!.index < first ? entries.slice(first - entries[0]!.index) : entries
    // Spilled entries are committed, so the same as these (a leader's resent entries): skip them.
    if (ents[0]!.index <= this.ents[0]!.index) ents = ents.slice(this.ents[0]!.index + 1 - ents[0]!.index)
    if (ents.length === 0) return
    const off = ents[0]!.index - this.ents[0]!.index
    if (off > this.ents.length) throw new Error(`storage: missing log entry before ${ents[0]!.index}`)
    for (let i = off; i < this.ents.length; i++) this.tailBytes -= entrySize(this.ents[i]!)
    this.ents.length = off
    for (const e of ents) {
      this.ents.push(e)
      this.tailBytes += entrySize(e)
    }
    this.spillOld()
  }

  /**
   * Once the in-memory entries exceed `keepBytes`, the oldest committed ones leave memory until
   * half of it is left, at least a quarter of it at a time: each slice of the tail is paid for by
   * `keepBytes / 4` appended, also while a long uncommitted suffix keeps the tail above `keepBytes`.
   */
  private spillOld(): void {
    if (this.spillTo === undefined || this.tailBytes <= this.spillTo.keepBytes) return
    const off = this.ents[0]!.index
    const committed = Math.min(this.hardState.commit, this.lastIndex())
    let n = 0
    let bytes = this.tailBytes
    while (off + n < committed && bytes > this.spillTo.keepBytes / 2) bytes -= entrySize(this.ents[++n]!)
    if (n === 0 || (this.tailBytes - bytes < this.spillTo.keepBytes / 4 && off + n >= committed)) return
    // The dummy and the entries before the new one leave: their terms join the runs.
    for (let i = 0; i < n; i++) {
      const t = this.ents[i]!.term
      if (this.runTerm.length === 0 || this.runTerm[this.runTerm.length - 1] !== t) {
        this.runStart.push(off + i)
        this.runTerm.push(t)
      }
    }
    const last = this.ents[n]!
    this.ents = [{ index: last.index, term: last.term, kind: "empty", data: "" }, ...this.ents.slice(n + 1)]
    this.tailBytes = bytes
  }
}
