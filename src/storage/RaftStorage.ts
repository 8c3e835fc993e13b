/**
 * Durable Raft state: hard state, the log and the latest snapshot.
 *
 * The log holds the entries `[firstIndex, lastIndex]`; the term of the entry just before
 * `firstIndex` (compacted away, or covered by a snapshot) is kept too, so `term(firstIndex - 1)`
 * is always known — what AppendEntries' consistency check needs at the log's start.
 *
 * `save` is the one write the Raft driver needs per `Ready`: it installs a snapshot, appends
 * entries (first removing any conflicting suffix) and records the hard state in ONE transaction,
 * so one fsync makes all of it durable before any message that depends on it is sent. Every write
 * returns only after `Database.Durability.sync` (an `fdatasync` off the event loop) has made it
 * durable. The log's bounds are kept in memory (this process owns the database exclusively), so
 * an append is one transaction of INSERTs and nothing else.
 *
 * Every entry, the hard state and the snapshot carry a checksum verified on read; a mismatch is a
 * `StorageCorrupt` error naming the file and the index. The node stops; it never serves wrong data.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { Context, Duration, Effect, Layer, Option } from "effect"
import { crc32 } from "node:zlib"
import { StorageCorrupt } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMetadata } from "../raft/Types.js"
import { emptyHardState, entrySize } from "../raft/Types.js"
import { entryChecksum, hardStateChecksum, snapshotChecksum, snapshotHeaderChecksum } from "./Checksum.js"
import * as Database from "./Database.js"
import type { StorageError } from "./Database.js"

export type { StorageError } from "./Database.js"

export interface InitialState {
  readonly hardState: HardState
  /** Metadata of the latest snapshot, if one was ever saved. */
  readonly snapshot: Option.Option<SnapshotMetadata>
  readonly firstIndex: number
  readonly lastIndex: number
}

export interface SaveBatch {
  /** A snapshot received from the leader: it replaces the whole log. Applied first. */
  readonly snapshot?: Snapshot | undefined
  /** Contiguous entries; any stored entry at or after `entries[0].index` is removed first. */
  readonly entries?: ReadonlyArray<Entry> | undefined
  readonly hardState?: HardState | undefined
}

export interface RaftStorageShape {
  /**
   * Hard state, snapshot metadata and log bounds: cheap (neither the log nor the snapshot's data is
   * read). `verifiedLog` reads and verifies the log, `snapshot` reads and verifies the snapshot.
   */
  readonly initialState: Effect.Effect<InitialState, StorageError>
  /**
   * The whole stored log, verified as it is read (every entry's checksum, none missing, terms never
   * decreasing), handed to `each` a chunk at a time in order, the event loop running between chunks:
   * what a node's start reads once.
   */
  readonly verifiedLog: (each: (entries: ReadonlyArray<Entry>) => void) => Effect.Effect<void, StorageError>
  /** Durably and atomically: install `snapshot`, append `entries`, record `hardState`. */
  readonly save: (batch: SaveBatch) => Effect.Effect<void, StorageError>
  /** Entries `[lo, hi)`, at least one if the range is not empty, then up to `maxBytes` in all. */
  readonly entries: (lo: number, hi: number, maxBytes?: number) => Effect.Effect<ReadonlyArray<Entry>, StorageError>
  /**
   * `entries`, answered synchronously: for the Raft core, which reads its log synchronously, when it
   * asks for an entry its in-memory mirror no longer holds (`MemoryStorage.spill`). A failure is
   * thrown (the `StorageError`), which stops the driver as a failed write does. Sound beside the
   * writes: each write of the log is one transaction run in one synchronous call
   * (`Database.Connection.transaction`), and nothing else writes the log.
   */
  readonly entriesNow: (lo: number, hi: number, maxBytes?: number) => ReadonlyArray<Entry>
  /** The term of the entry at `index`, or none if it is compacted away or beyond the log. */
  readonly term: (index: number) => Effect.Effect<Option.Option<number>, StorageError>
  readonly firstIndex: Effect.Effect<number, StorageError>
  readonly lastIndex: Effect.Effect<number, StorageError>
  readonly snapshot: Effect.Effect<Option.Option<Snapshot>, StorageError>
  /**
   * Records a snapshot the local state machine took (at or below its applied index). The log is
   * untouched. A snapshot not newer than the stored one is ignored: the driver writes its own
   * snapshots on the side, and one received from the leader meanwhile (installed by `save`) is newer.
   */
  readonly saveSnapshot: (snapshot: Snapshot) => Effect.Effect<void, StorageError>
  /** Discards entries up to and including `index` (which must be stored, or already the log's start). */
  readonly compact: (index: number) => Effect.Effect<void, StorageError>
}

