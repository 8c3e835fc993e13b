/**
 * The client of a Blixard node's API, derived from the same `BlixardApi` definition the server is
 * built from. Every method fails only with Blixard's tagged errors: the ones the node sent, exactly
 * as it sent them (`VmNotFound` with its code and node, …); `Unavailable` when nothing answers at the
 * address; `Timeout` when the node does not answer in time (default 5 s).
 *
 * `HttpApiClient` is imported here at the top: a CLI that must start fast imports this module lazily
 * (`await import(".../api/Client.js")`) inside the command that talks to a node. Each endpoint's
 * encoders and decoders are derived on its first call (`lazyEndpoints`), not all when a client is made.
 */
import type { SecretFingerprints, SecretStatus } from "../domain/ClusterSecret.js"
import { FetchHttpClient, type HttpApi, HttpApiClient, HttpApiError, HttpClient, HttpClientError, HttpClientRequest } from "@effect/platform"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { Context, Duration, Effect, Layer, ParseResult, Redacted, Schema, Stream } from "effect"
import * as NodeHttp from "node:http"
import * as NodeHttps from "node:https"
import type { ApiTokenInfo, CreatedApiToken, Role, TokenId } from "../domain/ApiToken.js"
import type { CaStatus } from "../domain/CaRotation.js"
import type { CertificateList, CertificateRecord, RevokedCertificate } from "../domain/Certificate.js"
import type { RevokeCertificate, StatusReport } from "../domain/Command.js"
import type { CreatedJoinToken, JoinTokenId, JoinTokenInfo } from "../domain/JoinToken.js"
import type { ClusterStatus } from "../domain/ClusterStatus.js"
import { describeParseError } from "../domain/Decode.js"
import { BlixardError, InvalidArgument, Timeout, TlsUntrusted, Unavailable } from "../domain/Errors.js"
import type { Labels } from "../domain/Labels.js"
import type { NodeQuery, VmQuery } from "../domain/ListQuery.js"
import type { NodeId } from "../domain/NodeId.js"
import type { HostBeat, HostHeartbeat, HostPort, NodeInfo } from "../domain/NodeInfo.js"
import type { VmName } from "../domain/VmName.js"
import { startOf, type VmChanges, type VmSpec } from "../domain/VmSpec.js"
import type { VmRecord, VmStatus } from "../domain/VmStatus.js"
import { BlixardApi, type Health } from "./Api.js"
import type { CertificateReport } from "./ControlPlane.js"
import * as SnapshotHttp from "./SnapshotHttp.js"

export interface ClientOptions {
  /** `HOST:PORT` of the node (`--addr`, `BLIXARD_ADDR`), e.g. `127.0.0.1:7001` or `[::1]:7001`. */
  readonly addr: string
  /** The node's API token, sent as `Authorization: Bearer <token>`; a function is asked at each request (a node credential follows its cluster secret). */
  readonly token?: Redacted.Redacted<string> | string | (() => string) | undefined
  /** How long one request may take before it fails with `Timeout` (default 5 seconds). */
  readonly timeout?: Duration.DurationInput | undefined
  /** `https` for a node serving TLS (the default of `blixard node`; give the client `layerTls`), `http` for a plain one. */
  readonly scheme?: "http" | "https" | undefined
}

/**
 * How a client checks a node's HTTPS certificate, and the certificate it presents (a node's, to
 * another node). `ca`, `cert` and `key` are read for every request, so they may be getters over an
 * identity that changes (`outgoingTls` over a node's `Tls.LiveTls`): after a renewal, the next
 * request presents the new certificate (kept-alive connections are pooled by certificate, so it
 * opens a new one).
 */
export interface ClientTls {
  /** PEM of the cluster CA (or of both CAs during a rotation): the node's certificate must chain to it. Read at each connection. */
  readonly ca: string
  readonly cert?: string | undefined
  readonly key?: string | undefined
  /** As for `tls.connect`: an Error refuses the server (after its chain to `ca` is verified). */
  readonly checkServerIdentity?: ((host: string, cert: { readonly subjectaltname?: string | undefined }) => Error | undefined) | undefined
}

/**
 * An `https.Agent` presenting `tls` as it is when each request is sent. Node's agent copies its own
 * `options` into every request's (`{ ...request, ...agent.options }`) before it picks a pooled
 * connection or opens one: getters there are read once per request, and the copy names the pool
 * (and the TLS session cache), which is keyed by `ca`, `cert` and `key`. A renewed certificate so
 * gets fresh connections and sessions; the old certificate's idle ones close as the server times them out.
 */
