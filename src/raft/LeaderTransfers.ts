/**
 * The leadership transfers (`transferLeader`) `RaftNode` has asked of the core, each waiting until
 * the node it names leads: resolved when a Ready's soft state names that leader, failed with
 * `Timeout` at its deadline.
 */
import { Effect } from "effect"
import type { NotLeader } from "../domain/Errors.js"
import type { Due, LeaderWaiter, RequestErrors } from "./Requests.js"

type Transfer = LeaderWaiter & { readonly to: number }

export class LeaderTransfers {
  private waiting: Array<Transfer> = []

  constructor(private readonly errors: RequestErrors) {}

  /** A transfer the core accepted. */
  add(transfer: Transfer): void {
    this.waiting.push(transfer)
  }

  /** `lead` leads now: the transfers to it are done. */
  leaderIs(lead: number): void {
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      if (this.waiting[i]!.to === lead) {
        this.waiting[i]!.done(Effect.void)
        this.waiting.splice(i, 1)
      }
    }
  }

  /** Fails the transfers `due` with `Timeout`. */
  expire(due: Due): void {
    if (this.waiting.length > 0) this.waiting = this.errors.live(this.waiting, due)
  }

  /** Fails every transfer with `gone` (the node shuts down). */
  shutdown(gone: NotLeader): void {
    for (const w of this.waiting) w.done(Effect.fail(gone))
    this.waiting = []
  }
}
