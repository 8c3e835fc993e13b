/**
 * What both daemons build the same way: a cluster member (`Daemon.ts`) and a host that is not a Raft
 * member (`HostDaemon.ts`). Their token files and data directory (the cluster secret: `ClusterKeyring.ts`), other nodes' APIs seen as a
 * `ControlPlane` (with the node's credential, never an admin token), and the VM side: the backend of
 * the configured kind and the host fence (lease + watchdog process) the agent renews.
 */
import { NodeContext } from "@effect/platform-node"
import type { Context, Scope } from "effect"
import { Duration, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Agent from "../agent/Agent.js"
import * as Client from "../api/Client.js"
import type { ControlPlaneShape } from "../api/ControlPlane.js"
import { ConfigInvalid, StorageIo } from "../domain/Errors.js"
import type { BlixardError } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import * as Tls from "../net/Tls.js"
import { Resources } from "../domain/Resources.js"
import { layerProcess } from "../vm/ProcessBackend.js"
import { layerSystemd } from "../vm/SystemdBackend.js"
import type { VmBackend } from "../vm/VmBackend.js"
import { DefaultGcRootDir, DefaultVmGroup, DefaultVmUser, type NodeConfig } from "./Config.js"
import * as HostFence from "./HostFence.js"
import { resolveVmOwner } from "./VmUser.js"

export const readSecretFile = (file: string, what: string, node: NodeId) =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8").trim(),
    catch: (e) =>
      new ConfigInvalid({
        node,
        subject: file,
        message: `cannot read the ${what} file ${file}: ${e instanceof Error ? e.message : String(e)}`
      })
  }).pipe(
    Effect.filterOrFail(
      (s) => s.length > 0,
      () => new ConfigInvalid({ node, subject: file, message: `the ${what} file ${file} is empty` })
    )
  )

export const prepareDataDir = (dir: string, node: NodeId) =>
  Effect.try({
    try: () => {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
      fs.accessSync(dir, fs.constants.R_OK | fs.constants.W_OK)
    },
    catch: (e) =>
      new StorageIo({
        node,
        subject: dir,
        message: `cannot use the data directory ${dir}: ${e instanceof Error ? e.message : String(e)}; check its permissions or choose another --data-dir`
      })
  })

/** The API client of another node, seen as a `ControlPlane` (how a follower forwards to the leader). */
export const remoteControlPlane = (client: Client.ApiClientShape): ControlPlaneShape => {
  const write = (o: { requestId?: string | undefined; ifRevision?: number | undefined }) => ({
    ...(o.requestId !== undefined ? { idempotencyKey: o.requestId } : {}),
    ...(o.ifRevision !== undefined ? { ifRevision: o.ifRevision } : {})
  })
  const read = (mode: "linearizable" | "stale") => ({ stale: mode === "stale" })
  return {
    listVms: (mode, query) => client.listVms({ ...query, ...read(mode) }),
    getVm: (name, mode) => client.getVm(name, read(mode)),
    createVm: (spec, o) => client.createVm(spec, { ...write(o), start: o.start }),
    startVm: (name, o) => client.startVm(name, write(o)),
    stopVm: (name, o) => client.stopVm(name, write(o)),
    deleteVm: (name, o) => client.deleteVm(name, write(o)),
    setVmLabels: (name, labels, o) => client.setVmLabels(name, labels, write(o)),
    updateVm: (name, changes, o) => client.updateVm(name, changes, write(o)),
    listNodes: (mode, query) => client.listNodes({ ...query, ...read(mode) }),
    setNodeState: (id, state, o) =>
      state === "active" ? client.uncordon(id, write(o)) : state === "cordoned" ? client.cordon(id, write(o)) : client.drain(id, write(o)),
    clusterStatus: client.clusterStatus(),
    join: (id, address) => client.join(id, address),
    leave: (id) => client.leave(id),
    transferLeader: (id) => client.transferLeader(id),
    createToken: (role, name) => client.createToken(role, name),
    listTokens: (mode) => client.listTokens(read(mode)),
    revokeToken: (id) => client.revokeToken(id),
    createJoinToken: (ttlMs) => client.createJoinToken(ttlMs),
    listJoinTokens: (mode) => client.listJoinTokens(read(mode)),
    revokeJoinToken: (id) => client.revokeJoinToken(id),
    consumeJoinToken: (id, hash, node, key) => client.consumeJoinToken(id, hash, node, key),
    listCertificates: (mode) => client.listCertificates(read(mode)),
    revokeCertificate: (revoke) => client.revokeCertificate(revoke),
    recordCertificate: (record) => client.recordCertificate(record),
    caStatus: (mode) => client.caStatus(read(mode)),
    rotateCa: client.rotateCa(),
    finishCaRotation: client.finishCaRotation(),
    caRotationMoved: (node, fingerprint) => client.caRotationMoved(node, fingerprint),
    secretStatus: client.secretStatus(),
    secretFingerprints: client.secretFingerprints(),
    registerNode: (info) => client.registerNode(info),
    heartbeat: (id, beat) => client.heartbeat(id, beat),
    reportVmStatus: (name, node, status) => client.reportVmStatus(name, node, status),
    reportVmStatuses: (node, reports) => client.reportVmStatuses(node, reports),
    health: client.health()
  }
}

