/**
 * The CLI's view of a Blixard node: one method per client command. Commands only ever talk to a
 * node through this service; `layerHttp` is the REST API client (`src/api/Client.ts`), tests give
 * fakes.
 *
 * The HTTP machinery is imported lazily, inside the first call, so `blixard --help` stays fast.
 * The API token comes from `--token-file`, `BLIXARD_API_TOKEN` or the node's data directory
 * (`Credentials.ts`), looked up once per address.
 */
import type { SecretStatus } from "../domain/ClusterSecret.js"
import { Context, Effect, Layer, Stream } from "effect"
import type { ApiTokenInfo, CreatedApiToken, Role, TokenId } from "../domain/ApiToken.js"
import type { CertificateList, RevokedCertificate } from "../domain/Certificate.js"
import type { CaStatus } from "../domain/CaRotation.js"
import type { RevokeCertificate } from "../domain/Command.js"
import type { CreatedJoinToken, JoinTokenId, JoinTokenInfo } from "../domain/JoinToken.js"
import type { BlixardError } from "../domain/Errors.js"
import type { NodeQuery, VmQuery } from "../domain/ListQuery.js"
import type { NodeId } from "../domain/NodeId.js"
import type { HostPort, NodeInfo, Schedulability } from "../domain/NodeInfo.js"
import type { VmName } from "../domain/VmName.js"
import type { VmChanges, VmSpec } from "../domain/VmSpec.js"
import type { VmRecord } from "../domain/VmStatus.js"
import type { ApiClientShape } from "../api/Client.js"
import type { ClusterStatus } from "../domain/ClusterStatus.js"
import { ProcessEnv } from "./ProcessEnv.js"

/** The node a command talks to (from `--addr`, `BLIXARD_ADDR` or the default), and where its token is. */
export interface Target {
  readonly addr: HostPort
  /** `--token-file`. */
  readonly tokenFile?: string
  /** `--data-dir` or `BLIXARD_DATA_DIR`: the node's data directory, holding its `api-token`. */
  readonly dataDir?: string
  /** `--ca-file`: the cluster CA to verify the node's HTTPS certificate with. */
  readonly caFile?: string
}

export interface BlixardClientApi {
  /** `start`: created desired running, or stopped (`--no-start`); absent: `StartOnCreate`. */
  readonly createVm: (target: Target, spec: VmSpec, options?: { readonly start?: boolean }) => Effect.Effect<VmRecord, BlixardError>
  readonly startVm: (target: Target, name: VmName) => Effect.Effect<VmRecord, BlixardError>
  readonly stopVm: (target: Target, name: VmName) => Effect.Effect<VmRecord, BlixardError>
  readonly deleteVm: (target: Target, name: VmName) => Effect.Effect<void, BlixardError>
  readonly updateVm: (target: Target, name: VmName, changes: VmChanges, ifRevision?: number) => Effect.Effect<VmRecord, BlixardError>
  readonly vmLogs: (
    target: Target,
    name: VmName,
    options: { readonly follow: boolean; readonly tail?: number | undefined }
  ) => Stream.Stream<string, BlixardError>
  readonly vmStatus: (target: Target, name: VmName) => Effect.Effect<VmRecord, BlixardError>
  readonly listVms: (target: Target, query?: VmQuery) => Effect.Effect<ReadonlyArray<VmRecord>, BlixardError>
  readonly clusterStatus: (target: Target) => Effect.Effect<ClusterStatus, BlixardError>
  readonly joinCluster: (target: Target, id: NodeId, address: HostPort) => Effect.Effect<ClusterStatus, BlixardError>
  readonly leaveCluster: (target: Target, id: NodeId) => Effect.Effect<ClusterStatus, BlixardError>
  readonly listNodes: (target: Target, query?: NodeQuery) => Effect.Effect<ReadonlyArray<NodeInfo>, BlixardError>
  readonly setNodeState: (target: Target, id: NodeId, state: Schedulability) => Effect.Effect<NodeInfo, BlixardError>
  readonly createToken: (target: Target, role: Role, name: string | undefined) => Effect.Effect<CreatedApiToken, BlixardError>
  readonly listTokens: (target: Target) => Effect.Effect<ReadonlyArray<ApiTokenInfo>, BlixardError>
  readonly revokeToken: (target: Target, id: TokenId) => Effect.Effect<ApiTokenInfo, BlixardError>
  readonly createJoinToken: (target: Target, ttlMs: number | undefined) => Effect.Effect<CreatedJoinToken, BlixardError>
  readonly listJoinTokens: (target: Target) => Effect.Effect<ReadonlyArray<JoinTokenInfo>, BlixardError>
  readonly revokeJoinToken: (target: Target, id: JoinTokenId) => Effect.Effect<JoinTokenInfo, BlixardError>
  readonly listCertificates: (target: Target) => Effect.Effect<CertificateList, BlixardError>
  readonly revokeCertificate: (target: Target, revoke: Omit<RevokeCertificate, "_tag">) => Effect.Effect<ReadonlyArray<RevokedCertificate>, BlixardError>
  readonly caStatus: (target: Target) => Effect.Effect<CaStatus, BlixardError>
  readonly rotateCa: (target: Target) => Effect.Effect<CaStatus, BlixardError>
  readonly secretStatus: (target: Target) => Effect.Effect<SecretStatus, BlixardError>
  readonly finishCaRotation: (target: Target) => Effect.Effect<CaStatus, BlixardError>
  /** The cluster's state as a snapshot file's bytes, streamed (`GET /v1/cluster/snapshot`). */
  readonly downloadSnapshot: (target: Target) => Stream.Stream<Uint8Array, BlixardError>
  /** The node's event stream (`GET /v1/events`) as bytes, after `lastEventId` if given. */
  readonly events: (target: Target, lastEventId: number | undefined) => Stream.Stream<Uint8Array, BlixardError>
}

