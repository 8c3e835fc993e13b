/**
 * `blixard node`: a durable cluster member. It opens (and locks) its data directory, recovers Raft
 * from SQLite, serves peers (`/raft`, mutual TLS plus the cluster secret's handshake) and the REST
 * API (HTTPS) on one port (`StartTls.ts` says where its certificates come from), and runs the
 * leader's failure detector.
 *
 * Start-up: a node with an empty data directory and no `--peer` founds a one-node cluster. One with
 * peers asks them who the members are, then asks to join (as a learner, promoted to voter once
 * caught up), retrying until a peer accepts. A node with no Raft state first asks its peers whether
 * its id is still a member (`refuseAmnesia`): a voter back empty is refused (the operator removes
 * it first); a learner whose acknowledged entries were lost has itself removed before its Raft node
 * starts, and joins again as a new learner. A node with data just recovers and rejoins its peers.
 * With Tailscale discovery the peers are the tailnet's tagged machines and only a `bootstrap` node
 * founds (`Discovery.ts`).
 *
 * The agent makes this node's VM runners (microvm.nix, process or systemd mode) follow the desired
 * state of the VMs placed here, reports what it observes through the leader, and fences itself:
 * without quorum contact for `fencingMs` it stops its VMs. So that this holds when the daemon itself
 * dies or hangs, the agent renews the node's lease and the daemon keeps the node's fencing watchdog
 * process running (`HostFence.ts`), which stops the VMs when the lease runs out.
 *
 * Shutdown (SIGTERM/SIGINT): a leader first hands leadership to the most caught-up voter, so the
 * cluster does not wait out an election timeout; then everything closes in order. Runners keep
 * running across a daemon restart; the next daemon adopts them if it is back in contact with the
 * quorum before the lease runs out (else the watchdog has stopped them).
 *
 * A node given `servers` is not a member but a host (`HostDaemon.ts`); what both build is in
 * `DaemonParts.ts`.
 */
import { Clock, Context, Duration, Effect, Either, type Fiber, Layer, Option, Runtime, Schedule } from "effect"
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Client from "../api/Client.js"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Auth from "../api/Auth.js"
import * as HeapRelease from "./HeapRelease.js"
import { ControlPlane, type ControlPlaneShape } from "../api/ControlPlane.js"
import * as Server from "../api/Server.js"
import type { ClusterState } from "../cluster/ClusterState.js"
import { ClusterStateHolder } from "../cluster/ClusterStateMachine.js"
import { EventLog } from "../events/EventLog.js"
import { ConfigInvalid, MemberAmnesia, StorageIo, TlsInvalid, Unavailable } from "../domain/Errors.js"
import { CertificateSerial } from "../domain/Certificate.js"
import * as JoinToken from "../domain/JoinToken.js"
import { NodeId } from "../domain/NodeId.js"
import { HostPort, splitHostPort } from "../domain/NodeInfo.js"
import * as PeerTransport from "../net/PeerTransport.js"
import { RaftPeers } from "../net/PeerTransport.js"
import * as Tls from "../net/Tls.js"
import * as RaftNode from "../raft/RaftNode.js"
import { classify, type Durability } from "../storage/Database.js"
import * as NodeMeta from "../storage/NodeMeta.js"
import * as Metrics from "../metrics/Metrics.js"
import * as Scrape from "../metrics/Scrape.js"
import * as VmLogs from "../vm/VmLogs.js"
import * as VmLogsRoute from "../api/VmLogsRoute.js"
import { layerFile, RaftStorage } from "../storage/RaftStorage.js"
import { eventSettings, fencingLimitMs, type NodeConfig } from "./Config.js"
import * as ClusterKeyring from "./ClusterKeyring.js"
import { detectCapacity, outgoingTls, prepareDataDir, readSecretFile, remotePlanes, vmOwnerOf, vmRuntime } from "./DaemonParts.js"
import * as KeyringSync from "./KeyringSync.js"
import { apiTokenFileName } from "./Settings.js"
import * as Discovery from "./Discovery.js"
import * as NodeControlPlane from "./NodeControlPlane.js"
import * as HostContact from "./HostContact.js"
import * as Orchestration from "./Orchestration.js"
import * as CaRotation from "./CaRotation.js"
import * as CertRenewal from "./CertRenewal.js"
import * as StartTls from "./StartTls.js"
import * as TlsBootstrap from "./TlsBootstrap.js"

