/**
 * The proposals (`propose`, `proposeConfChange`) `RaftNode` accepted, each waiting for its entry to
 * be applied, by log index.
 *
 * A proposal's waiter resolves with the state machine's result when the entry at its index is
 * applied with its term; an entry of another term there means a new leader overwrote it (the write
 * was dropped, retry it). A snapshot that replaces the log up to a waiter's index leaves its outcome
 * unknown. A proposal at an index this node proposed at in an earlier term means the earlier entry
 * left the leader's log uncommitted: its waiter fails at once (`unsafeOverwriteProposalWaiters`
 * re-injects the bug where it never completed). Accepted and refused proposals are counted into the
 * metrics once per batch of the loop.
 */
import { Effect } from "effect"
import { ProposalDropped } from "../domain/Errors.js"
import * as Metrics from "../metrics/Metrics.js"
import type { ProposeResult } from "./Raft.js"
import type { Due, ProposeFailure, RequestErrors, Waiting } from "./Requests.js"
import type { Entry } from "./Types.js"

interface Pending extends Waiting<unknown, ProposeFailure> {
  readonly term: number
}

const proposalOutcome = { accepted: Metrics.tags(["outcome", "accepted"]), refused: Metrics.tags(["outcome", "refused"]) }

export class ProposalWaiters {
  private readonly pending = new Map<number, Pending>()
  /** Proposals the loop took in the current batch, counted into the metrics once per batch. */
  private accepted = 0
  private refusedCount = 0

  constructor(
    private readonly errors: RequestErrors,
    private readonly unsafeOverwrite: boolean
  ) {}

  /** Takes the core's answer to a proposal: a waiter at its index, or the refusal for the caller. */
  register(result: ProposeResult, request: Waiting<unknown, ProposeFailure>): void {
    if (!result.ok) {
      this.refusedCount++
      return request.done(Effect.fail(this.errors.refused(result)))
    }
    this.accepted++
    const earlier = this.pending.get(result.index)
    if (earlier !== undefined && !this.unsafeOverwrite) {
      // This node proposed at this index before, in an earlier term, and has led again since: the
      // earlier entry is no longer in the leader's log, so it was never committed.
      earlier.done(
        Effect.fail(
          new ProposalDropped({ node: this.errors.node, message: `a new leader wrote another entry at index ${result.index}; the write was not applied; retry it` })
        )
      )
    }
    this.pending.set(result.index, { term: result.term, done: request.done, deadline: request.deadline, what: request.what })
  }

  /** Counts the batch's proposals into the metrics (once per batch of the loop). */
  countBatch(): void {
    if (this.accepted > 0) Metrics.raftProposals.unsafeUpdate(this.accepted, proposalOutcome.accepted)
    if (this.refusedCount > 0) Metrics.raftProposals.unsafeUpdate(this.refusedCount, proposalOutcome.refused)
    this.accepted = 0
    this.refusedCount = 0
  }

  /** Resolves the waiters of the entries just applied with their results (`results[i]`: `entries[i]`'s). */
  settle(entries: ReadonlyArray<Entry>, results: ReadonlyArray<unknown>): void {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!
      const p = this.pending.get(e.index)
      if (p === undefined) continue
      this.pending.delete(e.index)
      if (p.term === e.term) p.done(Effect.succeed(results[i]))
      else p.done(Effect.fail(new ProposalDropped({ node: this.errors.node, message: `the write was overwritten by a new leader at index ${e.index}; retry it` })))
    }
  }

  /** A snapshot installed from the leader replaced the log up to `index`: the waiters there learn nothing more. */
  replacedBy(index: number): void {
    for (const [at, p] of this.pending) {
      if (at > index) continue
      this.pending.delete(at)
      p.done(
        Effect.fail(new ProposalDropped({ node: this.errors.node, message: `a snapshot replaced the log at index ${at}; the write may or may not have applied` }))
      )
    }
  }

  /** Fails the waiters `due` with `Timeout`: the write may still commit later; its outcome is unknown. */
  expire(due: Due): void {
    for (const [index, p] of this.pending) {
      if (!due(p)) continue
      this.pending.delete(index)
      p.done(Effect.fail(this.errors.timedOut(p.what)))
    }
  }

  /** Fails every waiter with `stopping` (the node shuts down). */
  shutdown(stopping: ProposalDropped): void {
    for (const p of this.pending.values()) p.done(Effect.fail(stopping))
    this.pending.clear()
  }
}
