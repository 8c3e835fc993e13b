/**
 * Blixard's errors. Each has a stable code (`BLX_…`) that scripts may match on, a message a person
 * can act on, the subject it is about (a VM, a node, a file, a flag) and the node that raised it.
 * They are `Schema.TaggedError`s so they cross the API and peer RPCs unchanged.
 */
import { Schema } from "effect"
import { NodeId } from "./NodeId.js"

const fields = <C extends string>(code: C) => ({
  code: Schema.Literal(code).pipe(Schema.propertySignature, Schema.withConstructorDefault(() => code)),
  message: Schema.String,
  subject: Schema.optionalWith(Schema.String, { exact: true }),
  node: Schema.optionalWith(NodeId, { exact: true })
})

/** Input from outside (flag, body, file, peer message) failed its schema. */
export class InvalidArgument extends Schema.TaggedError<InvalidArgument>()(
  "InvalidArgument",
  fields("BLX_INVALID_ARGUMENT")
) {}

/** The daemon's configuration (flags, file, environment) is invalid. */
export class ConfigInvalid extends Schema.TaggedError<ConfigInvalid>()("ConfigInvalid", fields("BLX_CONFIG_INVALID")) {}

export class VmNotFound extends Schema.TaggedError<VmNotFound>()("VmNotFound", fields("BLX_VM_NOT_FOUND")) {}

export class VmExists extends Schema.TaggedError<VmExists>()("VmExists", fields("BLX_VM_EXISTS")) {}

export class NodeNotFound extends Schema.TaggedError<NodeNotFound>()("NodeNotFound", fields("BLX_NODE_NOT_FOUND")) {}

/** An update named a revision that is no longer current. */
export class Conflict extends Schema.TaggedError<Conflict>()("Conflict", fields("BLX_CONFLICT")) {}

/** This node is not the leader; `leader` names the leader when it is known. */
export class NotLeader extends Schema.TaggedError<NotLeader>()("NotLeader", {
  ...fields("BLX_NOT_LEADER"),
  leader: Schema.optionalWith(NodeId, { exact: true })
}) {}

/** A request or RPC did not complete in time; `subject` names who did not answer. */
export class Timeout extends Schema.TaggedError<Timeout>()("Timeout", fields("BLX_TIMEOUT")) {}

/** A peer or node could not be reached at all. */
export class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", fields("BLX_UNAVAILABLE")) {}

/** A proposal was dropped (leadership changed, or the node is shutting down); it may or may not apply. */
export class ProposalDropped extends Schema.TaggedError<ProposalDropped>()(
  "ProposalDropped",
  fields("BLX_PROPOSAL_DROPPED")
) {}

export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", fields("BLX_UNAUTHORIZED")) {}

/** The request's token is valid, but its role does not allow the request. */
export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", fields("BLX_FORBIDDEN")) {}

export class TokenNotFound extends Schema.TaggedError<TokenNotFound>()("TokenNotFound", fields("BLX_TOKEN_NOT_FOUND")) {}

/** A VM's runner path is outside the node's `allowedRunnerPrefixes`. */
export class RunnerNotAllowed extends Schema.TaggedError<RunnerNotAllowed>()(
  "RunnerNotAllowed",
  fields("BLX_RUNNER_NOT_ALLOWED")
) {}

/** A VM's flake reference is outside the node's `allowedFlakePrefixes`, or malformed. */
export class FlakeNotAllowed extends Schema.TaggedError<FlakeNotAllowed>()(
  "FlakeNotAllowed",
  fields("BLX_FLAKE_NOT_ALLOWED")
) {}

/** Stored data failed a check (checksum, truncation, schema): the node stops rather than serve it. */
export class StorageCorrupt extends Schema.TaggedError<StorageCorrupt>()(
  "StorageCorrupt",
  fields("BLX_STORAGE_CORRUPT")
) {}

/** The data directory is held by another running process. */
export class StorageLocked extends Schema.TaggedError<StorageLocked>()("StorageLocked", fields("BLX_STORAGE_LOCKED")) {}

/** The data directory belongs to another node (or cluster). */
export class WrongDataDir extends Schema.TaggedError<WrongDataDir>()("WrongDataDir", fields("BLX_WRONG_DATA_DIR")) {}

/**
 * A node came back with a new, empty data directory (a new incarnation) while its id is still a
 * voting member: it lost what it had voted and acknowledged, so it must not vote under that id
 * again. It must be removed from the cluster, then join again as a new member.
 */
export class MemberAmnesia extends Schema.TaggedError<MemberAmnesia>()("MemberAmnesia", fields("BLX_MEMBER_AMNESIA")) {}

