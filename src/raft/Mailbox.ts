/**
 * The `RaftNode` driver's event queue and the events it carries: clock ticks, peer messages, peer
 * restarts and callers' requests, all for the one fiber that owns the Raft core.
 */
import { Effect } from "effect"
import type { NotLeader, Timeout } from "../domain/Errors.js"
import type { Message } from "./Message.js"
import type { ProposeFailure, Waiting } from "./Requests.js"
import type { ConfChange } from "./Types.js"

export type Event =
  | { readonly _tag: "Tick"; readonly unreachable: ReadonlyArray<number> }
  | { readonly _tag: "Message"; readonly message: Message; readonly at: number }
  /** The transport found `peer` back as another incarnation (`Transport.PeerRestarted`). */
  | { readonly _tag: "PeerRestarted"; readonly peer: number }
  | ({ readonly _tag: "Propose"; readonly data: string } & Waiting<unknown, ProposeFailure>)
  | ({ readonly _tag: "ConfChange"; readonly change: ConfChange } & Waiting<unknown, ProposeFailure>)
  | ({ readonly _tag: "ReadIndex" } & Waiting<void, NotLeader | Timeout>)
  | ({ readonly _tag: "Transfer"; readonly to: number } & Waiting<void, NotLeader | Timeout>)
  | { readonly _tag: "Campaign" }

/**
 * The driver's event queue: many producers, one consumer that takes everything waiting at once.
 * An array and at most one parked taker — no `Deferred` per take, no per-event fiber hand-off — since
 * the loop takes once per batch and the simulator measured `Queue.take` as its largest cost.
 */
export class Mailbox<A> {
  private items: Array<A> = []
  private waiter: ((batch: Array<A>) => void) | undefined = undefined

  offer(item: A): void {
    this.items.push(item)
    const wake = this.waiter
    if (wake !== undefined) {
      this.waiter = undefined
      wake(this.drain())
    }
  }

  /** Removes (and returns) the waiting items `f` selects, keeping the others in order. */
  removeWhere(f: (item: A) => boolean): Array<A> {
    const removed = this.items.filter(f)
    if (removed.length > 0) this.items = this.items.filter((item) => !f(item))
    return removed
  }

  private drain(): Array<A> {
    const batch = this.items
    this.items = []
    return batch
  }

  /** Everything waiting, or (if nothing is) the next item(s) once they arrive. */
  readonly takeAll: Effect.Effect<Array<A>> = Effect.suspend(() =>
    this.items.length > 0
      ? Effect.succeed(this.drain())
      : Effect.async<Array<A>>((resume) => {
          this.waiter = (batch) => resume(Effect.succeed(batch))
          return Effect.sync(() => {
            this.waiter = undefined
          })
        })
  )
}
