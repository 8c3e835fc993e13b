/**
 * The replicated state machine: the cluster's desired state (VMs, nodes) and how each committed
 * `Command` changes it. `apply` is pure and deterministic — the same entries in the same order give
 * the same state on every node — so it uses only the entry (its index and the leader's
 * `proposedAt` clock), never the local clock, and iterates in sorted order.
 *
 * Placement happens here, at apply time, so it always sees every earlier command: a VM is placed
 * when created, re-placed when its node goes down, is removed or drained, and a pending VM is
 * retried whenever capacity may have appeared.
 *
 * A VM leaves a live node in two phases (a drain, or an update after which it no longer fits): the
 * record is marked `moving` and stays on its node, whose agent stops it and reports `released`;
 * that report places it elsewhere. Moving it in one step would let the new node start it before
 * the old one has applied the entry and stopped it. A node marked down or removed gives its VMs up
 * at once: by `nodeDownMs` it has fenced itself. A node whose registration does not advertise
 * `releases-moves` (an older version) never reports `released`: its moves wait, and say so
 * (`movingReason`), until it registers again upgraded or is marked down — never a one-step move.
 * That is from cluster log version `TwoStepMoves` on: below it (members of an older release apply
 * the log), moves are in one step on every replica, as the older ones make them
 * (`ClusterVersion.ts`; the cluster's version is `clusterVersion`, raised by `SetClusterVersion`).
 */
import { Either, Schema } from "effect"
import { ApiTokenInfo, ApiTokenRecord } from "../domain/ApiToken.js"
import { CaRotation, CaStatus } from "../domain/CaRotation.js"
import { CertificateRecord, RevokedCertificate, revokedAdvice } from "../domain/Certificate.js"
import type { CaRotationMoved, Command, CommandEnvelope, FinishCaRotation, RecordCertificate, RevokeCertificate, StartCaRotation, UpdateVm } from "../domain/Command.js"
import type { BlixardError } from "../domain/Errors.js"
import {
  BlixardError as BlixardErrorSchema,
  CaRotationIncomplete,
  CertificateRevoked,
  Conflict,
  Forbidden,
  InvalidArgument,
  JoinTokenExpired,
  JoinTokenInvalid,
  JoinTokenUsed,
  NodeIdInUse,
  NodeNotFound,
  TokenNotFound,
  VmExists,
  VmNotFound
} from "../domain/Errors.js"
import { JoinTokenInfo, JoinTokenRecord, JoinTokenRetentionMs } from "../domain/JoinToken.js"
import { trusted } from "../domain/Decode.js"
import { toJson } from "../domain/Json.js"
import type { NodeId } from "../domain/NodeId.js"
import { NodeInfo, releasesMoves } from "../domain/NodeInfo.js"
import { ConfigSource, VmSpec } from "../domain/VmSpec.js"
import type { VmName } from "../domain/VmName.js"
import { VmRecord, VmStatus } from "../domain/VmStatus.js"
import { Ledger, place, shortfall } from "./Scheduler.js"
import { LogVersion, OldestLogVersion, setRefusal, TwoStepMoves, versionRefusal } from "./ClusterVersion.js"

/**
 * Why `incarnation` may not register or heartbeat as `node` now: another incarnation holds the id
 * and the node is not down. (A host whose data directory was replaced waits until its old
 * incarnation is marked down, `nodeDownMs` after it went silent: by then its VMs run elsewhere.) The
 * leader's checks before proposing and answering, and every replica's apply, decide with this.
 */
export const hostIdInUse = (node: NodeInfo | undefined, incarnation: string | undefined): NodeIdInUse | undefined =>
  node === undefined || node.incarnation === undefined || incarnation === undefined || node.incarnation === incarnation || node.health === "down"
    ? undefined
    : new NodeIdInUse({
        subject: String(node.id),
        message: `node id ${node.id} is held by another host (data directory incarnation ${node.incarnation}, not this one's ${incarnation}) and the cluster still hears from it; give this host its own --id, or, if it replaces that host, stop the old one: it is accepted once node ${node.id} is marked down`
      })

/** What applying a command produced: the VM, node, API token or join token it touched, or why it was refused. */
export type ApplyResult = Either.Either<
  {
    readonly vm?: VmRecord | undefined
    readonly node?: NodeInfo | undefined
    readonly token?: ApiTokenInfo | undefined
    readonly joinToken?: JoinTokenInfo | undefined
    /** The certificates a revocation (or removal) put on the revocation list. */
    readonly revoked?: ReadonlyArray<RevokedCertificate> | undefined
    readonly certificate?: CertificateRecord | undefined
  },
  BlixardError
>

const sourceJson = Schema.encodeSync(ConfigSource)

/** How many client request ids are remembered for de-duplication (oldest forgotten first). */
export const RequestMemory = 10_000

const ResultJson = Schema.Union(
  Schema.Struct({
    ok: Schema.Literal(true),
    vm: Schema.optionalWith(VmRecord, { exact: true }),
    node: Schema.optionalWith(NodeInfo, { exact: true }),
    token: Schema.optionalWith(ApiTokenInfo, { exact: true }),
    joinToken: Schema.optionalWith(JoinTokenInfo, { exact: true }),
    revoked: Schema.optionalWith(Schema.Array(RevokedCertificate), { exact: true }),
    certificate: Schema.optionalWith(CertificateRecord, { exact: true })
  }),
  Schema.Struct({ ok: Schema.Literal(false), error: BlixardErrorSchema })
)

const snapshotFields = {
  version: Schema.Literal(1),
  appliedIndex: Schema.Int,
  vms: Schema.Array(VmRecord),
  nodes: Schema.Array(NodeInfo),
  members: Schema.Array(Schema.Tuple(Schema.Int, Schema.String)),
  requests: Schema.Array(Schema.Tuple(Schema.String, ResultJson))
}

/**
 * Reading a snapshot: one written before the cluster id (or API or join tokens) existed has none;
 * one written before log versions is of the oldest.
 */
