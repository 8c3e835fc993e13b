import { describe, expect, it } from "@effect/vitest"
import { tempDir } from "../support/TempDir.js"
import { Cause, Effect, Exit, Fiber, Layer, Option } from "effect"
import * as path from "node:path"
import * as SqlClient from "@effect/sql/SqlClient"
import { StorageIo } from "../../src/domain/Errors.js"
import type { Entry, Snapshot } from "../../src/raft/Types.js"
import * as Database from "../../src/storage/Database.js"
import { layerFile, layerMemory, makeMemory, makeSql, MemoryStore, RaftStorage } from "../../src/storage/RaftStorage.js"

const entry = (index: number, term: number, data = `cmd-${index}`): Entry => ({ index, term, kind: "normal", data })
const range = (lo: number, hi: number, term: number) => Array.from({ length: hi - lo + 1 }, (_, i) => entry(lo + i, term))

const tempFile = () => path.join(tempDir("storage"), "node.db")

const snapshotAt = (index: number, term: number): Snapshot => ({
  metadata: { index, term, confState: { voters: [1, 2, 3], learners: [4] } },
  data: JSON.stringify({ vms: ["web"], at: index })
})

/** The same contract, checked against every layer. */
const layers: ReadonlyArray<readonly [string, () => Layer.Layer<RaftStorage, unknown>]> = [
  ["memory", () => layerMemory()],
  ["sqlite :memory:", () => layerFile({ filename: ":memory:" })],
  ["sqlite file", () => layerFile({ filename: tempFile() })]
]

