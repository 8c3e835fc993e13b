/**
 * `blixard node --server ADDR …`: a host that runs VMs without being a Raft member (a Nomad
 * "client"), so a cluster of three or five members can place VMs on a hundred machines. It keeps no
 * Raft log and serves nothing: it registers through the members' API with its node credential,
 * heartbeats, reads the VMs placed on it and reports their status (`HostAgent.ts`), and runs the
 * same agent, lease and fencing watchdog process as a member (`DaemonParts.vmRuntime`).
 *
 * Trust. A host verifies the members: over TLS against the cluster CA, from `tlsCaFile` or fetched
 * from a member (`GET /v1/tls/ca`) and accepted only with the cluster secret's proof
 * (`TlsBootstrap.trustedCa`); fetched again every 10 s, so it follows a CA rotation. It gets no certificate and never the CA's key: a host is trusted less
 * than a member, and its credential lets it register itself, heartbeat and report its own VMs.
 */
import { Duration, Effect, Either, Schedule, Schema } from "effect"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Auth from "../api/Auth.js"
import type { ClientTls } from "../api/Client.js"
import { ConfigInvalid, formatError, PlaintextRefused, TlsInvalid, Unavailable, WrongDataDir } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import { HostIncarnation, HostPort, splitHostPort } from "../domain/NodeInfo.js"
import * as Tls from "../net/Tls.js"
import type { NodeConfig } from "./Config.js"
import * as ClusterKeyring from "./ClusterKeyring.js"
import { detectCapacity, prepareDataDir, remotePlanes, vmOwnerOf, vmRuntime } from "./DaemonParts.js"
import * as HeapRelease from "./HeapRelease.js"
import * as HostAgent from "./HostAgent.js"
import * as TlsBootstrap from "./TlsBootstrap.js"

const isLoopback = (address: string): boolean => {
  const { host } = splitHostPort(address as HostPort)
  return host === "localhost" || Auth.isLoopback(host)
}

/**
 * How this host verifies the servers: the CA of `tlsCaFile`, or the one a server offers with the
 * secret's proof (servers asked in turn, every second until one answers; a wrong proof stops the
 * host). Undefined in plaintext mode.
 */
const serverTrust = (config: NodeConfig, servers: ReadonlyArray<string>, keyring: ClusterKeyring.LiveKeyring) =>
  Effect.gen(function* () {
    const node = NodeId.make(config.id)
    if (config.insecurePlaintext === true) {
      const remote = servers.filter((s) => !isLoopback(s))
      if (remote.length > 0 && config.insecurePlaintextNonLoopback !== true) {
        return yield* new PlaintextRefused({
          node,
          subject: remote[0]!,
          message: `host ${node} refuses --insecure-plaintext to ${remote.join(", ")}, not loopback: its node credential and its VMs' orders would cross the network in clear; drop --insecure-plaintext, or add --i-know if the network is otherwise protected`
        })
      }
      yield* Effect.logWarning(`host ${node}: --insecure-plaintext: the servers are reached WITHOUT TLS; anyone on the path can read and alter the traffic`)
      return undefined
    }
    if (config.tlsCaFile !== undefined) {
      const file = config.tlsCaFile
      const ca = yield* Effect.try({
        try: () => fs.readFileSync(file, "utf8"),
        catch: (e) => new TlsInvalid({ node, subject: file, message: `cannot read the cluster CA file ${file}: ${e instanceof Error ? e.message : String(e)}` })
      })
      const clusterId = yield* Effect.try({ try: () => Tls.clusterOfCa(ca), catch: () => undefined }).pipe(Effect.orElseSucceed(() => undefined))
      if (clusterId === undefined) {
        return yield* new TlsInvalid({ node, subject: file, message: `${file} is not a Blixard cluster CA (PEM naming blixard://CLUSTER-ID); give the members' DATA-DIR/tls/ca.crt` })
      }
      return { ca, clusterId }
    }
    const fromServers = Effect.gen(function* () {
      for (const address of servers) {
        const got = yield* Effect.either(TlsBootstrap.trustedCa(address, keyring.secrets, config.timeouts.requestMs))
        if (got._tag === "Right") return got.right
        if (got.left._tag !== "Unavailable") return yield* got.left
        yield* Effect.logWarning(`host ${node}: ${got.left.message}; trying the next server`)
      }
      return yield* new Unavailable({ node, subject: servers.join(","), message: `no server answered for the cluster CA` })
    })
    return yield* Effect.retry(fromServers, { while: (e) => e._tag === "Unavailable", schedule: Schedule.spaced(Duration.seconds(1)) })
  })

/**
 * Follows the CA the servers offer (with the secret's proof), every 10 s: during a CA rotation they
 * offer both CAs, then the new one alone (`node/CaRotation.ts`), and the host verifies them with it.
 */
const refreshTrust = (node: NodeId, servers: ReadonlyArray<string>, keyring: ClusterKeyring.LiveKeyring, clusterId: string, trusted: { ca: string }, timeoutMs: number) =>
  Effect.gen(function* () {
    for (const address of servers) {
      const got = yield* Effect.either(TlsBootstrap.trustedCa(address, keyring.secrets, timeoutMs))
      if (got._tag === "Left" || got.right.clusterId !== clusterId) continue
      if (got.right.ca !== trusted.ca) {
        trusted.ca = got.right.ca
        yield* Effect.logInfo(`host ${node}: the servers' cluster CA changed (a CA rotation): it now trusts ${Tls.splitPem(got.right.ca).length} CA(s), as ${address} offers them`)
      }
      return
    }
  }).pipe(Effect.repeat(Schedule.spaced(Duration.seconds(10))))

