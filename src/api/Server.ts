/**
 * Serving `BlixardApi`: one handler layer per group (each calls `ControlPlane`), mounted on an
 * `HttpLayerRouter` so the node serves it on the same port as its peer RPC routes, together with
 * `/openapi.json`.
 *
 * Every error a client sees is one of ours, as JSON with its `BLX_…` code: a body, path parameter,
 * header or query that fails its schema, or a body that is not JSON, is `InvalidArgument` (400, the
 * message naming the field and the problem); a body over `MaxBodyBytes` is `InvalidArgument` with
 * status 413; a missing or wrong API token is `Unauthorized` (401).
 */
import {
  HttpApiBuilder,
  HttpApiError,
  HttpIncomingMessage,
  HttpLayerRouter,
  HttpMiddleware,
  type HttpRouter,
  HttpServer,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse,
  OpenApi
} from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Cause, Chunk, Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { createServer } from "node:http"
import { InvalidArgument, Unauthorized } from "../domain/Errors.js"
import { Authorization, BlixardApi, MaxBodyBytes } from "./Api.js"
import { ControlPlane, type ReadMode, type WriteOptions } from "./ControlPlane.js"

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

const readMode = (params: { readonly stale?: boolean }): ReadMode => (params.stale === true ? "stale" : "linearizable")

const writeOptions = (headers: { readonly "idempotency-key"?: string }, ifRevision?: number): WriteOptions => ({
  requestId: headers["idempotency-key"],
  ifRevision
})

export const VmsLive = HttpApiBuilder.group(BlixardApi, "vms", (handlers) =>
  Effect.map(ControlPlane, (plane) =>
    handlers
      .handle("list", ({ urlParams }) => plane.listVms(readMode(urlParams)))
      .handle("get", ({ path, urlParams }) => plane.getVm(path.name, readMode(urlParams)))
      .handle("create", ({ headers, payload }) => plane.createVm(payload.spec, writeOptions(headers)))
      .handle("start", ({ headers, path, payload }) => plane.startVm(path.name, writeOptions(headers, payload.ifRevision)))
      .handle("stop", ({ headers, path, payload }) => plane.stopVm(path.name, writeOptions(headers, payload.ifRevision)))
      .handle("delete", ({ headers, path, urlParams }) =>
        plane.deleteVm(path.name, writeOptions(headers, urlParams.ifRevision))
      )
      .handle("reportStatus", ({ path, payload }) => plane.reportVmStatus(path.name, payload.node, payload.status))
      .handle("setLabels", ({ headers, path, payload }) =>
        plane.setVmLabels(path.name, payload.labels, writeOptions(headers, payload.ifRevision))
      )
  )
)

export const NodesLive = HttpApiBuilder.group(BlixardApi, "nodes", (handlers) =>
  Effect.map(ControlPlane, (plane) =>
    handlers
      .handle("list", ({ urlParams }) => plane.listNodes(readMode(urlParams)))
      .handle("cordon", ({ headers, path }) => plane.setNodeState(path.id, "cordoned", writeOptions(headers)))
      .handle("uncordon", ({ headers, path }) => plane.setNodeState(path.id, "active", writeOptions(headers)))
      .handle("drain", ({ headers, path }) => plane.setNodeState(path.id, "draining", writeOptions(headers)))
      .handle("register", ({ path, payload }) =>
        payload.id === path.id
          ? plane.registerNode(payload)
          : Effect.fail(
              new InvalidArgument({
                subject: `PUT /v1/nodes/${path.id}`,
                message: `PUT /v1/nodes/${path.id}: the body describes node ${payload.id}, not node ${path.id}`
              })
            )
      )
  )
)

export const ClusterLive = HttpApiBuilder.group(BlixardApi, "cluster", (handlers) =>
  Effect.map(ControlPlane, (plane) =>
    handlers
      .handle("status", () => plane.clusterStatus)
      .handle("join", ({ payload }) => plane.join(payload.id, payload.address))
      .handle("leave", ({ path }) => plane.leave(path.id))
      .handle("transferLeader", ({ payload }) => plane.transferLeader(payload.id))
  )
)

export const HealthLive = HttpApiBuilder.group(BlixardApi, "health", (handlers) =>
  Effect.map(ControlPlane, (plane) => handlers.handle("health", () => plane.health))
)

// ---------------------------------------------------------------------------------------------
// Authorization
// ---------------------------------------------------------------------------------------------

export interface ApiOptions {
  /** When set, every request except `GET /v1/health` needs `Authorization: Bearer <token>`. */
  readonly apiToken?: Redacted.Redacted<string> | string | undefined
}

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest()

/**
 * Checks an `Authorization` header against the node's token (trimmed: a token file's final newline
 * is not part of it). Both sides are hashed first, so the comparison is constant-time whatever the
 * lengths.
 */
