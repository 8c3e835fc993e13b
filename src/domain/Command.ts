/**
 * The replicated commands: every change to the cluster's desired state is one of these, proposed
 * through Raft and applied, in log order, by every node's state machine.
 */
import { Schema } from "effect"
import { Role, TokenHash, TokenId, TokenName } from "./ApiToken.js"
import { CaCertificatePem, SealedKey } from "./CaRotation.js"
import { CertificateFingerprint, CertificateIssue, CertificateSerial, RevocationReason } from "./Certificate.js"
import { JoinTokenHash, JoinTokenId, JoinTokenTtlMs } from "./JoinToken.js"
import { Labels } from "./Labels.js"
import { NodeId } from "./NodeId.js"
import { NodeInfo, Schedulability } from "./NodeInfo.js"
import { MemoryMiB, Vcpus } from "./Resources.js"
import { ConfigSource, RestartPolicy, VmSpec } from "./VmSpec.js"
import { VmName } from "./VmName.js"
import { DesiredState, VmStatus } from "./VmStatus.js"

const Revision = Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true })

export class CreateVm extends Schema.TaggedClass<CreateVm>()("CreateVm", {
  spec: VmSpec,
  /** What the VM should be doing once created; absent: stopped (an explicit start follows). */
  desired: Schema.optionalWith(DesiredState, { exact: true })
}) {}
export class StartVm extends Schema.TaggedClass<StartVm>()("StartVm", { name: VmName, ifRevision: Revision }) {}
export class StopVm extends Schema.TaggedClass<StopVm>()("StopVm", { name: VmName, ifRevision: Revision }) {}
export class DeleteVm extends Schema.TaggedClass<DeleteVm>()("DeleteVm", { name: VmName, ifRevision: Revision }) {}
export class SetVmLabels extends Schema.TaggedClass<SetVmLabels>()("SetVmLabels", {
  name: VmName,
  labels: Labels,
  ifRevision: Revision
}) {}
/**
 * Changes a VM's runner source, resources or restart policy (`vm update`); absent fields keep their
 * value. A change of source, vcpus or memory bumps the spec's generation: the hosting node builds
 * the new runner while the old one runs, then restarts onto it.
 */
export class UpdateVm extends Schema.TaggedClass<UpdateVm>()("UpdateVm", {
  name: VmName,
  source: Schema.optionalWith(ConfigSource, { exact: true }),
  vcpus: Schema.optionalWith(Vcpus, { exact: true }),
  memoryMiB: Schema.optionalWith(MemoryMiB, { exact: true }),
  restartPolicy: Schema.optionalWith(RestartPolicy, { exact: true }),
  ifRevision: Revision
}) {}
/** The hosting node's agent reports what it observed. Ignored unless `node` still hosts the VM. */
export class ReportVmStatus extends Schema.TaggedClass<ReportVmStatus>()("ReportVmStatus", {
  name: VmName,
  node: NodeId,
  status: VmStatus
}) {}
/** At most this many statuses go in one `ReportVmStatuses` (the agent also keeps a request's body well under the API's limit). */
export const MaxStatusReports = 256
/** One VM's status in a `ReportVmStatuses`. */
export const StatusReport = Schema.Struct({ name: VmName, status: VmStatus })
export type StatusReport = typeof StatusReport.Type
/**
 * The hosting node's agent reports what it observed of several VMs at once: one entry where
 * `ReportVmStatus` took one per VM (a host starting a thousand VMs). Each applies as a
 * `ReportVmStatus` of its own, in order: ignored unless `node` still hosts that VM. A VM named twice
 * takes its statuses in order. Log version 3.
 */
export class ReportVmStatuses extends Schema.TaggedClass<ReportVmStatuses>()("ReportVmStatuses", {
  node: NodeId,
  reports: Schema.Array(StatusReport).pipe(Schema.minItems(1), Schema.maxItems(MaxStatusReports))
}) {}
export class RegisterNode extends Schema.TaggedClass<RegisterNode>()("RegisterNode", { info: NodeInfo }) {}
export class SetNodeState extends Schema.TaggedClass<SetNodeState>()("SetNodeState", {
  id: NodeId,
  state: Schedulability
}) {}
/** The leader saw the node go silent (or come back); `at` is the leader's clock, in epoch ms. */
export class SetNodeHealth extends Schema.TaggedClass<SetNodeHealth>()("SetNodeHealth", {
  id: NodeId,
  health: Schema.Literal("up", "down"),
  at: Schema.Int.pipe(Schema.nonNegative())
}) {}
export class RemoveNode extends Schema.TaggedClass<RemoveNode>()("RemoveNode", { id: NodeId }) {}
/** A new API token; only the SHA-256 of its secret travels (see `ApiToken.ts`). */
export class CreateApiToken extends Schema.TaggedClass<CreateApiToken>()("CreateApiToken", {
  id: TokenId,
  name: Schema.optionalWith(TokenName, { exact: true }),
  role: Role,
  hash: TokenHash
}) {}
export class RevokeApiToken extends Schema.TaggedClass<RevokeApiToken>()("RevokeApiToken", { id: TokenId }) {}

/**
 * A new join token (see `JoinToken.ts`): it expires `ttlMs` after the entry's `proposedAt`, so every
 * replica computes the same expiry.
 */
