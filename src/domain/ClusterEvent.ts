/**
 * The cluster's event stream (`GET /v1/events`): what each applied Raft entry changed. Every node
 * derives the same events from the same entries (`src/events/Derive.ts`), so a client may follow
 * any node and resume on another. Each Server-Sent Event carries one `EventBatch` — every change of
 * one entry — with the entry's index as its SSE `id` (as Nomad's event stream groups by index), so
 * "resume after index N" never splits an entry's changes.
 *
 * The shapes are a contract: fields are only ever added (optional), never renamed or retyped.
 */
import { Schema } from "effect"
import { Role, TokenId, TokenName } from "./ApiToken.js"
import { CertificateFingerprint, CertificateSerial, RevocationReason } from "./Certificate.js"
import { JoinTokenId } from "./JoinToken.js"
import { NodeId } from "./NodeId.js"
import { HostPort } from "./NodeInfo.js"
import { VmName } from "./VmName.js"
import { VmPhase } from "./VmStatus.js"

const Revision = Schema.Int.pipe(Schema.positive())
const Index = Schema.Int.pipe(Schema.nonNegative())

const vm = <Type extends string, Fields extends Schema.Struct.Fields>(type: Type, fields: Fields) =>
  Schema.Struct({ type: Schema.Literal(type), vm: VmName, ...fields })

const node = <Type extends string, Fields extends Schema.Struct.Fields>(type: Type, fields: Fields) =>
  Schema.Struct({ type: Schema.Literal(type), node: NodeId, ...fields })

const optional = <S extends Schema.Schema.Any>(schema: S) => Schema.optionalWith(schema, { exact: true })

/** A VM was declared (`vm.placed` or `vm.pending` follows in the same batch). */
export const VmCreated = vm("vm.created", { revision: Revision })
/** A VM was placed on a node, having been placed nowhere. */
export const VmPlaced = vm("vm.placed", { node: NodeId, revision: Revision })
/** A VM is placed nowhere, and why (no node fits); a new reason is a new event. */
export const VmPending = vm("vm.pending", { reason: Schema.String, revision: Revision })
/** A VM left node `from` (down, drained, removed): for node `to`, or for none (then `vm.pending` follows). */
export const VmMoved = vm("vm.moved", { from: NodeId, to: optional(NodeId), revision: Revision })
/**
 * A VM began moving off its live node `from` (drained, or it outgrew the node): that node stops it,
 * then it moves (`vm.moved`). `cancelled`: the move was called off (the node is no longer draining)
 * and the VM stays.
 */
export const VmMoving = vm("vm.moving", { from: NodeId, cancelled: optional(Schema.Literal(true)), revision: Revision })
/** Its desired state became running (`vm start`). */
export const VmStarted = vm("vm.started", { revision: Revision })
/** Its desired state became stopped (`vm stop`). */
export const VmStopped = vm("vm.stopped", { revision: Revision })
/** The hosting node's agent observed a new phase. */
export const VmPhaseChanged = vm("vm.phase", {
  phase: VmPhase,
  previous: VmPhase,
  node: optional(NodeId),
  restarts: Schema.Int.pipe(Schema.nonNegative()),
  exitCode: optional(Schema.Int),
  lastError: optional(Schema.String),
  revision: Revision
})
/** The observed status changed within its phase (a new pid, restart count or error). */
export const VmStatusChanged = vm("vm.status", { phase: VmPhase, node: optional(NodeId), revision: Revision })
/** Its spec changed (labels, or any other field). */
export const VmUpdated = vm("vm.updated", { revision: Revision })
export const VmDeleted = vm("vm.deleted", { node: optional(NodeId) })

/** A node became a Raft member (a learner; `node.promoted` when it votes). */
export const NodeJoined = node("node.joined", { address: optional(Schema.String) })
export const NodePromoted = node("node.promoted", {})
/** A node left the Raft membership. */
export const NodeLeft = node("node.left", {})
/** A node registered (or refreshed) its address, capacity and labels; `first` for its first time. */
export const NodeRegistered = node("node.registered", { address: HostPort, first: Schema.Boolean })
export const NodeDown = node("node.down", {})
export const NodeUp = node("node.up", {})
export const NodeCordoned = node("node.cordoned", {})
export const NodeUncordoned = node("node.uncordoned", {})
/** A node is draining: its VMs move away (`vm.moving`, then `vm.moved` once each is stopped there). */
export const NodeDraining = node("node.draining", {})
/** A node's record was removed from the cluster's state. */
export const NodeRemoved = node("node.removed", {})

