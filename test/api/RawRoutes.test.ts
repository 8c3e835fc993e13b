/**
 * The routes served beside the JSON API (`RawRoutes.ts`) are one table with the JSON routes: every
 * route the server serves is in `/openapi.json` (the list comes from the server's own tables, so a
 * route added without a description fails here), each answers a method it does not take with 405
 * and `Allow`, and each checks the caller's token as declared — a VM's log needs more than
 * `read-only`, since a guest may print secrets on its console.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import type { AuthOptions } from "../../src/api/Auth.js"
import { ApiClient } from "../../src/api/Client.js"
import type { ControlPlaneShape } from "../../src/api/ControlPlane.js"
import { openApiPath } from "../../src/api/RawRoutes.js"
import { type ApiOptions, routesOf } from "../../src/api/Server.js"
import * as VmLogsRoute from "../../src/api/VmLogsRoute.js"
import type { ApiTokenRecord } from "../../src/domain/ApiToken.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { EventLog } from "../../src/events/EventLog.js"
import { makeMemory } from "../../src/api/ControlPlaneMemory.js"
import * as ClusterKeyring from "../../src/node/ClusterKeyring.js"
import * as TlsBootstrap from "../../src/node/TlsBootstrap.js"
import type { NodeTls } from "../../src/net/Tls.js"
import { raw, serve } from "./harness.js"

const logsRoute = VmLogsRoute.route({
  node: NodeId.make(1),
  locate: () => ({ _tag: "Here" }),
  local: (request) => Stream.make(`the log of ${request.name}\n`),
  credential: "unused"
})

/** Every kind of raw route a node serves (the TLS ones are only described and refused here, never signed with). */
const options = (auth?: AuthOptions): ApiOptions => ({
  ...(auth === undefined ? {} : { auth }),
  metrics: Effect.succeed("# TYPE up gauge\nup 1\n"),
  events: { log: new EventLog(16), heartbeatMs: 60_000 },
  rawRoutes: [
    logsRoute,
    ...TlsBootstrap.routes({
      publicClusterSecret: false,
      tls: { ca: "unused", fingerprint: "00" } as unknown as NodeTls,
      keyring: new ClusterKeyring.LiveKeyring(["secret"], undefined, "file"),
      authenticate: () => {
        throw new Error("not asked in this test")
      },
      consumeJoinToken: () => Effect.die(new Error("not asked in this test")),
      record: () => Effect.die("not recorded here"),
      run: () => undefined
    })
  ]
})

type Document = {
  paths: Record<string, Record<string, { security?: unknown; parameters?: Array<{ name: string; in: string }>; responses: Record<string, { content?: Record<string, unknown> }> }>>
}

const planeOf = (): ControlPlaneShape => makeMemory({ now: () => 0 })

describe("/openapi.json describes every route the server serves", () => {
  it.scopedLive("each route of the server's tables, JSON or raw, is in the document with its method", () =>
    Effect.gen(function* () {
      const served = routesOf(options(), planeOf())
      // The raw routes are among them: the list is the server's, not this test's.
      for (const path of ["/openapi.json", "/metrics", "/v1/events", "/v1/cluster/snapshot", "/v1/vms/:name/logs", "/v1/tls/ca", "/v1/tls/certificate"]) {
        expect(served.map((route) => route.path)).toContain(path)
      }
      const { url } = yield* serve(options())
      const document = (yield* raw(url, { path: "/openapi.json" })).json as Document
      for (const route of served) {
        expect(document.paths[openApiPath(route.path)]?.[route.method.toLowerCase()], `${route.method} ${route.path}`).toBeDefined()
      }

      const events = document.paths["/v1/events"]!.get!
      expect(Object.keys(events.responses["200"]!.content!)).toEqual(["text/event-stream"])
      expect(events.parameters?.map((p) => `${p.in} ${p.name}`)).toEqual(["query since", "header Last-Event-ID"])
      expect(events.security).toEqual([{ bearer: [] }])
      expect(Object.keys(events.responses)).toEqual(expect.arrayContaining(["200", "400", "401"]))

      const logs = document.paths["/v1/vms/{name}/logs"]!.get!
      expect(Object.keys(logs.responses["200"]!.content!)[0]).toMatch(/^text\/plain/)
      expect(logs.parameters?.map((p) => `${p.in} ${p.name}`)).toEqual(["path name", "query follow", "query tail"])
      expect(Object.keys(logs.responses)).toEqual(expect.arrayContaining(["200", "400", "401", "403", "404", "503"]))

      const metrics = document.paths["/metrics"]!.get!
      expect(Object.keys(metrics.responses["200"]!.content!)[0]).toMatch(/^text\/plain; version=0\.0\.4/)
      expect(metrics.security).toEqual([{ bearer: [] }])

      expect(document.paths["/v1/tls/ca"]!.get!.security).toEqual([])
      expect(document.paths["/v1/tls/certificate"]!.post!.security).toEqual([{ bearer: [] }])
      expect(Object.keys(document.paths["/v1/cluster/snapshot"]!.get!.responses)).toEqual(expect.arrayContaining(["200", "401", "403", "503"]))
      // `start`'s default is documented where a client reads the body's schema.
      expect(JSON.stringify(document)).toContain("create it stopped")
    })
  )
})

