/**
 * Serving `BlixardApi` on `node:http`. At start-up the API definition is compiled once into a route
 * table: each endpoint's method and path, its decoders (path parameters, query, headers, JSON body)
 * and its success encoder, and one error encoder for the whole API, all taken from the endpoints'
 * schemas and their status annotations, exactly as `HttpApiBuilder` reads them. A request is then
 * matched, checked and decoded by plain functions, and only its handler (a call to `ControlPlane`)
 * runs as an Effect, forked on the server layer's runtime.
 *
 * Why not `HttpApiBuilder` on the platform's `NodeHttpServer`: its per-request machinery (a platform
 * request and response object, router and middleware layers, a span per request) cost about 3× what
 * `node:http` calling an Effect handler costs. Measured with bench/http.ts in one run on two shared
 * cores (read the ratios): ~2,000 creates/s at 64 clients and a 0.37 ms p50 for one client through
 * the platform, ~5,000/s and 0.17 ms through this server, ~8,300/s and 0.10 ms for bare `node:http`
 * without validation. The definition stays the one source of the contract: OpenAPI and the CLI's
 * client are still derived from it, and so is everything here.
 *
 * Every error a client sees is one of ours, as JSON with its `BLX_…` code: a body, path parameter,
 * header or query that fails its schema, or a body that is not JSON, is `InvalidArgument` (400, the
 * message naming the field and the problem); a body over `MaxBodyBytes` is `InvalidArgument` with
 * status 413, an unknown path one with status 404, a known path asked with a method it does not
 * take one with status 405 and an `Allow` header; a missing or wrong API token is `Unauthorized`
 * (401), a token whose role does not allow the endpoint `Forbidden` (403). A failure the API cannot encode, or a defect, is logged with its cause and answered 500.
 * A handler is told its `Caller` (the node its credential names, the node its client certificate
 * names): a node records only its own certificate (`reportRefusal`).
 *
 * Beside the route table, one table of raw routes (`RawRoutes.ts`) serves what is not one JSON value:
 * `/openapi.json`, `GET /metrics` (given `metrics`), `GET /v1/events` (given `events`, Server-Sent
 * Events), `GET /v1/cluster/snapshot`, and the node's own (`rawRoutes`: a VM's log, a joining node's
 * certificate). They are matched, authorized, refused with 405 and described in `/openapi.json` as
 * the JSON routes are.
 *
 * The node serves its peers' `/raft` websocket (`PeerTransport`'s endpoint) on the same port
 * (`layerSharedPort`).
 */
import {
  HttpApi,
  type HttpApiEndpoint,
  type HttpApiGroup,
  HttpApiSchema,
  HttpMethod,
  HttpServer,
  HttpServerError,
  OpenApi
} from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Cause, Context, Effect, Either, Exit, Layer, Option, ParseResult, Runtime, Schema, SchemaAST } from "effect"
import * as http from "node:http"
import type { Duplex } from "node:stream"
import * as tls from "node:tls"
import { normalizeSerial, revokedAdvice } from "../domain/Certificate.js"
import { type BlixardError, CertificateRevoked, Forbidden, InvalidArgument, NotImplemented } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import { identityOf } from "../net/Tls.js"
import { startOf } from "../domain/VmSpec.js"
import { DefaultJoinTokenTtlMs } from "../domain/JoinToken.js"
import { isEncodeTransparent } from "../domain/Json.js"
import { Authorization, BlixardApi, MaxBodyBytes } from "./Api.js"
import { type Access, type AuthOptions, EndpointAccess, forbidden, makeAuthenticate, permits } from "./Auth.js"
import { type CertificateReport, ControlPlane, type ControlPlaneShape, type ReadMode, type WriteOptions } from "./ControlPlane.js"
import * as ApiMetrics from "../metrics/ApiMetrics.js"
import * as Prometheus from "../metrics/Prometheus.js"
import * as PeerTransport from "../net/PeerTransport.js"
import * as SnapshotHttp from "./SnapshotHttp.js"
import * as RawRoutes from "./RawRoutes.js"
import type { RawRoute } from "./RawRoutes.js"
import type { PeerEndpoint } from "../net/PeerTransport.js"
import type { EventLog } from "../events/EventLog.js"
import * as EventStream from "../events/EventStream.js"

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

type ApiGroups = typeof BlixardApi extends HttpApi.HttpApi<string, infer Groups, infer _Error, infer _R> ? Groups : never
type ApiError = typeof BlixardApi extends HttpApi.HttpApi<string, infer _Groups, infer Error, infer _R> ? Error : never

/**
 * Who sent a request, as this node tells: the node whose credential it carries, and the node its
 * client certificate (from the cluster CA) names, read when asked. `undefined` for an endpoint
 * that needs no token, or when the server checks none (`ApiOptions.auth` absent).
 */
export interface Caller {
  readonly credentialNode: number | undefined
  readonly certificateNode: () => number | undefined
}

/** What an endpoint's handler receives: the decoded path parameters, query, body and headers it declares, and its caller. */
type HandlerRequest<Endpoint extends HttpApiEndpoint.HttpApiEndpoint.Any> = Omit<
  HttpApiEndpoint.HttpApiEndpoint.Request<Endpoint>,
  "request"
> & { readonly caller: Caller | undefined }

/**
 * One handler per endpoint of `BlixardApi`, by group and endpoint name, typed from the endpoint: a
 * missing handler, a handler for an endpoint that does not exist, a wrong request or success type, or
 * an error the API does not declare (a `BlixardError` missing from `BlixardApi`) does not compile.
 */