export class RaftStorage extends Context.Tag("blixard/RaftStorage")<RaftStorage, RaftStorageShape>() {}

/** Misuse by the caller (a gap in the log, reading outside it): a bug, so it dies loudly. */
class Misuse extends Error {}

const misuse = (message: string): never => {
  throw new Misuse(`RaftStorage misuse: ${message}`)
}

const checkContiguous = (entries: ReadonlyArray<Entry>): void => {
  for (let i = 1; i < entries.length; i++) {
    if (entries[i]!.index !== entries[i - 1]!.index + 1) {
      misuse(`entries to append are not contiguous at index ${entries[i - 1]!.index}`)
    }
  }
}

const checkAppendPosition = (firstNew: number, firstIndex: number, lastIndex: number): void => {
  if (firstNew > lastIndex + 1) misuse(`appending at ${firstNew} would leave a gap after ${lastIndex}`)
  if (firstNew < firstIndex) misuse(`appending at ${firstNew} would overwrite compacted entries (log starts at ${firstIndex})`)
}

const checkRange = (lo: number, hi: number, firstIndex: number, lastIndex: number): void => {
  if (lo > hi || lo < firstIndex || hi > lastIndex + 1) {
    misuse(`entries [${lo}, ${hi}) requested, but the log holds [${firstIndex}, ${lastIndex}]`)
  }
}

/** Takes entries while within `maxBytes`, always at least one. */
const limitSize = <A extends Entry>(entries: ReadonlyArray<A>, maxBytes: number | undefined): ReadonlyArray<A> => {
  if (maxBytes === undefined || entries.length <= 1) return entries
  let size = entrySize(entries[0]!)
  let n = 1
  while (n < entries.length) {
    size += entrySize(entries[n]!)
    if (size > maxBytes) break
    n++
  }
  return n === entries.length ? entries : entries.slice(0, n)
}

// ---------------------------------------------------------------------------------------------
// SQLite

interface EntryRow {
  readonly idx: number
  readonly term: number
  readonly kind: string
  readonly data: string
  readonly checksum: number
}

const entryKinds: ReadonlySet<string> = new Set<EntryKind>(["normal", "confChange", "empty"])

/** How many entries `verifiedLog` reads and verifies per read, so the event loop runs between reads. */
const verifyChunk = 2048

/** Characters per stored chunk of a snapshot the node took itself: a few ms of SQLite work each. */
const snapshotChunkChars = 1 << 20

/** `text` cut into pieces of about `size` characters, never between the two halves of a surrogate pair. */
const cut = (text: string, size: number): Array<string> => {
  const pieces: Array<string> = []
  for (let at = 0; at < text.length || pieces.length === 0; ) {
    let end = Math.min(text.length, at + size)
    const last = text.charCodeAt(end - 1)
    if (end < text.length && end - 1 > at && last >= 0xd800 && last <= 0xdbff) end--
    pieces.push(text.slice(at, end))
    at = end
  }
  return pieces
}

/**
 * `RaftStorage` over the node's SQLite database (needs `Database.layer`'s `Connection` and a
 * `Durability`). Every statement is prepared here, once, and each call runs its statements
 * synchronously in one `Connection.use` or `transaction`: a `save` of ten entries is one
 * transaction of ten prepared INSERTs and an upsert of the hard state, with no Effect machinery per
 * statement (see `Database` for what that machinery cost per replicated write).
 */
