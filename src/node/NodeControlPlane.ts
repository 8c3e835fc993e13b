/**
 * The node's `ControlPlane`: the API's operations over this node's Raft node and replicated state.
 *
 * Writes become `CommandEnvelope`s proposed through Raft; they resolve once applied, with the state
 * machine's answer. A write reaching a follower is forwarded to the leader (through `remote`, the
 * API client for the leader's address) with the same idempotency key, so a retried request still
 * applies once. Reads are linearizable by default: a ReadIndex round first (a follower asks the
 * leader for its commit index and waits to apply it), then the local state; `stale` skips the round.
 */
import { Clock, Duration, Effect, Either } from "effect"
import { randomSecret, randomTokenId, replicatedToken, sha256Hex } from "../api/Auth.js"
import { hostIdInUse, joinTokenRefusal } from "../cluster/ClusterState.js"
import { nodeLogVersion, versionRefusal } from "../cluster/ClusterVersion.js"
import { CertificateList } from "../domain/Certificate.js"
import { CreatedJoinToken, formatJoinToken, JoinTokenId, JoinTokenInfo, presented } from "../domain/JoinToken.js"
import type { CertificateReport, ControlPlaneShape, ReadMode, WriteOptions } from "../api/ControlPlane.js"
import type { ClusterStateHolder } from "../cluster/ClusterStateMachine.js"
import type { ApplyResult } from "../cluster/ClusterState.js"
import { ApiTokenInfo, CreatedApiToken, TokenId } from "../domain/ApiToken.js"
import type { Command } from "../domain/Command.js"
import * as C from "../domain/Command.js"
import { ClusterStatus, MemberStatus } from "../domain/ClusterStatus.js"
import { type CallerSecret, MemberSecret, type SecretFingerprints, SecretStatus } from "../domain/ClusterSecret.js"
import type { BlixardError } from "../domain/Errors.js"
import { ClusterSecretRequired, Conflict, InvalidArgument, MemberAmnesia, NodeNotFound, NotLeader, Timeout, Unavailable, VmNotFound } from "../domain/Errors.js"
import { trusted } from "../domain/Decode.js"
import { toJson } from "../domain/Json.js"
import { selectNodes, selectVms } from "../domain/ListQuery.js"
import { NodeId } from "../domain/NodeId.js"
import { type HostBeat, HostHeartbeat, type HostPort } from "../domain/NodeInfo.js"
import type { HostContact } from "./HostContact.js"
import type { RaftNodeShape } from "../raft/RaftNode.js"
import { Health } from "../api/Api.js"
import { SnapshotFormat, SnapshotHeader, SnapshotMagic } from "../cluster/SnapshotFile.js"
import { admitSource, type SourcePolicy } from "../vm/RunnerPolicy.js"
import { VmSpec } from "../domain/VmSpec.js"

export interface NodeControlPlaneOptions {
  readonly raft: RaftNodeShape
  readonly state: ClusterStateHolder
  /** The API of another node (the leader), reached at `address`; absent when forwarding is off. */
  readonly remote?: ((address: string) => ControlPlaneShape) | undefined
  /** How long a joining node may take to catch up before it is promoted to voter. */
  readonly catchUpTimeoutMs?: number | undefined
  /**
   * DELIBERATELY UNSAFE, for the simulator only: a join from a node whose id is still a voter is
   * accepted at once, as if it had kept its data, so a node back on an empty data directory votes
   * again under its old id. Never enable outside tests that check the simulator catches it.
   */
  readonly unsafeAdmitAmnesiacVoters?: boolean | undefined
  /** What VMs may run (`RunnerPolicy.ts`): a create outside it is refused before it is proposed. */
  readonly sourcePolicy?: SourcePolicy | undefined
  /** Where the leader records answered host heartbeats (`HostContact.ts`); absent: they are answered, not recorded. */
  readonly hostContact?: HostContact | undefined
  /**
   * The longest fencing timeout a host may have (the members' `nodeDownMs` less two election
   * timeouts): a host heartbeating with a longer one is refused, as a member's configuration would be.
   */
  readonly hostFencingLimitMs?: number | undefined
  /**
   * Prepares a CA rotation on the leader (`CaRotation.prepare`: the daemon holds the CA and reaches
   * the members); absent without TLS.
   */
  readonly prepareCaRotation?: (() => Effect.Effect<C.StartCaRotation, BlixardError>) | undefined
  /** The cluster CA's SHA-256 (hex), which join tokens pin; absent without TLS (no join tokens then). Read at each use. */
  readonly caFingerprint?: string | undefined
  /**
   * The node runs on the public development cluster secret: no join token is made, as a joining
   * node would receive that public secret (`ClusterSecretRequired`).
   */
  readonly publicClusterSecret?: boolean | undefined
  /**
   * This node's cluster secret keyring as fingerprints (`ClusterKeyring.ts`), read at each use; with
   * it the plane answers `secretStatus` (asking every member through `remote`) and `secretFingerprints`.
   */
  readonly secretFingerprints?: (() => SecretFingerprints) | undefined
  /** How long `secretStatus` waits for each member (default 5 s). */
  readonly requestTimeoutMs?: number | undefined
}