type Handlers = {
  readonly [Group in ApiGroups as HttpApiGroup.HttpApiGroup.Name<Group>]: {
    readonly [Endpoint in HttpApiGroup.HttpApiGroup.Endpoints<Group> as HttpApiEndpoint.HttpApiEndpoint.Name<Endpoint>]: (
      request: HandlerRequest<Endpoint>
    ) => Effect.Effect<
      HttpApiEndpoint.HttpApiEndpoint.Success<Endpoint>,
      ApiError | HttpApiGroup.HttpApiGroup.Error<Group> | HttpApiEndpoint.HttpApiEndpoint.Error<Endpoint>
    >
  }
}

const readMode = (params: { readonly stale?: boolean }): ReadMode => (params.stale === true ? "stale" : "linearizable")

const writeOptions = (headers: { readonly "idempotency-key"?: string }, ifRevision?: number): WriteOptions => ({
  requestId: headers["idempotency-key"],
  ifRevision
})

/**
 * Why `caller` may not act for node `node` (report its VMs' statuses, register it, heartbeat for
 * it), if it may not. A host acts only for itself; a Raft member acts for others too, since a
 * member forwards a host's request to the leader with its own credential. A token holder is not a
 * node: these endpoints refuse tokens before this.
 */
export const actingRefusal = (caller: Caller | undefined, node: number, isMember: ApiOptions["isMember"], what: string): Forbidden | undefined => {
  const acting = caller?.credentialNode
  if (acting === undefined || acting === node || isMember?.(acting) === true) return undefined
  return new Forbidden({
    node: NodeId.make(node),
    subject: what,
    message: `${what}: node ${acting}'s credential acts only for node ${acting}, not node ${node} (a host reports, registers and heartbeats only itself; a Raft member forwards for hosts); use node ${node}'s own credential`
  })
}

/** `effect`, unless `caller` may not act for `node`. */
const asNode = <A>(caller: Caller | undefined, node: number, isMember: ApiOptions["isMember"], what: string, effect: Effect.Effect<A, BlixardError>): Effect.Effect<A, BlixardError> => {
  const refused = actingRefusal(caller, node, isMember, what)
  return refused === undefined ? effect : Effect.fail(refused)
}

const handlersOf = (plane: ControlPlaneShape, options: Pick<ApiOptions, "issuedCertificate" | "isMember">): Handlers => ({
  vms: {
    list: ({ urlParams }) => plane.listVms(readMode(urlParams), urlParams),
    get: ({ path, urlParams }) => plane.getVm(path.name, readMode(urlParams)),
    create: ({ headers, payload }) => plane.createVm(payload.spec, { ...writeOptions(headers), start: startOf(payload.start) }),
    start: ({ headers, path, payload }) => plane.startVm(path.name, writeOptions(headers, payload.ifRevision)),
    stop: ({ headers, path, payload }) => plane.stopVm(path.name, writeOptions(headers, payload.ifRevision)),
    delete: ({ headers, path, urlParams }) => plane.deleteVm(path.name, writeOptions(headers, urlParams.ifRevision)),
    reportStatus: ({ caller, path, payload }) =>
      asNode(caller, payload.node, options.isMember, `PUT /v1/vms/${path.name}/status`, plane.reportVmStatus(path.name, payload.node, payload.status)),
    update: ({ headers, path, payload: { ifRevision, ...changes } }) => plane.updateVm(path.name, changes, writeOptions(headers, ifRevision)),
    setLabels: ({ headers, path, payload }) => plane.setVmLabels(path.name, payload.labels, writeOptions(headers, payload.ifRevision))
  },
  nodes: {
    list: ({ urlParams }) => plane.listNodes(readMode(urlParams), urlParams),
    reportStatuses: ({ caller, path, payload }) =>
      asNode(caller, path.id, options.isMember, `PUT /v1/nodes/${path.id}/statuses`, plane.reportVmStatuses(path.id, payload.reports)),
    cordon: ({ headers, path }) => plane.setNodeState(path.id, "cordoned", writeOptions(headers)),
    uncordon: ({ headers, path }) => plane.setNodeState(path.id, "active", writeOptions(headers)),
    drain: ({ headers, path }) => plane.setNodeState(path.id, "draining", writeOptions(headers)),
    heartbeat: ({ caller, path, payload }) => asNode(caller, path.id, options.isMember, `POST /v1/nodes/${path.id}/heartbeat`, plane.heartbeat(path.id, payload)),
    register: ({ caller, path, payload }) =>
      payload.id === path.id
        ? asNode(caller, path.id, options.isMember, `PUT /v1/nodes/${path.id}`, plane.registerNode(payload))
        : Effect.fail(
            new InvalidArgument({
              subject: `PUT /v1/nodes/${path.id}`,
              message: `PUT /v1/nodes/${path.id}: the body describes node ${payload.id}, not node ${path.id}`
            })
          )
  },
  cluster: {
    status: () => plane.clusterStatus,
    join: ({ payload }) => plane.join(payload.id, payload.address),
    leave: ({ path }) => plane.leave(path.id),
    transferLeader: ({ payload }) => plane.transferLeader(payload.id)
  },
  tokens: {
    create: ({ payload }) => plane.createToken(payload.role, payload.name),
    list: ({ urlParams }) => plane.listTokens(readMode(urlParams)),
    revoke: ({ path }) => plane.revokeToken(path.id)
  },
  joinTokens: {
    create: ({ payload }) => plane.createJoinToken(payload.ttlMs ?? DefaultJoinTokenTtlMs),
    list: ({ urlParams }) => plane.listJoinTokens(readMode(urlParams)),
    revoke: ({ path }) => plane.revokeJoinToken(path.id),
    consume: ({ path, payload }) => plane.consumeJoinToken(path.id, payload.hash, payload.node, payload.key)
  },
  certificates: {
    list: ({ urlParams }) => plane.listCertificates(readMode(urlParams)),
    revoke: ({ payload }) =>
      plane.revokeCertificate({
        ...(payload.node !== undefined ? { node: payload.node } : {}),
        ...(payload.serial !== undefined ? { serial: payload.serial } : {}),
        reason: payload.reason ?? "revoked by an admin"
      }),
    record: ({ caller, payload }) => {
      const refused = reportRefusal(caller, payload, options.issuedCertificate)
      return refused !== undefined ? Effect.fail(refused) : plane.recordCertificate(payload)
    }
  },
  ca: {
    status: ({ urlParams }) => plane.caStatus(readMode(urlParams)),
    rotate: () => plane.rotateCa,
    finish: () => plane.finishCaRotation,
    moved: ({ payload }) => plane.caRotationMoved(payload.node, payload.fingerprint)
  },
  secret: {
    status: () => plane.secretStatus ?? Effect.fail(new NotImplemented({ message: "this API serves no cluster secret status" })),
    self: () => plane.secretFingerprints ?? Effect.fail(new NotImplemented({ message: "this API serves no cluster secret fingerprints" }))
  },
  health: {
    health: () => plane.health
  }
})

