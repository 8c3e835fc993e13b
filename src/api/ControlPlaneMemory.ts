/**
 * `ControlPlane` held in memory: one node that is its own leader, VMs in a map, every call recorded.
 * The API's tests and the HTTP benchmark serve it; it is the `layerMemory` twin of the Raft-backed
 * implementation and knows nothing of Raft, placement or agents (a created VM is placed on this node
 * and reported `pending` until started).
 */
import { Effect, Layer } from "effect"
import { ClusterStatus, MemberStatus } from "../domain/ClusterStatus.js"
import { ApiTokenInfo, ApiTokenRecord, CreatedApiToken, TokenId } from "../domain/ApiToken.js"
import { Conflict, NodeNotFound, NotImplemented, TokenNotFound, VmExists, VmNotFound } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import { HostHeartbeat, NodeInfo, type HostPort } from "../domain/NodeInfo.js"
import { Resources } from "../domain/Resources.js"
import { selectNodes, selectVms } from "../domain/ListQuery.js"
import type { VmName } from "../domain/VmName.js"
import { VmSpec } from "../domain/VmSpec.js"
import { VmRecord, VmStatus } from "../domain/VmStatus.js"
import { SnapshotFormat, SnapshotHeader, SnapshotMagic } from "../cluster/SnapshotFile.js"
import { Health } from "./Api.js"
import { randomSecret, randomTokenId, replicatedToken, sha256Hex } from "./Auth.js"
import { ControlPlane, type ControlPlaneShape, type ReadMode, type WriteOptions } from "./ControlPlane.js"

/** One call the API made, as it arrived. */
export interface RecordedCall {
  readonly method: keyof ControlPlaneShape
  readonly subject?: string | undefined
  readonly read?: ReadMode | undefined
  readonly write?: WriteOptions | undefined
}

export interface MemoryControlPlane extends ControlPlaneShape {
  /** Every call so far, oldest first. */
  readonly calls: ReadonlyArray<RecordedCall>
  /** The API tokens made so far, by id (what `AuthOptions.tokens` looks up). */
  readonly tokens: ReadonlyMap<string, ApiTokenRecord>
}

export interface MemoryOptions {
  /** This node's id (default 1). */
  readonly node?: NodeId | undefined
  /** This node's address as members see it (default `127.0.0.1:7001`). */
  readonly address?: string | undefined
  /** Clock for `since`/`createdAt` (default `Date.now`). */
  readonly now?: (() => number) | undefined
  /** Record calls (default true; the benchmark turns it off). */
  readonly record?: boolean | undefined
}