/**
 * A host (a node that is not a Raft member) registered or heartbeated under an id that another
 * host's data directory (another incarnation) holds while the cluster still hears from it: two
 * processes under one id would both run that node's VMs.
 */
export class NodeIdInUse extends Schema.TaggedError<NodeIdInUse>()("NodeIdInUse", fields("BLX_NODE_ID_IN_USE")) {}

/** The storage could not be read or written (permissions, disk full, …). */
export class StorageIo extends Schema.TaggedError<StorageIo>()("StorageIo", fields("BLX_STORAGE_IO")) {}

/** No node can host the VM now; the message says why. */
export class Unschedulable extends Schema.TaggedError<Unschedulable>()("Unschedulable", fields("BLX_UNSCHEDULABLE")) {}

/** The VM backend (nix build, runner, systemctl) failed. */
export class BackendFailed extends Schema.TaggedError<BackendFailed>()("BackendFailed", fields("BLX_BACKEND_FAILED")) {}

/**
 * A VM's directory under the node's state directory is not Blixard's (no Blixard marker, or another
 * node's or cluster's): microvm.nix's own VMs live there too. Blixard never starts, stops, changes or
 * removes it; `subject` is the directory. Raised by the node's backend, reported in the VM's
 * `lastError`; never sent over the wire as an error, so not a member of `BlixardError`.
 */
export class VmDirForeign extends Schema.TaggedError<VmDirForeign>()("VmDirForeign", fields("BLX_VM_DIR_FOREIGN")) {}

/**
 * A VM was stopped by fencing: its node could not prove contact with the quorum in time (a
 * partition, or a daemon that died or hangs while its VMs run on). Written to the fencing
 * watchdog's log, naming the node, the VM and what to do next; never sent over the wire, so not a
 * member of `BlixardError`.
 */
export class Fenced extends Schema.TaggedError<Fenced>()("Fenced", fields("BLX_FENCED")) {}

/**
 * A node's storage has not completed a write (a flush to disk) within its bound: the node proves
 * no quorum contact meanwhile and fences. Logged by the node, naming its data directory and what
 * to do; never sent over the wire, so not a member of `BlixardError`.
 */
export class StorageStalled extends Schema.TaggedError<StorageStalled>()("StorageStalled", fields("BLX_STORAGE_STALLED")) {}

/**
 * A cluster snapshot file (`blixard cluster snapshot save|restore`) is damaged, truncated, of an
 * unknown format or not a snapshot at all: nothing was written. Raised by the CLI on the machine
 * holding the file; never sent over the wire, so not a member of `BlixardError`.
 */
export class SnapshotInvalid extends Schema.TaggedError<SnapshotInvalid>()("SnapshotInvalid", fields("BLX_SNAPSHOT_INVALID")) {}

/** A safety invariant does not hold (in the simulator, or an assertion in a running node). */
export class InvariantViolated extends Schema.TaggedError<InvariantViolated>()(
  "InvariantViolated",
  fields("BLX_INVARIANT_VIOLATED")
) {}

/**
 * Peer discovery failed: `tailscale status --json` is missing, tailscaled is not running or not
 * logged in, or it printed something that is not its documented JSON. (It stays on the node that
 * raised it, so it is not in `BlixardError`.)
 */
export class DiscoveryFailed extends Schema.TaggedError<DiscoveryFailed>()(
  "DiscoveryFailed",
  fields("BLX_DISCOVERY_FAILED")
) {}

/** A TLS file (the cluster CA, a node's certificate or key) is missing, unreadable or does not fit the node. */
export class TlsInvalid extends Schema.TaggedError<TlsInvalid>()("TlsInvalid", fields("BLX_TLS_INVALID")) {}

/** A server's certificate is not from the expected cluster CA, or names another cluster or node. */
export class TlsUntrusted extends Schema.TaggedError<TlsUntrusted>()("TlsUntrusted", fields("BLX_TLS_UNTRUSTED")) {}

/** A peer's connection was refused: no client certificate, one from another CA, or one for another node. */
export class PeerCertificateRefused extends Schema.TaggedError<PeerCertificateRefused>()(
  "PeerCertificateRefused",
  fields("BLX_PEER_CERT_REFUSED")
) {}

/**
 * A certificate on the cluster's revocation list (`blixard cluster cert revoke`, or its node was
 * removed from the cluster): peers, the API and renewal refuse it.
 */
export class CertificateRevoked extends Schema.TaggedError<CertificateRevoked>()("CertificateRevoked", fields("BLX_CERT_REVOKED")) {}