// ---------------------------------------------------------------------------------------------
// Authorization
// ---------------------------------------------------------------------------------------------

export interface ApiOptions {
  /**
   * Who may call the API (`Auth.ts`): every request except `GET /v1/health` must then carry a token
   * whose role grants the endpoint's access. Absent, nothing is checked: for tests and benchmarks of
   * the API alone; a node always gives it.
   */
  readonly auth?: AuthOptions | undefined
  /** Log every request, its status and duration (default false: nothing is logged per request). */
  readonly logRequests?: boolean | undefined
  /**
   * `GET /metrics` answers this (the Prometheus text format, `metrics/Scrape.ts`; read access), and
   * every request is counted in the API's metrics. Absent: `/metrics` is 404, nothing is counted.
   */
  readonly metrics?: Effect.Effect<string> | undefined
  /** The node's events, served as Server-Sent Events at `GET /v1/events` (absent: no such path). */
  readonly events?: (EventStream.EventStreamOptions & { readonly log: EventLog }) | undefined
  /** The node's own routes answering other than one JSON value (a VM's log, TLS bootstrap), beside the server's (`RawRoutes.ts`). */
  readonly rawRoutes?: ReadonlyArray<RawRoute> | undefined
  /**
   * Why a client certificate is revoked, if it is (`Tls.RevokedCheck`): a caller presenting a revoked
   * certificate from the cluster CA (a node's own clients do) is refused, whatever token it carries.
   */
  readonly revoked?: ((serial: string) => string | undefined) | undefined
  /**
   * The node, serial, fingerprint and expiry of a certificate (PEM) the cluster CA issued, or why it
   * is not one: how a member that signed a certificate proves its record of it (`reportRefusal`).
   * Absent, only a node's report of its own certificate is taken.
   */
  readonly issuedCertificate?: ((pem: string) => Either.Either<IssuedCertificate, string>) | undefined
  /**
   * Whether a node is a Raft member (voter or learner): a member forwards hosts' reports,
   * registrations and heartbeats to the leader with its own credential, so its credential acts for
   * any node; a host's only for itself (`actingRefusal`). Absent, every node's acts only for itself.
   */
  readonly isMember?: ((node: number) => boolean) | undefined
}

export interface IssuedCertificate {
  readonly node: number
  readonly serial: string
  readonly fingerprint: string
  readonly notAfter: number
}

const recordWhere = "POST /v1/cluster/certificates/record"

/**
 * Why `caller` may not record `report`, if it may not. A node records its own certificate: its
 * credential or its client certificate names the report's node. A member that signed another
 * node's certificate (at a join or a renewal) records it with the certificate itself, which must be
 * the cluster CA's, for that node, with the report's serial, fingerprint and expiry. Admin tokens
 * record nothing (the endpoint needs a node credential): the nodes keep the record, a person revokes.
 */
export const reportRefusal = (
  caller: Caller | undefined,
  report: CertificateReport,
  issued: ApiOptions["issuedCertificate"]
): Forbidden | undefined => {
  if (caller === undefined || caller.credentialNode === report.node) return undefined
  const certificateNode = caller.certificateNode()
  if (certificateNode === report.node) return undefined
  const refuse = (why: string) => new Forbidden({ node: NodeId.make(report.node), subject: recordWhere, message: `${recordWhere}: ${why}` })
  if (report.certificate === undefined) {
    const who = [
      caller.credentialNode !== undefined ? `node ${caller.credentialNode}'s credential` : undefined,
      certificateNode !== undefined ? `node ${certificateNode}'s client certificate` : undefined
    ].filter((part) => part !== undefined)
    return refuse(
      `a request with ${who.length > 0 ? who.join(" and ") : "no node's credential or client certificate"} reports a certificate of node ${report.node}; a node reports only its own certificate, and a member that signed one sends the certificate with its record`
    )
  }
  const facts = issued === undefined ? Either.left("this node checks no certificates (it serves no TLS)") : issued(report.certificate)
  if (Either.isLeft(facts)) return refuse(`the certificate sent with the record of node ${report.node}'s certificate ${report.serial} does not prove it: ${facts.left}`)
  const proven = facts.right
  const mismatch =
    proven.node !== report.node
      ? `it is node ${proven.node}'s`
      : proven.serial !== report.serial
        ? `its serial is ${proven.serial}`
        : proven.fingerprint !== report.fingerprint
          ? `its fingerprint is ${proven.fingerprint}`
          : proven.notAfter !== report.notAfter
            ? `it expires at ${new Date(proven.notAfter).toISOString()}`
            : undefined
  return mismatch === undefined ? undefined : refuse(`the certificate sent with the record of node ${report.node}'s certificate ${report.serial} is not that certificate: ${mismatch}`)
}

/** The node the caller's client certificate names, when it presents one from the cluster CA. */
const clientCertificateNode = (request: http.IncomingMessage): number | undefined => {
  const socket = request.socket
  if (!(socket instanceof tls.TLSSocket) || !socket.authorized) return undefined
  return identityOf(socket.getPeerCertificate().subjectaltname)?.node
}