export const makeSql = (options: { readonly filename: string; readonly node?: NodeId | undefined }) =>
  Effect.gen(function* () {
    const connection = yield* Database.Connection
    const durability = yield* Database.Durability
    const fail = Database.classify(options, "using the Raft log")
    const corrupt = (message: string) =>
      new StorageCorrupt({
        subject: options.filename,
        message: `${message} in ${options.filename}; the node stops rather than serve damaged data — ${Database.rejoinAdvice(options.node)}`,
        ...(options.node !== undefined ? { node: options.node } : {})
      })
    /** What a call threw: misuse dies, damage it found fails as it is, a SQLite error is classified. */
    const failure = (e: unknown): Effect.Effect<never, StorageError> =>
      e instanceof Misuse ? Effect.die(e) : Effect.fail(e instanceof StorageCorrupt ? e : fail(e))

    const prepare = connection.prepare
    const statements = yield* Effect.try({
      try: () => ({
        logStart: prepare<[], { first_index: number; prev_term: number }>(
          "SELECT first_index, prev_term FROM raft_log_start WHERE id = 1"
        ),
        maxIndex: prepare<[], { m: number | null }>("SELECT max(idx) AS m FROM raft_log"),
        entries: prepare<[number, number], EntryRow>(
          "SELECT idx, term, kind, data, checksum FROM raft_log WHERE idx >= ? AND idx < ? ORDER BY idx"
        ),
        insertEntry: prepare<[number, number, string, string, number]>(
          "INSERT INTO raft_log (idx, term, kind, data, checksum) VALUES (?, ?, ?, ?, ?)"
        ),
        truncateFrom: prepare<[number]>("DELETE FROM raft_log WHERE idx >= ?"),
        compactThrough: prepare<[number]>("DELETE FROM raft_log WHERE idx <= ?"),
        clearLog: prepare<[]>("DELETE FROM raft_log"),
        setLogStart: prepare<[number, number]>("UPDATE raft_log_start SET first_index = ?, prev_term = ? WHERE id = 1"),
        hardState: prepare<[], { term: number; vote: number; commit_index: number; checksum: number }>(
          "SELECT term, vote, commit_index, checksum FROM raft_hard_state WHERE id = 1"
        ),
        setHardState: prepare<[number, number, number, number]>(
          `INSERT INTO raft_hard_state (id, term, vote, commit_index, checksum) VALUES (1, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET term = excluded.term, vote = excluded.vote,
              commit_index = excluded.commit_index, checksum = excluded.checksum`
        ),
        snapshot: prepare<[], { idx: number; term: number; conf_state: string; data: string; checksum: number }>(
          "SELECT idx, term, conf_state, data, checksum FROM raft_snapshot WHERE id = 1"
        ),
        snapshotIndex: prepare<[], { idx: number }>("SELECT idx FROM raft_snapshot WHERE id = 1"),
        snapshotMetadata: prepare<[], { idx: number; term: number; conf_state: string }>("SELECT idx, term, conf_state FROM raft_snapshot WHERE id = 1"),
        snapshotChunk: prepare<[number, number], { data: string }>("SELECT data FROM raft_snapshot_chunk WHERE idx = ? AND seq = ?"),
        insertChunk: prepare<[number, number, string]>("INSERT INTO raft_snapshot_chunk (idx, seq, data) VALUES (?, ?, ?)"),
        deleteChunksAt: prepare<[number]>("DELETE FROM raft_snapshot_chunk WHERE idx = ?"),
        deleteChunksBut: prepare<[number]>("DELETE FROM raft_snapshot_chunk WHERE idx != ?"),
        setSnapshot: prepare<[number, number, string, string, number]>(
          `INSERT INTO raft_snapshot (id, idx, term, conf_state, data, checksum) VALUES (1, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET idx = excluded.idx, term = excluded.term,
              conf_state = excluded.conf_state, data = excluded.data, checksum = excluded.checksum`
        )
      }),
      catch: fail
    })

    // Everything below runs inside `read` or `write` and throws: a `StorageCorrupt`, a `Misuse` or
    // a SQLite error.

    const toEntry = (row: EntryRow): Entry => {
      if (!entryKinds.has(row.kind)) throw corrupt(`log entry ${row.idx} has an unknown kind "${row.kind}"`)
      const entry: Entry = { index: row.idx, term: row.term, kind: row.kind as EntryKind, data: row.data }
      const computed = entryChecksum(entry)
      if (computed !== row.checksum) {
        throw corrupt(`log entry ${row.idx} fails its checksum (stored ${row.checksum}, computed ${computed})`)
      }
      return entry
    }

    interface Bounds {
      readonly first: number
      readonly prevTerm: number
      readonly last: number
    }
    /** The log's bounds as last written; undefined until read, or after a failed write. */
    let known: Bounds | undefined
    const bounds = (): Bounds => {
      if (known === undefined) {
        const start = statements.logStart.get()
        if (start === undefined) throw corrupt("the log's start record is missing")
        const max = statements.maxIndex.get()?.m ?? null
        known = { first: start.first_index, prevTerm: start.prev_term, last: max ?? start.first_index - 1 }
      }
      return known
    }

    const metadataOf = (row: { idx: number; term: number; conf_state: string }): SnapshotMetadata => {
      let confState: ConfState
      try {
        confState = JSON.parse(row.conf_state) as ConfState
      } catch {
        throw corrupt(`the snapshot at index ${row.idx} has an unreadable configuration`)
      }
      return { index: row.idx, term: row.term, confState }
    }

    /** The stored snapshot's row: metadata and checksum, and its data if it came from the leader. */
    const readSnapshotRow = () => {
      const row = statements.snapshot.get()
      if (row === undefined) return undefined
      return { metadata: metadataOf(row), data: row.data, checksum: row.checksum }
    }

    /** The stored snapshot's metadata alone (its data, up to the whole state, is not read). */
    const readSnapshotMetadata = (): SnapshotMetadata | undefined => {
      const row = statements.snapshotMetadata.get()
      return row === undefined ? undefined : metadataOf(row)
    }

    /**
     * The stored snapshot, verified. One this node took is stored in chunks (see `saveSnapshot`) and
     * read so, a read per chunk, yielding to the event loop between them: read at once, ~40 MB
     * (100,000 VMs) held the loop for 200 ms and more, and a leader reads it each time it starts
     * sending it to a follower (`raft/SnapshotSending.ts`). One from the leader is stored whole. A
     * newer snapshot stored meanwhile (the older one's chunks go with it) is read instead.
     */
    const readSnapshot: Effect.Effect<Option.Option<Snapshot>, StorageError> = Effect.gen(function* () {
      for (;;) {
        const row = yield* read(readSnapshotRow)
        if (row === undefined) return Option.none()
        const { metadata, checksum } = row
        const pieces: Array<string> = []
        let computed = snapshotHeaderChecksum(metadata)
        for (let seq = 0; ; seq++) {
          const chunk = yield* read(() => statements.snapshotChunk.get(metadata.index, seq))
          if (chunk === undefined) break
          pieces.push(chunk.data)
          computed = crc32(chunk.data, computed)
          yield* Effect.sleep(Duration.zero)
        }
        if (pieces.length > 0 && (yield* read(storedSnapshotIndex)) !== metadata.index) continue
        if (pieces.length === 0) {
          pieces.push(row.data)
          computed = crc32(row.data, computed)
        }
        if (computed !== checksum) {
          return yield* Effect.fail(corrupt(`the snapshot at index ${metadata.index} fails its checksum (stored ${checksum}, computed ${computed})`))
        }
        return Option.some({ metadata, data: pieces.length === 1 ? pieces[0]! : pieces.join("") })
      }
    })

    const readHardState = (): HardState => {
      const row = statements.hardState.get()
      if (row === undefined) return emptyHardState
      const hs: HardState = { term: row.term, vote: row.vote, commit: row.commit_index }
      const computed = hardStateChecksum(hs)
      if (computed !== row.checksum) {
        throw corrupt(`the Raft hard state fails its checksum (stored ${row.checksum}, computed ${computed})`)
      }
      return hs
    }

    const readEntries = (lo: number, hi: number): ReadonlyArray<Entry> => {
      const rows = statements.entries.all(lo, hi)
      if (rows.length !== hi - lo) {
        const missing = rows.findIndex((row, i) => row.idx !== lo + i)
        const at = missing === -1 ? lo + rows.length : lo + missing
        throw corrupt(`log entry ${at} is missing (expected entries ${lo} to ${hi - 1})`)
      }
      return rows.map(toEntry)
    }

    /** A snapshot from the leader, in `save`'s one transaction: stored whole, replacing any chunks. */
    const writeSnapshot = (snapshot: Snapshot): void => {
      const m = snapshot.metadata
      statements.deleteChunksBut.run(0)
      statements.setSnapshot.run(m.index, m.term, JSON.stringify(m.confState), snapshot.data, snapshotChecksum(m, snapshot.data))
    }

    const storedSnapshotIndex = (): number => statements.snapshotIndex.get()?.idx ?? 0

    /**
     * A snapshot this node took, stored in chunks of `snapshotChunkChars`, each its own transaction,
     * yielding to the event loop between them: one statement writing ~40 MB (100,000 VMs) held the
     * event loop for ~300 ms, its CRC for more. The `raft_snapshot` row, written last with the
     * checksum of all the chunks, makes the new snapshot the stored one, in the same transaction
     * that removes the previous one's chunks; the durability sync after it covers every chunk (one
     * WAL, flushed as a whole). Chunks of a write cut short are removed by the next snapshot.
     */
    const saveSnapshotInChunks = (snapshot: Snapshot) =>
      Effect.gen(function* () {
        const m = snapshot.metadata
        if ((yield* read(storedSnapshotIndex)) >= m.index) return
        let checksum = snapshotHeaderChecksum(m)
        const pieces = cut(snapshot.data, snapshotChunkChars)
        for (let seq = 0; seq < pieces.length; seq++) {
          const piece = pieces[seq]!
          checksum = crc32(piece, checksum)
          yield* Effect.catchAll(
            connection.transaction(() => {
              if (seq === 0) statements.deleteChunksAt.run(m.index)
              statements.insertChunk.run(m.index, seq, piece)
            }),
            failure
          )
          yield* Effect.sleep(Duration.zero)
        }
        yield* write(() => {
          // A snapshot from the leader stored meanwhile is newer: keep it (see `saveSnapshot`).
          if (storedSnapshotIndex() >= m.index) return void statements.deleteChunksAt.run(m.index)
          statements.setSnapshot.run(m.index, m.term, JSON.stringify(m.confState), "", checksum)
          statements.deleteChunksBut.run(m.index)
        })
      })

    const read = <A>(f: () => A): Effect.Effect<A, StorageError> => Effect.catchAll(connection.use(f), failure)

    /** Runs `f` as one transaction, then makes it durable. After a failure the bounds are read again. */
    const write = (f: () => void): Effect.Effect<void, StorageError> =>
      connection.transaction(f).pipe(
        Effect.catchAll((e) => {
          known = undefined
          return failure(e)
        }),
        Effect.zipRight(durability.sync)
      )

    const save = (batch: SaveBatch) =>
      write(() => {
        let after: Bounds | undefined
        if (batch.snapshot !== undefined) {
          const m = batch.snapshot.metadata
          writeSnapshot(batch.snapshot)
          statements.clearLog.run()
          statements.setLogStart.run(m.index + 1, m.term)
          after = { first: m.index + 1, prevTerm: m.term, last: m.index }
        }
        const entries = batch.entries
        if (entries !== undefined && entries.length > 0) {
          checkContiguous(entries)
          const b = after ?? bounds()
          const firstNew = entries[0]!.index
          checkAppendPosition(firstNew, b.first, b.last)
          if (firstNew <= b.last) statements.truncateFrom.run(firstNew)
          for (const e of entries) statements.insertEntry.run(e.index, e.term, e.kind, e.data, entryChecksum(e))
          after = { ...b, last: entries[entries.length - 1]!.index }
        }
        if (batch.hardState !== undefined) {
          const hs = batch.hardState
          statements.setHardState.run(hs.term, hs.vote, hs.commit, hardStateChecksum(hs))
        }
        if (after !== undefined) known = after
      })

    const entriesIn = (lo: number, hi: number, maxBytes: number | undefined): ReadonlyArray<Entry> => {
      const b = bounds()
      checkRange(lo, hi, b.first, b.last)
      return lo === hi ? [] : limitSize(readEntries(lo, hi), maxBytes)
    }

    const service: RaftStorageShape = {
      initialState: read(() => {
        const b = bounds()
        return {
          hardState: readHardState(),
          snapshot: Option.fromNullable(readSnapshotMetadata()),
          firstIndex: b.first,
          lastIndex: b.last
        } satisfies InitialState
      }),
      verifiedLog: (each) =>
        Effect.gen(function* () {
          const b = yield* read(bounds)
          // A chunk per read: contiguous, every checksum (`readEntries`), terms never decreasing.
          let prevTerm = b.prevTerm
          for (let lo = b.first; lo <= b.last; lo += verifyChunk) {
            const hi = Math.min(lo + verifyChunk, b.last + 1)
            const entries = yield* read(() => readEntries(lo, hi))
            for (const e of entries) {
              if (e.term < prevTerm) {
                return yield* Effect.fail(corrupt(`log entry ${e.index} has term ${e.term}, lower than the term ${prevTerm} before it`))
              }
              prevTerm = e.term
            }
            each(entries)
            if (hi <= b.last) yield* Effect.sleep(Duration.zero)
          }
        }),
      save,
      entries: (lo, hi, maxBytes) => read(() => entriesIn(lo, hi, maxBytes)),
      entriesNow: (lo, hi, maxBytes) => {
        try {
          return entriesIn(lo, hi, maxBytes)
        } catch (e) {
          throw e instanceof Misuse || e instanceof StorageCorrupt ? e : fail(e)
        }
      },
      term: (index) =>
        read(() => {
          const b = bounds()
          if (index === b.first - 1) return Option.some(b.prevTerm)
          if (index < b.first || index > b.last) return Option.none()
          return Option.some(readEntries(index, index + 1)[0]!.term)
        }),
      firstIndex: read(() => bounds().first),
      lastIndex: read(() => bounds().last),
      snapshot: readSnapshot,
      saveSnapshot: saveSnapshotInChunks,
      compact: (index) =>
        write(() => {
          const b = bounds()
          if (index === b.first - 1) return
          if (index < b.first || index > b.last) {
            misuse(`cannot compact to ${index}: the log holds [${b.first}, ${b.last}]`)
          }
          const term = readEntries(index, index + 1)[0]!.term
          statements.compactThrough.run(index)
          statements.setLogStart.run(index + 1, term)
          known = { ...b, first: index + 1, prevTerm: term }
        })
    }
    return service
  })