/** A node's own certificate has expired: it cannot talk to its peers until it has a new one. */
export class CertificateExpired extends Schema.TaggedError<CertificateExpired>()("CertificateExpired", fields("BLX_CERT_EXPIRED")) {}

/** A join token that is malformed, unknown, revoked, or whose secret is wrong: make a new one. */
export class JoinTokenInvalid extends Schema.TaggedError<JoinTokenInvalid>()("JoinTokenInvalid", fields("BLX_JOIN_TOKEN_INVALID")) {}

/** A join token already used by a node (each is good for one join). */
export class JoinTokenUsed extends Schema.TaggedError<JoinTokenUsed>()("JoinTokenUsed", fields("BLX_JOIN_TOKEN_USED")) {}

/** A join token past its expiry (by the clock of the leader that applied the join). */
export class JoinTokenExpired extends Schema.TaggedError<JoinTokenExpired>()("JoinTokenExpired", fields("BLX_JOIN_TOKEN_EXPIRED")) {}

/**
 * The CA a member offered is not the one the join token pins: a machine in the middle, or a token of
 * another cluster. Raised by the joining node only.
 */
export class JoinTokenCaMismatch extends Schema.TaggedError<JoinTokenCaMismatch>()("JoinTokenCaMismatch", fields("BLX_JOIN_TOKEN_CA_MISMATCH")) {}

/**
 * The cluster runs on the public development secret (no `clusterSecretFile`): a join token would
 * hand that secret to the joining node, so none is made or honoured until the members have a secret.
 */
export class ClusterSecretRequired extends Schema.TaggedError<ClusterSecretRequired>()("ClusterSecretRequired", fields("BLX_CLUSTER_SECRET_REQUIRED")) {}

/** Plain (unencrypted) mode was asked for on a non-loopback address without `--i-know`. */
export class PlaintextRefused extends Schema.TaggedError<PlaintextRefused>()("PlaintextRefused", fields("BLX_PLAINTEXT_REFUSED")) {}

/** A CA rotation cannot finish: members still hold only a certificate of the old CA. */
export class CaRotationIncomplete extends Schema.TaggedError<CaRotationIncomplete>()("CaRotationIncomplete", fields("BLX_CA_ROTATION_INCOMPLETE")) {}

/**
 * A command needs a newer log version than the cluster runs at (`cluster/ClusterVersion.ts`): some
 * member runs an older release, which could not apply it. The message names them: upgrade them.
 */
export class ClusterVersionTooLow extends Schema.TaggedError<ClusterVersionTooLow>()("ClusterVersionTooLow", fields("BLX_CLUSTER_VERSION")) {}

/**
 * The node's release applies an older log version than the cluster's recorded one: it stops rather
 * than apply the log wrongly. Raised by the node itself (its data directory is the subject); never
 * sent over the wire, so not a member of `BlixardError`.
 */
export class ReleaseTooOld extends Schema.TaggedError<ReleaseTooOld>()("ReleaseTooOld", fields("BLX_RELEASE_TOO_OLD")) {}

/** The machinery behind a command does not exist yet in this build. */
export class NotImplemented extends Schema.TaggedError<NotImplemented>()(
  "NotImplemented",
  fields("BLX_NOT_IMPLEMENTED")
) {}

/** Every error Blixard sends over the wire. */
export const BlixardError = Schema.Union(
  InvalidArgument,
  ConfigInvalid,
  VmNotFound,
  VmExists,
  NodeNotFound,
  Conflict,
  NotLeader,
  Timeout,
  Unavailable,
  ProposalDropped,
  Unauthorized,
  Forbidden,
  TokenNotFound,
  RunnerNotAllowed,
  FlakeNotAllowed,
  StorageCorrupt,
  StorageLocked,
  StorageIo,
  WrongDataDir,
  MemberAmnesia,
  NodeIdInUse,
  Unschedulable,
  BackendFailed,
  InvariantViolated,
  NotImplemented,
  TlsUntrusted,
  JoinTokenInvalid,
  JoinTokenUsed,
  JoinTokenExpired,
  ClusterSecretRequired,
  CertificateRevoked,
  CaRotationIncomplete,
  ClusterVersionTooLow
)
export type BlixardError = typeof BlixardError.Type
export type ErrorCode = BlixardError["code"]

/** `BLX_VM_NOT_FOUND: no VM named "web" (asked node 2)` */
export const formatError = (error: BlixardError | ReleaseTooOld | Fenced | StorageStalled | VmDirForeign | SnapshotInvalid | DiscoveryFailed): string =>
  `${error.code}: ${error.message}${error.node !== undefined ? ` (node ${error.node})` : ""}`