/**
 * Why node `node` will not `doing` while it runs on the public development secret: what the joiner
 * would receive is public, and credentials made from it are accepted from loopback only.
 */
export const clusterSecretRequired = (node: NodeId | number, doing: string): ClusterSecretRequired =>
  new ClusterSecretRequired({
    node: NodeId.make(node),
    subject: "clusterSecretFile",
    message: `node ${node} will not ${doing}: it runs on the public development cluster secret (no clusterSecretFile is configured), which a join token would hand to the joining node. Give every member the same random secret file (e.g. \`head -c 32 /dev/urandom | base64 > cluster-secret\`, then clusterSecretFile or --cluster-secret-file), restart them all, and make a new join token`
  })

/**
 * Whether a node with no Raft state under `id` must be kept out: a member's view of the
 * configuration (`voters`) still lists it as a voter, so it would vote again having lost what it
 * voted and acknowledged. The daemon's start-up check, the leader's join and the simulator's
 * restarts all decide with this.
 */
export const isAmnesiac = (id: number, voters: ReadonlyArray<number>): boolean => voters.includes(id)

/**
 * Whether a node with no Raft state under `id`, listed as a learner by the leader, must be removed
 * before its Raft node starts: the leader's progress says it acknowledged entries (`match > 0`) the
 * node no longer has (see `Daemon.refuseAmnesia`). The daemon's start-up check and the simulator's
 * restarts decide with this.
 */
export const isWipedLearner = (id: number, listed: { readonly id: number; readonly role: string; readonly match: number }): boolean =>
  listed.id === id && listed.role === "learner" && listed.match > 0

/** What to do about a member back without its data, and why. */
export const amnesiaAdvice = (id: number): string =>
  `voting again under id ${id} could elect a leader missing committed writes. Remove it first: blixard cluster leave --id ${id} (against any member), then start node ${id} again and it joins as a new member`

/**
 * The refusal a node gets when it asks to join while its id is still a voter: a node asks to join
 * only when it has no Raft state, so it has lost what it voted and acknowledged under that id.
 */
const amnesia = (self: NodeId, id: number): MemberAmnesia =>
  new MemberAmnesia({
    node: self,
    subject: String(id),
    message: `node ${id} is already a voting member; if it runs with its data there is nothing to do, but a node asks to join only when it has no Raft state (a new or emptied data directory): ${amnesiaAdvice(id)}`
  })

/**
 * Why the leader (its status `st`) refuses node `id`'s join, if it does: `id` is a voter, so it
 * lost what it voted (`amnesia`) — unless a membership change in the leader's log is not applied
 * yet (a new leader's predecessor may have removed `id`): then the membership is not known yet, and
 * the answer is to retry (`Unavailable`), not to remove the node.
 */
export const joinRefusal = (
  self: NodeId,
  id: number,
  st: { readonly confState: { readonly voters: ReadonlyArray<number> }; readonly applied: number; readonly pendingConfIndex: number }
): MemberAmnesia | Unavailable | undefined => {
  if (!isAmnesiac(id, st.confState.voters)) return undefined
  if (st.pendingConfIndex > st.applied) {
    return new Unavailable({
      node: self,
      subject: String(id),
      message: `node ${id} is a voter in node ${self}'s membership, but a membership change at index ${st.pendingConfIndex} is not applied yet (applied ${st.applied}); retry the join in a moment`
    })
  }
  return amnesia(self, id)
}

const envelopeJson = toJson(C.CommandEnvelope)