const SnapshotJson = Schema.parseJson(
  Schema.Struct({
    ...snapshotFields,
    clusterId: Schema.optionalWith(Schema.String, { default: () => "" }),
    tokens: Schema.optionalWith(Schema.Array(ApiTokenRecord), { default: () => [] }),
    joinTokens: Schema.optionalWith(Schema.Array(JoinTokenRecord), { default: () => [] }),
    certificates: Schema.optionalWith(Schema.Array(CertificateRecord), { default: () => [] }),
    revoked: Schema.optionalWith(Schema.Array(RevokedCertificate), { default: () => [] }),
    caRotation: Schema.optionalWith(Schema.NullOr(CaRotation), { default: () => null }),
    caInForce: Schema.optionalWith(Schema.String, { default: () => "" }),
    clusterVersion: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => OldestLogVersion })
  })
)

/**
 * Writing one: always with its cluster id, as plain `JSON.stringify` of the records (`toJson`; the
 * state holds only records built from validated commands). A snapshot carries every VM; encoding
 * each through its schema cost ~7 µs per VM, on every node, every `snapshotEvery` entries. It is
 * written field by field, the VMs in pieces (see `snapshotView`); the text is the JSON of
 * `{ ...snapshotFields, clusterId, tokens, joinTokens, certificates, revoked, caRotation, caInForce, clusterVersion }` in this order.
 */
const vmJson = toJson(VmRecord)
const nodesJson = toJson(snapshotFields.nodes)
const membersJson = toJson(snapshotFields.members)
const requestsJson = toJson(snapshotFields.requests)
const tokensJson = toJson(Schema.Array(ApiTokenRecord))
const joinTokensJson = toJson(Schema.Array(JoinTokenRecord))
const certificatesJson = toJson(Schema.Array(CertificateRecord))
const revokedJson = toJson(Schema.Array(RevokedCertificate))
const caRotationJson = toJson(Schema.NullOr(CaRotation))

/** VMs per piece of a snapshot's text: ~1 ms of `JSON.stringify` each. */
const vmsPerPiece = 1_000

const encodeResult = (result: ApplyResult): typeof ResultJson.Type =>
  Either.isRight(result)
    ? {
        ok: true,
        ...(result.right.vm ? { vm: result.right.vm } : {}),
        ...(result.right.node ? { node: result.right.node } : {}),
        ...(result.right.token ? { token: result.right.token } : {}),
        ...(result.right.joinToken ? { joinToken: result.right.joinToken } : {}),
        ...(result.right.revoked ? { revoked: result.right.revoked } : {}),
        ...(result.right.certificate ? { certificate: result.right.certificate } : {})
      }
    : { ok: false, error: result.left }

const decodeResult = (json: typeof ResultJson.Type): ApplyResult =>
  json.ok
    ? Either.right({ vm: json.vm, node: json.node, token: json.token, joinToken: json.joinToken, revoked: json.revoked, certificate: json.certificate })
    : Either.left(json.error)

const tokenInfo = (record: ApiTokenRecord): ApiTokenInfo => {
  const { hash: _, ...info } = record
  return new ApiTokenInfo(info, trusted)
}

const joinTokenInfo = (record: JoinTokenRecord): JoinTokenInfo => {
  const { hash: _, usedKey: _key, ...info } = record
  return new JoinTokenInfo(info, trusted)
}

/** A VM record's fields apart from where it is placed: what the scheduler needs to place it. */
type Unplaced = Pick<VmRecord, "spec" | "desired" | "status" | "revision" | "createdAt" | "generation">

/** Who presents a join token: the node and the SHA-256 of its public key (`ConsumeJoinToken`). */
export interface Joiner {
  readonly node: number
  readonly key?: string | undefined
}

/** Whether `joiner` is the node that used `record`, with the same key: its retry is admitted again. */
const isSameJoiner = (record: JoinTokenRecord, joiner: Joiner | undefined): boolean =>
  joiner !== undefined && record.usedBy === joiner.node && record.usedKey !== undefined && record.usedKey === joiner.key

/**
 * Why the join token `record` may not admit `joiner` presenting `hash` at `now`, if it may not: one
 * rule for the leader's check before it proposes and for every replica's apply. A used token admits
 * again only the node that used it with the same key, until it expires: that node's answer may
 * have been lost after the token was consumed.
 */
export const joinTokenRefusal = (
  record: JoinTokenRecord | undefined,
  hash: string,
  now: number,
  joiner?: Joiner
): JoinTokenInvalid | JoinTokenUsed | JoinTokenExpired | undefined => {
  const make = "make a new one with `blixard cluster token create` (admin) and start the node with it"
  // A hash is compared whole: it is the digest of a secret, so its prefix says nothing of the secret.
  if (record === undefined || record.hash !== hash) {
    return new JoinTokenInvalid({
      ...(record !== undefined ? { subject: record.id } : {}),
      message: `the join token is not valid in this cluster (unknown, revoked, forgotten a day after it expired, or its secret is wrong); ${make}`
    })
  }
  if (record.usedBy !== undefined && !isSameJoiner(record, joiner)) {
    return new JoinTokenUsed({
      subject: record.id,
      message: `join token ${record.id} was already used by node ${record.usedBy}${record.usedAt !== undefined ? ` at ${new Date(record.usedAt).toISOString()}` : ""}; a join token admits one node (again only that node with the key it joined with, until the token expires): ${make}`
    })
  }
  if (now >= record.expiresAt) {
    return new JoinTokenExpired({
      subject: record.id,
      message: `join token ${record.id} expired at ${new Date(record.expiresAt).toISOString()}; ${make} (--ttl sets how long it lives)`
    })
  }
  return undefined
}

