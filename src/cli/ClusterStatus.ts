/**
 * What `cluster status` shows: who leads, at which term, and the members as the replicated state
 * knows them. The answer type of the (future) REST API's cluster-status endpoint; it belongs with the
 * `HttpApi` definition in `src/api/` once that exists.
 */
import { Schema } from "effect"
import { NodeId } from "../domain/NodeId.js"
import { NodeInfo } from "../domain/NodeInfo.js"

export class ClusterStatus extends Schema.Class<ClusterStatus>("ClusterStatus")({
  /** The node that answered. */
  answeredBy: NodeId,
  /** The leader it knows of; absent during an election. */
  leader: Schema.optional(NodeId),
  term: Schema.Int.pipe(Schema.nonNegative()),
  commitIndex: Schema.Int.pipe(Schema.nonNegative()),
  nodes: Schema.Array(NodeInfo)
}) {}