/** The caller's client certificate, when it is from the cluster CA and revoked: the refusal. */
export const revokedClientCertificate = (
  request: http.IncomingMessage,
  revoked: ((serial: string) => string | undefined) | undefined
): CertificateRevoked | undefined => {
  const socket = request.socket
  if (revoked === undefined || !(socket instanceof tls.TLSSocket) || !socket.authorized) return undefined
  const cert = socket.getPeerCertificate()
  if (cert === null || cert.serialNumber === undefined) return undefined
  const serial = normalizeSerial(cert.serialNumber)
  const reason = revoked(serial)
  if (reason === undefined) return undefined
  const who = identityOf(cert.subjectaltname)
  return new CertificateRevoked({
    subject: serial,
    ...(who !== undefined ? { node: NodeId.make(who.node) } : {}),
    message: `the client certificate ${serial}${who !== undefined ? ` (node ${who.node}'s)` : ""} is revoked: ${reason}; ${revokedAdvice(who?.node ?? 0)}`
  })
}

// ---------------------------------------------------------------------------------------------
// The route table, compiled from BlixardApi
// ---------------------------------------------------------------------------------------------

type Decode = (input: unknown) => Either.Either<unknown, ParseResult.ParseError>

/** One member of a success or error schema, as `HttpApiBuilder` answers it. */
interface Answerable {
  readonly status: number
  /** `undefined` for a `void` schema, answered without a body (204 for a success). */
  readonly contentType: string | undefined
  readonly is: (value: unknown) => boolean
  /** The JSON text of a value of this member (see `write` in `answerables`). */
  readonly write: (value: unknown) => Either.Either<string, ParseResult.ParseError>
}

/** A path template, as routes are matched. */
interface Template {
  /** The template as declared, e.g. `/v1/vms/:name`. */
  readonly path: string
  /** The template's segments after the leading `/`: a literal, or `undefined` for a parameter. */
  readonly segments: ReadonlyArray<string | undefined>
  /** The parameters' names, in the order they appear. */
  readonly params: ReadonlyArray<string>
}

/** `path`'s segments and parameters; what this server cannot match (beyond `:param` segments) stops it at start-up. */
const templateOf = (path: string, name: string): Template => {
  const segments: Array<string | undefined> = []
  const params: Array<string> = []
  for (const segment of path.slice(1).split("/")) {
    if (/^:\w+$/.test(segment)) {
      segments.push(undefined)
      params.push(segment.slice(1))
    } else if (/[:*?]/.test(segment)) {
      throw new Error(`${name}: the API server does not support the path segment "${segment}"`)
    } else {
      segments.push(segment)
    }
  }
  return { path, segments, params }
}

interface Route extends Template {
  readonly method: HttpMethod.HttpMethod
  /** What the caller's token must grant; absent: no token needed (the group has no `Authorization` middleware). */
  readonly access: Access | undefined
  readonly decodePath: Decode | undefined
  readonly decodePayload: Decode | undefined
  readonly decodeHeaders: Decode | undefined
  readonly decodeUrlParams: Decode | undefined
  /** Query parameters the schema reads as lists: given once, they arrive as a one-element list. */
  readonly listParams: ReadonlySet<string>
  readonly handle: (request: object) => Effect.Effect<unknown, unknown>
  readonly successes: ReadonlyArray<Answerable>
}

/** A raw route (`RawRoutes.ts`), matched as the JSON routes are. */
interface RawEntry extends Template {
  readonly route: RawRoute
}

/** Routes by method, the more specific first (a literal segment before a parameter). */
type ByMethod<R extends Template> = ReadonlyMap<string, ReadonlyArray<R>>

const byMethodOf = <R extends Template>(routes: Iterable<readonly [method: string, route: R]>): ByMethod<R> => {
  const byMethod = new Map<string, Array<R>>()
  for (const [method, route] of routes) {
    const list = byMethod.get(method) ?? []
    list.push(route)
    byMethod.set(method, list)
  }
  for (const list of byMethod.values()) list.sort(moreSpecific)
  return byMethod
}

interface RouteTable {
  readonly routes: ByMethod<Route>
  /** One encoder for every error of the API (its own, its groups', its endpoints'), as `HttpApiBuilder` has. */
  readonly errors: ReadonlyArray<Answerable>
}

// The API's schemas need no services (`BlixardApi` has no context), so they can run without one.
const noContext = (schema: Schema.Schema.Any) => schema as Schema.Schema<unknown, unknown>

/**
 * Splits a union into its members (keeping the union's annotations) and prepares each to answer with.
 * A member is written as its schema encodes it; with `trusted` (the handlers' successes, built by the
 * control plane from validated state) a member whose encoding only turns class instances into their
 * fields is written by `JSON.stringify` directly (`Json.isEncodeTransparent`: the same JSON, several
 * times cheaper, on every answered write). Errors are always encoded.
 */
const answerables = (
  schemas: ReadonlyArray<Schema.Schema.Any>,
  statusOf: (ast: SchemaAST.AST) => number,
  trusted: boolean
): Array<Answerable> => {
  const members = new Set<Schema.Schema.Any>()
  for (const schema of schemas) HttpApiSchema.deunionize(members, schema)
  return Array.from(members, (member) => {
    const encode = Schema.encodeUnknownEither(noContext(member))
    const encoding = HttpApiSchema.getEncoding(member.ast)
    if (encoding.kind !== "Json") throw new Error(`the API server answers JSON only, not ${encoding.kind} (${String(member)})`)
    return {
      status: statusOf(member.ast),
      contentType: HttpApiSchema.isVoid(member.ast) ? undefined : encoding.contentType,
      is: Schema.is(member),
      write:
        trusted && isEncodeTransparent(member.ast)
          ? (value) => Either.right(JSON.stringify(value))
          : (value) => Either.map(encode(value), (encoded) => JSON.stringify(encoded))
    }
  })
}

/** As `HttpApiBuilder` decides which query parameters to wrap in a list: those whose schema is not one string. */
const isSingleString = (ast: SchemaAST.AST): boolean => {
  switch (ast._tag) {
    case "StringKeyword":
    case "Literal":
    case "TemplateLiteral":
    case "Enums":
      return true
    case "Union":
      return ast.types.some(isSingleString)
    case "Suspend":
      return isSingleString(ast.f())
    case "Refinement":
    case "Transformation":
      return isSingleString(ast.from)
    default:
      return false
  }
}

/** The first position where one template has a literal and the other a parameter decides. */
const moreSpecific = (a: Template, b: Template): number => {
  for (let i = 0; i < Math.min(a.segments.length, b.segments.length); i++) {
    const literalA = a.segments[i] !== undefined
    if (literalA !== (b.segments[i] !== undefined)) return literalA ? -1 : 1
  }
  return 0
}

/**
 * Compiles `BlixardApi` and its handlers into the route table, once. What this server could not serve
 * as declared (a middleware other than `Authorization`, a body or answer that is not JSON, a path
 * template beyond `:param` segments) stops it at start-up instead of being served differently.
 */
const compile = (handlers: Handlers): RouteTable => {
  const routes: Array<readonly [string, Route]> = []
  const errorSchemas: Array<Schema.Schema.Any> = [BlixardApi.errorSchema]
  const byName = handlers as unknown as Record<string, Record<string, Route["handle"] | undefined> | undefined>
  HttpApi.reflect(BlixardApi, {
    onGroup: ({ group }) => void errorSchemas.push(group.errorSchema),
    onEndpoint: ({ endpoint: declared, group, middleware, payloads }) => {
      const endpoint = declared as unknown as HttpApiEndpoint.HttpApiEndpoint.AnyWithProps
      const name = `${group.identifier}.${endpoint.name} (${endpoint.method} ${endpoint.path})`
      errorSchemas.push(endpoint.errorSchema)
      const tags = [...BlixardApi.middlewares, ...middleware]
      for (const tag of tags) {
        if (tag.key !== Authorization.key) throw new Error(`${name}: the API server has no implementation of the middleware ${tag.key}`)
      }
      const handle = byName[group.identifier]?.[endpoint.name]
      if (handle === undefined) throw new Error(`${name}: no handler`)
      const urlParams = endpoint.urlParamsSchema
      const listParams = new Set<string>()
      if (urlParams._tag === "Some") {
        for (const property of SchemaAST.getPropertySignatures(urlParams.value.ast)) {
          if (!isSingleString(property.type)) listParams.add(String(property.name))
        }
      }
      const decoder = (schema: typeof endpoint.pathSchema): Decode | undefined =>
        schema._tag === "Some" ? Schema.decodeUnknownEither(noContext(schema.value)) : undefined
      for (const [contentType, payload] of payloads) {
        if (payload.encoding.kind !== "Json") throw new Error(`${name}: the API server reads JSON bodies only, not ${contentType}`)
      }
      const authorize = tags.some((tag) => tag.key === Authorization.key)
      const access = Option.getOrUndefined(Context.getOption(endpoint.annotations, EndpointAccess))
      // Fail closed: an endpoint behind the token must say which roles may call it.
      if (authorize && access === undefined) throw new Error(`${name}: the endpoint needs the token but declares no EndpointAccess`)
      const route: Route = {
        ...templateOf(endpoint.path, name),
        method: endpoint.method,
        access: authorize ? access : undefined,
        decodePath: decoder(endpoint.pathSchema),
        decodePayload: decoder(endpoint.payloadSchema),
        decodeHeaders: decoder(endpoint.headersSchema),
        decodeUrlParams: decoder(urlParams),
        listParams,
        handle,
        successes: answerables([endpoint.successSchema], HttpApiSchema.getStatusSuccessAST, true)
      }
      routes.push([endpoint.method, route])
    }
  })
  return { routes: byMethodOf(routes), errors: answerables(errorSchemas, HttpApiSchema.getStatusErrorAST, false) }
}

/**
 * The route for `method` and `path`, with the raw values of its path parameters. As with the
 * platform's router, `HEAD` is answered by the `GET` route (Node sends no body), and a trailing or
 * repeated `/` does not count.
 */
const match = <R extends Template>(table: ByMethod<R>, method: string, path: string): { route: R; values: Array<string> } | undefined => {
  const routes = table.get(method === "HEAD" ? "GET" : method)
  if (routes === undefined || !path.startsWith("/")) return undefined
  const parts = path.split("/").filter((part) => part !== "")
  candidates: for (const route of routes) {
    if (route.segments.length !== parts.length) continue
    const values: Array<string> = []
    for (let at = 0; at < parts.length; at++) {
      const literal = route.segments[at]
      if (literal === undefined) values.push(parts[at]!)
      else if (literal !== parts[at]) continue candidates
    }
    return { route, values }
  }
  return undefined
}

const noLists: ReadonlySet<string> = new Set()

const methodOrder = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

/** The methods `path` answers in any of `tables` (for a 405's `Allow`); `HEAD` wherever `GET` is. */
const allowedMethods = (tables: ReadonlyArray<ByMethod<Template>>, path: string): Array<string> => {
  const allowed = new Set<string>()
  for (const table of tables) for (const method of table.keys()) if (match(table, method, path) !== undefined) allowed.add(method)
  if (allowed.has("GET")) allowed.add("HEAD")
  return [...allowed].sort((a, b) => methodOrder.indexOf(a) - methodOrder.indexOf(b))
}

/** Query parameters as `HttpApiBuilder` hands them to a schema: a repeated one (or one of `lists`) as an array. */
const queryOf = (url: string, at: number, lists: ReadonlySet<string>): Record<string, string | Array<string>> => {
  const params: Record<string, string | Array<string>> = Object.create(null)
  if (at === -1) return params
  for (const [key, value] of new URLSearchParams(url.slice(at + 1))) {
    const seen = params[key]
    params[key] = seen === undefined ? (lists.has(key) ? [value] : value) : [...(Array.isArray(seen) ? seen : [seen]), value]
  }
  return params
}

// ---------------------------------------------------------------------------------------------
// Serving on node:http
// ---------------------------------------------------------------------------------------------

const encodeInvalid = Schema.encodeSync(InvalidArgument)

const { pathOf } = PeerTransport

/** `POST /v1/vms: spec.vcpus: vcpus must be a whole number from 1 to 1024` */
const invalidInput = (where: string, error: ParseResult.ParseError): InvalidArgument => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const problems = issues.map((issue) => {
    const field = issue.path.map(String).join(".")
    return field === "" ? issue.message : `${field}: ${issue.message}`
  })
  const first = issues[0]?.path.map(String).join(".") ?? ""
  return new InvalidArgument({
    message: `${where}: ${problems.length > 0 ? [...new Set(problems)].join("; ") : ParseResult.TreeFormatter.formatErrorSync(error)}`,
    subject: first === "" ? where : first
  })
}

