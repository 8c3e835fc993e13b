/**
 * The linearizable reads (`readIndex`) `RaftNode` serves, and the ReadIndex rounds that answer them.
 *
 * Reads share rounds, as etcd's `linearizableReadLoop` does: one round in flight at a time (a
 * heartbeat broadcast on the leader, one forwarded request on a follower); the reads that arrive
 * meanwhile wait for the next round, asked once it is answered, and reads taken in one batch share
 * one. A round's read point is taken after every read it answers arrived, so each still gets at
 * least the commit index of the moment it was issued. A round unanswered after `retryMs` (a lost
 * message), or asked of a leader since replaced, is asked again with a new context, its reads
 * joining the next. A read answered with a read point resolves once this node has applied up to it.
 *
 * Contexts are unique across restarts (`prefix` carries the process's random seed and start time):
 * a leader, or a late answer still on the wire, must never match a request of this process to one
 * of an earlier process of this node (`unsafeReuseReadContexts` re-injects that bug).
 */
import { Effect } from "effect"
import type { NotLeader } from "../domain/Errors.js"
import type { RawNode } from "./RawNode.js"
import type { Due, LeaderWaiter, RequestErrors } from "./Requests.js"
import type { ReadState } from "./Types.js"

export class ReadIndexReads {
  /** The round in flight: its context, when it was asked (monotonic milliseconds), the reads it answers. */
  private round: { readonly context: string; readonly askedAt: number; reads: Array<LeaderWaiter> } | undefined
  /** The reads waiting for the next round. */
  private nextRound: Array<LeaderWaiter> = []
  /** The reads answered, waiting for this node to apply up to their read point. */
  private applying: Array<LeaderWaiter & { readonly index: number }> = []
  private counter = 0

  constructor(
    /** The contexts' common start: the node's id and this process's nonce. */
    private readonly prefix: string,
    /** How long a round may stay unanswered before it is asked again (monotonic milliseconds). */
    private readonly retryMs: number,
    private readonly errors: RequestErrors
  ) {}

  /** A read the loop took: it joins the next round. */
  add(read: LeaderWaiter): void {
    this.nextRound.push(read)
  }

  /** Asks the next ReadIndex round for the reads waiting, unless one is in flight (asked less than `retryMs` before `now`). */
  ask(raw: RawNode, now: number): void {
    if (this.round !== undefined) {
      if (now - this.round.askedAt < this.retryMs) return
      this.nextRound = this.round.reads.concat(this.nextRound)
      this.round = undefined
    }
    if (this.nextRound.length === 0) return
    const reads = this.nextRound
    this.nextRound = []
    const context = `${this.prefix}${++this.counter}`
    if (raw.readIndex(context).ok) this.round = { context, askedAt: now, reads }
    else {
      const refused = this.errors.notLeader(raw.status().lead)
      for (const r of reads) r.done(Effect.fail(refused))
    }
  }

  /** The leader changed: the round was asked of one that is gone, so its reads join the next (asked at once). */
  leaderChanged(): void {
    if (this.round !== undefined) {
      this.nextRound = this.round.reads.concat(this.nextRound)
      this.round = undefined
    }
  }

  /** A Ready's read points: the round in flight, if answered, hands its reads the read point. */
  answered(readStates: ReadonlyArray<ReadState>): void {
    for (const rs of readStates) {
      if (this.round === undefined || rs.context !== this.round.context) continue
      for (const r of this.round.reads) this.applying.push({ ...r, index: rs.index })
      this.round = undefined
    }
  }

  /** This node applied up to `index`: the reads whose read point it reached are linearizable now (answers whether any were). */
  applied(index: number): boolean {
    if (this.applying.length === 0) return false
    const still: typeof this.applying = []
    for (const w of this.applying) {
      if (w.index <= index) w.done(Effect.void)
      else still.push(w)
    }
    const answered = still.length < this.applying.length
    this.applying = still
    return answered
  }

  /** Fails the reads `due` with `Timeout`. */
  expire(due: Due): void {
    if (this.applying.length > 0) this.applying = this.errors.live(this.applying, due)
    if (this.nextRound.length > 0) this.nextRound = this.errors.live(this.nextRound, due)
    if (this.round !== undefined) {
      this.round.reads = this.errors.live(this.round.reads, due)
      // Nothing waits on it any more: the next reads need not wait for its answer.
      if (this.round.reads.length === 0) this.round = undefined
    }
  }

  /** Fails every read with `gone` (the node shuts down). */
  shutdown(gone: NotLeader): void {
    for (const w of [...(this.round?.reads ?? []), ...this.nextRound, ...this.applying]) w.done(Effect.fail(gone))
    this.round = undefined
    this.nextRound = []
    this.applying = []
  }
}