/**
 * What a member's outgoing API calls (forwarding to the leader, its agent's reports, a VM's log)
 * present: its certificate as renewal replaces it, read for each request (`Client.ClientTls`).
 */
export const outgoingTls = (live: Tls.LiveTls): Client.ClientTls => ({
  get ca() {
    return live.ca
  },
  get cert() {
    return live.cert
  },
  get key() {
    return live.key
  },
  checkServerIdentity: Tls.checkServerIdentity(live.clusterId)
})

/**
 * Other nodes' APIs by address, with `credential`, over HTTPS verified by `tls` (undefined:
 * plaintext). One client per address, made on first use.
 */
export const remotePlanes = (options: {
  /** Read at each request: the cluster secret in use may change (`ClusterKeyring.ts`). */
  readonly credential: () => string
  readonly requestMs: number
  readonly tls: Client.ClientTls | undefined
}): Effect.Effect<(address: string) => ControlPlaneShape, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clients = new Map<string, ControlPlaneShape>()
    const httpClient = yield* Layer.build(Client.layerHttpClient(options.tls))
    return (address: string): ControlPlaneShape => {
      let plane = clients.get(address)
      if (plane === undefined) {
        const client = Effect.runSync(
          Client.make({
            addr: address,
            token: options.credential,
            timeout: Duration.millis(options.requestMs),
            scheme: options.tls === undefined ? "http" : "https"
          }).pipe(Effect.provide(httpClient))
        )
        plane = remoteControlPlane(client)
        clients.set(address, plane)
      }
      return plane
    }
  })

/** What this node offers VMs: configured, or detected from the machine (all but one CPU, 80 % of RAM). */
export const detectCapacity = (config: NodeConfig): Resources =>
  config.capacity !== undefined
    ? new Resources(config.capacity)
    : new Resources({
        vcpus: Math.max(1, os.cpus().length - 1),
        memoryMiB: Math.max(16, Math.floor((os.totalmem() / 2 ** 20) * 0.8))
      })

/**
 * In systemd mode, microvm.nix's user and group, resolved before anything starts: systemd mode
 * cannot run a VM without them. Undefined in process mode.
 */
export const vmOwnerOf = (config: NodeConfig) =>
  config.vmBackend === "systemd"
    ? Effect.asSome(resolveVmOwner({ id: config.id, vmUser: config.vmUser ?? DefaultVmUser, vmGroup: config.vmGroup ?? DefaultVmGroup }))
    : Effect.succeedNone

/**
 * The VM side of a node: its backend (only directories this node marked are its VMs,
 * `vm/internal/ownership.ts`; in systemd mode they are handed to the user microvm@NAME runs as) and
 * the lease and the watchdog process that stop its VMs should this daemon die (`HostFence.ts`).
 */
export const vmRuntime = (
  config: NodeConfig,
  options: {
    /** The cluster's id as known now ("" while unknown). */
    readonly cluster: () => string
    readonly owner: Effect.Effect.Success<ReturnType<typeof vmOwnerOf>>
  }
): Effect.Effect<{ readonly backend: Context.Context<VmBackend>; readonly hostFence: Agent.HostFence }, StorageIo | BlixardError, Scope.Scope> =>
  Effect.gen(function* () {
    const node = NodeId.make(config.id)
    const settings = {
      stateDir: config.microvmStateDir,
      node,
      cluster: options.cluster,
      gcRootDir: config.gcRootDir ?? DefaultGcRootDir,
      ...(options.owner._tag === "Some" ? { owner: options.owner.value } : {}),
      allowedRunnerPrefixes: config.allowedRunnerPrefixes,
      allowedFlakePrefixes: config.allowedFlakePrefixes
    }
    const backend = yield* Layer.build(
      (config.vmBackend === "systemd" ? layerSystemd(settings) : layerProcess(settings)).pipe(Layer.provide(NodeContext.layer))
    )
    const hostFence = yield* HostFence.make({
      config: {
        id: node,
        dataDir: path.resolve(config.dataDir),
        vmBackend: config.vmBackend,
        microvmStateDir: path.resolve(config.microvmStateDir),
        fencingMs: config.timeouts.fencingMs,
        stopTimeoutMs: Agent.DefaultFenceStopTimeoutMs
      }
    })
    return { backend, hostFence }
  })