/** `RaftStorage` in the node's SQLite database file, opened (locked, checked, migrated) by this layer. */
export const layerFile = (
  options: Database.DatabaseOptions
): Layer.Layer<RaftStorage | Database.Connection | SqlClient.SqlClient | Database.Durability, StorageError> =>
  Layer.effect(RaftStorage, makeSql(options)).pipe(Layer.provideMerge(Database.layer(options)))

// ---------------------------------------------------------------------------------------------
// Memory

/** What a store holds: the node's view, or what its disk holds durably. */
export class MemoryImage {
  hardState: HardState = emptyHardState
  snapshot: Snapshot | undefined = undefined
  firstIndex = 1
  prevTerm = 0
  log: Array<Entry> = []

  get lastIndex(): number {
    return this.firstIndex + this.log.length - 1
  }

  /** Makes this image hold exactly what `other` holds. */
  copyFrom(other: MemoryImage): void {
    this.hardState = other.hardState
    this.snapshot = other.snapshot
    this.firstIndex = other.firstIndex
    this.prevTerm = other.prevTerm
    this.log = other.log.slice()
  }
}

/** One committed write (a transaction of the file layer), replayed on each image it reaches. */
type Write = (image: MemoryImage) => void

/**
 * A node's storage, in memory, with the file layer's durability: a write is a transaction that
 * commits at once (the node reads it back from then on) and becomes durable only when the flush
 * after it (`MemoryDisk.flush`, the file layer's `Durability.sync`, an `fdatasync` of the WAL)
 * completes. The fields are the node's view; `durable` is what the disk holds.
 *
 * A crash (`crash`) decides what of the committed but unflushed writes survives — all of them when
 * only the process died (the kernel holds them), none or a prefix of them when the machine died
 * (the WAL's cumulative checksums keep a prefix of its frames, never a later write without an
 * earlier one) — and the restarted node finds the store as its disk holds it. Writes of the
 * crashed incarnation that are still running are dropped: a dead process writes nothing. `wipe` is
 * a data directory removed.
 */
