/**
 * The requests `RaftNode` holds for its callers — proposals, reads, leadership transfers — and the
 * errors it answers them with.
 *
 * A caller's request waits in the driver as a `Waiting`: the loop resolves it when the Raft core's
 * outcome is known (`ProposalWaiters.ts`, `ReadIndexReads.ts`, `LeaderTransfers.ts`), and the
 * ticker fails it with `Timeout` once its deadline passes, even while the loop is stuck (say, in a
 * save the disk does not finish). Each holder fails its own at the deadline (`expire`, given a
 * `Due`) and at shutdown.
 */
import { Effect } from "effect"
import { InvalidArgument, NotLeader, type ProposalDropped, Timeout, Unavailable } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import type { ProposeResult } from "./Raft.js"

export type ProposeFailure = NotLeader | Unavailable | Timeout | ProposalDropped | InvalidArgument

/** A request waiting in the driver, failed with `Timeout` by the ticker once `deadline` passes. */
export interface Waiting<A, E> {
  /** Resumes the waiting caller with the outcome (once; a caller gone meanwhile ignores it). */
  readonly done: (outcome: Effect.Effect<A, E>) => void
  /** Clock milliseconds. */
  readonly deadline: number
  /** What it is, for the timeout's message. */
  readonly what: string
}

/** A linearizable read or a leadership transfer: both fail with `NotLeader` or `Timeout`. */
export type LeaderWaiter = Waiting<void, NotLeader | Timeout>

/**
 * Whether a request's deadline has passed, by the ticker's reading of the clock; one asked of every
 * request still waiting also notes the earliest deadline not passed yet (`Deadlines.earliest`).
 */
export type Due = (w: { readonly deadline: number }) => boolean

/** One expiry round of the ticker at `now`: `due` for every holder, and the earliest deadline left (Infinity: none). */
export class Deadlines {
  earliest = Number.POSITIVE_INFINITY
  constructor(private readonly now: number) {}
  readonly due: Due = (w) => {
    if (w.deadline <= this.now) return true
    if (w.deadline < this.earliest) this.earliest = w.deadline
    return false
  }
}

/** The errors the driver answers requests with, naming the node and what to do next. */
export class RequestErrors {
  readonly node: NodeId
  constructor(
    readonly id: number,
    private readonly requestTimeoutMs: number
  ) {
    this.node = NodeId.make(id)
  }

  notLeader(leader: number): NotLeader {
    return new NotLeader({
      node: this.node,
      message:
        leader !== 0
          ? `node ${this.id} is not the leader; node ${leader} is`
          : `node ${this.id} is not the leader and knows of none (an election may be under way); retry shortly`,
      ...(leader !== 0 ? { leader: NodeId.make(leader) } : {})
    })
  }

  /** Why the core refused a proposal. */
  refused(result: Extract<ProposeResult, { ok: false }>): ProposeFailure {
    switch (result.reason) {
      case "notLeader":
        return this.notLeader(result.leader)
      case "transferInProgress":
        return new Unavailable({ node: this.node, message: `leadership is moving to node ${result.transferee}; retry shortly` })
      case "uncommittedSizeExceeded":
        return new Unavailable({ node: this.node, message: `too many writes are waiting to commit on node ${this.id}; retry shortly` })
      case "confChangePending":
        return new Unavailable({
          node: this.node,
          message: `a membership change (entry ${result.pendingIndex}) is still being applied; retry when it is done`
        })
      case "invalidConfChange":
        return new InvalidArgument({ node: this.node, message: result.detail })
    }
  }

  timedOut(what: string): Timeout {
    return new Timeout({
      node: this.node,
      message: `${what} did not complete within ${this.requestTimeoutMs} ms on node ${this.id} (no quorum reachable?); its outcome is unknown — check, then retry`
    })
  }

  /** The requests of `list` still waiting; those `due` are failed with `Timeout`. */
  live<W extends LeaderWaiter>(list: Array<W>, due: Due): Array<W> {
    return list.filter((w) => {
      if (!due(w)) return true
      w.done(Effect.fail(this.timedOut(w.what)))
      return false
    })
  }
}
