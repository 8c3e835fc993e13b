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
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Layer, Option } from "effect"
import { StorageCorrupt } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMetadata } from "../raft/Types.js"
import { emptyHardState, entrySize } from "../raft/Types.js"
import { entryChecksum, hardStateChecksum, snapshotChecksum } from "./Checksum.js"
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
  /** Hard state, snapshot metadata and log bounds, after verifying the whole stored log. */
  readonly initialState: Effect.Effect<InitialState, StorageError>
  /** Durably and atomically: install `snapshot`, append `entries`, record `hardState`. */
  readonly save: (batch: SaveBatch) => Effect.Effect<void, StorageError>
  /** Entries `[lo, hi)`, at least one if the range is not empty, then up to `maxBytes` in all. */
  readonly entries: (lo: number, hi: number, maxBytes?: number) => Effect.Effect<ReadonlyArray<Entry>, StorageError>
  /** The term of the entry at `index`, or none if it is compacted away or beyond the log. */
  readonly term: (index: number) => Effect.Effect<Option.Option<number>, StorageError>
  readonly firstIndex: Effect.Effect<number, StorageError>
  readonly lastIndex: Effect.Effect<number, StorageError>
  readonly snapshot: Effect.Effect<Option.Option<Snapshot>, StorageError>
  /** Records a snapshot the local state machine took (at or below its applied index). The log is untouched. */
  readonly saveSnapshot: (snapshot: Snapshot) => Effect.Effect<void, StorageError>
  /** Discards entries up to and including `index` (which must be stored, or already the log's start). */
  readonly compact: (index: number) => Effect.Effect<void, StorageError>
}

export class RaftStorage extends Context.Tag("blixard/RaftStorage")<RaftStorage, RaftStorageShape>() {}