for (const [name, make] of layers) {
  describe(`RaftStorage (${name})`, () => {
    const run = <A, E>(effect: Effect.Effect<A, E, RaftStorage>) =>
      Effect.runPromise(Effect.scoped(Effect.provide(effect, make())) as Effect.Effect<A, never>)

    it("starts empty: no hard state, log [1, 0], no snapshot", () =>
      run(
        Effect.gen(function* () {
          const s = yield* RaftStorage
          const init = yield* s.initialState
          expect(init.hardState).toEqual({ term: 0, vote: 0, commit: 0 })
          expect(init.firstIndex).toBe(1)
          expect(init.lastIndex).toBe(0)
          expect(Option.isNone(init.snapshot)).toBe(true)
          expect(yield* s.term(0)).toEqual(Option.some(0))
          expect(yield* s.term(1)).toEqual(Option.none())
        })
      ))

    it("appends entries and reads ranges back", () =>
      run(
        Effect.gen(function* () {
          const s = yield* RaftStorage
          yield* s.save({ entries: range(1, 5, 1), hardState: { term: 1, vote: 2, commit: 3 } })
          yield* s.save({ entries: range(6, 8, 2) })
          expect(yield* s.lastIndex).toBe(8)
          expect(yield* s.entries(2, 5)).toEqual([entry(2, 1), entry(3, 1), entry(4, 1)])
          expect(yield* s.entries(4, 4)).toEqual([])
          expect(yield* s.term(7)).toEqual(Option.some(2))
          expect((yield* s.initialState).hardState).toEqual({ term: 1, vote: 2, commit: 3 })
        })
      ))

    it("limits a read by bytes but always returns at least one entry", () =>
      run(
        Effect.gen(function* () {
          const s = yield* RaftStorage
          const big = "x".repeat(1000)
          yield* s.save({ entries: [1, 2, 3, 4].map((i) => entry(i, 1, big)) })
          expect((yield* s.entries(1, 5, 10)).map((e) => e.index)).toEqual([1])
          expect((yield* s.entries(1, 5, 2100)).map((e) => e.index)).toEqual([1, 2])
          expect((yield* s.entries(1, 5)).length).toBe(4)
        })
      ))

    it("truncates a conflicting suffix when entries are appended over it", () =>
      run(
        Effect.gen(function* () {
          const s = yield* RaftStorage
          yield* s.save({ entries: range(1, 6, 1) })
          // A new leader's log diverges from index 4 on.
          yield* s.save({ entries: [entry(4, 3, "new-4"), entry(5, 3, "new-5")] })
          expect(yield* s.lastIndex).toBe(5)
          expect(yield* s.entries(3, 6)).toEqual([entry(3, 1), entry(4, 3, "new-4"), entry(5, 3, "new-5")])
          expect(yield* s.term(6)).toEqual(Option.none())
        })
      ))

    it("refuses to leave a gap in the log", () =>
      run(
        Effect.gen(function* () {
          const s = yield* RaftStorage
          yield* s.save({ entries: range(1, 3, 1) })
          const exit = yield* Effect.exit(s.save({ entries: [entry(5, 1)] }))
          expect(Exit.isFailure(exit) && String(Exit.isFailure(exit) ? exit.cause : "")).toMatch(/gap after 3/)
          expect(yield* s.lastIndex).toBe(3)
        })
      ))

    it("compacts up to an index, keeping the term of the last compacted entry", () =>
      run(
        Effect.gen(function* () {
          const s = yield* RaftStorage
          yield* s.save({ entries: [...range(1, 4, 1), ...range(5, 9, 2)] })
          yield* s.saveSnapshot(snapshotAt(6, 2))
          yield* s.compact(6)
          expect(yield* s.firstIndex).toBe(7)
          expect(yield* s.lastIndex).toBe(9)
          expect(yield* s.term(6)).toEqual(Option.some(2))
          expect(yield* s.term(5)).toEqual(Option.none())
          expect(yield* s.entries(7, 10)).toEqual(range(7, 9, 2))
          expect(Option.getOrThrow(yield* s.snapshot)).toEqual(snapshotAt(6, 2))
          const exit = yield* Effect.exit(s.entries(5, 8))
          expect(Exit.isFailure(exit)).toBe(true)
          // Appending below the log's start would rewrite what the snapshot covers.
          expect(Exit.isFailure(yield* Effect.exit(s.save({ entries: [entry(6, 3)] })))).toBe(true)
        })
      ))

    it("installs a snapshot from the leader, replacing the whole log", () =>
      run(
        Effect.gen(function* () {
          const s = yield* RaftStorage
          yield* s.save({ entries: range(1, 5, 1) })
          yield* s.save({ snapshot: snapshotAt(20, 4), entries: range(21, 22, 4), hardState: { term: 4, vote: 0, commit: 20 } })
          const init = yield* s.initialState
          expect(init.firstIndex).toBe(21)
          expect(init.lastIndex).toBe(22)
          expect(Option.getOrThrow(init.snapshot)).toEqual(snapshotAt(20, 4).metadata)
          expect(yield* s.term(20)).toEqual(Option.some(4))
          expect(yield* s.entries(21, 23)).toEqual(range(21, 22, 4))
        })
      ))

    it("a local snapshot written after a newer one from the leader was installed is ignored", () =>
      run(
        Effect.gen(function* () {
          const s = yield* RaftStorage
          yield* s.save({ entries: range(1, 8, 1) })
          // The driver captured a snapshot at 6 and writes it on the side; meanwhile the leader's (at
          // 20) is installed. The older write, landing last, must not replace it.
          yield* s.save({ snapshot: snapshotAt(20, 4), hardState: { term: 4, vote: 0, commit: 20 } })
          yield* s.saveSnapshot(snapshotAt(6, 1))
          expect(Option.getOrThrow(yield* s.snapshot)).toEqual(snapshotAt(20, 4))
          expect(yield* s.firstIndex).toBe(21)
          yield* s.saveSnapshot(snapshotAt(20, 4))
          expect(Option.getOrThrow(yield* s.snapshot)).toEqual(snapshotAt(20, 4))
        })
      ))
  })
}