export class ClusterState {
  /** Every VM by name. Read freely; change only through `put`/`remove`, which keep the indexes below. */
  readonly vms = new Map<string, VmRecord>()
  /** What the placed VMs reserve on each node. */
  private readonly ledger = new Ledger()
  /** Names of the VMs placed nowhere (pending). */
  private readonly unplaced = new Set<string>()
  readonly nodes = new Map<number, NodeInfo>()
  /** Raft members' peer addresses, learned from membership changes (and the founding members). */
  readonly members = new Map<number, string>()
  /** Request id → result, in the order applied. */
  readonly requests = new Map<string, typeof ResultJson.Type>()
  /**
   * The ids in `requests` as a ring, the oldest at `requestNext` once it is full: forgetting the
   * oldest id is O(1). (Taking it from `requests.keys()` is not: a Map's iterator walks over the
   * slots of deleted entries, thousands of them between rehashes — measured 2–10 µs per apply.)
   */
  private readonly requestRing: Array<string> = []
  private requestNext = 0
  appliedIndex = 0
  /** Chosen by the founding node and carried in every snapshot; "" until known. */
  clusterId = ""
  /** The API tokens by id (their secrets' hashes only). */
  readonly tokens = new Map<string, ApiTokenRecord>()
  /** The join tokens by id (their hashes only), until a day after they expire. */
  readonly joinTokens = new Map<string, JoinTokenRecord>()
  /** The certificates nodes reported holding, by serial, until they expire. */
  readonly certificates = new Map<string, CertificateRecord>()
  /** The revocation list, by serial, until the certificates expire (`Certificate.ts`). */
  readonly revoked = new Map<string, RevokedCertificate>()
  /** The CA rotation in progress (`CaRotation.ts`), if one is. */
  caRotation: CaRotation | undefined = undefined
  /** The SHA-256 of the CA the last finished rotation moved to; "" before any finished. */
  caInForce = ""
  /**
   * The cluster's log version (`ClusterVersion.ts`): what every member can apply. A new state is of
   * this release (a founder writes it into the bootstrap snapshot); a snapshot without one is of
   * the oldest. Raised by `SetClusterVersion`, never lowered.
   */
  clusterVersion = LogVersion
  /**
   * The log version of the release applying this state: this one's, `LogVersion`. Not replicated.
   * The simulator plays older releases with it: below `TwoStepMoves` a release moves VMs in one
   * step whatever the cluster's version (it knows no other way), and it stops on a log above it.
   */
  release = LogVersion
  /**
   * UNSAFE, for the simulator only (`--bug one-step-moves`): a VM leaves a live node in one step, as
   * before two-phase moves, so its next node may start it before the old one has stopped it.
   */
  unsafeOneStepMoves = false
  /** When set, every VM changed is noted with its record before its first change (for events). */
  journal: Map<string, VmRecord | undefined> | undefined = undefined

  private put(name: string, record: VmRecord): void {
    const old = this.vms.get(name)
    if (this.journal !== undefined && !this.journal.has(name)) this.journal.set(name, old)
    if (old !== undefined) this.ledger.remove(old)
    this.vms.set(name, record)
    this.ledger.add(record)
    if (record.node === undefined) this.unplaced.add(name)
    else this.unplaced.delete(name)
  }

  /** Remembers the result of request `id`, forgetting the oldest id beyond `RequestMemory`. */
  private remember(id: string, result: typeof ResultJson.Type): void {
    this.requests.set(id, result)
    const oldest = this.requestRing[this.requestNext]
    if (oldest !== undefined) this.requests.delete(oldest)
    this.requestRing[this.requestNext] = id
    this.requestNext = (this.requestNext + 1) % RequestMemory
  }

  private remove(name: string): void {
    const old = this.vms.get(name)
    if (old === undefined) return
    if (this.journal !== undefined && !this.journal.has(name)) this.journal.set(name, old)
    this.ledger.remove(old)
    this.vms.delete(name)
    this.unplaced.delete(name)
  }

  /**
   * Applies the committed entry at `index`. Never throws for a refused command: it returns the
   * error. The envelope and its command may be plain objects of their classes' shape (that is how
   * the state machine decodes entries); only their fields are read.
   */
  apply(index: number, envelope: CommandEnvelope): ApplyResult {
    if (index <= this.appliedIndex) {
      throw new Error(`state machine applied entry ${index} after ${this.appliedIndex}: entries must apply once, in order`)
    }
    this.appliedIndex = index
    // A command of a newer log version than the cluster's changes nothing, and its request id is
    // not remembered: exactly what a replica of an older release that cannot decode it does.
    const tooNew = versionRefusal(this, envelope.command)
    if (tooNew !== undefined) return Either.left(tooNew)
    const id = envelope.requestId
    if (id !== undefined) {
      const seen = this.requests.get(id)
      if (seen !== undefined) return decodeResult(seen)
    }
    const result = this.run(envelope.command, envelope.proposedAt)
    if (id !== undefined) this.remember(id, encodeResult(result))
    return result
  }