export const makeTokenCheck = (
  apiToken: ApiOptions["apiToken"]
): ((authorization: string | undefined) => Effect.Effect<void, Unauthorized>) => {
  if (apiToken === undefined) return () => Effect.void
  const token = (typeof apiToken === "string" ? apiToken : Redacted.value(apiToken)).trim()
  const expected = sha256(token)
  const deny = (message: string) => Effect.fail(new Unauthorized({ message, subject: "Authorization" }))
  // Fail closed: an empty token (an empty token file) must not let `Bearer ` through.
  if (token === "") return () => deny("this node's API token is empty, so no request is authorized; give it a token")
  return (authorization) => {
    if (authorization === undefined || authorization === "") {
      return deny("this node requires an API token: send the header \"Authorization: Bearer <token>\"")
    }
    if (!/^bearer /i.test(authorization)) {
      return deny("the Authorization header must be \"Bearer <token>\"")
    }
    return timingSafeEqual(sha256(authorization.slice(7).trim()), expected)
      ? Effect.void
      : deny("the API token is not valid for this node")
  }
}

/** The `Authorization` middleware of `BlixardApi`, checking the node's token (if it has one). */
export const layerAuthorization = (apiToken: ApiOptions["apiToken"]): Layer.Layer<Authorization> => {
  const check = makeTokenCheck(apiToken)
  return Layer.succeed(Authorization, {
    bearer: () => Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => check(request.headers.authorization))
  })
}

// ---------------------------------------------------------------------------------------------
// Input errors: decode failures, unreadable or oversized bodies
// ---------------------------------------------------------------------------------------------

const encodeInvalid = Schema.encodeSync(InvalidArgument)
const encodeUnauthorized = Schema.encodeSync(Unauthorized)

const pathOf = (url: string) => {
  const at = url.indexOf("?")
  return at === -1 ? url : url.slice(0, at)
}

/** `POST /v1/vms: spec.vcpus: vcpus must be a whole number from 1 to 1024` */
const fromDecodeError = (request: HttpServerRequest.HttpServerRequest, error: HttpApiError.HttpApiDecodeError) => {
  const where = `${request.method} ${pathOf(request.url)}`
  const problems = error.issues.map((issue) => {
    const field = issue.path.map(String).join(".")
    return field === "" ? issue.message : `${field}: ${issue.message}`
  })
  const first = error.issues[0]?.path.map(String).join(".") ?? ""
  return new InvalidArgument({
    message: `${where}: ${problems.length > 0 ? [...new Set(problems)].join("; ") : error.message}`,
    subject: first === "" ? where : first
  })
}

const tooLarge = (request: HttpServerRequest.HttpServerRequest, size?: number) =>
  HttpServerResponse.unsafeJson(
    encodeInvalid(
      new InvalidArgument({
        message: `${request.method} ${pathOf(request.url)}: the request body${size === undefined ? "" : ` (${size} bytes)`} is larger than the ${MaxBodyBytes} bytes a request may carry`,
        subject: "body"
      })
    ),
    { status: 413 }
  )

/** A body the platform could not read (it dies with a `RequestError`): not JSON, too large, cut off. */
const fromBodyDefect = (request: HttpServerRequest.HttpServerRequest, error: HttpServerError.RequestError) => {
  const cause = error.cause
  if (cause instanceof Error && cause.message === "maxBytes exceeded") return tooLarge(request)
  const detail = cause instanceof SyntaxError ? `the body is not valid JSON (${cause.message})` : "the body could not be read"
  return HttpServerResponse.unsafeJson(
    encodeInvalid(new InvalidArgument({ message: `${request.method} ${pathOf(request.url)}: ${detail}`, subject: "body" })),
    { status: 400 }
  )
}

/**
 * Turns what HttpApi's routing raises on bad input into our errors, before the API's error encoder
 * sees them: `HttpApiDecodeError` becomes `InvalidArgument` (so it is encoded like every other error
 * of ours), an unreadable body becomes a 400/413 answer.
 */
const toDomainErrors = <R>(
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, unknown, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, unknown, R | HttpServerRequest.HttpServerRequest> =>
  Effect.catchAllCause(handler, (cause) => {
    const failure = Cause.failureOption(cause)
    if (failure._tag === "Some" && failure.value instanceof HttpApiError.HttpApiDecodeError) {
      const error = failure.value
      return Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => Effect.fail(fromDecodeError(request, error)))
    }
    const defect = Cause.dieOption(cause)
    if (defect._tag === "Some" && defect.value instanceof HttpServerError.RequestError) {
      const error = defect.value
      return Effect.map(HttpServerRequest.HttpServerRequest, (request) => fromBodyDefect(request, error))
    }
    return Effect.failCause(cause)
  })

/**
 * A declared `Content-Length` over the limit is refused before anything is read; a chunked body is
 * cut off at the limit by the platform (`MaxBodySize`).
 */
