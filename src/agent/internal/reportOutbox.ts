/**
 * The agent's status reports waiting to be sent. Per VM, its statuses in order, oldest first; a
 * status equal to the one before it (queued, last sent, or the replicated one) is not queued.
 *
 * Reports go out in batches (`next`): the oldest waiting status of each VM, by name, bounded in
 * count and in size, so one request (and one log entry, `ReportVmStatuses`) carries a host's
 * thousand VMs' `running` where it took a thousand. A VM's later statuses go in later batches, so
 * each VM's statuses are still applied in the order observed. A failed delivery keeps only each
 * VM's newest status: once the order was broken, the newest is all that matters.
 */
import type { StatusReport } from "../../domain/Command.js"
import type { VmName } from "../../domain/VmName.js"
import type { VmStatus } from "../../domain/VmStatus.js"

/** What identifies a status for "nothing new" (its `since` excluded: a status re-observed is the same status). */
export const statusKey = (s: VmStatus): string =>
  JSON.stringify([
    s.phase,
    s.pid ?? null,
    s.exitCode ?? null,
    s.lastError ?? null,
    s.restarts,
    s.generation ?? null,
    s.build === undefined ? null : [s.build.state, s.build.generation, s.build.lastLine ?? null],
    s.released ?? null
  ])

/** A batch's JSON stays under this many bytes: half the API's body limit, leaving room for the entry's envelope. */
export const MaxBatchBytes = 128 * 1024

/** The bytes a report takes in a batch's JSON (its name, its status, the punctuation around them). */
const reportBytes = (name: VmName, status: VmStatus): number => Buffer.byteLength(JSON.stringify(status)) + name.length + 32

export class ReportOutbox {
  private readonly queues = new Map<VmName, Array<VmStatus>>()
  /** Per VM: the key of the last status delivered. */
  private readonly sent = new Map<VmName, string>()

  /** Queues `status` unless it equals the last one queued, delivered or (`replicated`) in the cluster's record. */
  add(name: VmName, status: VmStatus, replicated: VmStatus): boolean {
    const queue = this.queues.get(name) ?? []
    const previous = queue.length > 0 ? statusKey(queue[queue.length - 1]!) : this.sent.get(name) ?? statusKey(replicated)
    if (previous === statusKey(status)) return false
    queue.push(status)
    this.queues.set(name, queue)
    return true
  }

  /** The VMs with statuses waiting. */
  names(): Array<VmName> {
    return [...this.queues.keys()]
  }

  /** The statuses of `name` waiting, oldest first. */
  waiting(name: VmName): ReadonlyArray<VmStatus> {
    return this.queues.get(name) ?? []
  }

  /** Drops what is known of `name` (no longer placed on this node). */
  forget(name: VmName): void {
    this.queues.delete(name)
    this.sent.delete(name)
  }

  /** The oldest waiting status of each VM, by name: at most `maxCount`, and (but for a first one larger) at most `maxBytes` of JSON. */
  next(maxCount: number, maxBytes = MaxBatchBytes): Array<StatusReport> {
    const batch: Array<StatusReport> = []
    let bytes = 0
    for (const name of [...this.queues.keys()].sort()) {
      const status = this.queues.get(name)![0]!
      const size = reportBytes(name, status)
      if (batch.length >= maxCount || (batch.length > 0 && bytes + size > maxBytes)) break
      batch.push({ name, status })
      bytes += size
    }
    return batch
  }

  /**
   * Settles `batch` (from `next`, with nothing queued since that changes its heads' order): its
   * first `delivered` reports were applied; the rest failed, and of those VMs only the newest
   * status stays.
   */
  settle(batch: ReadonlyArray<StatusReport>, delivered: number): void {
    batch.forEach(({ name, status }, i) => {
      const queue = this.queues.get(name)
      if (queue === undefined || queue[0] !== status) return
      if (i < delivered) {
        queue.shift()
        this.sent.set(name, statusKey(status))
      } else {
        queue.splice(0, queue.length - 1)
      }
      if (queue.length === 0) this.queues.delete(name)
    })
  }
}