  private run(command: Command, now: number): ApplyResult {
    switch (command._tag) {
      case "CreateVm": {
        const name = command.spec.name
        if (this.vms.has(name)) return Either.left(new VmExists({ subject: name, message: `a VM named "${name}" already exists` }))
        // Created (revision 1) and placed (revision 2) in one step: no record of the first is kept.
        const record = this.placed(
          {
            spec: command.spec,
            desired: command.desired ?? "stopped",
            status: new VmStatus({ phase: "pending", since: now, restarts: 0 }, trusted),
            revision: 1,
            createdAt: now
          },
          now
        )
        this.put(name, record)
        return Either.right({ vm: record })
      }
      case "StartVm":
      case "StopVm":
      case "DeleteVm":
      case "SetVmLabels": {
        const vm = this.vms.get(command.name)
        if (vm === undefined) {
          return Either.left(new VmNotFound({ subject: command.name, message: `no VM named "${command.name}"` }))
        }
        if (command.ifRevision !== undefined && command.ifRevision !== vm.revision) {
          return Either.left(
            new Conflict({
              subject: command.name,
              message: `VM "${command.name}" is at revision ${vm.revision}, not ${command.ifRevision}; read it again and retry`
            })
          )
        }
        if (command._tag === "DeleteVm") {
          this.remove(command.name)
          // What it reserved is free now: a pending VM may fit.
          if (vm.node !== undefined && this.unplaced.size > 0) this.placePending(now)
          return Either.right({ vm })
        }
        // Starting a VM whose runner failed (its restart policy gave up) is the retry: the start
        // clears the failure, so its node's agent starts it again.
        const retry = command._tag === "StartVm" && vm.status.phase === "failed"
        const updated =
          command._tag === "SetVmLabels"
            ? new VmRecord({ ...vm, spec: new VmSpec({ ...vm.spec, labels: command.labels }, trusted), revision: vm.revision + 1 }, trusted)
            : new VmRecord({
                ...vm,
                desired: command._tag === "StartVm" ? "running" : "stopped",
                ...(retry ? { status: new VmStatus({ phase: "stopped", since: now, restarts: vm.status.restarts }, trusted) } : {}),
                revision: vm.revision + 1
              }, trusted)
        this.put(command.name, updated)
        return Either.right({ vm: updated.node === undefined ? this.placeVm(command.name, now) : updated })
      }
      case "UpdateVm":
        return this.update(command, now)
      case "ReportVmStatus":
        return Either.right({ vm: this.reportStatus(command.name, command.node, command.status, now) })
      case "ReportVmStatuses": {
        for (const report of command.reports) this.reportStatus(report.name, command.node, report.status, now)
        return Either.right({})
      }
      case "RegisterNode": {
        const existing = this.nodes.get(command.info.id)
        const inUse = hostIdInUse(existing, command.info.incarnation)
        if (inUse !== undefined) return Either.left(inUse)
        // Registration refreshes address, capacity and labels; a cordon or drain outlives restarts,
        // and so does a host's incarnation when a host of an older version (none) registers.
        const incarnation = command.info.incarnation ?? existing?.incarnation
        const info = new NodeInfo(
          { ...command.info, ...(incarnation !== undefined ? { incarnation } : {}), state: existing?.state ?? command.info.state, health: "up" },
          trusted
        )
        this.nodes.set(info.id, info)
        this.explainMoves(info.id)
        this.placePending(now)
        return Either.right({ node: info })
      }
      case "SetNodeState":
      case "SetNodeHealth": {
        const node = this.nodes.get(command.id)
        if (node === undefined) {
          return Either.left(new NodeNotFound({ subject: String(command.id), message: `no node with id ${command.id} in the cluster` }))
        }
        const info =
          command._tag === "SetNodeState"
            ? new NodeInfo({ ...node, state: command.state }, trusted)
            : new NodeInfo({ ...node, health: command.health }, trusted)
        this.nodes.set(info.id, info)
        if (info.health === "down") this.evacuate(info.id, now)
        else if (info.state === "draining") this.oneStepMoves() ? this.evacuate(info.id, now) : this.beginMoves(info.id)
        else this.cancelMoves(info)
        this.placePending(now)
        return Either.right({ node: info })
      }
      case "RemoveNode": {
        const node = this.nodes.get(command.id)
        if (node === undefined) {
          return Either.left(new NodeNotFound({ subject: String(command.id), message: `no node with id ${command.id} in the cluster` }))
        }
        this.nodes.delete(command.id)
        this.evacuate(command.id, now)
        return Either.right({ node })
      }
      case "CreateApiToken": {
        // Ids are 64 random bits: a collision is a bug or a replayed command, never overwritten.
        if (this.tokens.has(command.id)) {
          return Either.left(new InvalidArgument({ subject: command.id, message: `an API token with id ${command.id} already exists` }))
        }
        const { _tag, ...fields } = command
        const record = new ApiTokenRecord({ ...fields, createdAt: now }, trusted)
        this.tokens.set(record.id, record)
        return Either.right({ token: tokenInfo(record) })
      }
      case "RevokeApiToken": {
        const record = this.tokens.get(command.id)
        if (record === undefined) {
          return Either.left(
            new TokenNotFound({ subject: command.id, message: `no API token with id ${command.id}; \`blixard token list\` shows the ids` })
          )
        }
        this.tokens.delete(command.id)
        return Either.right({ token: tokenInfo(record) })
      }
      case "CreateJoinToken":
      case "RevokeJoinToken":
      case "ConsumeJoinToken":
        return this.joinToken(command, now)
      case "RecordCertificate":
        return this.recordCertificate(command, now)
      case "RevokeCertificate":
        return this.revokeCertificate(command, now)
      case "StartCaRotation":
      case "CaRotationMoved":
      case "FinishCaRotation":
        return this.caRotationStep(command, now)
      case "SetClusterVersion": {
        if (command.version <= this.clusterVersion) return Either.right({})
        const refusal = setRefusal(this, command.version, command.members)
        if (refusal !== undefined) return Either.left(refusal)
        this.clusterVersion = command.version
        return Either.right({})
      }
    }
  }

  /** The CA in force and the rotation in progress, as `cluster ca status` shows them. */
  caStatus(): CaStatus {
    const rotation = this.caRotation
    if (rotation === undefined) return new CaStatus({ phase: "steady", fingerprint: this.caInForce }, trusted)
    return new CaStatus(
      {
        phase: "rotating",
        fingerprint: rotation.previous,
        rotation: { fingerprint: rotation.fingerprint, previous: rotation.previous, startedAt: rotation.startedAt, moved: rotation.moved, waiting: this.waitingForCa(rotation) }
      },
      trusted
    )
  }

  /** The current members that have not reported a certificate of the rotation's new CA, in id order. */
  private waitingForCa(rotation: CaRotation): Array<NodeId> {
    return [...this.members.keys()].sort((a, b) => a - b).filter((id) => !rotation.moved.includes(id as NodeId)) as Array<NodeId>
  }