/** The join token a node that is about to join uses (none once it has joined: the token is then spent). */
/** How often the transport's peer addresses are made equal to the membership without a change to it. */
const PeerResyncMs = 10_000

const joinTokenOf = (config: NodeConfig, node: NodeId, joining: boolean) =>
  Effect.gen(function* () {
    const file = config.joinTokenFile
    if (config.joinToken === undefined && file === undefined) return undefined
    if (!joining) {
      yield* Effect.logInfo(`node ${node} does not join (it is a member already, or founds the cluster): its join token is not used and may be removed from its settings`)
      return undefined
    }
    const text = config.joinToken ?? (yield* readSecretFile(file!, "join token", node))
    return yield* Either.mapLeft(
      JoinToken.parseJoinToken(text),
      (problem) => new ConfigInvalid({ node, subject: file ?? "joinToken", message: `${file !== undefined ? `the join token file ${file}` : "the join token"}: ${problem}` })
    )
  })

/**
 * This node's admin token: the configured file's, or the one in `dataDir/api-token`, made (random,
 * 256 bits, mode 0600) on first start. A generated file found readable by others is made 0600 again.
 */
const adminToken = (config: NodeConfig, node: NodeId) =>
  Effect.gen(function* () {
    if (config.apiTokenFile !== undefined) {
      return { token: yield* readSecretFile(config.apiTokenFile, "API token", node), file: path.resolve(config.apiTokenFile) }
    }
    const file = path.resolve(config.dataDir, apiTokenFileName)
    const made = yield* Effect.try({
      try: () => {
        try {
          fs.writeFileSync(file, `${Auth.randomSecret()}\n`, { mode: 0o600, flag: "wx" })
          return true
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
          if ((fs.statSync(file).mode & 0o077) !== 0) fs.chmodSync(file, 0o600)
          return false
        }
      },
      catch: (e) =>
        new StorageIo({
          node,
          subject: file,
          message: `cannot create or read the API token file ${file}: ${e instanceof Error ? e.message : String(e)}; check the data directory's permissions, or configure apiTokenFile`
        })
    })
    if (made) yield* Effect.logInfo(`node ${node}: made an admin API token in ${file} (mode 0600); the CLI on this host reads it from there`)
    return { token: yield* readSecretFile(file, "API token", node), file }
  })

/**
 * What a node with no Raft state (a new or emptied data directory) asks its peers before its Raft
 * node starts. Fails with `MemberAmnesia` when a peer lists `node` as a voter (an earlier member back
 * without its data, which must not vote again: the operator removes it). When the LEADER lists it as
 * a learner that acknowledged entries (its progress has `match > 0`: the data directory it had was
 * lost while it was catching up), it asks the leader to remove it, and returns once it is removed:
 * the leader's progress would otherwise still hold what the lost log acknowledged, its first
 * heartbeat would carry a commit index beyond the empty log (the Raft node stops on it, start after
 * start) and a promotion would count entries the node no longer has. The join that follows
 * (`Discovery.joinLoop`) adds it again as a new learner, with a fresh progress. A learner whose
 * progress acknowledged nothing (the operator re-added it after a `cluster leave`, before it
 * started) starts as it is: it is never refused, or it would be refused forever. Only the leader's
 * word counts for a learner (a follower does not know its progress): while none answers, or no
 * peer answers at all, it fails with "noAnswer" (the caller asks again).
 */