const tooLarge = (where: string, size?: number) =>
  new InvalidArgument({
    message: `${where}: the request body${size === undefined ? "" : ` (${size} bytes)`} is larger than the ${MaxBodyBytes} bytes a request may carry`,
    subject: "body"
  })

/** Answers unless the answer has begun or the client is gone; `close` ends the connection after it. */
const send = (response: http.ServerResponse, status: number, body?: string, contentType?: string, close = false, extra?: http.OutgoingHttpHeaders): void => {
  if (response.headersSent || response.destroyed) return
  const headers: http.OutgoingHttpHeaders = {
    ...extra,
    ...(body === undefined ? {} : { "content-type": contentType, "content-length": Buffer.byteLength(body) })
  }
  if (close) headers.connection = "close"
  response.writeHead(status, headers)
  response.end(body)
}

type Listener = (request: http.IncomingMessage, response: http.ServerResponse) => void

/**
 * The API's request listener. Before the handler runs, in this order (`HttpApiBuilder`'s, behind the
 * body limit): the route; a declared `Content-Length` over `MaxBodyBytes` (refused unread); the token;
 * the path parameters; the body (read up to `MaxBodyBytes`, then parsed and decoded); the headers;
 * the query. The handler's Effect is forked on `runtime` and interrupted if the client goes away
 * before the answer, as the platform's server does. A raw route (`RawRoutes.ts`) is matched first:
 * its token and path parameters are checked the same way, then its handler answers as it likes.
 */
