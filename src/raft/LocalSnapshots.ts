/**
 * A node's own snapshots and the log compaction behind them, for the Raft driver (`RaftNode`).
 *
 * When: once at least `every` entries were applied since the last snapshot AND the bytes applied
 * since reach `ratio` times the last snapshot's size (Ongaro's thesis §5.1.1; LogCabin's
 * `snapshotRatio`; 0: by count alone). How: the loop only captures the state
 * (`StateMachine.snapshotView`); serialising and storing it run on the side, one at a time, and yield
 * to the event loop between pieces, so a large state (~200 ms of JSON at 100,000 VMs) does not stop
 * ticks, heartbeats and peer messages. Once stored, the mirror takes it up — its metadata only: the
 * data stays in storage, read again only to send it to a follower (`SnapshotSending.ts`) — and the
 * log before it, less `retain` entries, goes. A snapshot installed from the leader meanwhile is
 * newer, and wins.
 *
 * Between snapshots the log grows to `ratio` times the state (~130 MB of entries at 100,000 VMs):
 * on disk, not in memory. The mirror keeps the newest `logMemoryBytes` of it (default 8 MiB, some
 * 35,000 VM writes: what followers that keep up, and one restarted within seconds, are sent) and
 * reads older entries back from storage (`MemoryStorage.spill`, `RaftStorageShape.entriesNow`), as
 * etcd's server keeps a bounded tail (`SnapshotCatchUpEntries`) in memory. The mirror gives up an
 * entry before it is compacted in storage, never after: what it no longer holds, storage does.
 */
import { Duration, Effect, Fiber, Option } from "effect"
import * as Metrics from "../metrics/Metrics.js"
import type { RaftStorageShape } from "../storage/RaftStorage.js"
import type { StorageError } from "../storage/Database.js"
import type { MemoryStorage } from "./MemoryStorage.js"
import type { RawNode } from "./RawNode.js"
import type { StateMachineShape } from "./StateMachine.js"
import type { Entry, Snapshot, SnapshotMetadata } from "./Types.js"

export const snapshotSource = { local: Metrics.tags(["source", "local"]), leader: Metrics.tags(["source", "leader"]) }

export interface LocalSnapshotsOptions {
  readonly storage: RaftStorageShape
  readonly mirror: MemoryStorage
  readonly sm: StateMachineShape
  readonly every: number
  readonly ratio: number
  readonly retain: number
  /** How many bytes of log entries the mirror keeps in memory (`entrySize`); the rest it reads from storage. */
  readonly logMemoryBytes?: number | undefined
}

/** The bytes of log entries a mirror keeps in memory by default. */
export const DefaultLogMemoryBytes = 8 * 1024 * 1024

export class LocalSnapshots {
  /** The last snapshot's index and data size, and the bytes of the entries applied since it. */
  private index = 0
  private bytes = 0
  private appliedBytes = 0
  /** The snapshot being written on the side, and the bytes applied before its capture. */
  private writing: { readonly fiber: Fiber.RuntimeFiber<Snapshot, StorageError>; readonly bytes: number } | undefined = undefined

  constructor(private readonly options: LocalSnapshotsOptions) {
    const { storage, mirror } = options
    mirror.spill((lo, hi, maxBytes) => storage.entriesNow(lo, hi, maxBytes), options.logMemoryBytes ?? DefaultLogMemoryBytes)
  }

  /** `snapshot` is the node's newest (recovered, installed from the leader, or its own). */
  snapshotted(snapshot: Snapshot): void {
    this.index = snapshot.metadata.index
    this.bytes = snapshot.data.length
    Metrics.raftSnapshotBytes.unsafeUpdate(this.bytes, Metrics.noTags)
    this.appliedBytes = 0
  }

  applied(entries: ReadonlyArray<Entry>): void {
    for (const e of entries) this.appliedBytes += e.data.length
  }

  /**
   * After a batch: stores the snapshot written on the side once it is done, and starts the next one
   * when due. `flushHardState` saves the hard state not yet saved: the stored commit index must
   * cover a snapshot before it is written (a restart must never find the snapshot ahead of it).
   */
  step(raw: RawNode, flushHardState: Effect.Effect<void, StorageError>): Effect.Effect<void, StorageError> {
    const self = this
    return Effect.gen(function* () {
      if (self.writing !== undefined) {
        const done = yield* Fiber.poll(self.writing.fiber)
        if (Option.isNone(done)) return
        const { bytes } = self.writing
        self.writing = undefined
        // A storage error on the side stops the driver, as one in the loop does.
        yield* self.compactBehind(yield* done.value, bytes)
      }
      const { every, ratio, sm } = self.options
      if (raw.appliedIndex - self.index < every || self.appliedBytes < ratio * self.bytes) return
      const pieces: Iterable<string> = sm.snapshotView !== undefined ? yield* sm.snapshotView : [yield* sm.snapshot]
      const { metadata } = raw.createSnapshot("")
      yield* flushHardState
      self.writing = { fiber: yield* Effect.fork(self.write(metadata, pieces)), bytes: self.appliedBytes }
    })
  }

  /** Serialises a captured state and stores it, yielding to the event loop (a timer) between pieces. */
  private write(metadata: SnapshotMetadata, pieces: Iterable<string>): Effect.Effect<Snapshot, StorageError> {
    const { storage } = this.options
    return Effect.gen(function* () {
      const began = performance.now()
      const parts: Array<string> = []
      for (const piece of pieces) {
        parts.push(piece)
        yield* Effect.sleep(Duration.zero)
      }
      const snap: Snapshot = { metadata, data: parts.length === 1 ? parts[0]! : parts.join("") }
      yield* storage.saveSnapshot(snap)
      Metrics.raftSnapshotSeconds.unsafeUpdate((performance.now() - began) / 1000, Metrics.noTags)
      Metrics.raftSnapshots.unsafeUpdate(1, snapshotSource.local)
      return snap
    })
  }

  /** A snapshot written on the side is stored: the log before it (less `retain`) goes. */
  private compactBehind(snap: Snapshot, bytesBefore: number): Effect.Effect<void, StorageError> {
    const self = this
    const { storage, mirror, retain } = this.options
    return Effect.gen(function* () {
      // A snapshot received from the leader meanwhile is newer; storage kept that one.
      if (snap.metadata.index <= self.index) return
      mirror.createSnapshot(snap)
      const since = self.appliedBytes - bytesBefore
      self.snapshotted(snap)
      self.appliedBytes = since
      const compactTo = snap.metadata.index - retain
      if (compactTo >= mirror.firstIndex()) {
        // The mirror first: it may read what it spilled from storage until then.
        mirror.compact(compactTo)
        yield* storage.compact(compactTo)
      }
    })
  }
}