/** Misuse by the caller (a gap in the log, reading outside it): a bug, so it dies loudly. */
const misuse = (message: string): never => {
  throw new Error(`RaftStorage misuse: ${message}`)
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

const insertChunk = 400

/** `RaftStorage` over the node's SQLite database (needs a `SqlClient`, see `Database.layer`). */
export const makeSql = (options: { readonly filename: string; readonly node?: NodeId | undefined }) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const durability = yield* Database.Durability
    const fail = Database.classify(options, "using the Raft log")
    const corrupt = (message: string) =>
      new StorageCorrupt({
        subject: options.filename,
        message: `${message} in ${options.filename}; the node stops rather than serve damaged data — restore the data directory from a backup, or remove it and rejoin the node so it catches up from its peers`,
        ...(options.node !== undefined ? { node: options.node } : {})
      })
    const run = <A>(effect: Effect.Effect<A, unknown>): Effect.Effect<A, StorageError> =>
      Effect.catchAll(effect, (e) =>
        e instanceof StorageCorrupt ? Effect.fail(e) : Effect.fail(fail(e))
      ) as Effect.Effect<A, StorageError>

    const toEntry = (row: EntryRow): Effect.Effect<Entry, StorageCorrupt> => {
      if (!entryKinds.has(row.kind)) return Effect.fail(corrupt(`log entry ${row.idx} has an unknown kind "${row.kind}"`))
      const entry: Entry = { index: row.idx, term: row.term, kind: row.kind as EntryKind, data: row.data }
      const computed = entryChecksum(entry)
      return computed === row.checksum
        ? Effect.succeed(entry)
        : Effect.fail(
            corrupt(`log entry ${row.idx} fails its checksum (stored ${row.checksum}, computed ${computed})`)
          )
    }

    const logStart = Effect.flatMap(
      sql<{ first_index: number; prev_term: number }>`SELECT first_index, prev_term FROM raft_log_start WHERE id = 1`,
      (rows) =>
        rows[0] !== undefined ? Effect.succeed(rows[0]) : Effect.fail(corrupt("the log's start record is missing"))
    )
    const maxIndex = Effect.map(sql<{ m: number | null }>`SELECT max(idx) AS m FROM raft_log`, (rows) => rows[0]?.m ?? null)
    interface Bounds {
      readonly first: number
      readonly prevTerm: number
      readonly last: number
    }
    /** The log's bounds as last written; undefined until read, or after a failed write. */
    let known: Bounds | undefined
    const bounds: Effect.Effect<Bounds, unknown> = Effect.suspend(() =>
      known !== undefined
        ? Effect.succeed(known)
        : Effect.gen(function* () {
            const start = yield* logStart
            const max = yield* maxIndex
            known = { first: start.first_index, prevTerm: start.prev_term, last: max ?? start.first_index - 1 }
            return known
          })
    )
    /** Runs a write transaction that leaves the log with bounds `after` (or unchanged), then makes it durable. */
    const write = <A>(transaction: Effect.Effect<readonly [A, Bounds | undefined], unknown>): Effect.Effect<A, StorageError> =>
      run(
        Effect.onError(sql.withTransaction(transaction), () => Effect.sync(() => (known = undefined)))
      ).pipe(
        Effect.flatMap(([result, after]) => {
          if (after !== undefined) known = after
          return Effect.as(durability.sync, result)
        })
      )

    const readSnapshot = Effect.flatMap(
      sql<{ idx: number; term: number; conf_state: string; data: string; checksum: number }>`
        SELECT idx, term, conf_state, data, checksum FROM raft_snapshot WHERE id = 1`,
      (rows) => {
        const row = rows[0]
        if (row === undefined) return Effect.succeed(Option.none<Snapshot>())
        let confState: ConfState
        try {
          confState = JSON.parse(row.conf_state) as ConfState
        } catch {
          return Effect.fail(corrupt(`the snapshot at index ${row.idx} has an unreadable configuration`))
        }
        const metadata: SnapshotMetadata = { index: row.idx, term: row.term, confState }
        const computed = snapshotChecksum(metadata, row.data)
        return computed === row.checksum
          ? Effect.succeed(Option.some<Snapshot>({ metadata, data: row.data }))
          : Effect.fail(corrupt(`the snapshot at index ${row.idx} fails its checksum (stored ${row.checksum}, computed ${computed})`))
      }
    )

    const readHardState = Effect.flatMap(
      sql<{ term: number; vote: number; commit_index: number; checksum: number }>`
        SELECT term, vote, commit_index, checksum FROM raft_hard_state WHERE id = 1`,
      (rows) => {
        const row = rows[0]
        if (row === undefined) return Effect.succeed(emptyHardState)
        const hs: HardState = { term: row.term, vote: row.vote, commit: row.commit_index }
        const computed = hardStateChecksum(hs)
        return computed === row.checksum
          ? Effect.succeed(hs)
          : Effect.fail(corrupt(`the Raft hard state fails its checksum (stored ${row.checksum}, computed ${computed})`))
      }
    )

    const readEntries = (lo: number, hi: number) =>
      Effect.flatMap(
        sql<EntryRow>`SELECT idx, term, kind, data, checksum FROM raft_log WHERE idx >= ${lo} AND idx < ${hi} ORDER BY idx`,
        (rows) => {
          if (rows.length !== hi - lo) {
            const missing = rows.findIndex((row, i) => row.idx !== lo + i)
            const at = missing === -1 ? lo + rows.length : lo + missing
            return Effect.fail(corrupt(`log entry ${at} is missing (expected entries ${lo} to ${hi - 1})`))
          }
          return Effect.forEach(rows, toEntry)
        }
      )

    const writeSnapshot = (snapshot: Snapshot) => {
      const m = snapshot.metadata
      const checksum = snapshotChecksum(m, snapshot.data)
      return sql`INSERT INTO raft_snapshot (id, idx, term, conf_state, data, checksum)
        VALUES (1, ${m.index}, ${m.term}, ${JSON.stringify(m.confState)}, ${snapshot.data}, ${checksum})
        ON CONFLICT (id) DO UPDATE SET idx = excluded.idx, term = excluded.term,
          conf_state = excluded.conf_state, data = excluded.data, checksum = excluded.checksum`
    }

    const save = (batch: SaveBatch) =>
      write(
        Effect.gen(function* () {
          let after: Bounds | undefined
          if (batch.snapshot !== undefined) {
            const m = batch.snapshot.metadata
            yield* writeSnapshot(batch.snapshot)
            yield* sql`DELETE FROM raft_log`
            yield* sql`UPDATE raft_log_start SET first_index = ${m.index + 1}, prev_term = ${m.term} WHERE id = 1`
            after = { first: m.index + 1, prevTerm: m.term, last: m.index }
          }
          const entries = batch.entries
          if (entries !== undefined && entries.length > 0) {
            checkContiguous(entries)
            const b = after ?? (yield* bounds)
            const firstNew = entries[0]!.index
            checkAppendPosition(firstNew, b.first, b.last)
            if (firstNew <= b.last) yield* sql`DELETE FROM raft_log WHERE idx >= ${firstNew}`
            for (let at = 0; at < entries.length; at += insertChunk) {
              const rows = entries.slice(at, at + insertChunk).map((e) => ({
                idx: e.index,
                term: e.term,
                kind: e.kind,
                data: e.data,
                checksum: entryChecksum(e)
              }))
              yield* sql`INSERT INTO raft_log ${sql.insert(rows)}`
            }
            after = { ...b, last: entries[entries.length - 1]!.index }
          }
          if (batch.hardState !== undefined) {
            const hs = batch.hardState
            yield* sql`INSERT INTO raft_hard_state (id, term, vote, commit_index, checksum)
              VALUES (1, ${hs.term}, ${hs.vote}, ${hs.commit}, ${hardStateChecksum(hs)})
              ON CONFLICT (id) DO UPDATE SET term = excluded.term, vote = excluded.vote,
                commit_index = excluded.commit_index, checksum = excluded.checksum`
          }
          return [undefined, after] as const
        })
      )

    const service: RaftStorageShape = {
      initialState: run(
        Effect.gen(function* () {
          const hardState = yield* readHardState
          const snapshot = yield* readSnapshot
          const b = yield* bounds
          // Verify the whole log: contiguous, every checksum, terms never decreasing.
          const chunk = 2048
          let prevTerm = b.prevTerm
          for (let lo = b.first; lo <= b.last; lo += chunk) {
            const hi = Math.min(lo + chunk, b.last + 1)
            const entries = yield* readEntries(lo, hi)
            for (const e of entries) {
              if (e.term < prevTerm) {
                return yield* Effect.fail(corrupt(`log entry ${e.index} has term ${e.term}, lower than the term ${prevTerm} before it`))
              }
              prevTerm = e.term
            }
          }
          return {
            hardState,
            snapshot: Option.map(snapshot, (s) => s.metadata),
            firstIndex: b.first,
            lastIndex: b.last
          } satisfies InitialState
        })
      ),
      save,
      entries: (lo, hi, maxBytes) =>
        run(
          Effect.gen(function* () {
            const b = yield* bounds
            checkRange(lo, hi, b.first, b.last)
            if (lo === hi) return []
            return limitSize(yield* readEntries(lo, hi), maxBytes)
          })
        ),
      term: (index) =>
        run(
          Effect.gen(function* () {
            const b = yield* bounds
            if (index === b.first - 1) return Option.some(b.prevTerm)
            if (index < b.first || index > b.last) return Option.none()
            const [entry] = yield* readEntries(index, index + 1)
            return Option.some(entry!.term)
          })
        ),
      firstIndex: run(Effect.map(logStart, (s) => s.first_index)),
      lastIndex: run(Effect.map(bounds, (b) => b.last)),
      snapshot: run(readSnapshot),
      saveSnapshot: (snapshot) => write(Effect.as(writeSnapshot(snapshot), [undefined, undefined] as const)),
      compact: (index) =>
        write(
          Effect.gen(function* () {
            const b = yield* bounds
            if (index === b.first - 1) return [undefined, undefined] as const
            if (index < b.first || index > b.last) {
              misuse(`cannot compact to ${index}: the log holds [${b.first}, ${b.last}]`)
            }
            const [entry] = yield* readEntries(index, index + 1)
            yield* sql`DELETE FROM raft_log WHERE idx <= ${index}`
            yield* sql`UPDATE raft_log_start SET first_index = ${index + 1}, prev_term = ${entry!.term} WHERE id = 1`
            return [undefined, { ...b, first: index + 1, prevTerm: entry!.term }] as const
          })
        )
    }
    return service
  })