const identityAgent = (tls: ClientTls): NodeHttps.Agent => {
  const agent = new NodeHttps.Agent({ keepAlive: true, ...(tls.checkServerIdentity !== undefined ? { checkServerIdentity: tls.checkServerIdentity as never } : {}) })
  Object.defineProperties(agent.options, {
    ca: { enumerable: true, get: () => tls.ca },
    cert: { enumerable: true, get: () => (tls.key !== undefined ? tls.cert : undefined) },
    key: { enumerable: true, get: () => (tls.cert !== undefined ? tls.key : undefined) }
  })
  return agent
}

/** An `HttpClient` over `node:https` trusting only the cluster CA (`tls`), or plain `node:http`. */
export const layerHttpClient = (tls?: ClientTls): Layer.Layer<HttpClient.HttpClient> =>
  NodeHttpClient.layerWithoutAgent.pipe(
    Layer.provide(
      tls === undefined
        ? NodeHttpClient.makeAgentLayer({ keepAlive: true })
        : Layer.scoped(
            NodeHttpClient.HttpAgent,
            Effect.acquireRelease(
              Effect.sync(() => ({ [NodeHttpClient.HttpAgentTypeId]: NodeHttpClient.HttpAgentTypeId, http: new NodeHttp.Agent({ keepAlive: true }), https: identityAgent(tls) })),
              (agents) => Effect.sync(() => (agents.http.destroy(), agents.https.destroy()))
            )
          )
    )
  )

export interface ReadOptions {
  /** Answer from the asked node's own state, without a ReadIndex round (may be stale). */
  readonly stale?: boolean | undefined
}

export interface WriteOptions {
  /** Sent as `Idempotency-Key`: a retry with the same key is applied once. */
  readonly idempotencyKey?: string | undefined
  /** Apply only while the object is at this revision (else `Conflict`). */
  readonly ifRevision?: number | undefined
}