describe("RaftStorage over SQLite: a snapshot the node took is stored in chunks", () => {
  it("a snapshot of several chunks, a surrogate pair across a chunk boundary, survives reopening; the previous one's chunks go", async () => {
    const file = tempFile()
    const chunk = 1 << 20
    // "😀" is two UTF-16 units: put its first at the end of the first chunk.
    const big = "a".repeat(chunk - 1) + "😀" + "b".repeat(chunk) + "ç".repeat(1000)
    const snap = (index: number, data: string): Snapshot => ({ metadata: { index, term: 2, confState: { voters: [1], learners: [] } }, data })
    const write = Effect.gen(function* () {
      const s = yield* RaftStorage
      yield* s.save({ entries: range(1, 9, 2), hardState: { term: 2, vote: 1, commit: 9 } })
      yield* s.saveSnapshot(snap(4, "x".repeat(3 * chunk)))
      yield* s.saveSnapshot(snap(8, big))
      const sql = yield* SqlClient.SqlClient
      return yield* sql<{ idx: number; n: number }>`SELECT idx, count(*) AS n FROM raft_snapshot_chunk GROUP BY idx`
    })
    const chunks = await Effect.runPromise(Effect.scoped(Effect.provide(write, layerFile({ filename: file }))))
    expect(chunks).toEqual([{ idx: 8, n: 3 }])
    const read = Effect.gen(function* () {
      const s = yield* RaftStorage
      return yield* s.snapshot
    })
    const stored = await Effect.runPromise(Effect.scoped(Effect.provide(read, layerFile({ filename: file }))))
    expect(Option.getOrThrow(stored)).toEqual(snap(8, big))
  })

  it("a snapshot is read a chunk at a time, and one replaced while it is read is read again as the newer one", async () => {
    const chunk = 1 << 20
    const snap = (index: number, data: string): Snapshot => ({ metadata: { index, term: 2, confState: { voters: [1], learners: [] } }, data })
    const taken = snap(4, "x".repeat(chunk) + "y".repeat(chunk) + "z")
    const fromLeader = snap(9, "from the leader")
    const run = Effect.gen(function* () {
      const s = yield* RaftStorage
      yield* s.save({ entries: range(1, 5, 2), hardState: { term: 2, vote: 1, commit: 5 } })
      yield* s.saveSnapshot(taken)
      const whole = yield* s.snapshot
      // Started, the read yields to the event loop after its first chunk: a snapshot from the leader
      // is stored then, and the chunks of the one being read go.
      const reading = yield* Effect.fork(s.snapshot)
      yield* Effect.yieldNow()
      yield* s.save({ snapshot: fromLeader })
      return { whole, replaced: yield* Fiber.join(reading) }
    })
    const { whole, replaced } = await Effect.runPromise(Effect.scoped(Effect.provide(run, layerFile({ filename: tempFile() }))))
    expect(Option.getOrThrow(whole)).toEqual(taken)
    expect(Option.getOrThrow(replaced)).toEqual(fromLeader)
  })
})

describe("RaftStorage durability", () => {
  it("a file survives closing and reopening: hard state, log, snapshot", async () => {
    const file = tempFile()
    const write = Effect.gen(function* () {
      const s = yield* RaftStorage
      yield* s.save({ entries: range(1, 10, 3), hardState: { term: 3, vote: 1, commit: 8 } })
      yield* s.saveSnapshot(snapshotAt(5, 3))
      yield* s.compact(4)
    })
    await Effect.runPromise(Effect.scoped(Effect.provide(write, layerFile({ filename: file }))))
    const read = Effect.gen(function* () {
      const s = yield* RaftStorage
      return { init: yield* s.initialState, entries: yield* s.entries(5, 11), snap: yield* s.snapshot }
    })
    const { init, entries, snap } = await Effect.runPromise(Effect.scoped(Effect.provide(read, layerFile({ filename: file }))))
    expect(init).toEqual({
      hardState: { term: 3, vote: 1, commit: 8 },
      snapshot: Option.some(snapshotAt(5, 3).metadata),
      firstIndex: 5,
      lastIndex: 10
    })
    expect(entries).toEqual(range(5, 10, 3))
    expect(Option.getOrThrow(snap)).toEqual(snapshotAt(5, 3))
  })

  it("a memory store outlives a simulated restart", async () => {
    const store = new MemoryStore()
    await Effect.runPromise(
      Effect.provide(
        Effect.flatMap(RaftStorage, (s) => s.save({ entries: range(1, 3, 1), hardState: { term: 1, vote: 1, commit: 2 } })),
        layerMemory(store)
      )
    )
    const init = await Effect.runPromise(Effect.provide(Effect.flatMap(RaftStorage, (s) => s.initialState), layerMemory(store)))
    expect(init.lastIndex).toBe(3)
    expect(init.hardState.commit).toBe(2)
  })
})

