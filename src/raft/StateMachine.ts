/**
 * `StateMachine`: what the Raft driver applies committed entries to. It keeps its own applied
 * index, persisted atomically with its state, so after a restart the driver re-delivers exactly the
 * entries after it.
 */
import { Context, type Effect } from "effect"
import type { StorageError } from "../storage/Database.js"
import type { Entry, Snapshot } from "./Types.js"

export interface StateMachineShape {
  /** The index of the last entry applied (0 for a fresh state). */
  readonly applied: Effect.Effect<number, StorageError>
  /**
   * Applies committed entries in order, atomically with the applied index; returns one result per
   * entry (what a proposal of that entry resolves with). `confChange` and `empty` entries only
   * advance the applied index (their result is ignored).
   */
  readonly apply: (entries: ReadonlyArray<Entry>) => Effect.Effect<ReadonlyArray<unknown>, StorageError>
  /** The state as of the applied index, serialised for a Raft snapshot. */
  readonly snapshot: Effect.Effect<string, StorageError>
  /** Replaces the whole state with a snapshot's (received from the leader, or at bootstrap). */
  readonly restore: (snapshot: Snapshot) => Effect.Effect<void, StorageError>
}

export class StateMachine extends Context.Tag("blixard/StateMachine")<StateMachine, StateMachineShape>() {}