export class MemoryStore extends MemoryImage {
  readonly durable = new MemoryImage()
  /** Committed, not yet flushed, oldest first. */
  private unflushed: Array<Write> = []
  /** Writes committed and flushed so far (sequence numbers). */
  private committedSeq = 0
  private flushedSeq = 0
  /** Bumped at every crash and wipe: a layer built before it writes nothing more. */
  epoch = 0

  /** How many committed writes a crash of the machine could lose now. */
  get unflushedWrites(): number {
    return this.unflushed.length
  }

  /** Commits `write` for the incarnation of `epoch`; its sequence number, or undefined if that incarnation is gone. */
  commit(epoch: number, write: Write): number | undefined {
    if (epoch !== this.epoch) return undefined
    write(this)
    this.unflushed.push(write)
    return ++this.committedSeq
  }

  /** Writes up to `seq` of the incarnation of `epoch` reached the disk. */
  flushed(epoch: number, seq: number): void {
    if (epoch !== this.epoch) return
    while (this.flushedSeq < seq && this.unflushed.length > 0) {
      this.unflushed.shift()!(this.durable)
      this.flushedSeq++
    }
  }

  /**
   * The node's process stops (a crash, or it exits): the first `keep` unflushed writes reach the
   * disk, the rest are lost, and the store is what the disk holds.
   */
  crash(keep: number): void {
    const survive = Math.min(keep, this.unflushed.length)
    for (let i = 0; i < survive; i++) this.unflushed[i]!(this.durable)
    this.unflushed = []
    this.flushedSeq = this.committedSeq
    this.copyFrom(this.durable)
    this.epoch++
  }