/** Builds an in-memory control plane; the same object is the service and the test's window on it. */
export const makeMemory = (options: MemoryOptions = {}): MemoryControlPlane => {
  const self = (options.node ?? 1) as NodeId
  const now = options.now ?? Date.now
  const record = options.record ?? true
  const vms = new Map<string, VmRecord>()
  const requests = new Map<string, VmRecord>()
  const nodes = new Map<number, NodeInfo>([
    [
      self,
      new NodeInfo({
        id: self,
        address: (options.address ?? "127.0.0.1:7001") as HostPort,
        capacity: new Resources({ vcpus: 64, memoryMiB: 262144 }),
        labels: {},
        state: "active",
        health: "up"
      })
    ]
  ])
  const calls: Array<RecordedCall> = []
  let term = 1
  let index = 0

  const note = (call: RecordedCall) => {
    if (record) calls.push(call)
  }
  const notFound = (name: VmName) => new VmNotFound({ message: `no VM named "${name}"`, subject: name, node: self })
  const lookup = (name: VmName) =>
    Effect.suspend(() => {
      const vm = vms.get(name)
      return vm === undefined ? Effect.fail(notFound(name)) : Effect.succeed(vm)
    })
  /** Applies a change once per request id; an `ifRevision` that moved on is a `Conflict`. */
  const write = (
    name: VmName,
    options: WriteOptions,
    change: (vm: VmRecord | undefined) => Effect.Effect<VmRecord | undefined, VmNotFound | VmExists | Conflict>,
    answer?: (before: VmRecord) => VmRecord
  ) =>
    Effect.suspend(() => {
      const key = options.requestId === undefined ? undefined : `${options.requestId}`
      const seen = key === undefined ? undefined : requests.get(key)
      if (seen !== undefined) return Effect.succeed(seen)
      const before = vms.get(name)
      if (options.ifRevision !== undefined && before !== undefined && before.revision !== options.ifRevision) {
        return Effect.fail(
          new Conflict({
            message: `VM "${name}" is at revision ${before.revision}, not ${options.ifRevision}; read it again and retry`,
            subject: name,
            node: self
          })
        )
      }
      return Effect.map(change(before), (after) => {
        index++
        if (after === undefined) vms.delete(name)
        else vms.set(name, after)
        const result = after ?? answer!(before!)
        if (key !== undefined) requests.set(key, result)
        return result
      })
    })
  const bump = (vm: VmRecord, fields: Partial<ConstructorParameters<typeof VmRecord>[0]>) =>
    new VmRecord({ ...vm, ...fields, revision: vm.revision + 1 })
  const member = (id: NodeId, address: string) =>
    new MemberStatus({ id, address, role: id === self ? "leader" : "follower", match: index, lag: 0 })
  const status = () =>
    new ClusterStatus({
      node: self,
      leader: self,
      term,
      commit: index,
      applied: index,
      members: [...nodes.values()].map((n) => member(n.id, n.address))
    })
  const nodeNotFound = (id: NodeId) =>
    new NodeNotFound({ message: `no node with id ${id} in the cluster`, subject: `node ${id}`, node: self })

  const tokens = new Map<string, ApiTokenRecord>()
  const joinTokensAbsent = new NotImplemented({ message: "the in-memory control plane has no join tokens (a real node does)", node: self })
  const certificatesAbsent = new NotImplemented({ message: "the in-memory control plane has no certificates (a real node does)", node: self })
  const infoOf = ({ hash: _, ...info }: ApiTokenRecord) => new ApiTokenInfo(info)

  return {
    calls,
    tokens,
    createToken: (role, name) =>
      Effect.sync(() => {
        note({ method: "createToken", subject: role })
        const id = TokenId.make(randomTokenId())
        const token = replicatedToken(id, randomSecret())
        const record = new ApiTokenRecord({ id, role, hash: sha256Hex(token), createdAt: now(), ...(name !== undefined ? { name } : {}) })
        tokens.set(id, record)
        return new CreatedApiToken({ ...infoOf(record), token })
      }),
    listTokens: (read) =>
      Effect.sync(() => {
        note({ method: "listTokens", read })
        return [...tokens.keys()].sort().map((id) => infoOf(tokens.get(id)!))
      }),
    revokeToken: (id) =>
      Effect.suspend(() => {
        note({ method: "revokeToken", subject: id })
        const record = tokens.get(id)
        if (record === undefined) return Effect.fail(new TokenNotFound({ message: `no API token with id ${id}`, subject: id, node: self }))
        tokens.delete(id)
        return Effect.succeed(infoOf(record))
      }),
    // Join tokens need the cluster CA and Raft's consumption: only a real node has them.
    createJoinToken: () => Effect.fail(joinTokensAbsent),
    listJoinTokens: () => Effect.fail(joinTokensAbsent),
    revokeJoinToken: () => Effect.fail(joinTokensAbsent),
    consumeJoinToken: () => Effect.fail(joinTokensAbsent),
    // Certificates are the cluster CA's: only a real node has them.
    listCertificates: () => Effect.fail(certificatesAbsent),
    revokeCertificate: () => Effect.fail(certificatesAbsent),
    recordCertificate: () => Effect.fail(certificatesAbsent),
    caStatus: () => Effect.fail(certificatesAbsent),
    rotateCa: Effect.fail(certificatesAbsent),
    finishCaRotation: Effect.fail(certificatesAbsent),
    caRotationMoved: () => Effect.fail(certificatesAbsent),
    listVms: (read, query) =>
      Effect.sync(() => {
        note({ method: "listVms", read })
        return selectVms(vms, query)
      }),
    getVm: (name, read) => Effect.zipRight(Effect.sync(() => note({ method: "getVm", subject: name, read })), lookup(name)),
    createVm: (spec, options) =>
      Effect.zipRight(
        Effect.sync(() => note({ method: "createVm", subject: spec.name, write: options })),
        write(spec.name, options, (before) =>
          before !== undefined
            ? Effect.fail(
                new VmExists({ message: `a VM named "${spec.name}" already exists`, subject: spec.name, node: self })
              )
            : Effect.succeed(
                new VmRecord({
                  spec,
                  desired: options.start === true ? "running" : "stopped",
                  node: self,
                  status: new VmStatus({ phase: "stopped", since: now(), restarts: 0 }),
                  revision: 1,
                  createdAt: now()
                })
              )
        )
      ),
    startVm: (name, options) =>
      Effect.zipRight(
        Effect.sync(() => note({ method: "startVm", subject: name, write: options })),
        write(name, options, (vm) =>
          vm === undefined
            ? Effect.fail(notFound(name))
            : Effect.succeed(
                bump(vm, { desired: "running", status: new VmStatus({ phase: "running", since: now(), restarts: 0 }) })
              )
        )
      ),
    stopVm: (name, options) =>
      Effect.zipRight(
        Effect.sync(() => note({ method: "stopVm", subject: name, write: options })),
        write(name, options, (vm) =>
          vm === undefined
            ? Effect.fail(notFound(name))
            : Effect.succeed(
                bump(vm, { desired: "stopped", status: new VmStatus({ phase: "stopped", since: now(), restarts: 0 }) })
              )
        )
      ),
    deleteVm: (name, options) =>
      Effect.zipRight(
        Effect.sync(() => note({ method: "deleteVm", subject: name, write: options })),
        write(
          name,
          options,
          (vm) => (vm === undefined ? Effect.fail(notFound(name)) : Effect.succeed(undefined)),
          (before) => bump(before, {})
        )
      ),
    updateVm: (name, changes, options) =>
      Effect.zipRight(
        Effect.sync(() => note({ method: "updateVm", subject: name, write: options })),
        write(name, options, (vm) =>
          vm === undefined ? Effect.fail(notFound(name)) : Effect.succeed(bump(vm, { spec: new VmSpec({ ...vm.spec, ...changes }) }))
        )
      ),
    setVmLabels: (name, labels, options) =>
      Effect.zipRight(
        Effect.sync(() => note({ method: "setVmLabels", subject: name, write: options })),
        write(name, options, (vm) =>
          vm === undefined ? Effect.fail(notFound(name)) : Effect.succeed(bump(vm, { spec: new VmSpec({ ...vm.spec, labels }) }))
        )
      ),
    listNodes: (read, query) =>
      Effect.sync(() => {
        note({ method: "listNodes", read })
        return selectNodes(nodes, query)
      }),
    setNodeState: (id, state, options) =>
      Effect.suspend(() => {
        note({ method: "setNodeState", subject: `${id}:${state}`, write: options })
        const node = nodes.get(id)
        if (node === undefined) return Effect.fail(nodeNotFound(id))
        const next = new NodeInfo({ ...node, state })
        nodes.set(id, next)
        index++
        return Effect.succeed(next)
      }),
    reportVmStatus: (name, node, status) =>
      Effect.suspend(() => {
        note({ method: "reportVmStatus", subject: `${name}@${node}:${status.phase}` })
        const vm = vms.get(name)
        if (vm === undefined) return Effect.fail(notFound(name))
        if (vm.node === node) vms.set(name, new VmRecord({ ...vm, status, revision: vm.revision + 1 }))
        index++
        return Effect.void
      }),
    reportVmStatuses: (node, reports) =>
      Effect.sync(() => {
        note({ method: "reportVmStatuses", subject: `${node}:${reports.map((r) => `${r.name}:${r.status.phase}`).join(",")}` })
        // As the state machine: a VM this node does not host (deleted, moved) is skipped.
        for (const { name, status } of reports) {
          const vm = vms.get(name)
          if (vm?.node === node) vms.set(name, new VmRecord({ ...vm, status, revision: vm.revision + 1 }))
        }
        index++
      }),
    registerNode: (info) =>
      Effect.sync(() => {
        note({ method: "registerNode", subject: `${info.id}` })
        nodes.set(info.id, info)
        index++
        return info
      }),
    heartbeat: (id) =>
      Effect.suspend(() => {
        note({ method: "heartbeat", subject: `${id}` })
        return nodes.has(id)
          ? Effect.succeed(new HostHeartbeat({ node: id, leader: self, term: 1, commit: index }))
          : Effect.fail(nodeNotFound(id))
      }),
    clusterStatus: Effect.sync(() => {
      note({ method: "clusterStatus" })
      return status()
    }),
    join: (id, address) =>
      Effect.sync(() => {
        note({ method: "join", subject: `${id}@${address}` })
        if (!nodes.has(id)) {
          nodes.set(
            id,
            new NodeInfo({
              id,
              address,
              capacity: new Resources({ vcpus: 64, memoryMiB: 262144 }),
              labels: {},
              state: "active",
              health: "up"
            })
          )
          index++
        }
        return status()
      }),
    leave: (id) =>
      Effect.suspend(() => {
        note({ method: "leave", subject: `${id}` })
        if (!nodes.delete(id)) return Effect.fail(nodeNotFound(id))
        index++
        return Effect.succeed(status())
      }),
    transferLeader: (id) =>
      Effect.suspend(() => {
        note({ method: "transferLeader", subject: `${id}` })
        if (!nodes.has(id)) return Effect.fail(nodeNotFound(id))
        term++
        return Effect.succeed(status())
      }),
    snapshot: Effect.sync(() => {
      note({ method: "snapshot" })
      // The shape `ClusterState.snapshot` writes, for this plane's VMs, nodes and tokens.
      const at = index + 1
      const clusterId = "memory"
      const text = JSON.stringify({
        version: 1,
        appliedIndex: at,
        vms: [...vms.keys()].sort().map((name) => vms.get(name)!),
        nodes: [...nodes.values()].sort((a, b) => a.id - b.id),
        clusterId,
        members: [[self, options.address ?? "127.0.0.1:7001"]],
        requests: [],
        tokens: [...tokens.keys()].sort().map((id) => tokens.get(id)!)
      })
      const header = new SnapshotHeader({
        magic: SnapshotMagic,
        format: SnapshotFormat,
        clusterId,
        index: at,
        term,
        node: self,
        createdAt: new Date(now()).toISOString()
      })
      return { header, pieces: [text] }
    }),
    health: Effect.sync(() => {
      note({ method: "health" })
      return new Health({ status: "ok", node: self, role: "leader", leader: self })
    })
  }
}

/** The in-memory control plane as a layer (a fresh one per build). */
export const layerMemory = (options: MemoryOptions = {}): Layer.Layer<ControlPlane> =>
  Layer.sync(ControlPlane, () => makeMemory(options))
