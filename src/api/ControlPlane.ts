/**
 * `ControlPlane`: the operations the REST API exposes, as a service. The API's handlers call it;
 * the node implements it over Raft (forwarding writes to the leader, serving linearizable reads
 * after a ReadIndex round); tests provide fakes.
 */
import type { SecretFingerprints, SecretStatus } from "../domain/ClusterSecret.js"
import { Context, type Effect } from "effect"
import type { ApiTokenInfo, CreatedApiToken, Role, TokenId } from "../domain/ApiToken.js"
import type { CreatedJoinToken, JoinTokenId, JoinTokenInfo } from "../domain/JoinToken.js"
import type { CaStatus } from "../domain/CaRotation.js"
import type { CertificateList, CertificateRecord, RevokedCertificate } from "../domain/Certificate.js"
import type { RecordCertificate, RevokeCertificate, StatusReport } from "../domain/Command.js"
import type { ClusterStatus } from "../domain/ClusterStatus.js"
import type { BlixardError } from "../domain/Errors.js"
import type { Labels } from "../domain/Labels.js"
import type { NodeQuery, VmQuery } from "../domain/ListQuery.js"
import type { NodeId } from "../domain/NodeId.js"
import type { HostBeat, HostHeartbeat, HostPort, NodeInfo, Schedulability } from "../domain/NodeInfo.js"
import type { VmName } from "../domain/VmName.js"
import type { VmChanges, VmSpec } from "../domain/VmSpec.js"
import type { VmRecord, VmStatus } from "../domain/VmStatus.js"
import type { SnapshotHeader } from "../cluster/SnapshotFile.js"
import type { Health } from "./Api.js"

/** The replicated state as of `header.index`: its snapshot text, produced piece by piece as it is iterated. */

/** `RecordCertificate`'s fields, and the certificate itself when a signer records one it issued (forwarded to the leader, which checks it). */
export type CertificateReport = Omit<RecordCertificate, "_tag"> & { readonly certificate?: string }

export interface StateSnapshot {
  readonly header: SnapshotHeader
  readonly pieces: Iterable<string>
}

/** `createVm`'s options: a write's, and whether the VM starts once placed. */
export interface CreateVmOptions extends WriteOptions {
  /** Create it desired running (its node starts it once placed), or stopped. Said by every caller: the default is the API's and the CLI's (`StartOnCreate`). */
  readonly start: boolean
}

/** `linearizable` (default): after a ReadIndex round. `stale`: this node's state as it is. */
export type ReadMode = "linearizable" | "stale"

export interface WriteOptions {
  /** Client request id (`Idempotency-Key`): a retry with the same id applies once. */
  readonly requestId?: string | undefined
  /** Apply only if the object is still at this revision (else `Conflict`). */
  readonly ifRevision?: number | undefined
}