/** `RaftStorage` in the node's SQLite database file, opened (locked, checked, migrated) by this layer. */
export const layerFile = (
  options: Database.DatabaseOptions
): Layer.Layer<RaftStorage | SqlClient.SqlClient | Database.Durability, StorageError> =>
  Layer.effect(RaftStorage, makeSql(options)).pipe(Layer.provideMerge(Database.layer(options)))

// ---------------------------------------------------------------------------------------------
// Memory

/**
 * What a node keeps durably, in memory. It outlives a simulated crash: a restarted node reopens
 * the same store and finds exactly what was saved before the crash.
 */
export class MemoryStore {
  hardState: HardState = emptyHardState
  snapshot: Snapshot | undefined = undefined
  firstIndex = 1
  prevTerm = 0
  log: Array<Entry> = []

  get lastIndex(): number {
    return this.firstIndex + this.log.length - 1
  }
}

export const makeMemory = (store: MemoryStore = new MemoryStore()): RaftStorageShape => {
  const at = (index: number) => store.log[index - store.firstIndex]!
  return {
    initialState: Effect.sync(() => ({
      hardState: store.hardState,
      snapshot: Option.map(Option.fromNullable(store.snapshot), (s) => s.metadata),
      firstIndex: store.firstIndex,
      lastIndex: store.lastIndex
    })),
    save: (batch) =>
      Effect.sync(() => {
        if (batch.snapshot !== undefined) {
          store.snapshot = batch.snapshot
          store.log = []
          store.firstIndex = batch.snapshot.metadata.index + 1
          store.prevTerm = batch.snapshot.metadata.term
        }
        const entries = batch.entries
        if (entries !== undefined && entries.length > 0) {
          checkContiguous(entries)
          const firstNew = entries[0]!.index
          checkAppendPosition(firstNew, store.firstIndex, store.lastIndex)
          store.log.length = firstNew - store.firstIndex
          for (const e of entries) store.log.push(e)
        }
        if (batch.hardState !== undefined) store.hardState = batch.hardState
      }),
    entries: (lo, hi, maxBytes) =>
      Effect.sync(() => {
        checkRange(lo, hi, store.firstIndex, store.lastIndex)
        return limitSize(store.log.slice(lo - store.firstIndex, hi - store.firstIndex), maxBytes)
      }),
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
      Effect.sync(() => {
        store.snapshot = snapshot
      }),
    compact: (index) =>
      Effect.sync(() => {
        if (index === store.firstIndex - 1) return
        if (index < store.firstIndex || index > store.lastIndex) {
          misuse(`cannot compact to ${index}: the log holds [${store.firstIndex}, ${store.lastIndex}]`)
        }
        store.prevTerm = at(index).term
        store.log = store.log.slice(index + 1 - store.firstIndex)
        store.firstIndex = index + 1
      })
  }
}

/** `RaftStorage` in memory, for tests and the simulator; pass a store to keep it across restarts. */
export const layerMemory = (store?: MemoryStore): Layer.Layer<RaftStorage> =>
  Layer.sync(RaftStorage, () => makeMemory(store))