  /** The three steps of a CA rotation (see `CaRotation.ts`). */
  /** A node's report of a VM's status; the VM's record after it. */
  private reportStatus(name: VmName, node: NodeId, status: VmStatus, now: number): VmRecord | undefined {
    const vm = this.vms.get(name)
    // A report from a node that no longer hosts the VM (it was rescheduled) is stale: ignore it.
    if (vm === undefined || vm.node !== node) return vm
    const updated = new VmRecord({ ...vm, status, revision: vm.revision + 1 }, trusted)
    this.put(name, updated)
    if (vm.moving === undefined || status.released !== vm.moving) return updated
    if (status.phase !== "stopped" && status.phase !== "failed") return updated
    // Its node has stopped it for this move: now it may run elsewhere.
    const { node: from, moving: _, movingReason: __, ...rest } = updated
    this.put(name, new VmRecord(rest, trusted))
    const moved = this.placeVm(name, now, from)
    if (this.unplaced.size > 0) this.placePending(now)
    return this.vms.get(name) ?? moved
  }

  private caRotationStep(command: StartCaRotation | CaRotationMoved | FinishCaRotation, now: number): ApplyResult {
    const rotation = this.caRotation
    const status = "`blixard cluster ca status` shows it"
    switch (command._tag) {
      case "StartCaRotation": {
        if (rotation !== undefined) {
          return Either.left(new Conflict({ subject: rotation.fingerprint, message: `a CA rotation (to CA ${rotation.fingerprint.slice(0, 16)}…) is in progress already; finish it first (${status})` }))
        }
        const members = [...this.members.keys()].sort((a, b) => a - b)
        const sealedTo = command.keys.map((k) => k.node as number).sort((a, b) => a - b)
        if (members.length === 0 || sealedTo.length !== members.length || sealedTo.some((id, i) => id !== members[i])) {
          return Either.left(
            new Conflict({
              subject: "members",
              message: `the new CA's key was sealed to nodes ${sealedTo.join(", ") || "none"}, but the members are ${members.join(", ") || "none"} (the membership changed while the rotation was prepared); run \`blixard cluster ca rotate\` again`
            })
          )
        }
        if (this.caInForce !== "" && command.previous !== this.caInForce) {
          return Either.left(new Conflict({ subject: command.previous, message: `the rotation replaces CA ${command.previous.slice(0, 16)}…, but the cluster's CA is ${this.caInForce.slice(0, 16)}…; run \`blixard cluster ca rotate\` again` }))
        }
        const { _tag, ...fields } = command
        this.caRotation = new CaRotation({ ...fields, startedAt: now, moved: [] }, trusted)
        return Either.right({})
      }
      case "CaRotationMoved": {
        if (rotation === undefined || rotation.fingerprint !== command.fingerprint) {
          return Either.left(new InvalidArgument({ node: command.node, subject: command.fingerprint, message: `no CA rotation to CA ${command.fingerprint.slice(0, 16)}… is in progress (${status})` }))
        }
        if (rotation.moved.includes(command.node)) return Either.right({})
        const moved = [...rotation.moved, command.node].sort((a, b) => a - b)
        this.caRotation = new CaRotation({ ...rotation, moved }, trusted)
        return Either.right({})
      }
      case "FinishCaRotation": {
        if (rotation === undefined || rotation.fingerprint !== command.fingerprint) {
          return Either.left(new InvalidArgument({ subject: command.fingerprint, message: `no CA rotation to CA ${command.fingerprint.slice(0, 16)}… is in progress (${status})` }))
        }
        const waiting = this.waitingForCa(rotation)
        if (waiting.length > 0) {
          return Either.left(
            new CaRotationIncomplete({
              subject: waiting.join(","),
              message: `node${waiting.length > 1 ? "s" : ""} ${waiting.join(", ")} still hold${waiting.length > 1 ? "" : "s"} only a certificate of the old CA: finishing now would cut ${waiting.length > 1 ? "them" : "it"} off. A running member moves within seconds of the rotation's start; start ${waiting.length > 1 ? "them" : "it"}, or remove ${waiting.length > 1 ? "them" : "it"} (blixard cluster leave --id N), then finish again`
            })
          )
        }
        this.caRotation = undefined
        this.caInForce = rotation.fingerprint
        return Either.right({})
      }
    }
  }

  /** Forgets records and revocations of certificates that expired before `now`: they are refused anyway. */
  private forgetExpired(now: number): void {
    for (const serial of [...this.certificates.keys()].sort()) if (this.certificates.get(serial)!.notAfter < now) this.certificates.delete(serial)
    for (const serial of [...this.revoked.keys()].sort()) {
      const notAfter = this.revoked.get(serial)!.notAfter
      if (notAfter !== undefined && notAfter < now) this.revoked.delete(serial)
    }
  }

  private recordCertificate(command: RecordCertificate, now: number): ApplyResult {
    this.forgetExpired(now)
    const revoked = this.revoked.get(command.serial)
    if (revoked !== undefined) {
      return Either.left(
        new CertificateRevoked({
          node: command.node,
          subject: command.serial,
          message: `node ${command.node}'s certificate ${command.serial} is revoked (${revoked.reason}); it cannot be used again: ${revokedAdvice(command.node)}`
        })
      )
    }
    const holder = this.certificates.get(command.serial)?.node
    if (holder !== undefined && holder !== command.node) {
      return Either.left(new InvalidArgument({ node: command.node, subject: command.serial, message: `certificate ${command.serial} is recorded as node ${holder}'s, not node ${command.node}'s` }))
    }
    // Removed while its renewal was signed: its certificates were revoked then, and this one is not handed out.
    if (command.issued === "renewal" && !this.members.has(command.node)) {
      return Either.left(
        new Forbidden({
          node: command.node,
          subject: command.serial,
          message: `node ${command.node} is not a member of the cluster: its renewed certificate ${command.serial} is not issued; ${revokedAdvice(command.node)}`
        })
      )
    }
    // Fields in the schema's order: a snapshot is the records' JSON, and equal states give equal text.
    const record = new CertificateRecord(
      { serial: command.serial, node: command.node, fingerprint: command.fingerprint, notAfter: command.notAfter, recordedAt: now },
      trusted
    )
    this.certificates.set(record.serial, record)
    return Either.right({ certificate: record })
  }