const limitBody = <E, R>(
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest> =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
    const declared = request.headers["content-length"]
    if (declared !== undefined && Number(declared) > MaxBodyBytes) return Effect.succeed(tooLarge(request, Number(declared)))
    return HttpIncomingMessage.withMaxBodySize(handler, Option.some(MaxBodyBytes))
  })

// ---------------------------------------------------------------------------------------------
// Mounting
// ---------------------------------------------------------------------------------------------

/** An endpoint as HttpApi builds it (its `Respondable` is always a response here). */
type ApiHandler = Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  unknown,
  HttpServerRequest.HttpServerRequest | HttpRouter.HttpRouter.DefaultServices
>

type RouteMethod = "*" | "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"

/**
 * Adds the API's routes to the `HttpLayerRouter`. This is `HttpLayerRouter.addHttpApi` with one step
 * more: `toDomainErrors` runs between the endpoint and the API's error encoder, which is the one place
 * where a decode failure is still a value (HttpApi in Effect 3 has no hook to replace
 * `HttpApiDecodeError`; after the encoder it is already a response).
 */
const mountRoutes = (apiToken: ApiOptions["apiToken"]) =>
  HttpApiBuilder.Router.unwrap((apiRouter) =>
    Layer.effectDiscard(
      Effect.gen(function* () {
        const router = yield* HttpLayerRouter.HttpRouter
        const encodeErrors = yield* HttpApiBuilder.buildMiddleware(BlixardApi)
        const services = yield* Effect.context<HttpRouter.HttpRouter.DefaultServices>()
        const routes = Chunk.toReadonlyArray(apiRouter.routes).map((route) =>
          HttpLayerRouter.route(
            route.method as RouteMethod,
            route.path,
            limitBody(
              Effect.orDie(
                encodeErrors(
                  toDomainErrors(
                    Effect.mapInputContext(
                      route.handler as unknown as ApiHandler,
                      (input: Context.Context<HttpServerRequest.HttpServerRequest>) => Context.merge(services, input)
                    )
                  ) as Effect.Effect<HttpServerResponse.HttpServerResponse, unknown>
                )
              )
            ),
            { uninterruptible: route.uninterruptible }
          )
        )
        yield* router.addAll(routes) as Effect.Effect<void>

        const check = makeTokenCheck(apiToken)
        const document = HttpServerResponse.unsafeJson(OpenApi.fromApi(BlixardApi))
        yield* router.add(
          "GET",
          "/openapi.json",
          Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
            Effect.match(check(request.headers.authorization), {
              onFailure: (error) => HttpServerResponse.unsafeJson(encodeUnauthorized(error), { status: 401 }),
              onSuccess: () => document
            })
          )
        )
      })
    )
  )

/**
 * The API and `/openapi.json` as routes of an `HttpLayerRouter`. The node merges this layer with its
 * peer RPC routes and serves both with `HttpLayerRouter.serve` on one port.
 */
export const layerHttpApi = (
  options: ApiOptions = {}
): Layer.Layer<never, never, HttpLayerRouter.HttpRouter | ControlPlane | HttpRouter.HttpRouter.DefaultServices> => {
  const api = mountRoutes(options.apiToken).pipe(
    Layer.provide([VmsLive, NodesLive, ClusterLive, HealthLive]),
    Layer.provide(layerAuthorization(options.apiToken))
  )
  // The handler layers and HttpApi's route table are module-level layers, shared through the memo map
  // of the build they are part of. Building them in a memo map of their own keeps two APIs in one
  // process (the simulator, tests) from sharing handlers bound to the first one's ControlPlane.
  // (`Layer.fresh` would do it too, but `HttpLayerRouter.serve` refers to its app layer twice, so a
  // fresh layer would be built, and its routes added, twice.)
  return Layer.scopedDiscard(Effect.flatMap(Effect.scope, (scope) => Layer.buildWithScope(api, scope)))
}

export interface ServerOptions extends ApiOptions {
  readonly port: number
  readonly host: string
  /** Log every request (default false). */
  readonly logRequests?: boolean | undefined
  /** Open a tracing span per request (default true). */
  readonly tracing?: boolean | undefined
}

/**
 * A stand-alone server for the API alone (tests, benchmarks). Its `HttpServer` tells the bound address
 * (`port: 0` picks a free port).
 */
export const layerServer = (
  options: ServerOptions
): Layer.Layer<HttpServer.HttpServer, HttpServerError.ServeError, ControlPlane> => {
  const served = HttpLayerRouter.serve(layerHttpApi(options), {
    disableLogger: options.logRequests !== true,
    disableListenLog: true
  })
  return Layer.provideMerge(
    options.tracing === false ? HttpMiddleware.withTracerDisabledWhen(served, () => true) : served,
    NodeHttpServer.layer(createServer, { port: options.port, host: options.host })
  )
}
