/**
 * The messages Raft peers exchange, as Effect Schemas so the transport can validate everything
 * received from the network before the core sees it (`Schema.decodeUnknownEither(Message)`).
 *
 * A discriminated union on `type`. Every message carries `from`, `to` and `term` (the sender's
 * current term; 0 on the two "forwarded to the leader" requests, which are treated like local
 * requests, as in etcd). Local events (tick, propose, campaign, report*) are methods on the core,
 * never messages.
 */
import { Schema } from "effect"
import { Entry, LogIndex, RaftId, SnapshotMetadata } from "./Types.js"

const header = {
  from: RaftId,
  to: RaftId,
  /** The sender's term (0 only on `readIndex` and `transferLeader`, which are forwarded requests). */
  term: LogIndex
}

/** AppendEntries. `index`/`logTerm` identify the entry preceding `entries`. */
export const MsgApp = Schema.Struct({
  type: Schema.Literal("app"),
  ...header,
  index: LogIndex,
  logTerm: LogIndex,
  entries: Schema.Array(Entry),
  commit: LogIndex
})
export type MsgApp = typeof MsgApp.Type

/**
 * Answer to `app` (and to a completed or failed `snap`). On success `index` is the follower's
 * last index that now matches the leader. On rejection `index` echoes the rejected `app.index` and
 * (`rejectHint`, `logTerm`) is the follower's hint for fast back-off: the largest index ≤ the
 * probed index whose term is ≤ the probed term, and that term.
 */
export const MsgAppResp = Schema.Struct({
  type: Schema.Literal("appResp"),
  ...header,
  index: LogIndex,
  reject: Schema.Boolean,
  rejectHint: LogIndex,
  logTerm: LogIndex
})
export type MsgAppResp = typeof MsgAppResp.Type

const voteFields = {
  ...header,
  /** The candidate's last log index and term. */
  index: LogIndex,
  logTerm: LogIndex,
  /** Set by a leadership transfer: voters then ignore their leader lease (CheckQuorum). */
  transfer: Schema.Boolean
}

/** RequestVote. */
export const MsgVote = Schema.Struct({ type: Schema.Literal("vote"), ...voteFields })
export type MsgVote = typeof MsgVote.Type

/** PreVote request: "would you vote for me at `term`?" Does not change anybody's term. */
export const MsgPreVote = Schema.Struct({ type: Schema.Literal("preVote"), ...voteFields })
export type MsgPreVote = typeof MsgPreVote.Type

export const MsgVoteResp = Schema.Struct({ type: Schema.Literal("voteResp"), ...header, reject: Schema.Boolean })
export type MsgVoteResp = typeof MsgVoteResp.Type

export const MsgPreVoteResp = Schema.Struct({ type: Schema.Literal("preVoteResp"), ...header, reject: Schema.Boolean })
export type MsgPreVoteResp = typeof MsgPreVoteResp.Type

/**
 * Heartbeat. `commit` is min(follower's match, leader's commit) so a follower never commits past
 * what it is known to hold. `context` carries a ReadIndex request id being confirmed.
 *
 * `round` and `proven` are the driver's, not the core's (`ContactProof.ts`): the leader's heartbeat
 * round this heartbeat belongs to, and the newest `stamp` of the recipient's that reached the leader
 * before a round a quorum of voters has acknowledged in this term.
 */
export const MsgHeartbeat = Schema.Struct({
  type: Schema.Literal("heartbeat"),
  ...header,
  commit: LogIndex,
  context: Schema.optional(Schema.String),
  round: Schema.optional(LogIndex),
  proven: Schema.optional(LogIndex)
})
export type MsgHeartbeat = typeof MsgHeartbeat.Type

/**
 * Answer to `heartbeat`. `round` and `stamp` are the driver's (`ContactProof.ts`): the newest round
 * of this leader's the sender had received, and the sender's clock (milliseconds) before it sent this.
 */
export const MsgHeartbeatResp = Schema.Struct({
  type: Schema.Literal("heartbeatResp"),
  ...header,
  context: Schema.optional(Schema.String),
  round: Schema.optional(LogIndex),
  stamp: Schema.optional(LogIndex)
})
export type MsgHeartbeatResp = typeof MsgHeartbeatResp.Type

/**
 * One chunk of an InstallSnapshot. The snapshot's `data` is split into pieces of at most
 * `maxSizePerMsg` characters; the chunk at `offset` carries `data`, and the snapshot is complete when
 * `offset + data.length === totalSize`. The follower reassembles chunks in order and acknowledges
 * each with `snapAck`.
 */
export const MsgSnap = Schema.Struct({
  type: Schema.Literal("snap"),
  ...header,
  metadata: SnapshotMetadata,
  offset: LogIndex,
  totalSize: LogIndex,
  data: Schema.String
})
export type MsgSnap = typeof MsgSnap.Type

/**
 * The data of the chunk at `offset` of a snapshot whose data is `data`, chunks being at most
 * `maxSizePerMsg` characters: what the core puts in a `snap` message when its storage holds the
 * data, and what the driver fills in when it does not (`SnapshotSending.ts`).
 */
export const snapshotChunk = (data: string, offset: number, maxSizePerMsg: number): string =>
  offset === 0 && data.length <= maxSizePerMsg ? data : data.slice(offset, offset + maxSizePerMsg)

/**
 * A follower's progress through a snapshot being sent: it holds the first `received` characters of
 * the snapshot at `index` without a gap. The leader sends further chunks only as these arrive (see
 * `Raft.sendSnapshotChunks`), and a re-sent transmission resumes from `received`. The completed
 * snapshot is answered with `appResp`, as before.
 */
export const MsgSnapAck = Schema.Struct({
  type: Schema.Literal("snapAck"),
  ...header,
  index: LogIndex,
  received: LogIndex
})
export type MsgSnapAck = typeof MsgSnapAck.Type

/** Leadership transfer: the leader tells a caught-up follower to campaign at once. */
export const MsgTimeoutNow = Schema.Struct({ type: Schema.Literal("timeoutNow"), ...header })
export type MsgTimeoutNow = typeof MsgTimeoutNow.Type

/** A follower forwards a ReadIndex request (its `context`) to the leader. */
export const MsgReadIndex = Schema.Struct({ type: Schema.Literal("readIndex"), ...header, context: Schema.String })
export type MsgReadIndex = typeof MsgReadIndex.Type

/** The leader's answer to a forwarded ReadIndex: read once applied ≥ `index`. */
export const MsgReadIndexResp = Schema.Struct({
  type: Schema.Literal("readIndexResp"),
  ...header,
  index: LogIndex,
  context: Schema.String
})
export type MsgReadIndexResp = typeof MsgReadIndexResp.Type

/** A follower forwards a leadership-transfer request to the leader. */
export const MsgTransferLeader = Schema.Struct({
  type: Schema.Literal("transferLeader"),
  ...header,
  transferee: RaftId
})
export type MsgTransferLeader = typeof MsgTransferLeader.Type

export const Message = Schema.Union(
  MsgApp,
  MsgAppResp,
  MsgVote,
  MsgVoteResp,
  MsgPreVote,
  MsgPreVoteResp,
  MsgHeartbeat,
  MsgHeartbeatResp,
  MsgSnap,
  MsgSnapAck,
  MsgTimeoutNow,
  MsgReadIndex,
  MsgReadIndexResp,
  MsgTransferLeader
)
export type Message = typeof Message.Type
export type MessageType = Message["type"]
