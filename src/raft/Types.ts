/**
 * The values the Raft core shares with storage and the transport: log entries, hard state,
 * membership configuration and snapshot metadata. Schema-first so that anything read from disk or
 * received from a peer is validated before the core sees it.
 */
import { Schema } from "effect"

/** A Raft log index or term: a non-negative safe integer. Index 0 / term 0 mean "none". */
export const LogIndex = Schema.Int.pipe(Schema.nonNegative())
export type LogIndex = typeof LogIndex.Type

/** Node ids inside Raft are positive integers; 0 stands for "no node" (no vote, no leader). */
export const RaftId = Schema.Int.pipe(Schema.positive())
export type RaftId = typeof RaftId.Type
export const None = 0

/**
 * What an entry carries. `normal` entries carry an opaque state-machine command (JSON text);
 * `confChange` entries carry a membership change (see `ConfChange`); `empty` is the no-op a new
 * leader appends to commit entries of earlier terms.
 */
export const EntryKind = Schema.Literal("normal", "confChange", "empty")
export type EntryKind = typeof EntryKind.Type

export const Entry = Schema.Struct({
  index: LogIndex,
  term: LogIndex,
  kind: EntryKind,
  data: Schema.String
})
export type Entry = typeof Entry.Type

export const HardState = Schema.Struct({
  term: LogIndex,
  /** The candidate voted for in `term`, or 0. */
  vote: Schema.Int.pipe(Schema.nonNegative()),
  commit: LogIndex
})
export type HardState = typeof HardState.Type

export const emptyHardState: HardState = { term: 0, vote: None, commit: 0 }

/**
 * Cluster membership. Blixard changes membership one server at a time (see the Raft core's notes),
 * so a configuration is simply the voters and the learners.
 */
export const ConfState = Schema.Struct({
  voters: Schema.Array(RaftId),
  learners: Schema.Array(RaftId)
})
export type ConfState = typeof ConfState.Type

export const ConfChangeType = Schema.Literal("addLearner", "promote", "remove")
export type ConfChangeType = typeof ConfChangeType.Type

export const ConfChange = Schema.Struct({
  type: ConfChangeType,
  nodeId: RaftId,
  /** Where the node can be reached, carried so every member learns the address with the change. */
  address: Schema.optionalWith(Schema.String, { exact: true })
})
export type ConfChange = typeof ConfChange.Type

export const SnapshotMetadata = Schema.Struct({
  index: LogIndex,
  term: LogIndex,
  confState: ConfState
})
export type SnapshotMetadata = typeof SnapshotMetadata.Type

export const Snapshot = Schema.Struct({
  metadata: SnapshotMetadata,
  /** The state machine's serialised state at `metadata.index`. */
  data: Schema.String
})
export type Snapshot = typeof Snapshot.Type

/**
 * A snapshot as a `LogStorage` shows it to the core: the metadata, the size of the data in
 * characters, and the data itself unless the storage keeps only the metadata (`undefined`). A
 * driver's mirror keeps only the metadata (`MemoryStorage.mirror`): its durable storage holds the
 * data, which the driver reads only to send the snapshot to a follower (`SnapshotSending.ts`), as
 * etcd's server attaches its backend database to a snapshot message at send time.
 */
export interface StoredSnapshot {
  readonly metadata: SnapshotMetadata
  readonly size: number
  readonly data: string | undefined
}

/** A snapshot with its data, as a storage that keeps the data shows it. */
export const storedSnapshot = (s: Snapshot): StoredSnapshot => ({ metadata: s.metadata, size: s.data.length, data: s.data })

/** Approximate in-memory and on-disk size of an entry, for batching and the uncommitted-bytes cap. */
export const entrySize = (entry: Entry): number => entry.data.length + 24

/**
 * Size of an entry's payload alone, the measure etcd uses for the uncommitted-bytes cap (the empty
 * entry a new leader appends counts as 0, so it can never be refused).
 */
export const payloadSize = (entry: Entry): number => entry.data.length

/** The role a Raft node currently plays. */
export type StateRole = "follower" | "preCandidate" | "candidate" | "leader"

/** Volatile state that the driver may want to observe (not persisted). */
export interface SoftState {
  readonly lead: number
  readonly role: StateRole
}

/**
 * The answer to a `readIndex(context)` request: once the local state machine has applied up to
 * `index`, a read served from it is linearizable. `context` is the caller's request id, echoed.
 */
export interface ReadState {
  readonly index: number
  readonly context: string
}

/** An empty snapshot (index 0): "no snapshot". */
export const emptySnapshotMetadata: SnapshotMetadata = { index: 0, term: 0, confState: { voters: [], learners: [] } }
export const emptySnapshot: Snapshot = { metadata: emptySnapshotMetadata, data: "" }

/**
 * Apply a single-server membership change to a configuration, purely. Invalid changes (adding an
 * existing member, promoting a non-learner, removing a non-member) return the configuration unchanged.
 * The driver may use this to persist the configuration in the same transaction as the applied index.
 */
export const applyChangeToConfState = (cs: ConfState, cc: ConfChange): ConfState => {
  const isVoter = cs.voters.includes(cc.nodeId)
  const isLearner = cs.learners.includes(cc.nodeId)
  switch (cc.type) {
    case "addLearner":
      if (isVoter || isLearner) return cs
      return { voters: cs.voters, learners: [...cs.learners, cc.nodeId].sort((a, b) => a - b) }
    case "promote":
      if (!isLearner) return cs
      return {
        voters: [...cs.voters, cc.nodeId].sort((a, b) => a - b),
        learners: cs.learners.filter((id) => id !== cc.nodeId)
      }
    case "remove":
      if (!isVoter && !isLearner) return cs
      return {
        voters: cs.voters.filter((id) => id !== cc.nodeId),
        learners: cs.learners.filter((id) => id !== cc.nodeId)
      }
  }
}