  /** The data directory is removed: the node starts as a new, empty one. */
  wipe(): void {
    this.unflushed = []
    this.flushedSeq = this.committedSeq
    this.durable.copyFrom(new MemoryImage())
    this.copyFrom(this.durable)
    this.epoch++
  }
}

/**
 * The disk under a `MemoryStore`: `flush` completes when every write committed before it is
 * durable, or fails as `fdatasync` does (the node must then stop: what the kernel held may be
 * gone). A disk that never completes a flush is a stalled one.
 */
export interface MemoryDisk {
  readonly flush: Effect.Effect<void, StorageError>
}

const saveWrite = (batch: SaveBatch): Write => (image) => {
  if (batch.snapshot !== undefined) {
    image.snapshot = batch.snapshot
    image.log = []
    image.firstIndex = batch.snapshot.metadata.index + 1
    image.prevTerm = batch.snapshot.metadata.term
  }
  const entries = batch.entries
  if (entries !== undefined && entries.length > 0) {
    image.log.length = entries[0]!.index - image.firstIndex
    for (const e of entries) image.log.push(e)
  }
  if (batch.hardState !== undefined) image.hardState = batch.hardState
}

const compactWrite = (index: number): Write => (image) => {
  image.prevTerm = image.log[index - image.firstIndex]!.term
  image.log = image.log.slice(index + 1 - image.firstIndex)
  image.firstIndex = index + 1
}

