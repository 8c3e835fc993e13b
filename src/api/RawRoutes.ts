/**
 * The routes `Server.ts` serves beside `BlixardApi`'s JSON route table, because their answer is not
 * one JSON value: the OpenAPI document, Prometheus metrics, the event stream (Server-Sent Events), a
 * VM's log (streamed text), the cluster snapshot (a streamed file) and a joining node's certificate
 * exchange (`node/TlsBootstrap.ts`).
 *
 * Each is one entry of one table, matched as the JSON routes are (a path template with `:param`
 * segments, `HEAD` answered by `GET`): the server checks the caller's token against its `access`
 * before its handler runs, answers 405 with `Allow` for a method it does not take, and lists its
 * `operation` in `/openapi.json`, so a route cannot be served without being described.
 */
import type { Cause, Effect, Fiber } from "effect"
import type * as http from "node:http"
import type { Access } from "./Auth.js"

/** An OpenAPI 3.1 operation object, as written into the document's `paths`. */
export type Operation = Readonly<Record<string, unknown>>

export interface RawRouteContext {
  /** The path parameters by name, percent-decoded. */
  readonly params: Readonly<Record<string, string>>
  /** The query string. */
  readonly query: URLSearchParams
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
  /** Answers `error` as the API answers its errors (status and JSON); anything else is logged and answered 500. */
  readonly fail: (error: unknown, cause?: Cause.Cause<unknown>) => void
}

export interface RawRoute {
  readonly method: "GET" | "POST"
  /** The path template: literal segments and `:name` parameters, as the JSON routes have. */
  readonly path: string
  /**
   * What the caller's token must grant, checked before `handle`; `undefined`: no token is asked (a
   * public route, or one whose handler authenticates the caller itself).
   */
  readonly access: Access | undefined
  /** Its entry in `/openapi.json`. */
  readonly operation: Operation
  readonly handle: (request: http.IncomingMessage, response: http.ServerResponse, context: RawRouteContext) => void
}

/** `/v1/vms/:name/logs` as OpenAPI writes it: `/v1/vms/{name}/logs`. */
export const openApiPath = (path: string): string => path.replace(/:(\w+)/g, "{$1}")

/** A response of an operation answering one of the API's errors (schemas in `components`). */
export const errorResponse = (description: string, ...names: ReadonlyArray<string>) => ({
  description,
  content: {
    "application/json": {
      schema: names.length === 1 ? { $ref: `#/components/schemas/${names[0]}` } : { anyOf: names.map((name) => ({ $ref: `#/components/schemas/${name}` })) }
    }
  }
})

/** The responses every route behind a token may answer: 401, and 403 when a role may be refused. */
export const authResponses = (access: Access | undefined): Record<string, unknown> =>
  access === undefined
    ? {}
    : {
        "401": errorResponse("Unauthorized: no valid API token", "Unauthorized"),
        ...(access === "read" ? {} : { "403": errorResponse("Forbidden: the token's role does not allow this", "Forbidden") })
      }

/** `document` with every route of `routes` added to its `paths`, with the bearer scheme where a token is asked. */
export const describe = <D extends { readonly paths?: Record<string, unknown> }>(document: D, routes: ReadonlyArray<RawRoute>): D => {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const [path, item] of Object.entries(document.paths ?? {})) paths[path] = { ...(item as Record<string, unknown>) }
  for (const route of routes) {
    const item = (paths[openApiPath(route.path)] ??= {})
    item[route.method.toLowerCase()] = {
      security: route.access === undefined ? [] : [{ bearer: [] }],
      ...route.operation,
      responses: { ...authResponses(route.access), ...(route.operation.responses as Record<string, unknown> | undefined) }
    }
  }
  return { ...document, paths }
}