/**
 * This host's incarnation: made at the first start into `DATA-DIR/host-incarnation` and kept, so a
 * restart is the same host and another process under the same id (another data directory) is not.
 */
export const incarnationOf = (dataDir: string, node: NodeId): Effect.Effect<string, WrongDataDir> =>
  Effect.try({
    try: () => {
      const file = path.join(dataDir, "host-incarnation")
      if (fs.existsSync(file)) {
        const text = fs.readFileSync(file, "utf8").trim()
        return Schema.decodeUnknownEither(HostIncarnation)(text).pipe(
          Either.getOrThrowWith(() => new Error(`${file} holds no host incarnation (a UUID): it was altered; restore it, or remove it and wait until node ${node} is marked down before starting this host again`))
        )
      }
      const made = randomUUID()
      const partial = `${file}.partial`
      fs.writeFileSync(partial, `${made}\n`, { mode: 0o644 })
      const fd = fs.openSync(partial, "r")
      try {
        fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(partial, file)
      return made
    },
    catch: (e) => new WrongDataDir({ node, subject: dataDir, message: `host ${node}: ${e instanceof Error ? e.message : String(e)}` })
  })

export const run = (config: NodeConfig) =>
  Effect.scoped(
    Effect.gen(function* () {
      const node = NodeId.make(config.id)
      const servers = config.servers ?? []
      yield* prepareDataDir(config.dataDir, node)
      // The heap a burst of work grew, given back once the host is quiet (`HeapRelease.ts`).
      yield* HeapRelease.scoped
      // A member's data directory holds its Raft log; a host never touches one.
      const raftDb = path.join(config.dataDir, "blixard.db")
      if (fs.existsSync(raftDb)) {
        return yield* new WrongDataDir({
          node,
          subject: raftDb,
          message: `host ${node}: ${config.dataDir} is a Raft member's data directory (it holds ${raftDb}); a host that is not a member needs its own --data-dir`
        })
      }
      const incarnation = yield* incarnationOf(config.dataDir, node)
      const vmOwner = yield* vmOwnerOf(config)
      const keyring = yield* ClusterKeyring.load(config)
      yield* ClusterKeyring.warnIfDevelopmentSecret(node, keyring)
      // Followed like a member's: a rotation of the cluster secret reaches hosts without a restart.
      yield* Effect.forkScoped(ClusterKeyring.follow(keyring, node))
      const trust = yield* serverTrust(config, servers, keyring)
      // Read at each connection: a CA rotation changes what the servers offer (`refreshTrust`).
      const trusted = { ca: trust?.ca ?? "" }
      const tls: ClientTls | undefined =
        trust === undefined
          ? undefined
          : {
              get ca() {
                return trusted.ca
              },
              checkServerIdentity: Tls.checkServerIdentity(trust.clusterId)
            }
      if (trust !== undefined && config.tlsCaFile === undefined) yield* Effect.forkScoped(refreshTrust(node, servers, keyring, trust.clusterId, trusted, config.timeouts.requestMs))
      const remote = yield* remotePlanes({ credential: () => Auth.nodeCredential(keyring.primary, node), requestMs: config.timeouts.requestMs, tls })

      // The fence first: runners left by an earlier daemon stay guarded while the servers are asked.
      let clusterId = trust?.clusterId ?? ""
      const { backend, hostFence } = yield* vmRuntime(config, { cluster: () => clusterId, owner: vmOwner })
      const status = yield* HostAgent.makeServers(node, servers, remote)
        .call((plane) => plane.clusterStatus)
        .pipe(
          Effect.tapError((e) => Effect.logWarning(`host ${node}: asking the servers about the cluster failed (${formatError(e)}); retrying in 1 s`)),
          Effect.retry({ while: (e) => e._tag !== "Unauthorized" && e._tag !== "Forbidden", schedule: Schedule.spaced(Duration.seconds(1)) })
        )
      // A host under a member's id would take that member's VMs for its own and run them twice.
      if (status.members.some((m) => m.id === node)) {
        return yield* new ConfigInvalid({
          node,
          subject: "id",
          message: `host ${node}: node ${node} is a Raft member of ${status.clusterId !== undefined ? `cluster ${status.clusterId}` : "the cluster"}; a host needs an id no member (and no other host) has`
        })
      }
      if (clusterId === "") clusterId = status.clusterId ?? ""
      yield* HostAgent.start({
        node,
        servers,
        remote,
        advertise: HostPort.make(config.advertise ?? config.bind),
        capacity: detectCapacity(config),
        labels: config.labels,
        incarnation,
        fencingMs: config.timeouts.fencingMs,
        hostFence
      }).pipe(Effect.provide(backend))
      yield* Effect.logInfo(
        `host ${node} runs VMs for the cluster of ${servers.join(", ")} (not a Raft member; ${trust === undefined ? "plaintext" : `TLS, cluster ${trust.clusterId}`}; data ${config.dataDir}, incarnation ${incarnation})`
      )
      yield* Effect.addFinalizer(() => Effect.logInfo(`host ${node} is stopping; its VMs keep running under its fencing watchdog until a daemon renews the lease`))
      return yield* Effect.never
    })
  ).pipe(Effect.annotateLogs("node", config.id))
