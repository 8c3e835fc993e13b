/**
 * ReadIndex bookkeeping on the leader (Raft thesis §6.4, etcd's `read_only.go`).
 *
 * The leader records its commit index for the request, then confirms it is still the leader by a
 * heartbeat round carrying the request's context; once a majority acknowledged, every request
 * queued up to and including that one is answered with its recorded index.
 *
 * There is no lease mode (answering at once, trusting that no other leader can exist within an
 * election timeout of the last quorum contact): it returned stale reads even with perfect clocks,
 * and nothing used it (see `RaftConfig.unsafeLeaseBasedReads`, which keeps it for the simulator).
 */

/** A read request waiting for leadership confirmation. `from` is 0 (or the leader) for local requests. */
export interface ReadIndexRequest {
  readonly index: number
  readonly context: string
  readonly from: number
  readonly acks: Map<number, boolean>
}

export class ReadOnly {
  private readonly pending = new Map<string, ReadIndexRequest>()
  private queue: Array<string> = []
  /** Contexts withdrawn because they were repeated while pending (see `addRequest`). */
  private readonly refused = new Set<string>()

  get size(): number {
    return this.queue.length
  }

  /**
   * Queue a request answered at `index` once confirmed. Contexts must be unique (`RaftNode`'s
   * `ReadIndexReads` puts a per-process nonce in them). A context that is already pending is
   * ambiguous — a duplicated message, or a requester that restarted and reused it — and answering
   * the later request with the earlier one's read point and heartbeat round could return a read
   * older than a write completed before it began. So the request is withdrawn and the context
   * refused for the rest of this term: neither is answered (each times out and is retried with a
   * new context).
   *
   * With `matchRepeated` (DELIBERATELY UNSAFE, see `RaftConfig.unsafeMatchRepeatedReadContexts`)
   * a repeated context is ignored, so the later request gets the earlier one's answer.
   */
  addRequest(index: number, context: string, from: number, matchRepeated = false): void {
    if (this.pending.has(context) && matchRepeated) return
    if (this.refused.has(context)) return
    if (this.pending.has(context)) {
      this.pending.delete(context)
      this.queue = this.queue.filter((c) => c !== context)
      this.refused.add(context)
      return
    }
    this.pending.set(context, { index, context, from, acks: new Map() })
    this.queue.push(context)
  }

  /** Whether `context` is waiting for its heartbeat round (false once answered or withdrawn). */
  isPending(context: string): boolean {
    return this.pending.has(context)
  }

  /** Record that `id` acknowledged the heartbeat carrying `context`; returns the acks so far. */
  recvAck(id: number, context: string): ReadonlyMap<number, boolean> | undefined {
    const rs = this.pending.get(context)
    if (rs === undefined) return undefined
    rs.acks.set(id, true)
    return rs.acks
  }

  /**
   * The request `context` is confirmed: dequeue it and every request queued before it (a
   * heartbeat round that confirms a later request confirms the earlier ones too).
   */
  advance(context: string): Array<ReadIndexRequest> {
    const at = this.queue.indexOf(context)
    if (at < 0) return []
    const done = this.queue.slice(0, at + 1)
    this.queue = this.queue.slice(at + 1)
    const out: Array<ReadIndexRequest> = []
    for (const ctx of done) {
      const rs = this.pending.get(ctx)
      if (rs === undefined) throw new Error("raft: read-only queue and pending map disagree")
      this.pending.delete(ctx)
      out.push(rs)
    }
    return out
  }

  /** The context of the most recently queued request, if any. */
  lastPendingContext(): string | undefined {
    return this.queue[this.queue.length - 1]
  }
}
