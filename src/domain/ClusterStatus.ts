import { Schema } from "effect"
import { NodeId } from "./NodeId.js"

export const MemberRole = Schema.Literal("leader", "follower", "candidate", "learner", "unknown")
export type MemberRole = typeof MemberRole.Type

/** One member as the answering node (the leader, for the replication figures) sees it. */
export class MemberStatus extends Schema.Class<MemberStatus>("MemberStatus")({
  id: NodeId,
  address: Schema.String,
  role: MemberRole,
  /** Highest log index known to be replicated on the member (leader's view). */
  match: Schema.Int.pipe(Schema.nonNegative()),
  /** Entries the member is behind the leader's last index. */
  lag: Schema.Int.pipe(Schema.nonNegative()),
  /** Milliseconds since the leader last heard from the member; absent when unknown. */
  lastContactMs: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { exact: true }),
  /** The log version the member's release registered (`cluster/ClusterVersion.ts`); absent until it registers. */
  logVersion: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true })
}) {}

export class ClusterStatus extends Schema.Class<ClusterStatus>("ClusterStatus")({
  /** The cluster's identity, chosen when it was founded (absent while the answering node does not know it). */
  clusterId: Schema.optionalWith(Schema.String.pipe(Schema.maxLength(64)), { exact: true }),
  /** The node that answered. */
  node: NodeId,
  leader: Schema.optionalWith(NodeId, { exact: true }),
  term: Schema.Int.pipe(Schema.nonNegative()),
  commit: Schema.Int.pipe(Schema.nonNegative()),
  applied: Schema.Int.pipe(Schema.nonNegative()),
  members: Schema.Array(MemberStatus),
  /** The cluster's replicated log version (`cluster/ClusterVersion.ts`); absent from nodes of older releases. */
  clusterVersion: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true })
}) {}