const makeListener = (table: RouteTable, rawRoutes: ReadonlyArray<RawRoute>, options: ApiOptions, runtime: Runtime.Runtime<never>): Listener => {
  const runFork = Runtime.runFork(runtime)
  const raw = byMethodOf(rawRoutes.map((route) => [route.method, { ...templateOf(route.path, `${route.method} ${route.path}`), route }] as const))
  const authenticate = options.auth === undefined ? undefined : makeAuthenticate(options.auth)
  /** The caller of a request needing `access`, or the error to answer. */
  const admit = (request: http.IncomingMessage, access: Access, what: string): Either.Either<Caller | undefined, BlixardError> => {
    const certificate = revokedClientCertificate(request, options.revoked)
    if (certificate !== undefined) return Either.left(certificate)
    if (authenticate === undefined) return Either.right(undefined)
    const principal = authenticate(request.headers.authorization, request.socket.remoteAddress)
    if (Either.isLeft(principal)) return Either.left(principal.left)
    if (!permits(principal.right, access)) return Either.left(forbidden(principal.right, access, what))
    return Either.right({ credentialNode: principal.right.kind === "node" ? principal.right.node : undefined, certificateNode: () => clientCertificateNode(request) })
  }

  const unexpected = (request: http.IncomingMessage, response: http.ServerResponse, cause: Cause.Cause<unknown>) => {
    runFork(Effect.logError(`API: ${request.method} ${pathOf(request.url ?? "/")} failed unexpectedly; answered 500`, cause))
    send(response, 500)
  }

  const guarded = (request: http.IncomingMessage, response: http.ServerResponse, body: () => void) => {
    try {
      body()
    } catch (defect) {
      unexpected(request, response, Cause.die(defect))
    }
  }

  /** Answers a failure as the API encodes it (its status, its JSON); a failure it cannot encode is a 500. */
  const fail = (request: http.IncomingMessage, response: http.ServerResponse, error: unknown, cause: Cause.Cause<unknown> = Cause.fail(error)) => {
    const member = table.errors.find((candidate) => candidate.is(error))
    if (member === undefined) return unexpected(request, response, cause)
    if (member.contentType === undefined) return send(response, member.status)
    const written = member.write(error)
    if (Either.isLeft(written)) return unexpected(request, response, cause)
    send(response, member.status, written.right, member.contentType)
  }

  /** `InvalidArgument` with a status of its own (413, 404, 405); `close` when the rest of the body is not read. */
  const refuse = (response: http.ServerResponse, status: number, error: InvalidArgument, close = false, headers?: http.OutgoingHttpHeaders) =>
    send(response, status, JSON.stringify(encodeInvalid(error)), "application/json", close, headers)

  const answer = (request: http.IncomingMessage, response: http.ServerResponse, route: Route, exit: Exit.Exit<unknown, unknown>) => {
    if (response.writableEnded || response.destroyed) return
    if (Exit.isFailure(exit)) return fail(request, response, Cause.squash(exit.cause), exit.cause)
    const success = route.successes.length === 1 ? route.successes[0] : route.successes.find((member) => member.is(exit.value))
    if (success === undefined) return unexpected(request, response, Cause.die(new Error("the answer matches none of the endpoint's success schemas")))
    if (success.contentType === undefined) return send(response, success.status)
    const written = success.write(exit.value)
    if (Either.isLeft(written)) return unexpected(request, response, Cause.die(written.left))
    send(response, success.status, written.right, success.contentType)
  }

  const run = (request: http.IncomingMessage, response: http.ServerResponse, route: Route, input: object) => {
    const fiber = runFork(route.handle(input))
    fiber.addObserver((exit) => guarded(request, response, () => answer(request, response, route, exit)))
    response.once("close", () => {
      if (!response.writableEnded) fiber.unsafeInterruptAsFork(HttpServerError.clientAbortFiberId)
    })
  }

  /** Reads a JSON body; a chunked one (no length to refuse it by) is cut off at `MaxBodyBytes`. */
  const readJson = (request: http.IncomingMessage, response: http.ServerResponse, where: string, then: (body: unknown) => void) => {
    const contentType = request.headers["content-type"]
    if (contentType !== undefined && !contentType.toLowerCase().includes("application/json")) {
      const message = `${where}: the body must be JSON (Content-Type: application/json), not ${contentType}`
      return refuse(response, 400, new InvalidArgument({ message, subject: "body" }))
    }
    const chunks: Array<Buffer> = []
    let size = 0
    let done = false
    request.on("data", (chunk: Buffer) => {
      if (done) return
      size += chunk.length
      if (size <= MaxBodyBytes) return void chunks.push(chunk)
      done = true
      request.pause()
      refuse(response, 413, tooLarge(where), true)
    })
    request.on("error", () => {
      if (done) return
      done = true
      refuse(response, 400, new InvalidArgument({ message: `${where}: the body could not be read`, subject: "body" }))
    })
    request.on("end", () => {
      if (done) return
      done = true
      guarded(request, response, () => {
        const text = Buffer.concat(chunks).toString("utf8")
        let body: unknown
        try {
          body = text === "" ? null : JSON.parse(text)
        } catch (error) {
          const detail = error instanceof Error ? error.message : String(error)
          return refuse(response, 400, new InvalidArgument({ message: `${where}: the body is not valid JSON (${detail})`, subject: "body" }))
        }
        then(body)
      })
    })
  }

  /** Path parameters by name, percent-decoded; `undefined` when one is not valid percent-encoding. */
  const paramsOf = (template: Template, values: ReadonlyArray<string>): Record<string, string> | undefined => {
    const params: Record<string, string> = {}
    try {
      for (const [index, name] of template.params.entries()) params[name] = decodeURIComponent(values[index]!)
    } catch {
      return undefined
    }
    return params
  }
  const badEncoding = (response: http.ServerResponse, where: string) =>
    refuse(response, 400, new InvalidArgument({ message: `${where}: the path is not valid percent-encoding`, subject: where }))

  const serveRaw = (request: http.IncomingMessage, response: http.ServerResponse, entry: RawEntry, values: ReadonlyArray<string>, where: string, query: string) => {
    if (entry.route.access !== undefined) {
      const admitted = admit(request, entry.route.access, where)
      if (Either.isLeft(admitted)) return fail(request, response, admitted.left)
    }
    const params = paramsOf(entry, values)
    if (params === undefined) return badEncoding(response, where)
    entry.route.handle(request, response, {
      params,
      query: new URLSearchParams(query),
      runFork,
      fail: (error, cause) => guarded(request, response, () => fail(request, response, error, cause))
    })
  }

  const serve = (request: http.IncomingMessage, response: http.ServerResponse) => {
    const url = request.url ?? "/"
    const at = url.indexOf("?")
    const path = at === -1 ? url : url.slice(0, at)
    const method = request.method ?? "GET"
    const where = `${method} ${path}`
    const rawFound = match(raw, method, path)
    if (rawFound !== undefined) return serveRaw(request, response, rawFound.route, rawFound.values, where, at === -1 ? "" : url.slice(at + 1))
    const found = match(table.routes, method, path)
    if (found === undefined) {
      const allowed = allowedMethods([table.routes, raw], path)
      if (allowed.length > 0) {
        const message = `${where}: ${path} does not take ${method}; it takes ${allowed.join(", ")}`
        return refuse(response, 405, new InvalidArgument({ message, subject: where }), false, { allow: allowed.join(", ") })
      }
      const message = `${where}: no such endpoint; the API is described at /openapi.json`
      return refuse(response, 404, new InvalidArgument({ message, subject: where }))
    }
    const { route, values } = found
    const declared = request.headers["content-length"]
    if (declared !== undefined && Number(declared) > MaxBodyBytes) return refuse(response, 413, tooLarge(where, Number(declared)))
    const input: Record<string, unknown> = {}
    if (route.access !== undefined) {
      const admitted = admit(request, route.access, where)
      if (Either.isLeft(admitted)) return fail(request, response, admitted.left)
      input.caller = admitted.right
    }
    if (route.decodePath !== undefined) {
      const params = paramsOf(route, values)
      if (params === undefined) return badEncoding(response, where)
      const decoded = route.decodePath(params)
      if (Either.isLeft(decoded)) return fail(request, response, invalidInput(where, decoded.left))
      input.path = decoded.right
    }
    const rest = () => {
      if (route.decodeHeaders !== undefined) {
        const decoded = route.decodeHeaders(request.headers)
        if (Either.isLeft(decoded)) return fail(request, response, invalidInput(where, decoded.left))
        input.headers = decoded.right
      }
      if (route.decodeUrlParams !== undefined) {
        const decoded = route.decodeUrlParams(queryOf(url, at, route.listParams))
        if (Either.isLeft(decoded)) return fail(request, response, invalidInput(where, decoded.left))
        input.urlParams = decoded.right
      }
      run(request, response, route, input)
    }
    const decodePayload = route.decodePayload
    if (decodePayload === undefined) return rest()
    const withPayload = (body: unknown) => {
      const decoded = decodePayload(body)
      if (Either.isLeft(decoded)) return fail(request, response, invalidInput(where, decoded.left))
      input.payload = decoded.right
      rest()
    }
    // A method without a body takes its payload from the query, as `HttpApiBuilder` does.
    if (!HttpMethod.hasBody(route.method)) return withPayload(queryOf(url, at, noLists))
    readJson(request, response, where, withPayload)
  }

  const logWhenClosed = (request: http.IncomingMessage, response: http.ServerResponse) => {
    const started = performance.now()
    response.once("close", () => {
      const outcome = response.writableFinished ? String(response.statusCode) : "aborted"
      runFork(
        Effect.logInfo(`API: ${request.method} ${request.url} ${outcome}`).pipe(
          Effect.annotateLogs("ms", Math.round((performance.now() - started) * 10) / 10)
        )
      )
    })
  }

  const templates = new Map<Template, string>()
  const routeOf = (method: string, path: string): string => {
    const route = match(raw, method, path)?.route ?? match(table.routes, method, path)?.route
    if (route === undefined) return "unmatched"
    let known = templates.get(route)
    if (known === undefined) templates.set(route, (known = ApiMetrics.template(route.segments, route.params)))
    return known
  }

  return (request, response) => {
    if (options.logRequests === true) logWhenClosed(request, response)
    if (options.metrics !== undefined) ApiMetrics.observe(request, response, routeOf)
    guarded(request, response, () => serve(request, response))
  }
}