export interface ControlPlaneShape {
  /** The VMs `query` selects (default: all), by name (`ListQuery.ts`). */
  readonly listVms: (read: ReadMode, query?: VmQuery) => Effect.Effect<ReadonlyArray<VmRecord>, BlixardError>
  readonly getVm: (name: VmName, read: ReadMode) => Effect.Effect<VmRecord, BlixardError>
  readonly createVm: (spec: VmSpec, options: CreateVmOptions) => Effect.Effect<VmRecord, BlixardError>
  readonly startVm: (name: VmName, options: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  readonly stopVm: (name: VmName, options: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  readonly deleteVm: (name: VmName, options: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  /** `vm update`: a new runner source, resources or restart policy (see `Command.UpdateVm`). */
  readonly updateVm: (name: VmName, changes: VmChanges, options: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  readonly setVmLabels: (name: VmName, labels: Labels, options: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  /** The nodes `query` selects (default: all), by id. */
  readonly listNodes: (read: ReadMode, query?: NodeQuery) => Effect.Effect<ReadonlyArray<NodeInfo>, BlixardError>
  readonly setNodeState: (id: NodeId, state: Schedulability, options: WriteOptions) => Effect.Effect<NodeInfo, BlixardError>
  /** A node's agent reports what it observed of a VM it hosts (ignored if the VM moved away). */
  readonly reportVmStatus: (name: VmName, node: NodeId, status: VmStatus) => Effect.Effect<void, BlixardError>
  /** The same for several VMs at once, in order: one entry (a cluster at `BatchedStatusReports` or later). */
  readonly reportVmStatuses: (node: NodeId, reports: ReadonlyArray<StatusReport>) => Effect.Effect<void, BlixardError>
  /** A node announces (or refreshes) its address, capacity and labels. */
  readonly registerNode: (info: NodeInfo) => Effect.Effect<NodeInfo, BlixardError>
  /**
   * A registered host that is not a Raft member proves it is alive (and learns it may keep its VMs
   * running): answered by the leader after a ReadIndex round (`node/HostContact.ts`).
   */
  /** A host is alive; `beat` says which incarnation and its fencing timeout (absent from older hosts). */
  readonly heartbeat: (node: NodeId, beat: HostBeat) => Effect.Effect<HostHeartbeat, BlixardError>
  readonly clusterStatus: Effect.Effect<ClusterStatus, BlixardError>
  readonly join: (id: NodeId, address: HostPort) => Effect.Effect<ClusterStatus, BlixardError>
  readonly leave: (id: NodeId) => Effect.Effect<ClusterStatus, BlixardError>
  readonly transferLeader: (id: NodeId) => Effect.Effect<ClusterStatus, BlixardError>
  readonly health: Effect.Effect<Health, BlixardError>
  /** A new replicated API token with `role`; the answer holds its secret, which nothing keeps. */
  readonly createToken: (role: Role, name: string | undefined) => Effect.Effect<CreatedApiToken, BlixardError>
  readonly listTokens: (read: ReadMode) => Effect.Effect<ReadonlyArray<ApiTokenInfo>, BlixardError>
  readonly revokeToken: (id: TokenId) => Effect.Effect<ApiTokenInfo, BlixardError>
  /** A new join token living `ttlMs`; the answer holds its text, which nothing keeps. */
  readonly createJoinToken: (ttlMs: number) => Effect.Effect<CreatedJoinToken, BlixardError>
  readonly listJoinTokens: (read: ReadMode) => Effect.Effect<ReadonlyArray<JoinTokenInfo>, BlixardError>
  readonly revokeJoinToken: (id: JoinTokenId) => Effect.Effect<JoinTokenInfo, BlixardError>
  /**
   * Uses up join token `id` for node `node` whose public key's SHA-256 is `key`, if `hash` is its
   * hash and it is unexpired and unused (or used by this node with this key: a retry).
   */
  readonly consumeJoinToken: (id: JoinTokenId, hash: string, node: NodeId, key?: string) => Effect.Effect<JoinTokenInfo, BlixardError>
  /** Node certificates the nodes reported, and the revocation list. */
  readonly listCertificates: (read: ReadMode) => Effect.Effect<CertificateList, BlixardError>
  /** Puts a node's certificates, or one serial, on the revocation list (`RevokeCertificate`). */
  readonly revokeCertificate: (revoke: Omit<RevokeCertificate, "_tag">) => Effect.Effect<ReadonlyArray<RevokedCertificate>, BlixardError>
  /** A node reports the certificate it holds (`RecordCertificate`). */
  readonly recordCertificate: (record: CertificateReport) => Effect.Effect<CertificateRecord, BlixardError>
  /** The cluster CA in force and the rotation in progress (`domain/CaRotation.ts`). */
  readonly caStatus: (read: ReadMode) => Effect.Effect<CaStatus, BlixardError>
  /** Starts a CA rotation (`StartCaRotation`, prepared by the leader). */
  readonly rotateCa: Effect.Effect<CaStatus, BlixardError>
  /** Finishes the CA rotation (`FinishCaRotation`): refused until every member moved. */
  readonly finishCaRotation: Effect.Effect<CaStatus, BlixardError>
  /** Member `node` holds a certificate of the new CA `fingerprint` (`CaRotationMoved`). */
  readonly caRotationMoved: (node: NodeId, fingerprint: string) => Effect.Effect<CaStatus, BlixardError>
  /**
   * Every member's cluster secret keyring, as fingerprints (`blixard cluster secret status`).
   * Absent where there is none (the in-memory plane, the simulator): the API answers 501.
   */
  readonly secretStatus?: Effect.Effect<SecretStatus, BlixardError>
  /** This node's keyring, as fingerprints (what `secretStatus` asks each member). Absent as `secretStatus`. */
  readonly secretFingerprints?: Effect.Effect<SecretFingerprints, BlixardError>
  /**
   * The whole replicated state at an index the leader confirmed (a ReadIndex round), for
   * `blixard cluster snapshot save`. Absent where there is none to give (another node's API seen
   * as a control plane): the API then answers 501.
   */
  readonly snapshot?: Effect.Effect<StateSnapshot, BlixardError>
}

export class ControlPlane extends Context.Tag("blixard/ControlPlane")<ControlPlane, ControlPlaneShape>() {}
