/**
 * `RaftNode`'s storage writes, timed, and the `BLX_STORAGE_STALLED` reports of those that take too long.
 */
import { Clock, Effect, type MetricLabel } from "effect"
import { formatError, StorageStalled } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import * as Metrics from "../metrics/Metrics.js"
import type { RaftStorageShape } from "../storage/RaftStorage.js"

/** The settings of `RaftNodeConfig` the timing reads. */
export interface StorageFlushesConfig {
  readonly id: number
  readonly storageStallMs?: number | undefined
  readonly storageLocation?: string | undefined
}

const flushOps = {
  save: Metrics.tags(["op", "save"]),
  snapshot: Metrics.tags(["op", "snapshot"]),
  compact: Metrics.tags(["op", "compact"])
}

/** `BLX_STORAGE_STALLED`: a write outstanding since `start` (Clock milliseconds) at `at`, and what to do. */
const stalledError = (config: StorageFlushesConfig, where: string, at: number, start: number): StorageStalled =>
  new StorageStalled({
    node: NodeId.make(config.id),
    ...(config.storageLocation !== undefined ? { subject: config.storageLocation } : {}),
    message:
      `node ${config.id}'s ${where} has not completed a write (flush to disk) for ${at - start} ms, since ${new Date(start).toISOString()}. ` +
      `The node proves no quorum contact while it waits, so it fences: its VMs are stopped within fencingMs of its last proven contact and the cluster starts them elsewhere. ` +
      `Check the disk behind its ${where} (dmesg, iostat -x, the volume's health); the node carries on by itself once the write completes. ` +
      `If the disk does not recover, stop the daemon and repair or replace the volume, then start it again on the same data directory (do not delete it)`
  })

/**
 * The node's `RaftStorage` with every write (each ends with a flush) timed: `since` answers when
 * the oldest write still outstanding started, and `report` (called by the ticker, which runs while
 * the loop is stuck in such a write) logs `BLX_STORAGE_STALLED` once per write outstanding longer
 * than `storageStallMs`, and that it completed when it does. Times are the last reading of the clock
 * by the loop (at each batch, before the writes it begins) or the ticker (every tick while a write
 * is outstanding): a write counts as outstanding a little longer, never shorter, and costs no clock
 * reading of its own. (The flush-latency metric reads `performance.now()`,
 * a plain call; it only measures and decides nothing, so the simulator's virtual clock is unaffected.)
 */
export const trackFlushes = (inner: RaftStorageShape, config: StorageFlushesConfig) =>
  Effect.map(Clock.currentTimeMillis, (startedAt) => {
    const stallMs = config.storageStallMs ?? 5000
    const where = config.storageLocation !== undefined ? `data directory ${config.storageLocation}` : "storage"
    let now = startedAt
    const outstanding = new Map<number, number>()
    let next = 0
    /** The write reported stalled, while it is outstanding. */
    let reported: { readonly id: number; readonly start: number } | undefined
    let completed: Effect.Effect<void> = Effect.void
    const done = (id: number, op: ReadonlyArray<MetricLabel.MetricLabel>, began: number) => {
      Metrics.raftFlushSeconds.unsafeUpdate((performance.now() - began) / 1000, op)
      outstanding.delete(id)
      if (reported?.id !== id) return
      const took = now - reported.start
      reported = undefined
      completed = Effect.logWarning(
        `node ${config.id}: the storage write reported stalled (BLX_STORAGE_STALLED) completed after about ${took} ms; the node can prove quorum contact again`
      )
    }
    const timed = <A, E, R>(op: ReadonlyArray<MetricLabel.MetricLabel>, write: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.suspend(() => {
        const id = next++
        outstanding.set(id, now)
        const began = performance.now()
        return Effect.ensuring(write, Effect.sync(() => done(id, op, began)))
      })
    const since = (): number | undefined => {
      let oldest: number | undefined
      for (const start of outstanding.values()) if (oldest === undefined || start < oldest) oldest = start
      return oldest
    }
    /** A fresher reading of the clock (the loop's, at each batch): the start of the writes it begins. */
    const observe = (at: number): void => {
      now = at
    }
    const report = (at: number): Effect.Effect<void> =>
      Effect.suspend(() => {
        now = at
        if (reported === undefined) {
          for (const [id, start] of outstanding) {
            if (at - start < stallMs) continue
            reported = { id, start }
            return Effect.logError(formatError(stalledError(config, where, at, start)))
          }
        }
        const log = completed
        completed = Effect.void
        return log
      })
    const storage: RaftStorageShape = {
      ...inner,
      save: (batch) => timed(flushOps.save, inner.save(batch)),
      saveSnapshot: (snapshot) => timed(flushOps.snapshot, inner.saveSnapshot(snapshot)),
      compact: (index) => timed(flushOps.compact, inner.compact(index))
    }
    return { storage, since, observe, report }
  })

/** The node's timed storage and what the loop and ticker read of it. */
export type StorageFlushes = Effect.Effect.Success<ReturnType<typeof trackFlushes>>
