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
 */
import type { LogStorage } from "./Log.js"
import { limitSize } from "./Log.js"
import type { ConfState, Entry, HardState, Snapshot, StoredSnapshot } from "./Types.js"
import { emptyHardState, storedSnapshot } from "./Types.js"

export class MemoryStorage implements LogStorage {
  hardState: HardState = emptyHardState
  private snap: StoredSnapshot
  /** ents[0] is a dummy entry holding the snapshot's index and term. */
  private ents: Array<Entry>
  /** Whether a snapshot's data is kept (false: a driver's mirror, see `mirror`). */
  private keepsData = true

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

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: this.hardState, confState: this.snap.metadata.confState }
  }

  firstIndex(): number {
    return this.ents[0]!.index + 1
  }

  lastIndex(): number {
    return this.ents[0]!.index + this.ents.length - 1
  }

  term(i: number): number | undefined {
    const off = this.ents[0]!.index
    if (i < off || i > this.lastIndex()) return undefined
    return this.ents[i - off]!.term
  }

  entries(lo: number, hi: number, maxBytes: number): ReadonlyArray<Entry> {
    const off = this.ents[0]!.index
    if (lo <= off) throw new Error(`storage: entries from ${lo} are compacted (first index ${off + 1})`)
    if (hi > this.lastIndex() + 1) throw new Error(`storage: entries up to ${hi} are beyond ${this.lastIndex()}`)
    return limitSize(this.ents.slice(lo - off, hi - off), maxBytes)
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
  }

  /** Replace everything with a snapshot received from the leader. Ignored if older than ours. */
  applySnapshot(s: Snapshot): void {
    if (s.metadata.index <= this.snap.metadata.index) return
    this.snap = this.kept(s)
    this.ents = [{ index: s.metadata.index, term: s.metadata.term, kind: "empty", data: "" }]
  }

  /** Record a snapshot taken by the application (index ≤ applied); does not compact by itself. */
  createSnapshot(s: Snapshot): void {
    if (s.metadata.index <= this.snap.metadata.index) return
    if (s.metadata.index > this.lastIndex()) throw new Error("storage: snapshot beyond the last index")
    this.snap = this.kept(s)
  }

  /** Discard entries up to and including `index` (which must be covered by a snapshot). */
  compact(index: number): void {
    const off = this.ents[0]!.index
    if (index <= off) return
    if (index > this.lastIndex()) throw new Error(`storage: compact ${index} beyond last index ${this.lastIndex()}`)
    const t = this.ents[index - off]!.term
    this.ents = [{ index, term: t, kind: "empty", data: "" }, ...this.ents.slice(index - off + 1)]
  }

  /** Persist entries, truncating any conflicting suffix (what a follower's log does on conflict). */
  append(entries: ReadonlyArray<Entry>): void {
    if (entries.length === 0) return
    const first = this.firstIndex()
    const last = entries[entries.length - 1]!.index
    if (last < first) return // all already compacted
    const ents = entries[0]!.index < first ? entries.slice(first - entries[0]!.index) : entries
    const off = ents[0]!.index - this.ents[0]!.index
    if (off > this.ents.length) throw new Error(`storage: missing log entry before ${ents[0]!.index}`)
    this.ents.length = off
    for (const e of ents) this.ents.push(e)
  }
}