  /** Puts `records` on the revocation list with `reason`; what it added. */
  private revokeRecords(records: ReadonlyArray<CertificateRecord>, reason: string, now: number | undefined): Array<RevokedCertificate> {
    const added: Array<RevokedCertificate> = []
    for (const record of records) {
      const entry = new RevokedCertificate(
        { serial: record.serial, node: record.node, fingerprint: record.fingerprint, notAfter: record.notAfter, reason, ...(now !== undefined ? { revokedAt: now } : {}) },
        trusted
      )
      this.certificates.delete(record.serial)
      this.revoked.set(entry.serial, entry)
      added.push(entry)
    }
    return added
  }

  private recordsOf(node: number): Array<CertificateRecord> {
    return [...this.certificates.keys()].sort().map((serial) => this.certificates.get(serial)!).filter((record) => record.node === node)
  }

  private revokeCertificate(command: RevokeCertificate, now: number): ApplyResult {
    if (command.serial !== undefined) {
      if (this.revoked.has(command.serial)) return Either.right({ revoked: [] })
      const record = this.certificates.get(command.serial)
      if (command.node !== undefined && record !== undefined && record.node !== command.node) {
        return Either.left(
          new InvalidArgument({ subject: command.serial, message: `certificate ${command.serial} is node ${record.node}'s, not node ${command.node}'s` })
        )
      }
      if (record !== undefined) return Either.right({ revoked: this.revokeRecords([record], command.reason, now) })
      // A serial nobody reported (a stolen copy of an old certificate, say): listed until forgotten by hand.
      const entry = new RevokedCertificate(
        { serial: command.serial, ...(command.node !== undefined ? { node: command.node } : {}), reason: command.reason, revokedAt: now },
        trusted
      )
      this.revoked.set(entry.serial, entry)
      return Either.right({ revoked: [entry] })
    }
    if (command.node === undefined) return Either.left(new InvalidArgument({ message: "revoking a certificate needs a node id or a serial number" }))
    const records = this.recordsOf(command.node)
    if (records.length === 0) {
      return Either.left(
        new NodeNotFound({
          subject: String(command.node),
          message: `no certificate of node ${command.node} is recorded (nodes report theirs at start; \`blixard cluster cert status\` lists them); revoke it by serial number instead`
        })
      )
    }
    return Either.right({ revoked: this.revokeRecords(records, command.reason, now) })
  }

  /**
   * Join tokens. Expiry is judged by `now`, the entry's `proposedAt` (the proposing leader's clock,
   * carried in the entry), never by the applying node's clock: every replica decides alike, and a
   * token is refused once the leader that would admit the node says it has expired.
   */
  private joinToken(command: Extract<Command, { _tag: "CreateJoinToken" | "RevokeJoinToken" | "ConsumeJoinToken" }>, now: number): ApplyResult {
    const existing = this.joinTokens.get(command.id)
    switch (command._tag) {
      case "CreateJoinToken": {
        if (existing !== undefined) {
          return Either.left(new InvalidArgument({ subject: command.id, message: `a join token with id ${command.id} already exists` }))
        }
        // Forget tokens a day past their expiry, so the state does not grow with every join.
        for (const id of [...this.joinTokens.keys()].sort()) {
          if (this.joinTokens.get(id)!.expiresAt + JoinTokenRetentionMs < now) this.joinTokens.delete(id)
        }
        const record = new JoinTokenRecord({ id: command.id, hash: command.hash, createdAt: now, expiresAt: now + command.ttlMs }, trusted)
        this.joinTokens.set(record.id, record)
        return Either.right({ joinToken: joinTokenInfo(record) })
      }
      case "RevokeJoinToken": {
        if (existing === undefined) {
          return Either.left(
            new TokenNotFound({ subject: command.id, message: `no join token with id ${command.id}; \`blixard cluster token list\` shows the ids` })
          )
        }
        this.joinTokens.delete(command.id)
        return Either.right({ joinToken: joinTokenInfo(existing) })
      }
      case "ConsumeJoinToken": {
        const refusal = joinTokenRefusal(existing, command.hash, now, command)
        if (refusal !== undefined) return Either.left(refusal)
        // A retry by the node that used it changes nothing: it was used when it was first consumed.
        if (existing!.usedBy !== undefined) return Either.right({ joinToken: joinTokenInfo(existing!) })
        const used = new JoinTokenRecord({ ...existing!, usedBy: command.node, usedAt: now, ...(command.key !== undefined ? { usedKey: command.key } : {}) }, trusted)
        this.joinTokens.set(used.id, used)
        return Either.right({ joinToken: joinTokenInfo(used) })
      }
    }
  }

  /**
   * `vm update`: the new spec, a new generation when the runner must change (source, vcpus, memory).
   * Resources are checked again against the hosting node, not counting what the VM itself reserved
   * there: a VM that no longer fits moves (or waits, pending, for a node it fits on).
   */
  private update(command: UpdateVm, now: number): ApplyResult {
    const vm = this.vms.get(command.name)
    if (vm === undefined) return Either.left(new VmNotFound({ subject: command.name, message: `no VM named "${command.name}"` }))
    if (command.ifRevision !== undefined && command.ifRevision !== vm.revision) {
      return Either.left(
        new Conflict({
          subject: command.name,
          message: `VM "${command.name}" is at revision ${vm.revision}, not ${command.ifRevision}; read it again and retry`
        })
      )
    }
    const spec = new VmSpec(
      {
        ...vm.spec,
        ...(command.source !== undefined ? { source: command.source } : {}),
        ...(command.vcpus !== undefined ? { vcpus: command.vcpus } : {}),
        ...(command.memoryMiB !== undefined ? { memoryMiB: command.memoryMiB } : {}),
        ...(command.restartPolicy !== undefined ? { restartPolicy: command.restartPolicy } : {})
      },
      trusted
    )
    // Giving the source again after a failed build is a retry: a new generation to build.
    const rebuild =
      (command.source !== undefined && vm.status.build?.state === "failed") ||
      JSON.stringify(sourceJson(spec.source)) !== JSON.stringify(sourceJson(vm.spec.source)) ||
      spec.vcpus !== vm.spec.vcpus ||
      spec.memoryMiB !== vm.spec.memoryMiB
    const updated = new VmRecord(
      { ...vm, spec, generation: (vm.generation ?? 0) + (rebuild ? 1 : 0), revision: vm.revision + 1 },
      trusted
    )
    const host = vm.node === undefined ? undefined : this.nodes.get(vm.node)
    this.ledger.remove(vm)
    const short = host === undefined ? undefined : shortfall(spec, host, this.ledger.get(host.id))
    this.ledger.add(vm)
    if (vm.node === undefined) {
      this.put(command.name, updated)
      return Either.right({ vm: this.placeVm(command.name, now) })
    }
    // It fits, or is moving already: it stays where it is for now.
    if (short === undefined || vm.moving !== undefined) {
      this.put(command.name, updated)
      return Either.right({ vm: updated })
    }
    if (this.oneStepMoves()) {
      const { node: from, ...rest } = updated
      this.put(command.name, new VmRecord(rest, trusted))
      const moved = this.placeVm(command.name, now, from)
      if (this.unplaced.size > 0) this.placePending(now)
      return Either.right({ vm: this.vms.get(command.name) ?? moved })
    }
    // It no longer fits where it is: its node stops it first, then it is placed elsewhere.
    const moving = this.withMoveWait(new VmRecord({ ...updated, moving: updated.revision }, trusted))
    this.put(command.name, moving)
    return Either.right({ vm: moving })
  }

