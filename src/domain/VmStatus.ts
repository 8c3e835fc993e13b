import { Schema } from "effect"
import { NodeId } from "./NodeId.js"
import { VmSpec } from "./VmSpec.js"

/** What the VM's owner asked for. `stopped` keeps the VM managed and listed; delete removes it. */
export const DesiredState = Schema.Literal("running", "stopped")
export type DesiredState = typeof DesiredState.Type

/**
 * What the hosting node's agent last observed. `pending`: not placed on any node yet (see
 * `pendingReason`); `starting`: building or launching the runner; `failed`: exited and not restarted.
 */
export const VmPhase = Schema.Literal("pending", "starting", "running", "stopping", "stopped", "failed")
export type VmPhase = typeof VmPhase.Type

const Millis = Schema.Int.pipe(Schema.nonNegative())

export class VmStatus extends Schema.Class<VmStatus>("VmStatus")({
  phase: VmPhase,
  /** Epoch milliseconds when the VM entered `phase`. */
  since: Millis,
  pid: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true }),
  exitCode: Schema.optionalWith(Schema.Int, { exact: true }),
  lastError: Schema.optionalWith(Schema.String.pipe(Schema.maxLength(4096)), { exact: true }),
  restarts: Schema.Int.pipe(Schema.nonNegative())
}) {}

/** A VM as the replicated state holds it. */
export class VmRecord extends Schema.Class<VmRecord>("VmRecord")({
  spec: VmSpec,
  desired: DesiredState,
  /** The node that hosts the VM; absent while it is pending placement. */
  node: Schema.optionalWith(NodeId, { exact: true }),
  pendingReason: Schema.optionalWith(Schema.String, { exact: true }),
  status: VmStatus,
  /** Bumped by every change to the record; an update may require it (optimistic concurrency). */
  revision: Schema.Int.pipe(Schema.positive()),
  createdAt: Millis
}) {}
