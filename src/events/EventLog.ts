/**
 * The node's recent events, in index order, for `GET /v1/events`: the state machine appends the
 * events of each entry it applies (`publish`, on the Raft loop: O(1), no I/O), and every stream
 * reads on from its own cursor (`after`). Nothing is queued per client: a stream is an index into
 * this ring, so a slow client costs no memory; once the ring has overwritten what it has not read
 * yet, it is told to resync.
 *
 * What the ring holds: every batch after `floor`. A node starts with its snapshot's index as the
 * floor and re-applies its log from there, so a client can resume from any index since the node's
 * last snapshot, up to `capacity` entries back — and up to `maxEvents` events back: one entry may
 * carry thousands (a dead host's VMs moved, an agent's batch of statuses), so the ring is bounded in
 * events too, or its memory would be bounded only by `capacity` times the largest entry.
 */
import type { ClusterEvent } from "../domain/ClusterEvent.js"

/** Batches kept by default (entries with events; an entry that changed nothing takes no slot). */
export const DefaultEventHistory = 16_384

/** Events kept, by default, per batch of the capacity: the ring holds at most `capacity` × this many events (~50 MB at the default). */
export const EventsPerBatch = 16

export interface StoredBatch {
  readonly index: number
  readonly term: number
  readonly at: number | undefined
  readonly events: ReadonlyArray<ClusterEvent>
  /** The batch's JSON (the SSE `data`), written once when first read. */
  json: string | undefined
}

export const batchJson = (batch: StoredBatch): string => {
  if (batch.json === undefined) {
    batch.json = JSON.stringify(
      batch.at === undefined
        ? { index: batch.index, term: batch.term, events: batch.events }
        : { index: batch.index, term: batch.term, at: batch.at, events: batch.events }
    )
  }
  return batch.json
}

export class EventLog {
  private readonly ring: Array<StoredBatch | undefined>
  /** Where the next batch goes. */
  private next = 0
  private size = 0
  /** The events the ring's batches hold. */
  private held = 0
  /** Every batch with an index above `floor` is held (or was never there: its entry changed nothing). */
  floor = 0
  /** The last index applied (with or without events). */
  last = 0
  /** Bumped at every `reset`: a stream that saw another epoch has missed a state replacement. */
  epoch = 0
  private readonly waiting = new Set<() => void>()

  constructor(
    readonly capacity: number = DefaultEventHistory,
    readonly maxEvents: number = capacity * EventsPerBatch
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`event history must be a positive integer, not ${capacity}`)
    this.ring = new Array(capacity)
  }

  /** The entry at `index` was applied and changed what `events` say (maybe nothing). */
  publish(index: number, term: number, at: number | undefined, events: ReadonlyArray<ClusterEvent>): void {
    this.last = index
    if (events.length === 0) return
    const evicted = this.size === this.capacity ? this.ring[this.next] : undefined
    if (evicted !== undefined) {
      this.floor = evicted.index
      this.held -= evicted.events.length
    }
    this.ring[this.next] = { index, term, at, events, json: undefined }
    this.next = (this.next + 1) % this.capacity
    this.size = Math.min(this.size + 1, this.capacity)
    this.held += events.length
    // Bounded in events too: the oldest batches go (never the newest) while the ring holds too many.
    while (this.held > this.maxEvents && this.size > 1) {
      const oldest = (this.next - this.size + this.capacity) % this.capacity
      const batch = this.ring[oldest]!
      this.ring[oldest] = undefined
      this.floor = batch.index
      this.held -= batch.events.length
      this.size--
    }
    this.wake()
  }

  /**
   * The state was replaced by a snapshot at `index`: nothing before it can be replayed. A snapshot
   * at index 1 is a new cluster's founding state, which follows no entry: nothing was lost.
   */
  reset(index: number): void {
    this.ring.fill(undefined)
    this.next = 0
    this.size = 0
    this.held = 0
    this.last = index
    if (index <= 1) return void (this.floor = 0)
    this.floor = index
    this.epoch++
    this.wake()
  }

  /**
   * Up to `max` batches after `cursor`, oldest first; `undefined` when the ring no longer holds
   * everything after `cursor` (the caller must resync).
   */
  after(cursor: number, max: number): ReadonlyArray<StoredBatch> | undefined {
    if (cursor < this.floor) return undefined
    // The ring's batches, oldest first, are at (next - size + k) mod capacity; binary search the first above cursor.
    const start = (this.next - this.size + this.capacity) % this.capacity
    const at = (k: number) => this.ring[(start + k) % this.capacity]!
    let lo = 0
    let hi = this.size
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (at(mid).index <= cursor) lo = mid + 1
      else hi = mid
    }
    const out: Array<StoredBatch> = []
    for (let k = lo; k < this.size && out.length < max; k++) out.push(at(k))
    return out
  }

  /** Calls `wake` once, at the next `publish` or `reset`; returns a function that cancels it. */
  onNext(wake: () => void): () => void {
    this.waiting.add(wake)
    return () => this.waiting.delete(wake)
  }

  private wake(): void {
    if (this.waiting.size === 0) return
    const woken = [...this.waiting]
    this.waiting.clear()
    for (const wake of woken) wake()
  }
}