export const refuseAmnesia = (options: {
  readonly node: NodeId
  readonly peers: ReadonlyArray<Discovery.SeedPeer>
  readonly remote: (address: string) => ControlPlaneShape
  readonly dataDir: string
  readonly incarnation: string
}): Effect.Effect<"member" | "removedItself", MemberAmnesia | "noAnswer"> =>
  Effect.gen(function* () {
    for (const peer of options.peers) {
      const answer = yield* Effect.either(options.remote(peer.address).clusterStatus)
      if (answer._tag === "Left") {
        yield* Effect.logWarning(`node ${options.node} could not ask ${Discovery.describePeer(peer)} who the members are: ${answer.left.message}; retrying`)
        continue
      }
      const voters = answer.right.members.filter((m) => m.role !== "learner").map((m) => m.id)
      const cluster = answer.right.clusterId !== undefined ? `cluster ${answer.right.clusterId}` : "the cluster"
      if (!NodeControlPlane.isAmnesiac(options.node, voters)) {
        const listed = answer.right.members.find((m) => m.id === options.node)
        if (listed === undefined) return "member" as const
        if (answer.right.leader !== answer.right.node) continue // a learner: only the leader knows its progress
        if (!NodeControlPlane.isWipedLearner(options.node, listed)) return "member" as const
        yield* Effect.logWarning(
          `node ${options.node} has no Raft state (its data directory ${options.dataDir} is new or was emptied: incarnation ${options.incarnation}), but the leader, node ${answer.right.node}, lists it as a learner that acknowledged entries up to index ${listed.match} of ${cluster}; asking it to remove node ${options.node}, which then joins again as a new learner`
        )
        const removed = yield* Effect.either(options.remote(peer.address).leave(options.node))
        if (removed._tag === "Right") {
          yield* Effect.logInfo(`node ${options.node}: removed as a learner; it now joins as a new one`)
          return "removedItself" as const
        }
        yield* Effect.logWarning(`node ${options.node} could not have itself removed through ${Discovery.describePeer(peer)}: ${removed.left.message}; retrying`)
        continue
      }
      return yield* new MemberAmnesia({
        node: options.node,
        subject: options.dataDir,
        message: `node ${options.node} has no Raft state (its data directory ${options.dataDir} is new or was emptied: incarnation ${options.incarnation}), but ${Discovery.describePeer(peer)} lists it as a voter of ${cluster}; ${NodeControlPlane.amnesiaAdvice(options.node)}`
      })
    }
    return yield* Effect.fail("noAnswer" as const)
  })

/** How long the certificates this node asks for and signs in renewals last (`certValidityDays`). */
const certValidityMsOf = (config: NodeConfig): number =>
  config.certValidityDays === undefined ? Tls.defaultCertValidityMs : config.certValidityDays * 24 * 60 * 60 * 1000

/**
 * Keeps this node's certificate renewed and reported (`CertRenewal.ts`). Operator-supplied files are
 * the operator's to renew: only their expiry is reported, and shown as a gauge.
 */
const certificateUpkeep = (config: NodeConfig, live: Tls.LiveTls, controlPlane: ControlPlaneShape, advertise: string, members: () => ReadonlyMap<number, string>) => {
  const node = config.id
  const record = (facts: Tls.CertificateFacts) =>
    controlPlane.recordCertificate({ node: NodeId.make(node), serial: CertificateSerial.make(facts.serial), fingerprint: facts.fingerprint, notAfter: facts.notAfter })
  if (config.tlsCertFile !== undefined) {
    const facts = Tls.factsOf(live.cert)
    return Effect.sync(() => Metrics.tlsCertificateExpiry.unsafeUpdate(facts.notAfter / 1000, Metrics.noTags)).pipe(
      Effect.zipRight(Effect.retry(record(facts), Schedule.spaced(Duration.minutes(1)))),
      Effect.ignore
    )
  }
  return CertRenewal.maintain({
    node,
    dataDir: config.dataDir,
    current: live,
    names: Tls.namesFor(config.bind, advertise),
    validityMs: certValidityMsOf(config),
    timeoutMs: config.timeouts.requestMs,
    // Another member first (this node itself last: any member holds the CA's key).
    addresses: Effect.sync(() => [...[...members()].filter(([id]) => id !== node).map(([, address]) => address), advertise]),
    record
  })
}

