/**
 * The SQLite Raft log.
 *
 * Append throughput with full durability (every `save` returns after `Durability.sync`, an
 * `fdatasync` of the WAL): 1 KiB entries, one entry per transaction and 100 per transaction.
 *
 * CPU per replicated write: the process's CPU time per entry of `save` with the flush left out
 * (it runs on the thread pool, off the event loop), in batches of 10 entries of ~300-byte command
 * JSON plus the hard state — what a follower's main thread spends on each entry it stores.
 */
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Entry } from "../src/raft/Types.js"
import * as Database from "../src/storage/Database.js"
import { layerFile, makeSql, RaftStorage } from "../src/storage/RaftStorage.js"

export interface AppendResult {
  readonly name: string
  readonly entriesPerTransaction: number
  readonly transactions: number
  readonly entriesPerSecond: number
  readonly transactionsPerSecond: number
  readonly p50TransactionMs: number
  readonly p99TransactionMs: number
}

export interface SaveCpuResult {
  readonly name: string
  readonly entriesPerTransaction: number
  readonly entries: number
  readonly cpuMicrosPerEntry: number
}

const payload = "x".repeat(1024)

const appendRun = (entriesPerTransaction: number, seconds: number) =>
  Effect.gen(function* () {
    const storage = yield* RaftStorage
    const latencies: Array<number> = []
    let next = 1
    const started = performance.now()
    while (performance.now() - started < seconds * 1000) {
      const entries: Array<Entry> = []
      for (let i = 0; i < entriesPerTransaction; i++) entries.push({ index: next + i, term: 1, kind: "normal", data: payload })
      const t0 = performance.now()
      yield* storage.save({ entries, hardState: { term: 1, vote: 1, commit: next } })
      latencies.push(performance.now() - t0)
      next += entriesPerTransaction
    }
    const elapsed = (performance.now() - started) / 1000
    latencies.sort((a, b) => a - b)
    const pick = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!
    return {
      name: `append 1 KiB entries, ${entriesPerTransaction} per transaction`,
      entriesPerTransaction,
      transactions: latencies.length,
      entriesPerSecond: Math.round((next - 1) / elapsed),
      transactionsPerSecond: Math.round(latencies.length / elapsed),
      p50TransactionMs: Number(pick(0.5).toFixed(3)),
      p99TransactionMs: Number(pick(0.99).toFixed(3))
    } satisfies AppendResult
  })

/** A CreateVm command as a log entry carries it (~300 bytes). */
const command = (i: number) =>
  JSON.stringify({
    command: {
      _tag: "CreateVm",
      spec: {
        name: `vm-${i}`,
        source: { _tag: "Runner", path: "/nix/store/0123456789abcdefghijklmnopqrstuv-bench-runner" },
        vcpus: 1,
        memoryMiB: 16,
        labels: { team: "bench", tier: "web" },
        constraints: [],
        restartPolicy: "never"
      }
    },
    proposedAt: 1_700_000_000_000 + i,
    requestId: `req-${i}-0123456789abcdef`
  })

const cpuMillis = () => {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1000
}

const saveCpuRun = (entriesPerTransaction: number, transactions: number) =>
  Effect.gen(function* () {
    const storage = yield* RaftStorage
    let next = 1
    const batch = () =>
      Array.from({ length: entriesPerTransaction }, (): Entry => {
        const index = next++
        return { index, term: 1, kind: "normal", data: command(index) }
      })
    const save = (entries: ReadonlyArray<Entry>) =>
      storage.save({ entries, hardState: { term: 1, vote: 1, commit: entries[0]!.index } })
    for (let i = 0; i < 300; i++) yield* save(batch()) // warm up
    const batches = Array.from({ length: transactions }, batch)
    const t0 = cpuMillis()
    for (const entries of batches) yield* save(entries)
    const entries = transactions * entriesPerTransaction
    return {
      name: `CPU of save per entry, ${entriesPerTransaction} ~300-byte entries per transaction, flush left out`,
      entriesPerTransaction,
      entries,
      cpuMicrosPerEntry: Number((((cpuMillis() - t0) * 1000) / entries).toFixed(2))
    } satisfies SaveCpuResult
  })

/** Runs `use` on a database file in a fresh temporary directory, removed afterwards. */
export const inTempDir = <A, E>(use: (filename: string) => Effect.Effect<A, E>) =>
  Effect.suspend(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-bench-storage-"))
    return use(path.join(dir, "node.db")).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
  })

export const benchStorage = (seconds = 5): Promise<ReadonlyArray<AppendResult | SaveCpuResult>> =>
  Effect.runPromise(
    Effect.gen(function* () {
      const appends = yield* Effect.forEach([1, 100], (batch) =>
        inTempDir((filename) => Effect.scoped(Effect.provide(appendRun(batch, seconds), layerFile({ filename }))))
      )
      const cpu = yield* inTempDir((filename) => {
        const noFlush = Layer.succeed(Database.Durability, { sync: Effect.void })
        const storage = Layer.effect(RaftStorage, makeSql({ filename })).pipe(
          Layer.provide(Layer.merge(Database.layer({ filename }), noFlush))
        )
        return Effect.scoped(Effect.provide(saveCpuRun(10, 3000), storage))
      })
      return [...appends, cpu]
    })
  )