export class BlixardClient extends Context.Tag("blixard/cli/BlixardClient")<BlixardClient, BlixardClientApi>() {
  /** The REST API client, one per address asked. */
  static readonly layerHttp = Layer.effect(
    BlixardClient,
    Effect.gen(function* () {
      const env = yield* ProcessEnv
      const clients = new Map<string, ApiClientShape>()
      const clientFor = (target: Target): Effect.Effect<ApiClientShape, BlixardError> =>
        Effect.suspend(() => {
          const key = JSON.stringify([target.addr, target.tokenFile, target.dataDir, target.caFile])
          const known = clients.get(key)
          if (known !== undefined) return Effect.succeed(known)
          return Effect.promise(() => Promise.all([import("../api/Client.js"), import("./Credentials.js"), import("../net/TlsIdentity.js")])).pipe(
            Effect.flatMap(([Client, Credentials, Tls]) =>
              Effect.gen(function* () {
                // Only to find the node's files on this host: no token goes with it, and whatever it
                // says, the answer is checked against the CA found there.
                const nodeId = yield* Effect.cached(Credentials.probeNodeId(target.addr))
                const ca = yield* Credentials.resolveCa(target, env, nodeId)
                const token = yield* Credentials.resolveToken(target, env, nodeId)
                const clusterId = ca === undefined ? undefined : Tls.clusterOfCa(ca.pem)
                return yield* Client.make({
                  addr: target.addr,
                  scheme: ca === undefined ? "http" : "https",
                  ...(token !== undefined ? { token } : {})
                }).pipe(
                  Effect.provide(
                    Client.layerHttpClient(
                      ca === undefined
                        ? undefined
                        : { ca: ca.pem, ...(clusterId !== undefined ? { checkServerIdentity: Tls.checkServerIdentity(clusterId) } : {}) }
                    )
                  )
                )
              })
            ),
            Effect.tap((client) => Effect.sync(() => clients.set(key, client)))
          )
        })
      const via = <A>(target: Target, f: (client: ApiClientShape) => Effect.Effect<A, BlixardError>) =>
        Effect.flatMap(clientFor(target), f)
      return {
        createVm: (target, spec, options) => via(target, (c) => c.createVm(spec, { start: options?.start })),
        startVm: (target, name) => via(target, (c) => c.startVm(name)),
        stopVm: (target, name) => via(target, (c) => c.stopVm(name)),
        deleteVm: (target, name) => via(target, (c) => Effect.asVoid(c.deleteVm(name))),
        updateVm: (target, name, changes, ifRevision) =>
          via(target, (c) => c.updateVm(name, changes, ifRevision !== undefined ? { ifRevision } : undefined)),
        vmLogs: (target, name, options) => Stream.unwrap(Effect.map(clientFor(target), (c) => c.vmLogs(name, options))),
        vmStatus: (target, name) => via(target, (c) => c.getVm(name)),
        listVms: (target, query) => via(target, (c) => c.listVms(query)),
        clusterStatus: (target) => via(target, (c) => c.clusterStatus()),
        joinCluster: (target, id, address) => via(target, (c) => c.join(id, address)),
        leaveCluster: (target, id) => via(target, (c) => c.leave(id)),
        listNodes: (target, query) => via(target, (c) => c.listNodes(query)),
        setNodeState: (target, id, state) =>
          via(target, (c) => (state === "active" ? c.uncordon(id) : state === "cordoned" ? c.cordon(id) : c.drain(id))),
        createToken: (target, role, name) => via(target, (c) => c.createToken(role, name)),
        listTokens: (target) => via(target, (c) => c.listTokens()),
        revokeToken: (target, id) => via(target, (c) => c.revokeToken(id)),
        createJoinToken: (target, ttlMs) => via(target, (c) => c.createJoinToken(ttlMs)),
        listJoinTokens: (target) => via(target, (c) => c.listJoinTokens()),
        revokeJoinToken: (target, id) => via(target, (c) => c.revokeJoinToken(id)),
        listCertificates: (target) => via(target, (c) => c.listCertificates()),
        revokeCertificate: (target, revoke) => via(target, (c) => c.revokeCertificate(revoke)),
        caStatus: (target) => via(target, (c) => c.caStatus()),
        rotateCa: (target) => via(target, (c) => c.rotateCa()),
        finishCaRotation: (target) => via(target, (c) => c.finishCaRotation()),
        secretStatus: (target) => via(target, (c) => c.secretStatus()),
        downloadSnapshot: (target) => Stream.unwrap(Effect.map(clientFor(target), (c) => c.snapshot())),
        events: (target, lastEventId) => Stream.unwrap(Effect.map(clientFor(target), (c) => c.events(lastEventId)))
      } satisfies BlixardClientApi
    })
  )
}