  /** Records a committed membership change at `index` (its address, or its removal). */
  applyMembership(index: number, change: { readonly type: string; readonly nodeId: number; readonly address?: string | undefined }): Array<RevokedCertificate> {
    if (index <= this.appliedIndex) {
      throw new Error(`state machine applied entry ${index} after ${this.appliedIndex}: entries must apply once, in order`)
    }
    this.appliedIndex = index
    if (change.type !== "remove") {
      if (change.address !== undefined) this.members.set(change.nodeId, change.address)
      return []
    }
    this.members.delete(change.nodeId)
    // A removed node's copy of the new CA's key leaves the state (what it opened, it keeps).
    const rotation = this.caRotation
    if (rotation !== undefined) {
      this.caRotation = new CaRotation(
        { ...rotation, keys: rotation.keys.filter((k) => k.node !== change.nodeId), moved: rotation.moved.filter((id) => id !== change.nodeId) },
        trusted
      )
    }
    // A removed node's certificates must not open a connection again (it keeps its files).
    return this.revokeRecords(this.recordsOf(change.nodeId), `node ${change.nodeId} was removed from the cluster`, undefined)
  }

  /**
   * What `vm`, placed nowhere, becomes when the scheduler places it: stopped on a node, or pending
   * with the scheduler's reason. A placement is a change, so the revision is bumped either way.
   */
  private placed(vm: Unplaced, now: number, avoid?: NodeId): VmRecord {
    const placement = place(vm.spec, this.nodes.values(), this.ledger, avoid)
    // The fields a placement keeps, listed rather than spread from `vm`: building a record from a
    // spread of another costs about 4× more (1.8 µs against 0.5). `satisfies` stops compiling
    // here when VmRecord gains a field, until the field is handled.
    const kept = {
      spec: vm.spec,
      desired: vm.desired,
      revision: vm.revision + 1,
      createdAt: vm.createdAt
    } satisfies Record<Exclude<keyof typeof VmRecord.fields, "node" | "pendingReason" | "status" | "generation" | "moving" | "movingReason">, unknown>
    const generation = vm.generation !== undefined ? { generation: vm.generation } : {}
    const restarts = vm.status.restarts
    return placement._tag === "Placed"
      ? new VmRecord(
          { ...kept, ...generation, node: placement.node, status: new VmStatus({ phase: "stopped", since: now, restarts }, trusted) },
          trusted
        )
      : new VmRecord(
          {
            ...kept,
            ...generation,
            pendingReason: placement.reason,
            status: vm.status.phase === "pending" ? vm.status : new VmStatus({ phase: "pending", since: now, restarts }, trusted)
          },
          trusted
        )
  }

  /** Places the (unplaced) VM `name`; it stays pending with the scheduler's reason if nothing fits. */
  private placeVm(name: string, now: number, avoid?: NodeId): VmRecord {
    const updated = this.placed(this.vms.get(name)!, now, avoid)
    this.put(name, updated)
    return updated
  }

  /** Moves every VM off `node` at once (down or removed: it has fenced itself, or is gone). */
  private evacuate(node: NodeId, now: number): void {
    for (const name of [...this.vms.keys()].sort()) {
      const vm = this.vms.get(name)!
      if (vm.node !== node) continue
      const { node: _, moving: __, movingReason: ___, ...rest } = vm
      this.put(name, new VmRecord(rest, trusted))
      this.placeVm(name, now, node)
    }
  }

  /**
   * Whether a VM leaves a live node in one step: the cluster's log version is from before two-step
   * moves (older members apply the log, and move so), this replica's release is (the simulator's
   * older releases), or the simulator's bug switch is on.
   */
  private oneStepMoves(): boolean {
    return this.unsafeOneStepMoves || this.clusterVersion < TwoStepMoves || this.release < TwoStepMoves
  }

  /** Begins moving every VM off the live node `node` (drained): its agent stops them first. */
  private beginMoves(node: NodeId): void {
    for (const name of [...this.vms.keys()].sort()) {
      const vm = this.vms.get(name)!
      if (vm.node !== node || vm.moving !== undefined) continue
      this.put(name, this.withMoveWait(new VmRecord({ ...vm, moving: vm.revision + 1, revision: vm.revision + 1 }, trusted)))
    }
  }

  /** `vm`, moving off its node, with the reason its move waits (or none, if it does not). */
  private withMoveWait(vm: VmRecord): VmRecord {
    const reason = this.moveWait(vm.node!)
    if (reason === vm.movingReason) return vm
    const { movingReason: _, ...rest } = vm
    return new VmRecord(reason === undefined ? rest : { ...rest, movingReason: reason }, trusted)
  }