/**
 * This node's TLS as the other parts read it, at each use: a CA rotation replaces the CA and its
 * key, renewal the certificate and key (`Tls.LiveTls`).
 */
const currentTls = (live: Tls.LiveTls, node: number): Tls.NodeTls => ({
  get ca() {
    return live.ca
  },
  get caKey() {
    return live.caKey
  },
  get cert() {
    return live.cert
  },
  get key() {
    return live.key
  },
  get fingerprint() {
    return live.fingerprint
  },
  clusterId: live.clusterId,
  node
})

/** Follows the replicated CA rotation (`CaRotation.reconcile`) every second, logging what stops it. */
const caRotationUpkeep = (config: NodeConfig, live: Tls.LiveTls, controlPlane: ControlPlaneShape, advertise: string, state: () => ClusterState) => {
  const node = NodeId.make(config.id)
  let lastProblem = ""
  const pass = CaRotation.reconcile({
    node,
    dataDir: config.dataDir,
    live,
    names: Tls.namesFor(config.bind, advertise),
    validityMs: certValidityMsOf(config),
    state: () => ({ rotation: state().caRotation, inForce: state().caInForce }),
    record: (facts) => controlPlane.recordCertificate({ node, serial: CertificateSerial.make(facts.serial), fingerprint: facts.fingerprint, notAfter: facts.notAfter }),
    moved: (fingerprint) => controlPlane.caRotationMoved(node, fingerprint)
  }).pipe(
    Effect.tap(() => Effect.sync(() => (lastProblem = ""))),
    Effect.catchAll((e) =>
      e.message === lastProblem ? Effect.void : Effect.zipRight(Effect.sync(() => (lastProblem = e.message)), Effect.logWarning(`node ${node}, CA rotation: ${e.code}: ${e.message}; retrying`))
    )
  )
  return Effect.repeat(pass, Schedule.spaced(Duration.seconds(1)))
}

/** `POST /v1/tls/renew`, signing for this node's fellow members (`CertRenewal.ts`) with the CA it signs with now. */
const renewalRoute = (
  config: NodeConfig,
  live: Tls.LiveTls,
  isMember: (id: number) => boolean,
  revoked: Tls.RevokedCheck,
  record: CertRenewal.Recorder,
  runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
) =>
  CertRenewal.route({
    get ca() {
      return live.ca
    },
    get caKey() {
      return live.caKey
    },
    clusterId: live.clusterId,
    validityMs: certValidityMsOf(config),
    isMember,
    revoked,
    record,
    // Interrupted only when the node stops, which closes the connection too.
    run: (effect, then) => void runFork(Effect.either(effect)).addObserver((exit) => exit._tag === "Success" && then(exit.value))
  })

