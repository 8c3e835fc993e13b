/**
 * The simulator's priority queue: a binary min-heap of events ordered by (time, insertion sequence).
 *
 * Events with equal times come out in the order they were pushed (SIMULATION.md, pitfall 5), so a
 * run's order never depends on the heap's shape. Timers are cancelled lazily: the driver keeps a
 * generation number per timer and ignores a popped event whose generation is stale.
 */

/** One queued event. `seq` is the queue-wide insertion number that breaks ties between equal times. */
export interface Scheduled<T> {
  readonly time: number
  readonly seq: number
  readonly event: T
}

const before = <T>(a: Scheduled<T>, b: Scheduled<T>): boolean =>
  a.time < b.time || (a.time === b.time && a.seq < b.seq)

export class EventQueue<T> {
  private readonly heap: Array<Scheduled<T>> = []
  private nextSeq = 0

  /** Number of queued events. */
  get size(): number {
    return this.heap.length
  }

  /** Queues `event` at `time` (any finite number); returns the queued record. */
  push(time: number, event: T): Scheduled<T> {
    if (!Number.isFinite(time)) throw new RangeError(`EventQueue.push: time must be finite, got ${time}`)
    const item: Scheduled<T> = { time, seq: this.nextSeq++, event }
    const heap = this.heap
    // Sift up with a hole instead of swaps.
    let i = heap.length
    heap.push(item)
    while (i > 0) {
      const parent = (i - 1) >> 1
      const p = heap[parent]!
      if (!before(item, p)) break
      heap[i] = p
      i = parent
    }
    heap[i] = item
    return item
  }

  /** The earliest event without removing it. */
  peek(): Scheduled<T> | undefined {
    return this.heap[0]
  }

  /** Removes and returns the earliest event (ties: first pushed), or undefined when empty. */
  pop(): Scheduled<T> | undefined {
    const heap = this.heap
    const top = heap[0]
    if (top === undefined) return undefined
    const last = heap.pop()!
    const n = heap.length
    if (n > 0) {
      // Sift `last` down from the root.
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        let c = l
        let child = heap[l]!
        if (r < n) {
          const right = heap[r]!
          if (before(right, child)) {
            c = r
            child = right
          }
        }
        if (!before(child, last)) break
        heap[i] = child
        i = c
      }
      heap[i] = last
    }
    return top
  }

  /** Drops every queued event (the sequence counter keeps counting). */
  clear(): void {
    this.heap.length = 0
  }
}
