import { Schema } from "effect"

/** A cluster member's id: a positive integer, fixed for the life of the node's data directory. */
export const NodeId = Schema.Int.pipe(
  Schema.positive({ message: () => "a node id is a positive integer (1, 2, 3, …)" }),
  Schema.lessThanOrEqualTo(2 ** 31 - 1, { message: () => "a node id must be at most 2147483647" }),
  Schema.brand("NodeId")
)
export type NodeId = typeof NodeId.Type