export interface ApiClientShape {
  /** The address the client talks to, as given. */
  readonly addr: string
  readonly listVms: (options?: ReadOptions & VmQuery) => Effect.Effect<ReadonlyArray<VmRecord>, BlixardError>
  readonly getVm: (name: VmName, options?: ReadOptions) => Effect.Effect<VmRecord, BlixardError>
  /** `start`: created desired running (true) or stopped (false); absent: `StartOnCreate`. */
  readonly createVm: (spec: VmSpec, options?: WriteOptions & { readonly start?: boolean | undefined }) => Effect.Effect<VmRecord, BlixardError>
  readonly startVm: (name: VmName, options?: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  readonly stopVm: (name: VmName, options?: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  /** Answers the VM as it was when deleted. */
  readonly deleteVm: (name: VmName, options?: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  readonly setVmLabels: (name: VmName, labels: Labels, options?: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  readonly updateVm: (name: VmName, changes: VmChanges, options?: WriteOptions) => Effect.Effect<VmRecord, BlixardError>
  /**
   * The VM's log (`GET /v1/vms/NAME/logs`) as text chunks, from whichever node hosts it; with
   * `follow`, until the stream is interrupted. Only the answer's start is bounded by the timeout.
   */
  readonly vmLogs: (name: VmName, options: { readonly follow: boolean; readonly tail?: number | undefined }) => Stream.Stream<string, BlixardError>
  /** The node's Server-Sent Events (`GET /v1/events`) as bytes, after `lastEventId` if given; until interrupted. */
  readonly events: (lastEventId?: number | undefined) => Stream.Stream<Uint8Array, BlixardError>
  /** The cluster's state as a snapshot file (`GET /v1/cluster/snapshot`, admin), streamed. */
  readonly snapshot: () => Stream.Stream<Uint8Array, BlixardError>
  readonly listNodes: (options?: ReadOptions & NodeQuery) => Effect.Effect<ReadonlyArray<NodeInfo>, BlixardError>
  readonly cordon: (id: NodeId, options?: WriteOptions) => Effect.Effect<NodeInfo, BlixardError>
  readonly uncordon: (id: NodeId, options?: WriteOptions) => Effect.Effect<NodeInfo, BlixardError>
  readonly drain: (id: NodeId, options?: WriteOptions) => Effect.Effect<NodeInfo, BlixardError>
  readonly registerNode: (info: NodeInfo) => Effect.Effect<NodeInfo, BlixardError>
  readonly heartbeat: (id: NodeId, beat: HostBeat) => Effect.Effect<HostHeartbeat, BlixardError>
  readonly reportVmStatus: (name: VmName, node: NodeId, status: VmStatus) => Effect.Effect<void, BlixardError>
  readonly reportVmStatuses: (node: NodeId, reports: ReadonlyArray<StatusReport>) => Effect.Effect<void, BlixardError>
  readonly clusterStatus: () => Effect.Effect<ClusterStatus, BlixardError>
  readonly join: (id: NodeId, address: HostPort) => Effect.Effect<ClusterStatus, BlixardError>
  readonly leave: (id: NodeId) => Effect.Effect<ClusterStatus, BlixardError>
  readonly transferLeader: (id: NodeId) => Effect.Effect<ClusterStatus, BlixardError>
  readonly health: () => Effect.Effect<Health, BlixardError>
  readonly createToken: (role: Role, name?: string | undefined) => Effect.Effect<CreatedApiToken, BlixardError>
  readonly listTokens: (options?: ReadOptions) => Effect.Effect<ReadonlyArray<ApiTokenInfo>, BlixardError>
  readonly revokeToken: (id: TokenId) => Effect.Effect<ApiTokenInfo, BlixardError>
  readonly createJoinToken: (ttlMs?: number | undefined) => Effect.Effect<CreatedJoinToken, BlixardError>
  readonly listJoinTokens: (options?: ReadOptions) => Effect.Effect<ReadonlyArray<JoinTokenInfo>, BlixardError>
  readonly revokeJoinToken: (id: JoinTokenId) => Effect.Effect<JoinTokenInfo, BlixardError>
  readonly consumeJoinToken: (id: JoinTokenId, hash: string, node: NodeId, key?: string) => Effect.Effect<JoinTokenInfo, BlixardError>
  readonly listCertificates: (options?: ReadOptions) => Effect.Effect<CertificateList, BlixardError>
  readonly revokeCertificate: (revoke: Omit<RevokeCertificate, "_tag">) => Effect.Effect<ReadonlyArray<RevokedCertificate>, BlixardError>
  readonly recordCertificate: (record: CertificateReport) => Effect.Effect<CertificateRecord, BlixardError>
  readonly caStatus: (options?: ReadOptions) => Effect.Effect<CaStatus, BlixardError>
  readonly rotateCa: () => Effect.Effect<CaStatus, BlixardError>
  readonly finishCaRotation: () => Effect.Effect<CaStatus, BlixardError>
  readonly caRotationMoved: (node: NodeId, fingerprint: string) => Effect.Effect<CaStatus, BlixardError>
  readonly secretStatus: () => Effect.Effect<SecretStatus, BlixardError>
  readonly secretFingerprints: () => Effect.Effect<SecretFingerprints, BlixardError>
}

export const DefaultTimeout = Duration.seconds(5)

const isBlixardError = Schema.is(BlixardError)
const decodeBlixardError = Schema.decodeUnknownOption(BlixardError)

/** `http://HOST:PORT` or `https://…` (an IPv6 host stays bracketed). */
export const baseUrlOf = (addr: string, scheme: "http" | "https" = "http"): string => (/^https?:\/\//.test(addr) ? addr : `${scheme}://${addr}`)

const unreachable = (addr: string) =>
  new Unavailable({
    message: `no Blixard node answers at ${addr}; is it running? (--addr / BLIXARD_ADDR)`,
    subject: addr
  })

/** Node's codes for a certificate that does not verify against the CA given. */
const certificateCodes = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "ERR_TLS_CERT_ALTNAME_INVALID"
])

/** What a failed connection says about TLS, when it is about TLS. */
const tlsProblem = (addr: string, scheme: "http" | "https", cause: unknown): BlixardError | undefined => {
  const error = cause as { readonly code?: unknown; readonly message?: unknown } | undefined
  const code = typeof error?.code === "string" ? error.code : ""
  const message = typeof error?.message === "string" ? error.message : ""
  if (message.startsWith("BLX_TLS_UNTRUSTED: ")) return new TlsUntrusted({ subject: addr, message: `${addr}: ${message.slice(19)}` })
  if (certificateCodes.has(code)) {
    return new TlsUntrusted({
      subject: addr,
      message: `the certificate of ${addr} is not from this cluster's CA (${code}); give the cluster's CA (--ca-file, BLIXARD_CA_FILE, or the node's --data-dir)`
    })
  }
  if (scheme === "https" && (code === "EPROTO" || /wrong version number|packet length too long/i.test(message))) {
    return new Unavailable({ subject: addr, message: `${addr} does not speak TLS (was the node started with --insecure-plaintext?); talk to it without a CA file` })
  }
  if (scheme === "http" && (code === "ECONNRESET" || /socket hang up/i.test(message))) {
    return new Unavailable({
      subject: addr,
      message: `${addr} closed the connection: it probably serves HTTPS; give the cluster's CA (--ca-file, BLIXARD_CA_FILE, or the node's --data-dir)`
    })
  }
  return undefined
}

/** Whatever went wrong below the API, as one of Blixard's errors naming the address. */
const toBlixardError =
  (addr: string, scheme: "http" | "https") =>
  (error: unknown): Effect.Effect<never, BlixardError> => {
    if (isBlixardError(error)) return Effect.fail(error)
    if (error instanceof HttpApiError.HttpApiDecodeError) {
      return Effect.fail(new InvalidArgument({ message: `${addr} refused the request: ${error.message}`, subject: addr }))
    }
    if (HttpClientError.isHttpClientError(error)) {
      if (error._tag === "RequestError") {
        return Effect.fail(
          error.reason === "Transport"
            ? tlsProblem(addr, scheme, error.cause) ?? unreachable(addr)
            : new InvalidArgument({ message: `cannot send the request to ${addr}: ${error.message}`, subject: addr })
        )
      }
      // An answer the endpoint does not declare (e.g. 413): our errors still arrive as JSON.
      const response = error.response
      return Effect.flatMap(Effect.option(response.json), (body) => {
        const decoded = body._tag === "Some" ? decodeBlixardError(body.value) : undefined
        return Effect.fail(
          decoded !== undefined && decoded._tag === "Some"
            ? decoded.value
            : new Unavailable({
                message: `the node at ${addr} answered HTTP ${response.status}, which this client does not understand (is it a Blixard node of the same version?)`,
                subject: addr
              })
        )
      })
    }
    if (ParseResult.isParseError(error)) {
      return Effect.fail(
        new Unavailable({
          message: `the answer from ${addr} does not match the API (is it a Blixard node of the same version?): ${describeParseError(error)}`,
          subject: addr
        })
      )
    }
    return Effect.fail(
      new Unavailable({ message: `request to ${addr} failed: ${String(error)}`, subject: addr })
    )
  }

const headersOf = (options: WriteOptions | undefined) =>
  options?.idempotencyKey === undefined ? {} : { "idempotency-key": options.idempotencyKey }

const urlParamsOf = (options: ReadOptions | undefined) => (options?.stale === true ? { stale: true } : {})

/** A list query's fields without `stale` (which `urlParamsOf` writes). */
const queryOf = <Q extends ReadOptions>(options: Q | undefined): Omit<Q, "stale"> => {
  if (options === undefined) return {} as Omit<Q, "stale">
  const { stale: _, ...query } = options
  return query
}

const tokenText = (token: Redacted.Redacted<string> | string | (() => string)): string =>
  typeof token === "string" ? token : typeof token === "function" ? token() : Redacted.value(token)

/** `HttpApiClient.make(BlixardApi)`'s client: `api.GROUP.ENDPOINT(request)`. */
type Endpoints = typeof BlixardApi extends HttpApi.HttpApi<string, infer Groups, infer E, infer _R> ? HttpApiClient.Client<Groups, E, never> : never

/**
 * The API's client, each endpoint's part built when it is first called: `HttpApiClient.make` derives
 * every endpoint's request encoder and answer decoders up front, which costs a one-shot command
 * (`blixard vm list`) more than the rest of its run.
 */
const lazyEndpoints = (httpClient: HttpClient.HttpClient, baseUrl: string): Endpoints => {
  const built = new Map<string, (request: unknown) => Effect.Effect<unknown, unknown>>()
  const endpointOf = (group: string, endpoint: string) =>
    Effect.suspend(() => {
      const known = built.get(`${group}.${endpoint}`)
      if (known !== undefined) return Effect.succeed(known)
      return HttpApiClient.endpoint(BlixardApi, { group: group as never, endpoint: endpoint as never, httpClient, baseUrl }).pipe(
        Effect.map((call) => call as unknown as (request: unknown) => Effect.Effect<unknown, unknown>),
        Effect.tap((call) => Effect.sync(() => built.set(`${group}.${endpoint}`, call)))
      )
    })
  const group = (name: string) =>
    new Proxy({}, { get: (_, endpoint) => (request: unknown) => Effect.flatMap(endpointOf(name, String(endpoint)), (call) => call(request)) })
  return new Proxy({}, { get: (_, name) => group(String(name)) }) as Endpoints
}

/** Builds a client for one node (needs an `HttpClient`: `FetchHttpClient.layer` or `NodeHttpClient`). */
export const make = (options: ClientOptions): Effect.Effect<ApiClientShape, never, HttpClient.HttpClient> =>
  Effect.gen(function* () {
    const addr = options.addr
    const token = options.token
    const timeout = options.timeout ?? DefaultTimeout
    const scheme = options.scheme ?? "http"
    const http = yield* HttpClient.HttpClient
    const authorized =
      token === undefined ? http : http.pipe(HttpClient.mapRequest((request) => HttpClientRequest.bearerToken(request, tokenText(token))))
    const api = lazyEndpoints(authorized, baseUrlOf(addr, scheme))
    const call = <A>(effect: Effect.Effect<A, unknown>): Effect.Effect<A, BlixardError> =>
      effect.pipe(
        Effect.catchAll(toBlixardError(addr, scheme)),
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () =>
            new Timeout({
              message: `the node at ${addr} did not answer within ${Duration.format(timeout)}`,
              subject: addr
            })
        })
      )
    const body = (options: WriteOptions | undefined) =>
      options?.ifRevision === undefined ? {} : { ifRevision: options.ifRevision }

    /**
     * A streamed answer (a log, a snapshot) over this client's connection settings (TLS included):
     * only its start is bounded by the timeout; an error answer is the node's `BLX_…` error.
     */
    const streamed = (path: string, what: string, accept?: (contentType: string | undefined) => boolean, headers: Record<string, string> = {}) =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          const response = yield* authorized.get(`${baseUrlOf(addr, scheme)}${path}`, { headers }).pipe(
            Effect.catchAll(toBlixardError(addr, scheme)),
            Effect.timeoutFail({
              duration: timeout,
              onTimeout: () => new Timeout({ message: `the node at ${addr} did not begin ${what} within ${Duration.format(timeout)}`, subject: addr })
            })
          )
          if (response.status !== 200 || (accept !== undefined && !accept(response.headers["content-type"]))) {
            const body = yield* Effect.option(response.json)
            const decoded = body._tag === "Some" ? decodeBlixardError(body.value) : undefined
            return yield* Effect.fail(
              decoded !== undefined && decoded._tag === "Some"
                ? decoded.value
                : new Unavailable({ subject: addr, message: `the node at ${addr} answered HTTP ${response.status} to ${what}, which this client does not understand` })
            )
          }
          return response.stream.pipe(
            Stream.mapError((e) => new Unavailable({ subject: addr, message: `${what} from ${addr} broke off: ${e.message}` }) as BlixardError)
          )
        })
      )

    const vmLogs: ApiClientShape["vmLogs"] = (name, request) =>
      streamed(
        `/v1/vms/${encodeURIComponent(name)}/logs?follow=${request.follow}${request.tail !== undefined ? `&tail=${request.tail}` : ""}`,
        `the log of VM "${name}"`
      ).pipe(Stream.decodeText(), Stream.filter((text) => text !== ""))

    return {
      addr,
      vmLogs,
      snapshot: () => streamed(SnapshotHttp.path, "the snapshot", (type) => type === SnapshotHttp.contentType),
      events: (lastEventId) =>
        streamed("/v1/events", "the event stream", (type) => type?.startsWith("text/event-stream") === true, {
          accept: "text/event-stream",
          ...(lastEventId !== undefined ? { "last-event-id": String(lastEventId) } : {})
        }),
      listVms: (read) => call(api.vms.list({ urlParams: { ...queryOf(read), ...urlParamsOf(read) } })),
      getVm: (name, read) => call(api.vms.get({ path: { name }, urlParams: urlParamsOf(read) })),
      createVm: (spec, write) =>
        call(api.vms.create({ payload: { spec, start: startOf(write?.start) }, headers: headersOf(write) })),
      startVm: (name, write) => call(api.vms.start({ path: { name }, payload: body(write), headers: headersOf(write) })),
      stopVm: (name, write) => call(api.vms.stop({ path: { name }, payload: body(write), headers: headersOf(write) })),
      deleteVm: (name, write) =>
        call(api.vms.delete({ path: { name }, urlParams: body(write), headers: headersOf(write) })),
      setVmLabels: (name, labels, write) =>
        call(api.vms.setLabels({ path: { name }, payload: { labels, ...body(write) }, headers: headersOf(write) })),
      updateVm: (name, changes, write) =>
        call(api.vms.update({ path: { name }, payload: { ...changes, ...body(write) }, headers: headersOf(write) })),
      listNodes: (read) => call(api.nodes.list({ urlParams: { ...queryOf(read), ...urlParamsOf(read) } })),

      cordon: (id, write) => call(api.nodes.cordon({ path: { id }, headers: headersOf(write) })),
      uncordon: (id, write) => call(api.nodes.uncordon({ path: { id }, headers: headersOf(write) })),
      drain: (id, write) => call(api.nodes.drain({ path: { id }, headers: headersOf(write) })),
      reportVmStatus: (name, node, status) => call(api.vms.reportStatus({ path: { name }, payload: { node, status } })),
      reportVmStatuses: (node, reports) => call(api.nodes.reportStatuses({ path: { id: node }, payload: { reports } })),
      registerNode: (info) => call(api.nodes.register({ path: { id: info.id }, payload: info })),
      heartbeat: (id, beat) => call(api.nodes.heartbeat({ path: { id }, payload: beat })),
      clusterStatus: () => call(api.cluster.status()),
      join: (id, address) => call(api.cluster.join({ payload: { id, address } })),
      leave: (id) => call(api.cluster.leave({ path: { id } })),
      transferLeader: (id) => call(api.cluster.transferLeader({ payload: { id } })),
      health: () => call(api.health.health()),
      createToken: (role, name) => call(api.tokens.create({ payload: { role, ...(name !== undefined ? { name } : {}) } })),
      listTokens: (read) => call(api.tokens.list({ urlParams: urlParamsOf(read) })),
      revokeToken: (id) => call(api.tokens.revoke({ path: { id } })),
      createJoinToken: (ttlMs) => call(api.joinTokens.create({ payload: ttlMs !== undefined ? { ttlMs } : {} })),
      listJoinTokens: (read) => call(api.joinTokens.list({ urlParams: urlParamsOf(read) })),
      revokeJoinToken: (id) => call(api.joinTokens.revoke({ path: { id } })),
      consumeJoinToken: (id, hash, node, key) => call(api.joinTokens.consume({ path: { id }, payload: { hash, node, ...(key !== undefined ? { key } : {}) } })),
      listCertificates: (read) => call(api.certificates.list({ urlParams: urlParamsOf(read) })),
      revokeCertificate: (revoke) => call(api.certificates.revoke({ payload: revoke })),
      recordCertificate: (record) => call(api.certificates.record({ payload: record })),
      caStatus: (read) => call(api.ca.status({ urlParams: urlParamsOf(read) })),
      rotateCa: () => call(api.ca.rotate()),
      finishCaRotation: () => call(api.ca.finish()),
      caRotationMoved: (node, fingerprint) => call(api.ca.moved({ payload: { node, fingerprint } })),
      secretStatus: () => call(api.secret.status()),
      secretFingerprints: () => call(api.secret.self())
    } satisfies ApiClientShape
  })

/** The client of one node as a service. */
export class ApiClient extends Context.Tag("blixard/api/ApiClient")<ApiClient, ApiClientShape>() {
  /** Over the `HttpClient` in context. */
  static readonly layer = (options: ClientOptions): Layer.Layer<ApiClient, never, HttpClient.HttpClient> =>
    Layer.effect(ApiClient, make(options))
  /** Over the platform's `fetch`. */
  static readonly layerFetch = (options: ClientOptions): Layer.Layer<ApiClient> =>
    ApiClient.layer(options).pipe(Layer.provide(FetchHttpClient.layer))
}
