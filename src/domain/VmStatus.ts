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

/** Which version of a VM's spec: 0 as created, bumped by every update that needs a new runner. */
export const Generation = Schema.Int.pipe(Schema.nonNegative())

/**
 * A runner build on the hosting node (`nix build`, or linking a prebuilt runner): `building` while it
 * runs, `failed` once it failed (the error is the status's `lastError`). Absent when no build is
 * under way and the last one succeeded.
 */
export class BuildProgress extends Schema.Class<BuildProgress>("BuildProgress")({
  state: Schema.Literal("building", "failed"),
  /** The spec generation being built. */
  generation: Generation,
  /** Epoch milliseconds when the build began. */
  startedAt: Millis,
  /** The newest line of the build's output (nix's log), shortened. */
  lastLine: Schema.optionalWith(Schema.String.pipe(Schema.maxLength(512)), { exact: true })
}) {}

export class VmStatus extends Schema.Class<VmStatus>("VmStatus")({
  phase: VmPhase,
  /** Epoch milliseconds when the VM entered `phase`. */
  since: Millis,
  pid: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true }),
  exitCode: Schema.optionalWith(Schema.Int, { exact: true }),
  lastError: Schema.optionalWith(Schema.String.pipe(Schema.maxLength(4096)), { exact: true }),
  restarts: Schema.Int.pipe(Schema.nonNegative()),
  /** The spec generation of the running runner (absent: 0, or not known yet). */
  generation: Schema.optionalWith(Generation, { exact: true }),
  /** A runner build under way, or the last one that failed (see `BuildProgress`). */
  build: Schema.optionalWith(BuildProgress, { exact: true }),
  /**
   * In a `stopped` or `failed` report of a VM that is moving off its node: the move (the record's
   * `moving`) the node stopped it for. Proof that the node saw the move before reporting, and will
   * not start the VM again: a report made before it saw the move cannot complete it.
   */
  released: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true })
}) {}

/** A VM as the replicated state holds it. */
export class VmRecord extends Schema.Class<VmRecord>("VmRecord")({
  spec: VmSpec,
  desired: DesiredState,
  /** The node that hosts the VM; absent while it is pending placement. */
  node: Schema.optionalWith(NodeId, { exact: true }),
  pendingReason: Schema.optionalWith(Schema.String, { exact: true }),
  status: VmStatus,
  /**
   * The spec's generation (absent: 0): bumped by an update that needs a new runner (source, vcpus,
   * memory). The hosting node rebuilds and restarts a running VM whose status is of an older one.
   */
  generation: Schema.optionalWith(Generation, { exact: true }),
  /**
   * Set while the VM moves off a live node (drained, or it no longer fits after an update): the
   * revision that began the move. The VM stays placed on `node`, whose agent stops it and reports so
   * (`VmStatus.released`); only then is it placed elsewhere, so it never runs on both nodes at once.
   * A node marked down gives its VMs up at once (it has fenced itself by then).
   */
  moving: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true }),
  /**
   * Set while `moving` and the move cannot complete as things are: why, and what ends the wait (its
   * node runs a version that never reports `released`: it must be upgraded or marked down).
   */
  movingReason: Schema.optionalWith(Schema.String.pipe(Schema.maxLength(1024)), { exact: true }),
  /** Bumped by every change to the record; an update may require it (optimistic concurrency). */
  revision: Schema.Int.pipe(Schema.positive()),
  createdAt: Millis
}) {}