// ---------------------------------------------------------------------------------------------
// Raw routes
// ---------------------------------------------------------------------------------------------

const metricsRoute = (scrape: Effect.Effect<string>): RawRoute => ({
  method: "GET",
  path: "/metrics",
  access: "read",
  operation: {
    tags: ["metrics"],
    operationId: "metrics",
    description: "The node's metrics in the Prometheus text format (Raft, peers, API, VMs, agent, process). Any role's token.",
    responses: { "200": { description: "Prometheus text exposition format 0.0.4", content: { [Prometheus.contentType]: { schema: { type: "string" } } } } }
  },
  handle: (_request, response, { fail, runFork }) =>
    runFork(scrape).addObserver((exit) => (Exit.isSuccess(exit) ? send(response, 200, exit.value, Prometheus.contentType) : fail(Cause.squash(exit.cause), exit.cause)))
})

const openApiRoute = (document: () => string): RawRoute => ({
  method: "GET",
  path: "/openapi.json",
  access: "read",
  operation: {
    tags: ["api"],
    operationId: "openapi",
    description: "This document: every route the node serves. Any role's token.",
    responses: { "200": { description: "The OpenAPI 3.1 document", content: { "application/json": { schema: { type: "object" } } } } }
  },
  handle: (_request, response) => send(response, 200, document(), "application/json")
})

