/**
 * The CLI's view of a Blixard node: one method per client command. Commands only ever talk to a
 * node through this service, so the REST API client (`src/api/`, not built yet) plugs in as one more
 * layer. Its only layer today, `layerNotImplemented`, fails every call with `BLX_NOT_IMPLEMENTED`
 * naming the command and the address it would have asked.
 *
 * A real layer must keep `blixard --help` fast: import the HTTP machinery lazily (dynamic
 * `import()` inside the methods, or a layer built inside the command that needs it), never at the
 * top of a module in the CLI's import graph.
 */
import { Context, Effect, Layer } from "effect"
import type { BlixardError } from "../domain/Errors.js"
import { NotImplemented } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { HostPort } from "../domain/NodeInfo.js"
import type { VmName } from "../domain/VmName.js"
import type { VmSpec } from "../domain/VmSpec.js"
import type { VmRecord } from "../domain/VmStatus.js"
import type { ClusterStatus } from "./ClusterStatus.js"

/** The node a command talks to (from `--addr`, `BLIXARD_ADDR` or the default). */
export interface Target {
  readonly addr: HostPort
}

export interface BlixardClientApi {
  readonly createVm: (target: Target, spec: VmSpec) => Effect.Effect<VmRecord, BlixardError>
  readonly startVm: (target: Target, name: VmName) => Effect.Effect<VmRecord, BlixardError>
  readonly stopVm: (target: Target, name: VmName) => Effect.Effect<VmRecord, BlixardError>
  readonly deleteVm: (target: Target, name: VmName) => Effect.Effect<void, BlixardError>
  readonly vmStatus: (target: Target, name: VmName) => Effect.Effect<VmRecord, BlixardError>
  readonly listVms: (target: Target) => Effect.Effect<ReadonlyArray<VmRecord>, BlixardError>
  readonly clusterStatus: (target: Target) => Effect.Effect<ClusterStatus, BlixardError>
  readonly joinCluster: (target: Target, id: NodeId, address: HostPort) => Effect.Effect<ClusterStatus, BlixardError>
  readonly leaveCluster: (target: Target, id: NodeId) => Effect.Effect<ClusterStatus, BlixardError>
}

/** The command line each method serves, for messages. */
export const commandOf: { readonly [K in keyof BlixardClientApi]: string } = {
  createVm: "vm create",
  startVm: "vm start",
  stopVm: "vm stop",
  deleteVm: "vm delete",
  vmStatus: "vm status",
  listVms: "vm list",
  clusterStatus: "cluster status",
  joinCluster: "cluster join",
  leaveCluster: "cluster leave"
}

const notImplemented = (method: keyof BlixardClientApi, target: Target, subject?: string) =>
  Effect.fail(
    new NotImplemented({
      message: `the REST API client is not built yet; "${commandOf[method]}" cannot reach a node (asked ${target.addr})`,
      subject: subject ?? target.addr
    })
  )

export class BlixardClient extends Context.Tag("blixard/cli/BlixardClient")<BlixardClient, BlixardClientApi>() {
  /** Until the API exists: every call fails with `BLX_NOT_IMPLEMENTED`. */
  static readonly layerNotImplemented = Layer.succeed(BlixardClient, {
    createVm: (target, spec) => notImplemented("createVm", target, spec.name),
    startVm: (target, name) => notImplemented("startVm", target, name),
    stopVm: (target, name) => notImplemented("stopVm", target, name),
    deleteVm: (target, name) => notImplemented("deleteVm", target, name),
    vmStatus: (target, name) => notImplemented("vmStatus", target, name),
    listVms: (target) => notImplemented("listVms", target),
    clusterStatus: (target) => notImplemented("clusterStatus", target),
    joinCluster: (target, id) => notImplemented("joinCluster", target, `node ${id}`),
    leaveCluster: (target, id) => notImplemented("leaveCluster", target, `node ${id}`)
  })
}