describe("raw routes are matched as the JSON routes are", () => {
  it.scopedLive("a raw route asked with a method it does not take is a 405 listing what its path takes in Allow", () =>
    Effect.gen(function* () {
      const served = routesOf(options(), planeOf())
      const { url } = yield* serve(options({ adminTokens: ["root-token"] }))
      const raws = served.filter((route) => ["/openapi.json", "/metrics", "/v1/events", "/v1/cluster/snapshot", VmLogsRoute.path, TlsBootstrap.caPath, TlsBootstrap.certificatePath].includes(route.path))
      expect(raws).toHaveLength(7)
      for (const route of raws) {
        const methods = new Set(served.filter((other) => other.path === route.path).map((other) => other.method))
        if (methods.has("GET")) methods.add("HEAD")
        const allow = ["GET", "HEAD", "POST"].filter((method) => methods.has(method)).join(", ")
        const wrong = route.method === "GET" ? "POST" : "GET"
        const path = route.path.replace(":name", "web")
        const response = yield* raw(url, { method: wrong, path, headers: { authorization: "Bearer root-token" } })
        expect(response.status, `${wrong} ${path}`).toBe(405)
        expect(response.allow, `${wrong} ${path}`).toBe(allow)
        expect(response.json).toMatchObject({ code: "BLX_INVALID_ARGUMENT" })
        expect(response.text).toContain(`${wrong} ${path}`)
      }
      // DELETE on the events stream: every method but its own.
      const deleted = yield* raw(url, { method: "DELETE", path: "/v1/events", headers: { authorization: "Bearer root-token" } })
      expect([deleted.status, deleted.allow]).toEqual([405, "GET, HEAD"])
    })
  )

  it.scopedLive("the token is checked before a raw route's handler runs; no token is asked where none is declared", () =>
    Effect.gen(function* () {
      const { url } = yield* serve(options({ adminTokens: ["root-token"] }))
      for (const path of ["/metrics", "/v1/events", "/v1/cluster/snapshot", "/v1/vms/web/logs", "/openapi.json"]) {
        const response = yield* raw(url, { path })
        expect(response.status, path).toBe(401)
        expect(response.json).toMatchObject({ code: "BLX_UNAUTHORIZED" })
      }
      const metrics = yield* raw(url, { path: "/metrics", headers: { authorization: "Bearer root-token" } })
      expect([metrics.status, metrics.text]).toEqual([200, "# TYPE up gauge\nup 1\n"])
      // A malformed path parameter is the API's 400, not a handler's crash.
      const encoded = yield* raw(url, { path: "/v1/vms/%E0%A4%A/logs", headers: { authorization: "Bearer root-token" } })
      expect(encoded.status).toBe(400)
      expect(encoded.json).toMatchObject({ code: "BLX_INVALID_ARGUMENT" })
    })
  )
})

describe("a VM's log needs the operator role", () => {
  it.scopedLive("a read-only token gets 403 BLX_FORBIDDEN on /v1/vms/NAME/logs; operator and admin tokens read it", () =>
    Effect.gen(function* () {
      let lookup: (id: string) => ApiTokenRecord | undefined = () => undefined
      const { url, addr, plane } = yield* serve(options({ adminTokens: ["root-token"], tokens: (id) => lookup(id) }))
      lookup = (id) => plane.tokens.get(id)
      const admin = yield* Effect.provide(ApiClient, ApiClient.layerFetch({ addr, token: "root-token" }))
      const reader = yield* admin.createToken("read-only", "dash")
      const operator = yield* admin.createToken("operator")

      const refused = yield* raw(url, { path: "/v1/vms/web/logs", headers: { authorization: `Bearer ${reader.token}` } })
      expect(refused.status).toBe(403)
      expect(refused.json).toMatchObject({ _tag: "Forbidden", code: "BLX_FORBIDDEN", subject: "GET /v1/vms/web/logs" })
      expect((refused.json as { message: string }).message).toContain("operator or admin")
      // The same token still reads everything else.
      expect((yield* raw(url, { path: "/v1/vms", headers: { authorization: `Bearer ${reader.token}` } })).status).toBe(200)

      for (const token of [operator.token, "root-token"]) {
        const allowed = yield* raw(url, { path: "/v1/vms/web/logs", headers: { authorization: `Bearer ${token}` } })
        expect(allowed.status).toBe(200)
        expect(allowed.text).toBe("the log of web\n")
      }
    })
  )
})