/**
 * Proposes `command` (stamped with the proposer's clock) and resolves with what applying it produced,
 * failing with the state machine's refusal (e.g. `VmExists`) or Raft's (e.g. `NotLeader`). With
 * `state`, this node's state machine applies the envelope as built instead of decoding its entry,
 * and a command needing a newer log version than the cluster's is refused before it is proposed
 * (`ClusterVersionTooLow`, see `ClusterVersion.ts`).
 */
export const proposeCommand = (
  raft: RaftNodeShape,
  command: Command,
  requestId?: string | undefined,
  state?: ClusterStateHolder | undefined
) =>
  Effect.gen(function* () {
    const tooNew = state === undefined ? undefined : versionRefusal(state.current, command, raft.id)
    if (tooNew !== undefined) return yield* tooNew
    const proposedAt = yield* Clock.currentTimeMillis
    const envelope = new C.CommandEnvelope({ command, proposedAt, ...(requestId !== undefined ? { requestId } : {}) }, trusted)
    const data = envelopeJson(envelope)
    state?.proposing(data, envelope)
    const result = (yield* Effect.onError(raft.propose(data), () => Effect.sync(() => state?.forget(data)))) as ApplyResult | undefined
    if (result === undefined) {
      return yield* new InvalidArgument({ node: NodeId.make(raft.id), message: "the command was not applied" })
    }
    return yield* Either.isRight(result) ? Effect.succeed(result.right) : Effect.fail(result.left)
  })

