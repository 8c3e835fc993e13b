/**
 * Append throughput of the SQLite Raft log with full durability (WAL, synchronous=FULL: one fsync
 * per transaction): 1 KiB entries, one entry per transaction and 100 per transaction.
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Entry } from "../src/raft/Types.js"
import { layerFile, RaftStorage } from "../src/storage/RaftStorage.js"

export interface AppendResult {
  readonly name: string
  readonly entriesPerTransaction: number
  readonly transactions: number
  readonly entriesPerSecond: number
  readonly transactionsPerSecond: number
  readonly p50TransactionMs: number
  readonly p99TransactionMs: number
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

export const benchStorage = (seconds = 5): Promise<ReadonlyArray<AppendResult>> =>
  Effect.runPromise(
    Effect.forEach([1, 100], (batch) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-bench-storage-"))
      return Effect.scoped(Effect.provide(appendRun(batch, seconds), layerFile({ filename: path.join(dir, "node.db") }))).pipe(
        Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      )
    })
  )
