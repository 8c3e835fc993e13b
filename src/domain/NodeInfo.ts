import { Schema } from "effect"
import { Labels } from "./Labels.js"
import { NodeId } from "./NodeId.js"
import { Resources } from "./Resources.js"

/** `host:port`, where host is a name, an IPv4 address or a bracketed IPv6 address. */
export const HostPort = Schema.String.pipe(
  Schema.pattern(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/, {
    message: () => "an address is HOST:PORT, e.g. 127.0.0.1:7001 or [::1]:7001"
  }),
  Schema.filter((s) => {
    const port = Number(s.slice(s.lastIndexOf(":") + 1))
    return (port >= 1 && port <= 65535) || "the port must be from 1 to 65535"
  }),
  Schema.brand("HostPort")
)
export type HostPort = typeof HostPort.Type

export const splitHostPort = (address: HostPort): { host: string; port: number } => {
  const at = address.lastIndexOf(":")
  const host = address.slice(0, at)
  return { host: host.startsWith("[") ? host.slice(1, -1) : host, port: Number(address.slice(at + 1)) }
}

/** Whether new VMs may be placed on the node. `draining` also moves its VMs away. */
export const Schedulability = Schema.Literal("active", "cordoned", "draining")
export type Schedulability = typeof Schedulability.Type

/** Whether the cluster currently hears from the node. */
export const NodeHealth = Schema.Literal("up", "down")
export type NodeHealth = typeof NodeHealth.Type

/** A directory name in a node's VM state directory (any file name, not necessarily a VM name). */
export const ForeignVmName = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255))

/**
 * The identity of a host's data directory, made at its first start (`DATA-DIR/host-incarnation`): a
 * restart keeps it, a second process under the same id with another data directory has another.
 */
export const HostIncarnation = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, { message: () => "a host incarnation is a UUID (8-4-4-4-12 lowercase hex digits)" })
)

/** At most this many foreign VM directories are reported per node (the rest are in the node's log). */
export const MaxForeignVms = 256

/**
 * Something a node's version does that the first versions did not, advertised in its registration.
 * Any name of this shape decodes, so a node of an older version reads a newer node's list.
 */
export const NodeCapability = Schema.String.pipe(Schema.pattern(/^[a-z][a-z0-9-]{0,63}$/, { message: () => "a capability is lowercase letters, digits and dashes, e.g. releases-moves" }))

/**
 * The node's agent stops a VM moving off it and reports it `released` (two-phase moves). A node
 * without it never does: a move off it waits while it is up, until it is upgraded or marked down.
 */
export const ReleasesMoves = "releases-moves"

export class NodeInfo extends Schema.Class<NodeInfo>("NodeInfo")({
  id: NodeId,
  address: HostPort,
  capacity: Resources,
  labels: Labels,
  state: Schedulability,
  health: NodeHealth,
  /**
   * The VM directories on the node that are not Blixard's (microvm.nix's own VMs, declarative or
   * made with `microvm -c`, or another node's): the node leaves them alone. Reported by the node;
   * absent when there are none. (Exact optional, no default: records stay encode-transparent, see
   * `Json.ts`.)
   */
  foreignVms: Schema.optionalWith(Schema.Array(ForeignVmName).pipe(Schema.maxItems(MaxForeignVms)), { exact: true }),
  /**
   * A host's incarnation (`HostIncarnation`): while the node is up, registrations and heartbeats of
   * another one are refused (`BLX_NODE_ID_IN_USE`). Absent for members (Raft keeps their identity) and
   * hosts of older versions.
   */
  incarnation: Schema.optionalWith(HostIncarnation, { exact: true }),
  /**
   * What the node's version can do (`ReleasesMoves`, …), as it registered. Absent: a node of a
   * version from before capabilities were advertised, which can do none of them.
   */
  capabilities: Schema.optionalWith(Schema.Array(NodeCapability).pipe(Schema.maxItems(32)), { exact: true }),
  /**
   * The replicated log version the node's release applies (`cluster/ClusterVersion.ts`), as it
   * registered. Absent: a release from before log versions, the oldest (1).
   */
  logVersion: Schema.optionalWith(Schema.Int.pipe(Schema.positive(), Schema.lessThanOrEqualTo(1_000_000)), { exact: true })
}) {}

/** Whether `node` stops and releases a VM moving off it (see `ReleasesMoves`). */
export const releasesMoves = (node: NodeInfo): boolean => node.capabilities?.includes(ReleasesMoves) === true

/**
 * What a host says with each heartbeat. Both fields are optional: a host of an older version sends
 * no body. `fencingMs` lets the leader refuse a host that would keep its VMs running after the
 * cluster has moved them (its fencing timeout longer than the members' `nodeDownMs` allows).
 */
export const HostBeat = Schema.Struct({
  incarnation: Schema.optionalWith(HostIncarnation, { exact: true }),
  fencingMs: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true })
})
export type HostBeat = typeof HostBeat.Type

/**
 * The leader's answer to a host's heartbeat (`POST /v1/nodes/ID/heartbeat`): it confirmed its
 * leadership of `term` with a quorum after the heartbeat arrived, so the host may count its contact
 * from when it sent it (see `node/HostContact.ts`).
 */
export class HostHeartbeat extends Schema.Class<HostHeartbeat>("HostHeartbeat")({
  node: NodeId,
  leader: NodeId,
  term: Schema.Int.pipe(Schema.nonNegative()),
  /** The leader's commit index when it answered: a host's view of the state at least this new is fresh. */
  commit: Schema.Int.pipe(Schema.nonNegative())
}) {}