/** Without a disk, every write is flushed as it commits. */
export const makeMemory = (store: MemoryStore = new MemoryStore(), disk?: MemoryDisk): RaftStorageShape => {
  const epoch = store.epoch
  const at = (index: number) => store.log[index - store.firstIndex]!
  const entriesNow = (lo: number, hi: number, maxBytes: number | undefined): ReadonlyArray<Entry> => {
    checkRange(lo, hi, store.firstIndex, store.lastIndex)
    return limitSize(store.log.slice(lo - store.firstIndex, hi - store.firstIndex), maxBytes)
  }
  /** Commits `write` (after `check`, which throws on misuse: a defect), then flushes. */
  const write = (check: () => void, write: Write): Effect.Effect<void, StorageError> =>
    Effect.flatMap(
      Effect.sync(() => {
        if (epoch === store.epoch) check()
        return store.commit(epoch, write)
      }),
      (seq) => {
        // This incarnation crashed: it never returns (its fibers are about to stop).
        if (seq === undefined) return Effect.never
        const flushed = Effect.suspend(() => (epoch === store.epoch ? Effect.sync(() => store.flushed(epoch, seq)) : Effect.never))
        return disk === undefined ? flushed : Effect.zipRight(disk.flush, flushed)
      }
    )
  return {
    initialState: Effect.sync(() => ({
      hardState: store.hardState,
      snapshot: Option.map(Option.fromNullable(store.snapshot), (s) => s.metadata),
      firstIndex: store.firstIndex,
      lastIndex: store.lastIndex
    })),
    verifiedLog: (each) =>
      Effect.sync(() => {
        if (store.log.length > 0) each(store.log.slice())
      }),
    save: (batch) =>
      write(() => {
        const entries = batch.entries
        if (entries !== undefined && entries.length > 0) {
          checkContiguous(entries)
          const first = batch.snapshot !== undefined ? batch.snapshot.metadata.index + 1 : store.firstIndex
          const last = batch.snapshot !== undefined ? batch.snapshot.metadata.index : store.lastIndex
          checkAppendPosition(entries[0]!.index, first, last)
        }
      }, saveWrite(batch)),
    entries: (lo, hi, maxBytes) => Effect.sync(() => entriesNow(lo, hi, maxBytes)),
    entriesNow,
    term: (index) =>
      Effect.sync(() => {
        if (index === store.firstIndex - 1) return Option.some(store.prevTerm)
        if (index < store.firstIndex || index > store.lastIndex) return Option.none()
        return Option.some(at(index).term)
      }),
    firstIndex: Effect.sync(() => store.firstIndex),
    lastIndex: Effect.sync(() => store.lastIndex),
    snapshot: Effect.sync(() => Option.fromNullable(store.snapshot)),
    saveSnapshot: (snapshot) =>
      write(
        () => {},
        (image) => {
          // A snapshot not newer than the stored one is ignored (as the file layer does): a leader's
          // snapshot may be installed while the node's own, older one is still being written.
          if (image.snapshot === undefined || image.snapshot.metadata.index < snapshot.metadata.index) image.snapshot = snapshot
        }
      ),
    compact: (index) =>
      Effect.suspend(() =>
        index === store.firstIndex - 1
          ? Effect.void
          : write(() => {
              if (index < store.firstIndex || index > store.lastIndex) {
                misuse(`cannot compact to ${index}: the log holds [${store.firstIndex}, ${store.lastIndex}]`)
              }
            }, compactWrite(index))
      )
  }
}

/**
 * `RaftStorage` in memory, for tests and the simulator; pass a store to keep it across restarts,
 * and a disk to make flushes take time, stall or fail.
 */
export const layerMemory = (store?: MemoryStore, disk?: MemoryDisk): Layer.Layer<RaftStorage> =>
  Layer.sync(RaftStorage, () => makeMemory(store, disk))