/** The server's raw routes for `options` (`RawRoutes.ts`), `/openapi.json` first, describing them all and the JSON API. */
const rawRoutesOf = (options: ApiOptions, plane: ControlPlaneShape): ReadonlyArray<RawRoute> => {
  let document: string | undefined
  const routes: Array<RawRoute> = [
    openApiRoute(() => (document ??= JSON.stringify(RawRoutes.describe(OpenApi.fromApi(BlixardApi), routes)))),
    ...(options.metrics === undefined ? [] : [metricsRoute(options.metrics)]),
    ...(options.events === undefined ? [] : [EventStream.route(options.events.log, options.events)]),
    SnapshotHttp.route(plane),
    ...(options.rawRoutes ?? [])
  ]
  return routes
}

/**
 * Every route a server with `options` serves, as method and path template (`/v1/vms/:name`): the
 * JSON routes and the raw ones, from the tables the listener matches with.
 */
export const routesOf = (options: ApiOptions, plane: ControlPlaneShape): ReadonlyArray<{ readonly method: string; readonly path: string }> => [
  ...[...compile(handlersOf(plane, options)).routes.values()].flat().map((route) => ({ method: route.method, path: route.path })),
  ...rawRoutesOf(options, plane).map((route) => ({ method: route.method, path: route.path }))
]

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

export interface ServerOptions extends ApiOptions {
  readonly port: number
  readonly host: string
  /** Serve HTTPS with this certificate (PEM), asking clients for one from `ca` (peers must present it). */
  readonly tls?: PeerTransport.ServerTls | undefined
}

/** The API's request listener over this layer's `ControlPlane` and runtime. */
const listener = (options: ServerOptions) =>
  Effect.gen(function* () {
    const plane = yield* ControlPlane
    return makeListener(compile(handlersOf(plane, options)), rawRoutesOf(options, plane), options, yield* Effect.runtime<never>())
  })

/**
 * The API alone, listening on `host:port` (tests, benchmarks). Its `HttpServer` tells the bound
 * address (`port: 0` picks a free port).
 */
export const layerServer = (options: ServerOptions): Layer.Layer<HttpServer.HttpServer, HttpServerError.ServeError, ControlPlane> =>
  Layer.scoped(
    HttpServer.HttpServer,
    Effect.flatMap(listener(options), (api) =>
      // The platform's `NodeHttpServer` owns the server's lifetime and tells the bound address.
      NodeHttpServer.make(
        () => {
          const server = http.createServer(api)
          server.on("upgrade", (_request: http.IncomingMessage, socket: Duplex) =>
            socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
          )
          return server
        },
        { port: options.port, host: options.host }
      )
    )
  )

/** The node's one port: the API, and beside it the peers' `/raft` websocket endpoint. */
export const layerSharedPort = (
  options: ServerOptions
): Layer.Layer<HttpServer.HttpServer, HttpServerError.ServeError, ControlPlane | PeerEndpoint> =>
  Layer.scoped(
    HttpServer.HttpServer,
    Effect.flatMap(listener(options), (api) => PeerTransport.listen(options, api))
  )