/** A new leader's first entry: `leader` led `term` from this index on (absent in logs of older versions). */
export const LeaderChanged = Schema.Struct({ type: Schema.Literal("leader.changed"), term: Index, leader: optional(NodeId) })

export const TokenCreated = Schema.Struct({ type: Schema.Literal("token.created"), id: TokenId, role: Role, name: optional(TokenName) })
export const TokenRevoked = Schema.Struct({ type: Schema.Literal("token.revoked"), id: TokenId })

/** A join token was made, valid until `expiresAt` (epoch ms). */
export const JoinTokenCreated = Schema.Struct({ type: Schema.Literal("joinToken.created"), id: JoinTokenId, expiresAt: Index })
/** Node `node` joined with a join token: it is used up. */
export const JoinTokenUsed = Schema.Struct({ type: Schema.Literal("joinToken.used"), id: JoinTokenId, node: NodeId })
/** A certificate was put on the revocation list (by an admin, or because its node was removed). */
export const CertificateRevokedEvent = Schema.Struct({
  type: Schema.Literal("cert.revoked"),
  serial: CertificateSerial,
  node: optional(NodeId),
  reason: RevocationReason
})
/** A join token was revoked. */
export const JoinTokenRevoked = Schema.Struct({ type: Schema.Literal("joinToken.revoked"), id: JoinTokenId })

/** A CA rotation began (`blixard cluster ca rotate`): `fingerprint` the new CA, `previous` the one it replaces. */
export const CaRotationStarted = Schema.Struct({ type: Schema.Literal("ca.rotation.started"), fingerprint: CertificateFingerprint, previous: CertificateFingerprint })
/** Member `node` moved to a certificate of the rotation's new CA. */
export const CaRotationMovedEvent = Schema.Struct({ type: Schema.Literal("ca.rotation.moved"), node: NodeId, fingerprint: CertificateFingerprint })
/** The rotation finished: every node trusts `fingerprint` alone from now on, `previous` is dropped. */
export const CaRotationFinished = Schema.Struct({ type: Schema.Literal("ca.rotation.finished"), fingerprint: CertificateFingerprint, previous: CertificateFingerprint })

export const ClusterEvent = Schema.Union(
  VmCreated,
  VmPlaced,
  VmPending,
  VmMoved,
  VmMoving,
  VmStarted,
  VmStopped,
  VmPhaseChanged,
  VmStatusChanged,
  VmUpdated,
  VmDeleted,
  NodeJoined,
  NodePromoted,
  NodeLeft,
  NodeRegistered,
  NodeDown,
  NodeUp,
  NodeCordoned,
  NodeUncordoned,
  NodeDraining,
  NodeRemoved,
  LeaderChanged,
  TokenCreated,
  TokenRevoked,
  JoinTokenCreated,
  JoinTokenUsed,
  JoinTokenRevoked,
  CertificateRevokedEvent,
  CaRotationStarted,
  CaRotationMovedEvent,
  CaRotationFinished
)
export type ClusterEvent = typeof ClusterEvent.Type
export type ClusterEventType = ClusterEvent["type"]

/** The data of one SSE message: every change of the entry at `index` (SSE `id`). */
export const EventBatch = Schema.Struct({
  index: Index,
  term: Index,
  /** When the leader proposed the entry (epoch ms); absent for membership and leader entries. */
  at: optional(Index),
  events: Schema.NonEmptyArray(ClusterEvent)
})
export type EventBatch = typeof EventBatch.Type

/**
 * Why a stream cannot go on from where the client is: `compacted` (the index asked for is older
 * than the node keeps), `behind` (the client read too slowly and the node dropped it), `restored`
 * (the node replaced its state with a snapshot). The client re-lists (VMs, nodes) and follows on
 * from `index`, the SSE `id` of the resync message.
 */
export const ResyncReason = Schema.Literal("compacted", "behind", "restored")
export type ResyncReason = typeof ResyncReason.Type

/** The data of an SSE message of type `resync`. */
export const Resync = Schema.Struct({
  index: Index,
  reason: ResyncReason,
  message: Schema.String
})
export type Resync = typeof Resync.Type

export const EventBatchJson = Schema.parseJson(EventBatch)
export const ResyncJson = Schema.parseJson(Resync)