describe("RaftStorage over SQLite: every write is flushed before it returns", () => {
  /** `makeSql` over a real file, with a `Durability` that records each flush and how many entries the log held by then. */
  const counted = (filename: string, fail = false) => {
    const flushes: Array<number> = []
    const durability = Layer.effect(
      Database.Durability,
      Effect.map(SqlClient.SqlClient, (sql) => ({
        sync: sql<{ n: number }>`SELECT count(*) AS n FROM raft_log`.pipe(
          Effect.orDie,
          Effect.flatMap((rows) => {
            flushes.push(rows[0]!.n)
            return fail ? Effect.fail(new StorageIo({ subject: filename, message: "flush failed" })) : Effect.void
          })
        )
      }))
    )
    const database = Database.layer({ filename })
    const layer = Layer.effect(RaftStorage, makeSql({ filename })).pipe(
      Layer.provide(Layer.provideMerge(durability, database))
    )
    return { flushes, layer }
  }

  it("save, saveSnapshot and compact each flush once, after their transaction committed", async () => {
    const filename = tempFile()
    const { flushes, layer } = counted(filename)
    await Effect.runPromise(
      Effect.scoped(
        Effect.provide(
          Effect.gen(function* () {
            const s = yield* RaftStorage
            yield* s.save({ entries: range(1, 5, 1), hardState: { term: 1, vote: 1, commit: 0 } })
            expect(flushes).toEqual([5])
            yield* s.save({ entries: range(6, 8, 1) })
            expect(flushes).toEqual([5, 8])
            yield* s.saveSnapshot(snapshotAt(4, 1))
            yield* s.compact(4)
            expect(flushes).toEqual([5, 8, 8, 4])
          }),
          layer
        )
      )
    )
  })

  it("a failed flush fails the write with BLX_STORAGE_IO: the caller never takes it for durable", async () => {
    const { layer } = counted(tempFile(), true)
    const exit = await Effect.runPromiseExit(
      Effect.scoped(Effect.provide(Effect.flatMap(RaftStorage, (s) => s.save({ entries: range(1, 2, 1) })), layer))
    )
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isFailure(exit)) expect(String(exit.cause)).toMatch(/flush failed/)
  })
})

describe("RaftStorage over SQLite: a save is one transaction", () => {
  it("a save that fails part-way leaves nothing of it behind, and fails with BLX_STORAGE_IO naming the file", async () => {
    const filename = tempFile()
    const exit = await Effect.runPromiseExit(
      Effect.scoped(
        Effect.provide(
          Effect.gen(function* () {
            const s = yield* RaftStorage
            yield* s.save({ entries: range(1, 3, 1), hardState: { term: 1, vote: 1, commit: 1 } })
            // Entry 5 breaks the log table's CHECK (term > 0) after 4 was inserted and before the hard state.
            const failed = yield* Effect.exit(
              s.save({ entries: [entry(4, 2), entry(5, 0)], hardState: { term: 2, vote: 2, commit: 3 } })
            )
            expect(Exit.isFailure(failed) && Cause.squash(failed.cause)).toMatchObject({ code: "BLX_STORAGE_IO", subject: filename })
            expect(yield* s.lastIndex).toBe(3)
            expect(yield* s.entries(1, 4)).toEqual(range(1, 3, 1))
            expect((yield* s.initialState).hardState).toEqual({ term: 1, vote: 1, commit: 1 })
            // The log goes on from where it really ends.
            yield* s.save({ entries: [entry(4, 2)] })
            expect(yield* s.entries(3, 5)).toEqual([entry(3, 1), entry(4, 2)])
          }),
          layerFile({ filename })
        )
      )
    )
    expect(exit).toEqual(Exit.void)
  })

  it("misuse (a gap in the log) is a defect, not a storage error, and writes nothing", async () => {
    const exit = await Effect.runPromiseExit(
      Effect.scoped(
        Effect.provide(
          Effect.gen(function* () {
            const s = yield* RaftStorage
            yield* s.save({ entries: range(1, 3, 1) })
            const gap = yield* Effect.exit(s.save({ snapshot: snapshotAt(10, 2), entries: [entry(12, 2)] }))
            expect(Exit.isFailure(gap) && Cause.isDie(gap.cause)).toBe(true)
            expect(String(Exit.isFailure(gap) ? Cause.squash(gap.cause) : "")).toMatch(/gap after 10/)
            expect(Option.isNone(yield* s.snapshot)).toBe(true)
            expect(yield* s.lastIndex).toBe(3)
          }),
          layerFile({ filename: tempFile() })
        )
      )
    )
    expect(exit).toEqual(Exit.void)
  })

  it("a save waits for a transaction open on the SqlClient, so its statements never join it", async () => {
    const events: Array<string> = []
    const exit = await Effect.runPromiseExit(
      Effect.scoped(
        Effect.provide(
          Effect.gen(function* () {
            const s = yield* RaftStorage
            const sql = yield* SqlClient.SqlClient
            const open = sql.withTransaction(
              Effect.gen(function* () {
                yield* sql`INSERT INTO node_meta (key, value) VALUES ('k', 'v')`
                events.push("sql: inserted")
                yield* Effect.sleep("20 millis")
                events.push("sql: committing")
              })
            )
            const fiber = yield* Effect.fork(open)
            yield* Effect.yieldNow()
            yield* s.save({ entries: range(1, 2, 1) })
            events.push("save: done")
            yield* fiber.await
            const rows = yield* sql<{ value: string }>`SELECT value FROM node_meta WHERE key = 'k'`
            expect(rows).toEqual([{ value: "v" }])
          }),
          layerFile({ filename: tempFile() })
        )
      )
    )
    expect(exit).toEqual(Exit.void)
    expect(events).toEqual(["sql: inserted", "sql: committing", "save: done"])
  })
})

