import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Stream } from "effect"
import { ApiClient } from "../../src/api/Client.js"
import * as SnapshotFile from "../../src/cluster/SnapshotFile.js"
import type { ApiTokenRecord } from "../../src/domain/ApiToken.js"
import { raw, serve, spec } from "./harness.js"

const clientOf = (addr: string, token: string) => Effect.provide(ApiClient, ApiClient.layerFetch({ addr, token }))

/** Everything `download` streams, as one buffer. */
const downloaded = (addr: string, token: string) =>
  Effect.flatMap(clientOf(addr, token), (client) =>
    Stream.runFold(client.snapshot(), Buffer.alloc(0), (all, chunk: Uint8Array) => Buffer.concat([all, chunk]))
  )

describe("GET /v1/cluster/snapshot", () => {
  it.scopedLive("streams a verified snapshot file of the state to an admin; other roles get 403, no token 401", () =>
    Effect.gen(function* () {
      let lookup: (id: string) => ApiTokenRecord | undefined = () => undefined
      const { addr, url, plane } = yield* serve({ auth: { adminTokens: ["root-token"], tokens: (id) => lookup(id) } })
      lookup = (id) => plane.tokens.get(id)
      const admin = yield* clientOf(addr, "root-token")
      yield* admin.createVm(spec("web", { labels: { tier: "web" } }))
      yield* admin.createVm(spec("db"))
      const operator = yield* admin.createToken("operator")

      const bytes = yield* downloaded(addr, "root-token")
      const read = SnapshotFile.read(bytes, "the answer")
      if (Either.isLeft(read)) throw new Error(read.left.message)
      expect([...read.right.state.vms.keys()].sort()).toEqual(["db", "web"])
      expect(read.right.state.vms.get("web")?.spec.labels).toEqual({ tier: "web" })
      expect(read.right.state.tokens.has(operator.id)).toBe(true)
      expect(read.right.header.node).toBe(1)

      const forbidden = yield* Effect.flip(downloaded(addr, operator.token))
      expect("code" in forbidden && forbidden.code).toBe("BLX_FORBIDDEN")
      const anonymous = yield* raw(url, { path: "/v1/cluster/snapshot" })
      expect(anonymous.status).toBe(401)
      expect((anonymous.json as { code: string }).code).toBe("BLX_UNAUTHORIZED")
      expect(plane.calls.filter((call) => call.method === "snapshot")).toHaveLength(1)
      // Served beside the route table, it is in the OpenAPI document too.
      const document = (yield* raw(url, { path: "/openapi.json", headers: { authorization: "Bearer root-token" } })).json as {
        paths: Record<string, { get?: { responses: Record<string, unknown> } }>
      }
      expect(Object.keys(document.paths["/v1/cluster/snapshot"]?.get?.responses ?? {})).toEqual(["200", "401", "403", "501", "503", "504"])
    })
  )

  it.scopedLive("a control plane that cannot give a snapshot answers 501 BLX_NOT_IMPLEMENTED", () =>
    Effect.gen(function* () {
      const { url } = yield* serve({}, ({ snapshot: _, ...plane }) => plane)
      const answer = yield* raw(url, { path: "/v1/cluster/snapshot" })
      expect(answer.status).toBe(501)
      expect((answer.json as { code: string }).code).toBe("BLX_NOT_IMPLEMENTED")
    })
  )
})