export const make = (options: NodeControlPlaneOptions): ControlPlaneShape => {
  const { raft, state } = options
  const self = NodeId.make(raft.id)

  /** Runs `local`; if this node is not the leader and the leader is known, runs `forward` there. */
  const orForward = <A>(
    local: Effect.Effect<A, BlixardError>,
    forward: (leader: ControlPlaneShape) => Effect.Effect<A, BlixardError>
  ): Effect.Effect<A, BlixardError> =>
    Effect.catchTag(local, "NotLeader", (e) => {
      const address = e.leader !== undefined && e.leader !== self ? state.current.members.get(e.leader) : undefined
      return address !== undefined && options.remote !== undefined ? forward(options.remote(address)) : Effect.fail(e)
    })

  const propose = (command: Command, requestId: string | undefined) => proposeCommand(raft, command, requestId, state)

  const vmResult = (command: Command, opts: WriteOptions) =>
    Effect.flatMap(propose(command, opts.requestId), (r) =>
      r.vm !== undefined ? Effect.succeed(r.vm) : Effect.fail(new VmNotFound({ node: self, message: "the VM is gone" }))
    )
  const nodeResult = (command: Command, opts: WriteOptions) =>
    Effect.flatMap(propose(command, opts.requestId), (r) =>
      r.node !== undefined ? Effect.succeed(r.node) : Effect.fail(new NodeNotFound({ node: self, message: "the node is gone" }))
    )

  const tokenResult = (command: Command) =>
    Effect.flatMap(propose(command, undefined), (r) =>
      r.token !== undefined ? Effect.succeed(r.token) : Effect.fail(new InvalidArgument({ node: self, message: "the token command was not applied" }))
    )

  /** The secret is made on the node that proposes (the leader): it never enters the log, only its hash. */
  const createToken = (role: ApiTokenInfo["role"], name: string | undefined): Effect.Effect<CreatedApiToken, BlixardError> =>
    Effect.suspend(() => {
      const id = TokenId.make(randomTokenId())
      const token = replicatedToken(id, randomSecret())
      const command = new C.CreateApiToken({ id, role, hash: sha256Hex(token), ...(name !== undefined ? { name } : {}) })
      return Effect.map(tokenResult(command), (info) => new CreatedApiToken({ ...info, token }, trusted))
    })

  const joinTokenResult = (command: Command) =>
    Effect.flatMap(propose(command, undefined), (r) =>
      r.joinToken !== undefined ? Effect.succeed(r.joinToken) : Effect.fail(new InvalidArgument({ node: self, message: "the join token command was not applied" }))
    )

  /** Like an API token's, the secret is made by the proposer and only its hash enters the log. */
  const createJoinToken = (ttlMs: number): Effect.Effect<CreatedJoinToken, BlixardError> =>
    Effect.suspend(() => {
      const fingerprint = options.caFingerprint
      if (fingerprint === undefined) {
        return Effect.fail(
          new InvalidArgument({
            node: self,
            subject: "join token",
            message: `node ${self} runs without TLS (--insecure-plaintext): a join token pins the cluster CA, so there is none to make; join nodes with the cluster secret (--peer and --cluster-secret-file)`
          })
        )
      }
      if (options.publicClusterSecret === true) return Effect.fail(clusterSecretRequired(self, "make a join token"))
      const id = JoinTokenId.make(randomTokenId())
      const secret = randomSecret()
      const command = new C.CreateJoinToken({ id, hash: sha256Hex(presented({ id, secret })), ttlMs }, trusted)
      return Effect.map(joinTokenResult(command), (info) => new CreatedJoinToken({ ...info, token: formatJoinToken({ fingerprint, id, secret }) }, trusted))
    })

  /**
   * Checked on the leader before anything is proposed, so a wrong or spent token costs no log entry;
   * the state machine checks again when it applies the entry, against the entry's own clock, and only
   * that check counts (two joins racing with one token: the second entry is refused).
   */
  const consumeJoinToken = (id: JoinTokenId, hash: string, node: NodeId, key: string | undefined): Effect.Effect<JoinTokenInfo, BlixardError> =>
    Effect.gen(function* () {
      const st = yield* raft.status
      if (st.role !== "leader") {
        return yield* new NotLeader({ node: self, message: `node ${self} is not the leader`, ...(st.lead !== 0 ? { leader: NodeId.make(st.lead) } : {}) })
      }
      const refusal = joinTokenRefusal(state.current.joinTokens.get(id), hash, yield* Clock.currentTimeMillis, { node, key })
      if (refusal !== undefined) return yield* Effect.fail(refusal)
      if (st.confState.voters.includes(node) || st.confState.learners.includes(node)) {
        return yield* new InvalidArgument({
          node: self,
          subject: String(node),
          message: `node ${node} is already a member of the cluster; a join token admits a new node: give the joining node an unused id, or remove node ${node} first (blixard cluster leave --id ${node})`
        })
      }
      return yield* joinTokenResult(new C.ConsumeJoinToken({ id, hash, node, ...(key !== undefined ? { key } : {}) }, trusted))
    })

  const revokeCertificate = (revoke: Omit<C.RevokeCertificate, "_tag">) =>
    Effect.flatMap(propose(new C.RevokeCertificate(revoke, trusted), undefined), (r) => Effect.succeed(r.revoked ?? []))
  // The certificate (a signer's proof) is checked by the API that received it, and not replicated.
  const recordCertificate = ({ certificate: _, ...record }: CertificateReport) =>
    Effect.flatMap(propose(new C.RecordCertificate(record, trusted), undefined), (r) =>
      r.certificate !== undefined ? Effect.succeed(r.certificate) : Effect.fail(new InvalidArgument({ node: self, message: "the certificate was not recorded" }))
    )

  const readable = (mode: ReadMode): Effect.Effect<void, BlixardError> => (mode === "stale" ? Effect.void : raft.readIndex)

  const leaderOnly = Effect.gen(function* () {
    const st = yield* raft.status
    if (st.role !== "leader") {
      return yield* new NotLeader({ node: self, message: `node ${self} is not the leader`, ...(st.lead !== 0 ? { leader: NodeId.make(st.lead) } : {}) })
    }
  })
  const caStatusAfter = (command: Command) => Effect.map(propose(command, undefined), () => state.current.caStatus())
  /** Checked before the leader reaches every member: a rotation in progress is refused at once (and again when applied). */
  const rotateCa = Effect.gen(function* () {
    yield* leaderOnly
    const prepare = options.prepareCaRotation
    if (prepare === undefined) {
      return yield* new InvalidArgument({ node: self, message: `node ${self} runs without TLS (--insecure-plaintext): there is no cluster CA to rotate` })
    }
    const running = state.current.caRotation
    if (running !== undefined) {
      return yield* new Conflict({
        node: self,
        subject: running.fingerprint,
        message: `a CA rotation (to CA ${running.fingerprint.slice(0, 16)}…) is in progress already: finish it (blixard cluster ca finish) before starting another`
      })
    }
    return yield* caStatusAfter(yield* prepare())
  })
  const finishCaRotation = Effect.suspend(() => {
    const running = state.current.caRotation
    if (running === undefined) {
      return Effect.fail(new InvalidArgument({ node: self, message: "no CA rotation is in progress (blixard cluster ca status shows the CA in force); start one with blixard cluster ca rotate" }))
    }
    return caStatusAfter(new C.FinishCaRotation({ fingerprint: running.fingerprint }, trusted))
  })

  const localStatus = Effect.gen(function* () {
    const st = yield* raft.status
    const contact = yield* raft.lastContact
    const now = yield* Clock.currentTimeMillis
    const progress = new Map(st.progress.map((p) => [p.id, p]))
    const ids = [...st.confState.voters, ...st.confState.learners].sort((a, b) => a - b)
    const members = ids.map((id) => {
      const p = progress.get(id)
      const learner = st.confState.learners.includes(id)
      const role = id === st.lead ? "leader" : learner ? "learner" : st.lead !== 0 ? "follower" : id === st.id ? (st.role === "leader" ? "leader" : st.role === "follower" ? "follower" : "candidate") : "unknown"
      const match = id === st.id ? st.lastIndex : (p?.match ?? 0)
      const last = contact.get(id)
      const registered = state.current.nodes.get(id)
      return new MemberStatus({
        id: NodeId.make(id),
        address: state.current.members.get(id) ?? "",
        role,
        match,
        lag: Math.max(0, st.lastIndex - match),
        ...(id !== st.id && last !== undefined ? { lastContactMs: Math.max(0, now - last) } : {}),
        ...(registered !== undefined ? { logVersion: nodeLogVersion(registered) } : {})
      })
    })
    return new ClusterStatus({
      ...(state.current.clusterId !== "" ? { clusterId: state.current.clusterId } : {}),
      node: self,
      ...(st.lead !== 0 ? { leader: NodeId.make(st.lead) } : {}),
      term: st.term,
      commit: st.commit,
      applied: st.applied,
      members,
      clusterVersion: state.current.clusterVersion
    })
  })

  const clusterStatus: Effect.Effect<ClusterStatus, BlixardError> = Effect.gen(function* () {
    const st = yield* raft.status
    if (st.role === "leader" || st.lead === 0 || options.remote === undefined) return yield* localStatus
    const address = state.current.members.get(st.lead)
    return address === undefined ? yield* localStatus : yield* options.remote(address).clusterStatus
  })

  /** Waits (polling each tick) until `id` has replicated what the leader had committed when it joined. */
  const awaitCaughtUp = (id: number, target: number) =>
    Effect.gen(function* () {
      const deadline = (yield* Clock.currentTimeMillis) + (options.catchUpTimeoutMs ?? 30_000)
      for (;;) {
        const st = yield* raft.status
        const p = st.progress.find((x) => x.id === id)
        if (p !== undefined && p.match >= target) return
        if ((yield* Clock.currentTimeMillis) > deadline) {
          return yield* new Timeout({
            node: self,
            subject: String(id),
            message: `node ${id} joined as a learner but did not catch up within ${options.catchUpTimeoutMs ?? 30_000} ms; check that it runs and that node ${raft.id} can reach it, then run "cluster join" again`
          })
        }
        yield* Effect.sleep(Duration.millis(50))
      }
    })

  const join = (id: NodeId, address: HostPort): Effect.Effect<ClusterStatus, BlixardError> =>
    orForward(
      Effect.gen(function* () {
        const st = yield* raft.status
        if (st.role !== "leader") {
          return yield* raft.proposeConfChange({ type: "addLearner", nodeId: id, address }) // fails with NotLeader
        }
        const refusal = joinRefusal(self, id, st)
        if (refusal !== undefined) {
          if (options.unsafeAdmitAmnesiacVoters === true && refusal._tag === "MemberAmnesia") return
          return yield* refusal
        }
        // A learner asking again (say, its first join timed out) is harmless: it never votes, and it
        // has the log the leader's progress counts. One back on an empty data directory whose
        // progress acknowledged entries was removed by its own daemon before its Raft node started
        // (`Daemon.refuseAmnesia`): it arrives here as a new node. That cannot be done here: the
        // empty node's Raft node already runs when it asks, and the leader's first heartbeat (a
        // commit index beyond its log) stops it; nor can the leader tell a retry from a return
        // without the node's word, which it gives at its start-up.
        if (!st.confState.learners.includes(id)) {
          yield* raft.proposeConfChange({ type: "addLearner", nodeId: id, address })
        }
        yield* awaitCaughtUp(id, (yield* raft.status).commit)
        yield* raft.proposeConfChange({ type: "promote", nodeId: id })
      }).pipe(Effect.zipRight(localStatus)),
      (leader) => leader.join(id, address)
    )

  /** Answered by the leader only, after it confirmed its leadership (a ReadIndex round). */
  const heartbeat = (id: NodeId, beat: HostBeat): Effect.Effect<HostHeartbeat, BlixardError> =>
    orForward(
      Effect.gen(function* () {
        const st = yield* raft.status
        if (st.role !== "leader") {
          return yield* new NotLeader({
            node: self,
            message: `node ${raft.id} is not the leader; send host heartbeats to any member, they reach the leader`,
            ...(st.lead !== 0 ? { leader: NodeId.make(st.lead) } : {})
          })
        }
        if (!state.current.nodes.has(id)) {
          return yield* new NodeNotFound({
            node: self,
            subject: String(id),
            message: `node ${id} is not registered; register it first (PUT /v1/nodes/${id}), then heartbeat`
          })
        }
        const limit = options.hostFencingLimitMs
        if (limit !== undefined && beat.fencingMs !== undefined && beat.fencingMs > limit) {
          return yield* new InvalidArgument({
            node: self,
            subject: String(id),
            message: `host ${id}'s fencingMs (${beat.fencingMs} ms) is longer than the members allow (${limit} ms: their nodeDownMs less two election timeouts); it would keep running VMs after the cluster has moved them: give host ${id} timeouts.fencingMs ≤ ${limit}`
          })
        }
        yield* raft.readIndex
        const confirmed = yield* raft.status
        if (confirmed.term !== st.term) {
          return yield* new NotLeader({ node: self, message: `node ${raft.id} lost the leadership of term ${st.term}; retry` })
        }
        // Checked on the state this read confirmed: a heartbeat answered after the node's new
        // incarnation registered would give the old one contact.
        const record = state.current.nodes.get(id)
        const inUse = hostIdInUse(record, beat.incarnation)
        if (inUse !== undefined) return yield* inUse
        // A host marked down counts no contact until it registers again (its VMs were moved). Were
        // its beats answered now, a host with another data directory registering meanwhile would
        // find the VMs placed on it again while this one still had contact to run them.
        if (record?.health === "down") {
          return yield* new NodeNotFound({
            node: self,
            subject: String(id),
            message: `node ${id} is marked down and its VMs were moved; it registers again (PUT /v1/nodes/${id}) before its heartbeats count`
          })
        }
        options.hostContact?.record(id, yield* Clock.currentTimeMillis)
        return new HostHeartbeat({ node: id, leader: self, term: st.term, commit: confirmed.commit }, trusted)
      }),
      (leader) => leader.heartbeat(id, beat)
    )

  /** Every member's keyring as fingerprints: its own, and each other member's answer (asked at once). */
  const secretStatus = (own: () => SecretFingerprints) =>
    Effect.gen(function* () {
      const members = [...state.current.members].sort(([a], [b]) => a - b)
      const timeoutMs = options.requestTimeoutMs ?? 5000
      const answers = yield* Effect.forEach(
        members,
        ([id, address]) => {
          const node = NodeId.make(id)
          if (id === self) return Effect.succeed(new MemberSecret({ node, address, fingerprints: own() }, trusted))
          const asked = options.remote?.(address).secretFingerprints
          if (asked === undefined) return Effect.succeed(new MemberSecret({ node, address, problem: "this node cannot reach other members' APIs" }, trusted))
          return asked.pipe(
            Effect.timeoutFail({ duration: Duration.millis(timeoutMs), onTimeout: () => new Timeout({ node, subject: address, message: `node ${id} at ${address} did not answer within ${timeoutMs} ms` }) }),
            Effect.map((fingerprints) => new MemberSecret({ node, address, fingerprints }, trusted)),
            Effect.catchAll((e) => Effect.succeed(new MemberSecret({ node, address, problem: `${e._tag}: ${e.message}` }, trusted)))
          )
        },
        { concurrency: "unbounded" }
      )
      // Hosts: the latest any member saw, members left out (they answer for themselves).
      const hosts = new Map<number, CallerSecret>()
      for (const m of answers) {
        for (const caller of m.fingerprints?.callers ?? []) {
          if (state.current.members.has(caller.node)) continue
          const known = hosts.get(caller.node)
          if (known === undefined || known.at < caller.at) hosts.set(caller.node, caller)
        }
      }
      return new SecretStatus({ askedBy: self, members: answers, hosts: [...hosts.values()].sort((a, b) => a.node - b.node) }, trusted)
    })

  const service: ControlPlaneShape = {
    listVms: (mode, query) => Effect.map(readable(mode), () => selectVms(state.current.vms, query)),
    getVm: (name, mode) =>
      Effect.flatMap(readable(mode), () => {
        const vm = state.current.vms.get(name)
        return vm !== undefined
          ? Effect.succeed(vm)
          : Effect.fail(new VmNotFound({ node: self, subject: name, message: `no VM named "${name}" (asked node ${raft.id})` }))
      }),
    createVm: (spec, opts) => {
      const refused = options.sourcePolicy === undefined ? undefined : admitSource(options.sourcePolicy, spec, self)
      return refused !== undefined
        ? Effect.fail(refused)
        : orForward(vmResult(new C.CreateVm({ spec, ...(opts.start === true ? { desired: "running" as const } : {}) }, trusted), opts), (l) => l.createVm(spec, opts))
    },
    startVm: (name, opts) =>
      orForward(vmResult(new C.StartVm({ name, ...(opts.ifRevision !== undefined ? { ifRevision: opts.ifRevision } : {}) }, trusted), opts), (l) => l.startVm(name, opts)),
    stopVm: (name, opts) =>
      orForward(vmResult(new C.StopVm({ name, ...(opts.ifRevision !== undefined ? { ifRevision: opts.ifRevision } : {}) }, trusted), opts), (l) => l.stopVm(name, opts)),
    deleteVm: (name, opts) =>
      orForward(vmResult(new C.DeleteVm({ name, ...(opts.ifRevision !== undefined ? { ifRevision: opts.ifRevision } : {}) }, trusted), opts), (l) => l.deleteVm(name, opts)),
    updateVm: (name, changes, opts) => {
      // The runner policy holds for an update as for a create, checked on the spec it would give.
      const vm = state.current.vms.get(name)
      const refused =
        options.sourcePolicy === undefined || changes.source === undefined || vm === undefined
          ? undefined
          : admitSource(options.sourcePolicy, new VmSpec({ ...vm.spec, source: changes.source }, trusted), self)
      return refused !== undefined
        ? Effect.fail(refused)
        : orForward(
            vmResult(new C.UpdateVm({ name, ...changes, ...(opts.ifRevision !== undefined ? { ifRevision: opts.ifRevision } : {}) }, trusted), opts),
            (l) => l.updateVm(name, changes, opts)
          )
    },
    setVmLabels: (name, labels, opts) =>
      orForward(
        vmResult(new C.SetVmLabels({ name, labels, ...(opts.ifRevision !== undefined ? { ifRevision: opts.ifRevision } : {}) }, trusted), opts),
        (l) => l.setVmLabels(name, labels, opts)
      ),
    listNodes: (mode, query) => Effect.map(readable(mode), () => selectNodes(state.current.nodes, query)),
    setNodeState: (id, nodeState, opts) =>
      orForward(nodeResult(new C.SetNodeState({ id, state: nodeState }, trusted), opts), (l) => l.setNodeState(id, nodeState, opts)),
    reportVmStatus: (name, node, status) =>
      orForward(Effect.asVoid(propose(new C.ReportVmStatus({ name, node, status }, trusted), undefined)), (l) => l.reportVmStatus(name, node, status)),
    reportVmStatuses: (node, reports) =>
      orForward(Effect.asVoid(propose(new C.ReportVmStatuses({ node, reports }, trusted), undefined)), (l) => l.reportVmStatuses(node, reports)),
    registerNode: (info) =>
      orForward(
        // A refused host retries every second: refused here, it costs no log entry (the state
        // machine's own check decides a race).
        Effect.suspend(() => {
          const inUse = hostIdInUse(state.current.nodes.get(info.id), info.incarnation)
          if (inUse !== undefined) return Effect.fail(inUse)
          // A registration marks the node up; the leader heard it then, so the failure detector counts
          // it as contact (without it, a host would be marked down again before its first heartbeat,
          // and a host marked down is heard again only through a registration). The host itself
          // counts no contact from it, so this only delays marking it down.
          return Effect.tap(nodeResult(new C.RegisterNode({ info }, trusted), {}), () =>
            Effect.map(Clock.currentTimeMillis, (now) => options.hostContact?.record(info.id, now))
          )
        }),
        (l) => l.registerNode(info)
      ),
    heartbeat,
    clusterStatus,
    join,
    leave: (id) =>
      orForward(Effect.zipRight(raft.proposeConfChange({ type: "remove", nodeId: id }), localStatus), (l) => l.leave(id)),
    transferLeader: (id) =>
      orForward(
        Effect.gen(function* () {
          const st = yield* raft.status
          if (!st.confState.voters.includes(id)) {
            return yield* new InvalidArgument({ node: self, subject: String(id), message: `node ${id} is not a voting member; it cannot lead` })
          }
          yield* raft.transferLeader(id)
          return yield* localStatus
        }),
        (l) => l.transferLeader(id)
      ),
    createToken: (role, name) => orForward(createToken(role, name), (l) => l.createToken(role, name)),
    listTokens: (mode) =>
      Effect.map(readable(mode), () =>
        [...state.current.tokens.keys()].sort().map((k) => {
          const { hash: _, ...info } = state.current.tokens.get(k)!
          return new ApiTokenInfo(info, trusted)
        })
      ),
    revokeToken: (id) => orForward(tokenResult(new C.RevokeApiToken({ id }, trusted)), (l) => l.revokeToken(id)),
    createJoinToken: (ttlMs) => orForward(createJoinToken(ttlMs), (l) => l.createJoinToken(ttlMs)),
    listJoinTokens: (mode) =>
      Effect.map(readable(mode), () =>
        [...state.current.joinTokens.keys()].sort().map((k) => {
          const { hash: _, ...info } = state.current.joinTokens.get(k)!
          return new JoinTokenInfo(info, trusted)
        })
      ),
    revokeJoinToken: (id) => orForward(joinTokenResult(new C.RevokeJoinToken({ id }, trusted)), (l) => l.revokeJoinToken(id)),
    consumeJoinToken: (id, hash, node, key) => orForward(consumeJoinToken(id, hash, node, key), (l) => l.consumeJoinToken(id, hash, node, key)),
    listCertificates: (mode) =>
      Effect.map(
        readable(mode),
        () =>
          new CertificateList(
            {
              certificates: [...state.current.certificates.keys()].sort().map((k) => state.current.certificates.get(k)!),
              revoked: [...state.current.revoked.keys()].sort().map((k) => state.current.revoked.get(k)!)
            },
            trusted
          )
      ),
    revokeCertificate: (revoke) => orForward(revokeCertificate(revoke), (l) => l.revokeCertificate(revoke)),
    recordCertificate: (record) => orForward(recordCertificate(record), (l) => l.recordCertificate(record)),
    caStatus: (mode) => Effect.map(readable(mode), () => state.current.caStatus()),
    ...(options.secretFingerprints === undefined
      ? {}
      : { secretStatus: secretStatus(options.secretFingerprints), secretFingerprints: Effect.sync(options.secretFingerprints) }),
    rotateCa: orForward(rotateCa, (l) => l.rotateCa),
    finishCaRotation: orForward(finishCaRotation, (l) => l.finishCaRotation),
    caRotationMoved: (node, fingerprint) =>
      orForward(caStatusAfter(new C.CaRotationMoved({ node, fingerprint }, trusted)), (l) => l.caRotationMoved(node, fingerprint)),
    snapshot: Effect.gen(function* () {
      // After the round this node has applied what the leader had committed when it confirmed its
      // leadership: the state captured right here (no yield in between) is a linearizable read.
      yield* raft.readIndex
      const index = state.current.appliedIndex
      const clusterId = state.current.clusterId
      const pieces = state.current.snapshotView()
      const { term } = yield* raft.status
      const header = new SnapshotHeader({
        magic: SnapshotMagic,
        format: SnapshotFormat,
        clusterId,
        index,
        term,
        node: self,
        createdAt: new Date(yield* Clock.currentTimeMillis).toISOString()
      })
      return { header, pieces }
    }),
    health: Effect.gen(function* () {
      const st = yield* raft.status
      return new Health({ status: "ok", node: self, role: st.role, ...(st.lead !== 0 ? { leader: NodeId.make(st.lead) } : {}) })
    })
  }
  return service
}