export const run = (config: NodeConfig) =>
  Effect.scoped(
    Effect.gen(function* () {
      const node = config.id
      yield* prepareDataDir(config.dataDir, node)
      // The heap a burst of work grew, given back once the node is quiet (`HeapRelease.ts`).
      yield* HeapRelease.scoped
      const discovery = yield* Discovery.make(config)
      const advertise = discovery.advertise
      const vmOwner = yield* vmOwnerOf(config)
      const filename = path.join(config.dataDir, "blixard.db")
      // A node joining with a join token receives the keyring (and keeps it): read it again after TLS.
      let keyring = yield* ClusterKeyring.load(config)
      const admin = yield* adminToken(config, NodeId.make(node))
      // Storage: locked, checked, migrated; then claimed for this node id.
      const storage = yield* Layer.build(layerFile({ filename, node }))
      const incarnation = yield* NodeMeta.claim({ filename, node, dataDir: config.dataDir }).pipe(Effect.provide(storage))
      const init = yield* Effect.flatMap(RaftStorage, (s) => s.initialState).pipe(Effect.provide(storage))
      const fresh = init.hardState.term === 0 && init.lastIndex === 0 && Option.isNone(init.snapshot)
      const meta = (effect: Effect.Effect<unknown, unknown, SqlClient.SqlClient | Durability>) =>
        effect.pipe(Effect.provide(storage), Effect.mapError(classify({ filename, node }, "reading the node's identity")))
      const knownCluster = (yield* meta(NodeMeta.get("cluster_id"))) as string | undefined

      // Other nodes' APIs (to join, to check the cluster's identity, to forward writes to the leader,
      // to report its VMs' status), with this node's credential, never an admin token; over TLS, only
      // to members of this node's cluster.
      const remoteOver = (tls: Client.ClientTls | undefined, credential: () => string) => remotePlanes({ credential, requestMs: config.timeouts.requestMs, tls })

      // A fresh node that may found (see Discovery.ts) joins instead when a peer already has a
      // cluster. Before it has certificates, a peer's cluster shows in the CA it offers.
      const clusterAmong = (peers: ReadonlyArray<Discovery.SeedPeer>) =>
        config.insecurePlaintext === true
          ? Effect.flatMap(remoteOver(undefined, () => Auth.nodeCredential(keyring.primary, node)), (plain) =>
              Effect.map(Discovery.findCluster(peers, plain), (found) => found !== undefined)
            )
          : Effect.map(
              Effect.forEach(peers, (peer) => TlsBootstrap.offeredCluster(peer.address, config.timeouts.requestMs)),
              (offered) => offered.some((cluster) => cluster !== undefined)
            )
      const founding = fresh && discovery.mayFound && !(yield* clusterAmong(yield* discovery.peers))
      const joinToken = yield* joinTokenOf(config, NodeId.make(node), fresh && !founding)
      // Certificates the node keeps in DATA-DIR/tls (not plaintext, not the operator's files): see `refusedJoin` below.
      const managedTls = config.insecurePlaintext !== true && config.tlsCertFile === undefined
      const prepared = yield* StartTls.prepare({ config, fresh, founding, knownCluster, clusterSecret: keyring.secrets, peers: discovery.peers, joinToken })
      // This node's certificate as renewal replaces it, and its CA as a rotation does.
      const live = prepared === undefined ? undefined : new Tls.LiveTls(prepared.ca, prepared.cert, prepared.key, prepared.clusterId, prepared.caKey)
      const tls = live === undefined ? undefined : currentTls(live, node)
      if (joinToken !== undefined) keyring = yield* ClusterKeyring.load(config)
      yield* ClusterKeyring.warnIfDevelopmentSecret(node, keyring)
      // The file is followed (a rotation needs no restart); a node that got it with a join token
      // takes the members' (`KeyringSync.ts`, started below, once it knows them).
      yield* Effect.forkScoped(ClusterKeyring.follow(keyring, NodeId.make(node)))
      const publicSecret = keyring.isDevelopment
      const credential = () => Auth.nodeCredential(keyring.primary, node)
      const remote = yield* remoteOver(live === undefined ? undefined : outgoingTls(live), credential)

      // A node with data that is pointed at peers of another cluster stops before it talks to them.
      if (!fresh && knownCluster !== undefined) {
        yield* Discovery.refuseOtherCluster({
          node,
          dataDir: config.dataDir,
          knownCluster,
          peers: yield* discovery.peers,
          remote,
          offered: (address) => TlsBootstrap.offeredCluster(address, config.timeouts.requestMs)
        })
      }

      // A node without Raft state that is still a voter has lost what it voted and acknowledged: it
      // stops before its Raft node could vote; a learner that acknowledged entries is removed first
      // (it asks the peers first, until one answers).
      // A node without Raft state that is refused (a voter back empty), or removes itself (a wiped
      // learner), drops its certificate: removing the node (the operator's `cluster leave`, or its
      // own) revokes every certificate recorded for it — its signer recorded the one this start may
      // have made — and with one of those it could never join again. Without it the next start
      // gets a new one, with the credentials a first join needs (the cluster secret, or a new join
      // token).
      const refusedJoin = (why: string) =>
        managedTls && Tls.hasTlsFiles(config.dataDir)
          ? Effect.as(
              Effect.zipRight(
                Effect.sync(() => fs.rmSync(Tls.tlsDir(config.dataDir), { recursive: true, force: true })),
                Effect.logWarning(`node ${node} (${why}): deleted its certificate in ${Tls.tlsDir(config.dataDir)}, which the node's removal revokes; the next start gets a new one`)
              ),
              why
            )
          : Effect.succeed(undefined)
      if (fresh && !founding) {
        const checked = yield* Effect.retry(
          Effect.flatMap(discovery.peers, (peers) => refuseAmnesia({ node, peers, remote, dataDir: config.dataDir, incarnation })),
          { while: (e) => e === "noAnswer", schedule: Schedule.spaced(Duration.seconds(1)) }
          // (It retries until a peer answers; this only takes "noAnswer" out of the error type.)
        ).pipe(
          Effect.catchIf((e): e is "noAnswer" => e === "noAnswer", () => Effect.succeed("member" as const)),
          Effect.tapError(() => refusedJoin("a voter back with no Raft state"))
        )
        if (checked === "removedItself" && (yield* refusedJoin("removed itself as a wiped learner")) !== undefined) {
          return yield* new MemberAmnesia({
            node: NodeId.make(node),
            subject: config.dataDir,
            message: `node ${node} removed itself as a learner whose data directory was emptied; the certificate it got for that membership was revoked with the removal and is deleted (${Tls.tlsDir(config.dataDir)}); start it again to join as a new learner (the NixOS unit restarts it)`
          })
        }
      }

      const state = new ClusterStateHolder(new EventLog(eventSettings(config).history), { node, location: path.resolve(config.dataDir) })
      // The cluster's revocation list.
      const revoked: Tls.RevokedCheck = (serial) => state.current.revoked.get(serial)?.reason
      if (founding) {
        state.current.members.set(node, advertise)
        state.current.clusterId = tls?.clusterId ?? randomUUID()
        yield* meta(NodeMeta.set("cluster_id", state.current.clusterId))
      }

      const transport = yield* Layer.build(
        PeerTransport.layerTransport({
          self: node,
          incarnation,
          peers: new Map(discovery.configured.map((p) => [p.id, p.address])),
          clusterSecret: () => keyring.secrets,
          requestTimeoutMs: config.timeouts.requestMs,
          revoked,
          ...(live !== undefined ? { clusterId: live.clusterId, tls: live } : {})
        })
      )
      const raftContext = yield* Layer.build(
        RaftNode.layer({
          id: node,
          tickMs: config.timeouts.tickMs,
          requestTimeoutMs: config.timeouts.requestMs,
          // Reported at half the fencing time: the cause is in the log before the node fences.
          storageStallMs: Math.floor(config.timeouts.fencingMs / 2),
          storageLocation: path.resolve(config.dataDir),
          ...(founding ? { bootstrap: [node] } : {})
        }).pipe(Layer.provide(Layer.mergeAll(Layer.succeedContext(storage), Layer.succeedContext(transport), state.layer())))
      )
      const raft = Context.get(raftContext, RaftNode.RaftNode)

      const sourcePolicy = { allowedRunnerPrefixes: config.allowedRunnerPrefixes, allowedFlakePrefixes: config.allowedFlakePrefixes }
      const hostContact = HostContact.make()
      const controlPlane = NodeControlPlane.make({
        raft,
        state,
        remote,
        sourcePolicy,
        hostContact,
        hostFencingLimitMs: fencingLimitMs(config.timeouts),
        get caFingerprint() {
          return live?.fingerprint
        },
        ...(live === undefined || config.tlsCertFile !== undefined
          ? {}
          : {
              prepareCaRotation: () =>
                CaRotation.prepare({ self: node, live, members: state.current.members, revoked, timeoutMs: config.timeouts.requestMs })
            }),
        publicClusterSecret: publicSecret,
        secretFingerprints: () => keyring.fingerprints(),
        requestTimeoutMs: config.timeouts.requestMs
      })

      // `vm logs`: served from this node's disk, or forwarded to the hosting node with this node's credential.
      const vmLogs = VmLogsRoute.route({
        node: NodeId.make(node),
        locate: VmLogsRoute.locateIn(NodeId.make(node), { get: (name) => state.current.vms.get(name) }, { get: (id) => state.current.nodes.get(id) }),
        local: (request) =>
          VmLogs.stream(
            { backend: config.vmBackend, stateDir: config.microvmStateDir, node: NodeId.make(node), cluster: () => state.current.clusterId },
            request
          ),
        credential,
        connectTimeoutMs: config.timeouts.requestMs,
        ...(live === undefined ? {} : { tls: outgoingTls(live) })
      })

      const metrics = yield* Scrape.make({
        raft: raft.status,
        state: () => state.current,
        peers: Context.get(transport, RaftPeers).stats
      })
      // One port: the REST API, the peers' /raft endpoint, and a joining node's certificate.
      const { host, port } = splitHostPort(config.bind)
      const auth: Auth.AuthOptions = {
        adminTokens: [admin.token],
        hint: `the admin token of node ${node} is in ${admin.file} on its host (the CLI reads it with --data-dir or --token-file, or from BLIXARD_API_TOKEN)`,
        clusterSecret: () => keyring.secrets,
        nodeCredentialSeen: (id, secret) => keyring.heardFrom(id, secret),
        nodeCredentialsFromLoopbackOnly: publicSecret,
        tokens: (id) => state.current.tokens.get(id)
      }
      const runFork = Runtime.runFork(yield* Effect.runtime<never>())
      yield* Layer.build(
        Server.layerSharedPort({
          host,
          port,
          metrics,
          auth,
          events: { log: state.events, heartbeatMs: eventSettings(config).heartbeatMs },
          rawRoutes: [
            vmLogs,
            ...(live === undefined ? [] : [renewalRoute(config, live, (id) => state.current.members.has(id), revoked, controlPlane.recordCertificate, runFork)]),
            ...(tls === undefined
              ? []
              : TlsBootstrap.routes({
                  tls,
                  rotatingTo: () => state.current.caRotation?.fingerprint,
                  keyring,
                  revoked,
                  publicClusterSecret: publicSecret,
                  authenticate: Auth.makeAuthenticate(auth),
                  consumeJoinToken: controlPlane.consumeJoinToken,
                  record: controlPlane.recordCertificate,
                  run: (effect, then) =>
                    void runFork(Effect.either(effect)).addObserver((exit) =>
                      then(exit._tag === "Success" ? exit.value : Either.left(new TlsInvalid({ node, subject: "certificate", message: `node ${node} could not sign a certificate (interrupted)` })))
                    )
                }))
          ],
          revoked,
          isMember: (id) => state.current.members.has(id),
          ...(live === undefined ? {} : { tls: live, issuedCertificate: CertRenewal.issuedBy(() => live.ca, live.clusterId) })
        }).pipe(
          Layer.provide(Layer.succeed(ControlPlane, controlPlane)),
          Layer.provide(Layer.succeedContext(transport))
        )
      ).pipe(
        Effect.mapError(
          (e) =>
            new Unavailable({
              node,
              subject: config.bind,
              message: `node ${node} cannot listen on ${config.bind}: ${String((e as { cause?: unknown }).cause ?? e)} (is another process using the port?); choose another --bind`
            })
        )
      )
      yield* Effect.logInfo(
        `node ${node} serving peers and the API on ${config.bind} (data ${config.dataDir}, incarnation ${incarnation}; ${founding ? "founded a new cluster" : fresh ? "joining" : "recovered its state"})`
      )

      // Keep the transport's peer addresses equal to the replicated membership.
      const peers = Context.get(transport, RaftPeers)
      const syncPeers = Effect.gen(function* () {
        const known = yield* peers.addresses
        for (const [id, address] of state.current.members) {
          if (id !== node && known.get(id) !== address) yield* peers.set(id, address)
        }
        const configured = new Set<number>(discovery.configured.map((p) => p.id))
        for (const id of known.keys()) {
          if (!state.current.members.has(id) && !configured.has(id) && state.current.members.size > 0) yield* peers.remove(id)
        }
      })
      if (keyring.source === "received" && live !== undefined) {
        yield* Effect.forkScoped(
          KeyringSync.follow({
            node: NodeId.make(node),
            dataDir: config.dataDir,
            keyring,
            tls: live,
            members: () => [...state.current.members].filter(([id]) => id !== node).map(([, address]) => address),
            timeoutMs: config.timeouts.requestMs
          })
        )
      }

      // A fresh node that did not found asks to join, through any peer, until one accepts.
      if (fresh && !founding) {
        yield* Effect.forkScoped(Discovery.joinLoop({ node, advertise, peers: discovery.peers, remote, raft, setPeer: peers.set }))
      }

      // Remember the cluster's identity once the replicated state carries it.
      let rememberedCluster = knownCluster ?? (founding ? state.current.clusterId : undefined)
      const rememberCluster = Effect.gen(function* () {
        if (rememberedCluster !== undefined || state.current.clusterId === "") return
        rememberedCluster = state.current.clusterId
        yield* Effect.ignore(meta(NodeMeta.set("cluster_id", rememberedCluster)))
      })
      // Both in one loop, run when the membership changes (a quiet node's wake-ups are its idle
      // cost, bench/RESULTS.md): every 5 ticks until the cluster's identity is remembered, then
      // when woken, and every `PeerResyncMs` regardless (addresses the join loop set for peers
      // that never became members are dropped by then).
      const resync = Effect.gen(function* () {
        yield* syncPeers
        yield* rememberCluster
        yield* state.membershipChanged.wait(rememberedCluster === undefined ? config.timeouts.tickMs * 5 : PeerResyncMs)
      })
      yield* Effect.forkScoped(Effect.forever(resync))

      if (live !== undefined) yield* Effect.forkScoped(certificateUpkeep(config, live, controlPlane, advertise, () => state.current.members))
      if (live !== undefined && config.tlsCertFile === undefined) yield* Effect.forkScoped(caRotationUpkeep(config, live, controlPlane, advertise, () => state.current))

      // Registration, the leader's failure detector, and the agent over this node's backend.
      const { backend, hostFence } = yield* vmRuntime(config, { cluster: () => state.current.clusterId, owner: vmOwner })
      yield* Orchestration.start({
        node: NodeId.make(node),
        advertise: HostPort.make(advertise),
        capacity: detectCapacity(config),
        labels: config.labels,
        raft,
        state,
        controlPlane,
        timeouts: config.timeouts,
        hostFence,
        hostContact
      }).pipe(Effect.provide(backend))

      // On shutdown, a leader hands over first.
      yield* Effect.addFinalizer(() =>
        Effect.gen(function* () {
          const st = yield* raft.status
          yield* Effect.logInfo(`node ${node} is stopping (it was ${st.role === "leader" ? "the leader" : `a ${st.role}`})`)
          if (st.role !== "leader") return
          const candidates = st.progress.filter((p) => p.id !== node && st.confState.voters.includes(p.id)).sort((a, b) => b.match - a.match)
          const target = candidates[0]
          if (target === undefined) return
          const started = yield* Clock.currentTimeMillis
          yield* Effect.logInfo(`node ${node}: handing leadership to node ${target.id}`)
          yield* raft.transferLeader(target.id).pipe(Effect.timeout(Duration.seconds(2)), Effect.ignore)
          const took = (yield* Clock.currentTimeMillis) - started
          yield* Effect.logInfo(`node ${node}: leadership handed over in ${took} ms`)
        })
      )

      return yield* raft.await
    })
  ).pipe(Effect.annotateLogs("node", config.id))