describe("RaftStorage in memory over a disk: durable only once flushed, as the file layer", () => {
  /** A disk whose flushes wait until `release` (or fail, once `failing`). */
  const manualDisk = () => {
    const waiting: Array<(e: Effect.Effect<void, StorageIo>) => void> = []
    let failing = false
    return {
      disk: {
        flush: Effect.async<void, StorageIo>((resume) => {
          if (failing) resume(Effect.fail(new StorageIo({ subject: "disk", message: "EIO" })))
          else waiting.push(resume)
        })
      },
      release: () => waiting.splice(0).forEach((resume) => resume(Effect.void)),
      fail: () => {
        failing = true
      }
    }
  }

  it("a save is read back at once but is durable only after its flush; a machine crash before it loses the save, a process crash keeps it", async () => {
    for (const machine of [true, false]) {
      const store = new MemoryStore()
      const d = manualDisk()
      const storage = makeMemory(store, d.disk)
      const first = Effect.runFork(storage.save({ entries: range(1, 2, 1), hardState: { term: 1, vote: 1, commit: 0 } }))
      await Effect.runPromise(Effect.yieldNow())
      d.release()
      await Effect.runPromise(Fiber.join(first))
      const pending = Effect.runFork(storage.save({ entries: range(3, 4, 2), hardState: { term: 2, vote: 1, commit: 2 } }))
      await Effect.runPromise(Effect.yieldNow())
      expect(await Effect.runPromise(storage.lastIndex)).toBe(4)
      expect(store.durable.lastIndex).toBe(2)
      expect(store.unflushedWrites).toBe(1)
      store.crash(machine ? 0 : Infinity)
      d.release()
      // The crashed incarnation's save never completes.
      await Effect.runPromise(Effect.yieldNow())
      expect(pending.unsafePoll()).toBeNull()
      const init = await Effect.runPromise(makeMemory(store).initialState)
      expect(init.lastIndex).toBe(machine ? 2 : 4)
      expect(init.hardState.term).toBe(machine ? 1 : 2)
      await Effect.runPromise(Fiber.interrupt(pending))
    }
  })

  it("a machine crash keeps a prefix of the unflushed writes, never a later one without an earlier one", async () => {
    const store = new MemoryStore()
    const d = manualDisk()
    const storage = makeMemory(store, d.disk)
    for (const [lo, term] of [[1, 1], [2, 2], [3, 3]] as const) Effect.runFork(storage.save({ entries: [entry(lo, term)] }))
    await Effect.runPromise(Effect.yieldNow())
    expect(store.unflushedWrites).toBe(3)
    store.crash(2)
    expect(store.lastIndex).toBe(2)
    expect(store.log.map((e) => e.term)).toEqual([1, 2])
    // A write of the crashed incarnation changes nothing.
    Effect.runFork(storage.save({ entries: [entry(3, 9)] }))
    await Effect.runPromise(Effect.yieldNow())
    expect(store.lastIndex).toBe(2)
  })

  it("a failed flush fails the save with the storage error; the write stays unflushed, so a crash then loses it", async () => {
    const store = new MemoryStore()
    const d = manualDisk()
    d.fail()
    const exit = await Effect.runPromise(Effect.exit(makeMemory(store, d.disk).save({ entries: range(1, 1, 1) })))
    expect(Exit.isFailure(exit) && Cause.failureOption(exit.cause).pipe(Option.map((e) => e._tag), Option.getOrUndefined)).toBe("StorageIo")
    expect(store.unflushedWrites).toBe(1)
    store.crash(0)
    expect(store.lastIndex).toBe(0)
  })

  it("a wiped store is empty, durably, and the old incarnation writes nothing to it", async () => {
    const store = new MemoryStore()
    const storage = makeMemory(store)
    await Effect.runPromise(storage.save({ entries: range(1, 3, 1), hardState: { term: 1, vote: 2, commit: 3 } }))
    expect(store.durable.lastIndex).toBe(3)
    store.wipe()
    Effect.runFork(storage.save({ entries: [entry(1, 5)] }))
    await Effect.runPromise(Effect.yieldNow())
    const init = await Effect.runPromise(makeMemory(store).initialState)
    expect(init).toEqual({ hardState: { term: 0, vote: 0, commit: 0 }, snapshot: Option.none(), firstIndex: 1, lastIndex: 0 })
  })
})