export class CreateJoinToken extends Schema.TaggedClass<CreateJoinToken>()("CreateJoinToken", {
  id: JoinTokenId,
  hash: JoinTokenHash,
  ttlMs: JoinTokenTtlMs
}) {}
export class RevokeJoinToken extends Schema.TaggedClass<RevokeJoinToken>()("RevokeJoinToken", { id: JoinTokenId }) {}
/**
 * Node `node` joins with the join token `id`, for its public key whose SHA-256 is `key`: applied only
 * if `hash` is the token's, the entry's `proposedAt` is before its expiry and the token is unused,
 * or used by this node with this key (a retry whose answer was lost); it is then used up. Entries
 * from before `key` have none.
 */
export class ConsumeJoinToken extends Schema.TaggedClass<ConsumeJoinToken>()("ConsumeJoinToken", {
  id: JoinTokenId,
  hash: JoinTokenHash,
  node: NodeId,
  key: Schema.optionalWith(JoinTokenHash, { exact: true })
}) {}

/**
 * Node `node` holds the certificate `serial`, so that removing the node revokes it: recorded by the
 * member that signed it, before it hands it out (`issued`), and reported by the node itself at start
 * and after each renewal (no `issued`; entries of older versions have none). Refused when the
 * serial is revoked or recorded as another node's, and a renewal's when `node` is no longer a
 * member (it was removed while its renewal was signed: the certificate is not handed out). Applying
 * it also forgets records and revocations of certificates expired by the entry's `proposedAt`.
 */
export class RecordCertificate extends Schema.TaggedClass<RecordCertificate>()("RecordCertificate", {
  node: NodeId,
  serial: CertificateSerial,
  fingerprint: CertificateFingerprint,
  notAfter: Schema.Int.pipe(Schema.nonNegative()),
  issued: Schema.optionalWith(CertificateIssue, { exact: true })
}) {}
/**
 * Revokes every recorded certificate of `node`, or the certificate `serial` (recorded or not): one of
 * the two is given (`blixard cluster cert revoke NODE|SERIAL`).
 */
export class RevokeCertificate extends Schema.TaggedClass<RevokeCertificate>()("RevokeCertificate", {
  node: Schema.optionalWith(NodeId, { exact: true }),
  serial: Schema.optionalWith(CertificateSerial, { exact: true }),
  reason: RevocationReason
}) {}

/**
 * Starts a CA rotation (`CaRotation.ts`): the new CA, the one it replaces, and the new CA's key
 * sealed once per current member. Refused while another rotation runs, and when the sealed keys are
 * not exactly one per current member (the membership changed while it was prepared: try again).
 */
export class StartCaRotation extends Schema.TaggedClass<StartCaRotation>()("StartCaRotation", {
  ca: CaCertificatePem,
  fingerprint: CertificateFingerprint,
  previous: CertificateFingerprint,
  keys: Schema.Array(SealedKey).pipe(Schema.maxItems(1000)),
  /** The new CA certified by the old one (`Tls.crossSign`), served by moved members; absent in entries of older versions. */
  cross: Schema.optionalWith(CaCertificatePem, { exact: true })
}) {}
/** Member `node` holds a certificate of the rotation's new CA (`fingerprint`). */
export class CaRotationMoved extends Schema.TaggedClass<CaRotationMoved>()("CaRotationMoved", {
  node: NodeId,
  fingerprint: CertificateFingerprint
}) {}
/** Ends the rotation to the CA `fingerprint`: every node drops the old CA. Refused until every member moved. */
export class FinishCaRotation extends Schema.TaggedClass<FinishCaRotation>()("FinishCaRotation", { fingerprint: CertificateFingerprint }) {}

/**
 * Raises the cluster's log version to `version` (`cluster/ClusterVersion.ts`), proposed by the
 * leader once every member in `members` (the Raft voters and learners it checked) registered at
 * least it. Refused unless they still have; a version at or below the cluster's changes nothing.
 */
export class SetClusterVersion extends Schema.TaggedClass<SetClusterVersion>()("SetClusterVersion", {
  version: Schema.Int.pipe(Schema.positive(), Schema.lessThanOrEqualTo(1_000_000)),
  members: Schema.Array(NodeId).pipe(Schema.maxItems(1000))
}) {}

export const Command = Schema.Union(
  CreateVm,
  StartVm,
  StopVm,
  DeleteVm,
  SetVmLabels,
  UpdateVm,
  ReportVmStatus,
  ReportVmStatuses,
  RegisterNode,
  SetNodeState,
  SetNodeHealth,
  RemoveNode,
  CreateApiToken,
  RevokeApiToken,
  CreateJoinToken,
  RevokeJoinToken,
  ConsumeJoinToken,
  RecordCertificate,
  RevokeCertificate,
  StartCaRotation,
  CaRotationMoved,
  FinishCaRotation,
  SetClusterVersion
)
export type Command = typeof Command.Type

/**
 * What goes into a Raft entry: the command, when it was proposed (the leader's clock, so applying
 * is deterministic) and an optional client request id so a retried request applies once.
 */
export class CommandEnvelope extends Schema.Class<CommandEnvelope>("CommandEnvelope")({
  command: Command,
  proposedAt: Schema.Int.pipe(Schema.nonNegative()),
  requestId: Schema.optionalWith(
    Schema.String.pipe(Schema.minLength(1), Schema.maxLength(128), Schema.pattern(/^[A-Za-z0-9._:-]+$/))
  , { exact: true })
}) {}

export const CommandEnvelopeJson = Schema.parseJson(CommandEnvelope)
