/**
 * `RaftRpc`: the node↔node rpc group served on `/raft`.
 *
 * One rpc, `Raft.Deliver`: a batch of Raft messages from one sender, answered once the receiver has
 * handed them to its inbox. Messages travel as `unknown` on purpose: the receiver decodes each one
 * with the `Message` schema itself, so a single bad message is dropped and logged without losing the
 * rest of its batch, and the rpc layer never rejects a batch wholesale.
 */
import { Rpc, RpcGroup } from "@effect/rpc"
import { Schema } from "effect"
import { RaftId } from "../raft/Types.js"

export const Deliver = Rpc.make("Raft.Deliver", {
  payload: {
    /** The sending node; must match the node authenticated by the connection's handshake. */
    from: RaftId,
    messages: Schema.Array(Schema.Unknown)
  },
  success: Schema.Void
})

export class RaftRpcs extends RpcGroup.make(Deliver) {}
