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
  /**
   * Optional, for states too large to serialise between two Raft rounds: captures the state as of
   * the applied index cheaply (copies of its indexes, not its serialisation) and returns its
   * snapshot text in pieces, produced as they are iterated. The driver captures in its loop, then
   * iterates on the side, a piece at a time, while it keeps applying entries: the pieces must come
   * from the captured view alone. Joined, they are the text `snapshot` gives for that state.
   */
  readonly snapshotView?: Effect.Effect<Iterable<string>, StorageError>
  /** Replaces the whole state with a snapshot's (received from the leader, or at bootstrap). */
  readonly restore: (snapshot: Snapshot) => Effect.Effect<void, StorageError>
}

export class StateMachine extends Context.Tag("blixard/StateMachine")<StateMachine, StateMachineShape>() {}