  /**
   * Why a move off the live node `node` cannot complete, if it cannot: its registration does not say
   * it releases VMs (a version from before two-phase moves), so it will not stop them for a move.
   */
  private moveWait(node: NodeId): string | undefined {
    const info = this.nodes.get(node)
    if (info === undefined || releasesMoves(info)) return undefined
    return `waits for node ${node} to be upgraded or marked down: its version does not stop and release VMs moving off it (a node is marked down once the cluster has not heard from it for nodeDownMs)`
  }

  /** `node` registered (again): its VMs' moves say whether they wait for it, now. */
  private explainMoves(node: NodeId): void {
    for (const name of [...this.vms.keys()].sort()) {
      const vm = this.vms.get(name)!
      if (vm.node !== node || vm.moving === undefined) continue
      const explained = this.withMoveWait(vm)
      if (explained !== vm) this.put(name, new VmRecord({ ...explained, revision: vm.revision + 1 }, trusted))
    }
  }

  /**
   * `node` is no longer draining (made active or cordoned again): the moves off it that have not
   * completed are called off, in name order, for the VMs that fit there beside the VMs that are not
   * moving (a VM that outgrew the node keeps moving, and is not counted against the others).
   */
  private cancelMoves(node: NodeInfo): void {
    const moving = [...this.vms.keys()].sort().filter((name) => {
      const vm = this.vms.get(name)!
      return vm.node === node.id && vm.moving !== undefined
    })
    if (moving.length === 0) return
    for (const name of moving) this.ledger.remove(this.vms.get(name)!)
    const stay: Array<string> = []
    for (const name of moving) {
      const vm = this.vms.get(name)!
      if (shortfall(vm.spec, node, this.ledger.get(node.id)) !== undefined) continue
      this.ledger.add(vm)
      stay.push(name)
    }
    for (const name of moving) if (!stay.includes(name)) this.ledger.add(this.vms.get(name)!)
    for (const name of stay) {
      const { moving: _, movingReason: __, ...rest } = this.vms.get(name)!
      this.put(name, new VmRecord({ ...rest, revision: rest.revision + 1 }, trusted))
    }
  }

  /** Retries every pending VM, in name order. */
  private placePending(now: number): void {
    for (const name of [...this.unplaced].sort()) {
      const vm = this.vms.get(name)!
      const updated = this.placed(vm, now)
      // Still pending for the same reason: nothing changed, so the record (and revision) stays.
      if (updated.node !== undefined || updated.pendingReason !== vm.pendingReason) this.put(name, updated)
    }
  }

  /** The whole state as JSON text, for a Raft snapshot. Sorted, so equal states give equal text. */
  snapshot(): string {
    return [...this.snapshotView()].join("")
  }

  /**
   * The state as of now, captured without serialising it, and its snapshot text (what `snapshot`
   * returns) in pieces produced as they are iterated: the Raft driver iterates on the side, a piece
   * at a time, while this state keeps applying entries. The capture copies the maps (references to
   * the records, which are immutable and replaced, never changed: ~10 ms for 100,000 VMs); sorting
   * and `JSON.stringify` (~200 ms for 100,000 VMs) happen piece by piece during the iteration.
   */
  snapshotView(): Iterable<string> {
    const appliedIndex = this.appliedIndex
    const clusterId = this.clusterId
    const vms = new Map(this.vms)
    const nodes = [...this.nodes.values()]
    const members = [...this.members.entries()]
    const requests = [...this.requests.entries()]
    const tokens = [...this.tokens.keys()].sort().map((k) => this.tokens.get(k)!)
    const joinTokens = [...this.joinTokens.keys()].sort().map((k) => this.joinTokens.get(k)!)
    const certificates = [...this.certificates.keys()].sort().map((k) => this.certificates.get(k)!)
    const revoked = [...this.revoked.keys()].sort().map((k) => this.revoked.get(k)!)
    const caRotation = this.caRotation ?? null
    const caInForce = this.caInForce
    const clusterVersion = this.clusterVersion
    return {
      *[Symbol.iterator]() {
        const names = [...vms.keys()].sort()
        yield `{"version":1,"appliedIndex":${appliedIndex},"vms":[`
        for (let i = 0; i < names.length; i += vmsPerPiece) {
          const piece = names.slice(i, i + vmsPerPiece).map((name) => vmJson(vms.get(name)!))
          yield (i === 0 ? "" : ",") + piece.join(",")
        }
        yield `],"nodes":${nodesJson(nodes.sort((a, b) => a.id - b.id))},"clusterId":${JSON.stringify(clusterId)}`
        yield `,"members":${membersJson(members.sort((a, b) => a[0] - b[0]))},"requests":${requestsJson(requests)},"tokens":${tokensJson(tokens)},"joinTokens":${joinTokensJson(joinTokens)},"certificates":${certificatesJson(certificates)},"revoked":${revokedJson(revoked)},"caRotation":${caRotationJson(caRotation)},"caInForce":${JSON.stringify(caInForce)},"clusterVersion":${clusterVersion}}`
      }
    }
  }

  /** Rebuilds a state from `snapshot()` text; throws if the text is not a valid snapshot. */
  static restore(text: string): ClusterState {
    const decoded = Schema.decodeSync(SnapshotJson)(text)
    const state = new ClusterState()
    state.appliedIndex = decoded.appliedIndex
    for (const vm of decoded.vms) state.put(vm.spec.name, vm)
    for (const node of decoded.nodes) state.nodes.set(node.id, node)
    for (const [id, address] of decoded.members) state.members.set(id, address)
    state.clusterId = decoded.clusterId
    for (const [id, result] of decoded.requests) state.remember(id, result)
    for (const token of decoded.tokens) state.tokens.set(token.id, token)
    for (const token of decoded.joinTokens) state.joinTokens.set(token.id, token)
    for (const record of decoded.certificates) state.certificates.set(record.serial, record)
    for (const entry of decoded.revoked) state.revoked.set(entry.serial, entry)
    state.caRotation = decoded.caRotation ?? undefined
    state.caInForce = decoded.caInForce
    state.clusterVersion = decoded.clusterVersion
    return state
  }
}
