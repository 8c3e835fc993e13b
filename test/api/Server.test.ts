import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Logger, Schedule } from "effect"
import { BlixardApi, MaxBodyBytes } from "../../src/api/Api.js"
import { ApiClient } from "../../src/api/Client.js"
import { makeAuthenticate, nodeCredential, replicatedToken, sha256Hex } from "../../src/api/Auth.js"
import { ApiTokenRecord, TokenId } from "../../src/domain/ApiToken.js"
import { Conflict, Forbidden, Unauthorized, VmExists, VmNotFound } from "../../src/domain/Errors.js"
import { type HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { VmStatus } from "../../src/domain/VmStatus.js"
import { nodeId, raw, serve, spec, specJson, vmName } from "./harness.js"

const clientOf = (addr: string, token?: string) =>
  Effect.provide(ApiClient, ApiClient.layerFetch({ addr, ...(token === undefined ? {} : { token }) }))

describe("every endpoint round-trips through the derived client", () => {
  it.scopedLive("vms: create, get, list, start, stop, labels, delete", () =>
    Effect.gen(function* () {
      const { addr, plane } = yield* serve()
      const client = yield* clientOf(addr)

      const created = yield* client.createVm(spec("web", { vcpus: 2, labels: { tier: "front" } }))
      expect(created.spec.name).toBe("web")
      expect(created.spec.vcpus).toBe(2)
      expect(created.spec.labels).toEqual({ tier: "front" })
      expect(created.revision).toBe(1)
      expect(created.node).toBe(1)

      expect((yield* client.getVm(vmName("web"))).spec).toEqual(created.spec)
      yield* client.createVm(spec("db"))
      expect((yield* client.listVms()).map((vm) => vm.spec.name)).toEqual(["db", "web"])

      const started = yield* client.startVm(vmName("web"))
      expect(started.desired).toBe("running")
      expect(started.revision).toBe(2)
      const stopped = yield* client.stopVm(vmName("web"))
      expect(stopped.desired).toBe("stopped")
      const labelled = yield* client.setVmLabels(vmName("web"), { tier: "back", "blixard.io/gpu": "yes" })
      expect(labelled.spec.labels).toEqual({ tier: "back", "blixard.io/gpu": "yes" })

      const deleted = yield* client.deleteVm(vmName("web"))
      expect(deleted.spec.name).toBe("web")
      expect((yield* client.listVms()).map((vm) => vm.spec.name)).toEqual(["db"])

      expect(plane.calls.map((call) => call.method)).toEqual([
        "createVm",
        "getVm",
        "createVm",
        "listVms",
        "startVm",
        "stopVm",
        "setVmLabels",
        "deleteVm",
        "listVms"
      ])
    })
  )

  it.scopedLive("nodes and cluster: list, cordon, uncordon, drain, status, join, leave, transfer, health", () =>
    Effect.gen(function* () {
      const { addr } = yield* serve()
      const client = yield* clientOf(addr)

      expect((yield* client.listNodes()).map((node) => node.id)).toEqual([1])
      expect((yield* client.cordon(nodeId(1))).state).toBe("cordoned")
      expect((yield* client.drain(nodeId(1))).state).toBe("draining")
      expect((yield* client.uncordon(nodeId(1))).state).toBe("active")
      const node1 = (yield* client.listNodes())[0]!
      const registered = yield* client.registerNode(new NodeInfo({ ...node1, id: nodeId(2), address: "127.0.0.1:7002" as HostPort }))
      expect(registered.id).toBe(2)
      expect((yield* client.listNodes()).map((node) => node.id)).toEqual([1, 2])

      const status = yield* client.clusterStatus()
      expect(status.node).toBe(1)
      expect(status.leader).toBe(1)
      const joined = yield* client.join(nodeId(2), "127.0.0.1:7002" as HostPort)
      expect(joined.members.map((member) => member.id)).toEqual([1, 2])
      const transferred = yield* client.transferLeader(nodeId(2))
      expect(transferred.term).toBe(status.term + 1)
      const left = yield* client.leave(nodeId(2))
      expect(left.members.map((member) => member.id)).toEqual([1])

      const health = yield* client.health()
      expect(health).toMatchObject({ status: "ok", node: 1, role: "leader", leader: 1 })
    })
  )

  it.scopedLive("host heartbeats: what the host says reaches the ControlPlane; a host of an older version, sending no body, is answered", () =>
    Effect.gen(function* () {
      const beats: Array<unknown> = []
      const { addr, url } = yield* serve({}, (plane) => ({
        ...plane,
        heartbeat: (id, beat) => {
          beats.push(beat)
          return plane.heartbeat(id, beat)
        }
      }))
      const client = yield* clientOf(addr)
      const node1 = (yield* client.listNodes())[0]!
      yield* client.registerNode(new NodeInfo({ ...node1, id: nodeId(9), address: "127.0.0.1:7009" as HostPort }))
      const incarnation = "00000000-0000-4000-8000-00000000000a"
      expect(yield* client.heartbeat(nodeId(9), { incarnation, fencingMs: 3000 })).toMatchObject({ node: 9, leader: 1 })
      const old = yield* raw(url, { method: "POST", path: "/v1/nodes/9/heartbeat" })
      expect(old.status).toBe(200)
      const bad = yield* raw(url, { method: "POST", path: "/v1/nodes/9/heartbeat", body: JSON.stringify({ incarnation: "--x", fencingMs: -1 }) })
      expect(bad.status).toBe(400)
      expect(bad.json).toMatchObject({ code: "BLX_INVALID_ARGUMENT" })
      expect(beats).toEqual([{ incarnation, fencingMs: 3000 }, {}])
    })
  )

  it.scopedLive("Idempotency-Key, ifRevision and stale reads reach the ControlPlane", () =>
    Effect.gen(function* () {
      const { addr, plane } = yield* serve()
      const client = yield* clientOf(addr)

      yield* client.createVm(spec("web"), { idempotencyKey: "create-web-1" })
      // The same key again: the control plane answers the first result, once applied.
      const again = yield* client.createVm(spec("web"), { idempotencyKey: "create-web-1" })
      expect(again.revision).toBe(1)
      yield* client.startVm(vmName("web"), { idempotencyKey: "start-1", ifRevision: 1 })
      yield* client.setVmLabels(vmName("web"), { a: "b" }, { ifRevision: 2 })
      yield* client.deleteVm(vmName("web"), { ifRevision: 3, idempotencyKey: "del.web:1" })
      yield* client.cordon(nodeId(1), { idempotencyKey: "cordon-1" })
      yield* client.listVms({ stale: true })
      yield* client.getVm(vmName("web"), { stale: true }).pipe(Effect.exit)
      yield* client.listNodes()

      const writes = plane.calls.filter((call) => call.write !== undefined).map((call) => [call.method, call.write])
      expect(writes).toEqual([
        ["createVm", { requestId: "create-web-1", ifRevision: undefined, start: true }],
        ["createVm", { requestId: "create-web-1", ifRevision: undefined, start: true }],
        ["startVm", { requestId: "start-1", ifRevision: 1 }],
        ["setVmLabels", { requestId: undefined, ifRevision: 2 }],
        ["deleteVm", { requestId: "del.web:1", ifRevision: 3 }],
        ["setNodeState", { requestId: "cordon-1", ifRevision: undefined }]
      ])
      const reads = plane.calls.filter((call) => call.read !== undefined).map((call) => [call.method, call.read])
      expect(reads).toEqual([
        ["listVms", "stale"],
        ["getVm", "stale"],
        ["listNodes", "linearizable"]
      ])
    })
  )
})

describe("errors from the ControlPlane arrive as themselves", () => {
  it.scopedLive("VmNotFound: same tag, code and subject; HTTP 404", () =>
    Effect.gen(function* () {
      const { addr, url } = yield* serve()
      const client = yield* clientOf(addr)

      const error = yield* Effect.flip(client.getVm(vmName("nope")))
      expect(error).toBeInstanceOf(VmNotFound)
      expect(error).toMatchObject({ _tag: "VmNotFound", code: "BLX_VM_NOT_FOUND", subject: "nope", node: 1 })
      expect(error.message).toContain('no VM named "nope"')

      const response = yield* raw(url, { path: "/v1/vms/nope" })
      expect(response.status).toBe(404)
      expect(response.json).toMatchObject({ _tag: "VmNotFound", code: "BLX_VM_NOT_FOUND" })
    })
  )

  it.scopedLive("VmExists and Conflict are 409 and arrive tagged", () =>
    Effect.gen(function* () {
      const { addr, url } = yield* serve()
      const client = yield* clientOf(addr)
      yield* client.createVm(spec("web"))

      expect(yield* Effect.flip(client.createVm(spec("web")))).toBeInstanceOf(VmExists)
      const conflict = yield* Effect.flip(client.startVm(vmName("web"), { ifRevision: 7 }))
      expect(conflict).toBeInstanceOf(Conflict)
      expect(conflict.code).toBe("BLX_CONFLICT")

      const response = yield* raw(url, { method: "POST", path: "/v1/vms/web/stop", body: JSON.stringify({ ifRevision: 9 }) })
      expect(response.status).toBe(409)
      expect(response.json).toMatchObject({ code: "BLX_CONFLICT" })
    })
  )
})

describe("/openapi.json", () => {
  it.scopedLive("is served and names every path of the API", () =>
    Effect.gen(function* () {
      const { url } = yield* serve()
      const response = yield* raw(url, { path: "/openapi.json" })
      expect(response.status).toBe(200)
      expect(response.contentType).toContain("application/json")
      const document = response.json as { openapi: string; paths: Record<string, Record<string, unknown>> }
      expect(document.openapi).toMatch(/^3\./)

      const expected = new Set<string>()
      for (const group of Object.values(BlixardApi.groups)) {
        for (const endpoint of Object.values(group.endpoints)) {
          expected.add(`${endpoint.method.toLowerCase()} ${endpoint.path.replace(/:(\w+)/g, "{$1}")}`)
        }
      }
      const served = new Set(
        Object.entries(document.paths).flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method} ${path}`))
      )
      expect(expected.size).toBe(37)
      for (const endpoint of expected) expect(served).toContain(endpoint)

      // It documents the errors the server sends: InvalidArgument for malformed input, 413 on bodies,
      // bearer auth where it applies; not HttpApi's own decode error, which the server never sends.
      expect(response.text).not.toContain("HttpApiDecodeError")
      const create = (document.paths["/v1/vms"]!["post"] ?? {}) as {
        responses: Record<string, { content: { "application/json": { schema: unknown } } }>
        security?: unknown
      }
      expect(create.responses["400"]!.content["application/json"].schema).toEqual({ $ref: "#/components/schemas/InvalidArgument" })
      expect(Object.keys(create.responses)).toEqual(expect.arrayContaining(["201", "400", "401", "404", "409", "413", "503"]))
      expect(create.security).toEqual([{ bearer: [] }])
      expect((document.paths["/v1/health"]!["get"] as { security?: unknown }).security ?? []).toEqual([])
    })
  )
})

const expectInvalid = (
  response: { status: number; contentType: string | undefined; json: unknown },
  status: number,
  messageParts: ReadonlyArray<string | RegExp>
) => {
  expect(response.status).toBe(status)
  expect(response.contentType).toContain("application/json")
  expect(response.json).toMatchObject({ _tag: "InvalidArgument", code: "BLX_INVALID_ARGUMENT" })
  const message = (response.json as { message: string }).message
  for (const part of messageParts) expect(message).toMatch(part)
}

describe("malformed input gets a 4xx with our error, and the server keeps serving", () => {
  it.scopedLive("each malformed request, then a healthy one", () =>
    Effect.gen(function* () {
      const { url, plane } = yield* serve()
      const post = (body: string | undefined, path = "/v1/vms", headers: Record<string, string> = {}) =>
        raw(url, { method: "POST", path, ...(body === undefined ? {} : { body }), headers })
      const healthy = () =>
        Effect.map(raw(url, { path: "/v1/health" }), (response) => expect(response.status).toBe(200))

      // Not JSON at all.
      expectInvalid(yield* post('{"spec": {"name": '), 400, ["POST /v1/vms", /not valid JSON/])
      yield* healthy()

      // Larger than MaxBodyBytes, with a Content-Length: refused before it is read.
      const big = JSON.stringify({ spec: specJson("big", { source: { _tag: "Inline", module: "x".repeat(MaxBodyBytes) } }) })
      expectInvalid(yield* post(big), 413, [/larger than the 262144 bytes/])
      yield* healthy()

      // Uppercase VM name in the path.
      expectInvalid(yield* raw(url, { path: "/v1/vms/Web" }), 400, ["GET /v1/vms/Web", /name: a VM name is a lowercase DNS label/])
      yield* healthy()

      // vcpus 0.
      expectInvalid(yield* post(JSON.stringify({ spec: specJson("web", { vcpus: 0 }) })), 400, [
        /spec\.vcpus: vcpus must be a whole number from 1 to 1024/
      ])
      // An unknown field at the top and inside the spec.
      expectInvalid(yield* post(JSON.stringify({ spec: specJson("web"), force: true })), 400, [/force: is unexpected/])
      expectInvalid(yield* post(JSON.stringify({ spec: specJson("web", { vcpu: 2 }) })), 400, [/spec\.vcpu: is unexpected/])
      // No body at all.
      expectInvalid(yield* post(undefined), 400, ["POST /v1/vms", /spec/])
      // Every problem is named, not only the first.
      expectInvalid(yield* post(JSON.stringify({ spec: specJson("Web", { vcpus: 0, memoryMiB: 1 }) })), 400, [
        /spec\.name/,
        /spec\.vcpus/,
        /spec\.memoryMiB/
      ])
      // A bad node id, a bad Idempotency-Key, a bad query parameter.
      expectInvalid(yield* post(undefined, "/v1/nodes/abc/cordon"), 400, [/id/])
      expectInvalid(yield* post(JSON.stringify({ spec: specJson("web") }), "/v1/vms", { "idempotency-key": "has space" }), 400, [
        /idempotency-key/
      ])
      expectInvalid(yield* raw(url, { path: "/v1/vms?stale=maybe" }), 400, [/stale/])
      expectInvalid(yield* raw(url, { method: "DELETE", path: "/v1/vms/web?ifRevision=-1" }), 400, [/ifRevision/])
      // A body that is a JSON string where an object is expected.
      expectInvalid(yield* post('"web"'), 400, ["POST /v1/vms"])
      yield* healthy()

      // None of it reached the control plane; a good request still does.
      expect(plane.calls.filter((call) => call.method !== "health")).toEqual([])
      const created = yield* post(JSON.stringify({ spec: specJson("web") }))
      expect(created.status).toBe(201)
      expect(created.json).toMatchObject({ spec: { name: "web" }, revision: 1 })
    })
  )

  it.scopedLive("an oversized chunked body (no Content-Length) is cut off and the server keeps serving", () =>
    Effect.gen(function* () {
      const { url } = yield* serve()
      const big = JSON.stringify({ spec: specJson("big", { source: { _tag: "Inline", module: "x".repeat(2 * MaxBodyBytes) } }) })
      const outcome = yield* Effect.exit(raw(url, { method: "POST", path: "/v1/vms", body: big, chunked: true }))
      // Either the 413 arrives or the connection is closed mid-body; never a 2xx or a 500.
      if (Exit.isSuccess(outcome)) expectInvalid(outcome.value, 413, [/larger than/])
      const health = yield* raw(url, { path: "/v1/health" })
      expect(health.status).toBe(200)
    })
  )
})

describe("bearer-token auth", () => {
  it.scopedLive("no token or a wrong one is 401 BLX_UNAUTHORIZED naming where the token is; the right one passes; /v1/health is open", () =>
    Effect.gen(function* () {
      const { addr, url, plane } = yield* serve({ auth: { adminTokens: ["s3cret-token"], hint: "the admin token is in /data/api-token" } })

      for (const headers of [{}, { authorization: "Bearer wrong" }, { authorization: "Basic s3cret-token" }, { authorization: "Bearer " }]) {
        const response = yield* raw(url, { path: "/v1/vms", headers })
        expect(response.status).toBe(401)
        expect(response.json).toMatchObject({ _tag: "Unauthorized", code: "BLX_UNAUTHORIZED" })
        expect((response.json as { message: string }).message).toContain("/data/api-token")
      }
      // Checked before the body: an unauthenticated malformed request is still 401.
      const malformed = yield* raw(url, { method: "POST", path: "/v1/vms", body: "{" })
      expect(malformed.status).toBe(401)
      expect((yield* raw(url, { path: "/openapi.json" })).status).toBe(401)

      expect((yield* raw(url, { path: "/v1/vms", headers: { authorization: "Bearer s3cret-token" } })).status).toBe(200)
      expect((yield* raw(url, { path: "/v1/vms", headers: { authorization: "bearer s3cret-token" } })).status).toBe(200)
      expect((yield* raw(url, { path: "/openapi.json", headers: { authorization: "Bearer s3cret-token" } })).status).toBe(200)
      expect((yield* raw(url, { path: "/v1/health" })).status).toBe(200)
      expect(plane.calls.map((call) => call.method)).toEqual(["listVms", "listVms", "health"])

      const anonymous = yield* clientOf(addr)
      const denied = yield* Effect.flip(anonymous.listVms())
      expect(denied).toBeInstanceOf(Unauthorized)
      expect(denied.code).toBe("BLX_UNAUTHORIZED")
      expect((yield* anonymous.health()).status).toBe("ok")

      const wrong = yield* clientOf(addr, "nope")
      expect(yield* Effect.flip(wrong.createVm(spec("web")))).toBeInstanceOf(Unauthorized)
      const trusted = yield* clientOf(addr, "s3cret-token")
      expect((yield* trusted.createVm(spec("web"))).revision).toBe(1)
      expect((yield* trusted.clusterStatus()).node).toBe(1)
    })
  )

  it.scopedLive("roles: read-only reads, operator runs VMs, admin manages nodes and tokens; a revoked token is refused", () =>
    Effect.gen(function* () {
      // The plane is built inside `serve`; its tokens are looked up through this indirection.
      let lookup: (id: string) => ApiTokenRecord | undefined = () => undefined
      const { addr, plane } = yield* serve({ auth: { adminTokens: ["root-token"], tokens: (id) => lookup(id) } })
      lookup = (id) => plane.tokens.get(id)
      const admin = yield* clientOf(addr, "root-token")
      const reader = yield* admin.createToken("read-only", "dash")
      const operator = yield* admin.createToken("operator")
      expect(reader.token).toMatch(/^blxt_[0-9a-f]{16}_/)
      expect(reader.name).toBe("dash")
      expect((yield* admin.listTokens()).map((t) => t.id).sort()).toEqual([reader.id, operator.id].sort())

      const asReader = yield* clientOf(addr, reader.token)
      expect(yield* asReader.listVms()).toEqual([])
      const refused = yield* Effect.flip(asReader.createVm(spec("web")))
      expect(refused).toBeInstanceOf(Forbidden)
      expect(refused.code).toBe("BLX_FORBIDDEN")
      expect(refused.message).toContain("read-only")
      expect(plane.calls.some((call) => call.method === "createVm")).toBe(false)

      const asOperator = yield* clientOf(addr, operator.token)
      yield* asOperator.createVm(spec("web"))
      yield* asOperator.startVm(vmName("web"))
      expect(yield* Effect.flip(asOperator.cordon(nodeId(1)))).toBeInstanceOf(Forbidden)
      expect(yield* Effect.flip(asOperator.createToken("admin"))).toBeInstanceOf(Forbidden)
      expect(yield* Effect.flip(asOperator.listTokens())).toBeInstanceOf(Forbidden)
      // What only nodes do: not even an admin token.
      const report = yield* Effect.flip(admin.reportVmStatus(vmName("web"), nodeId(1), (yield* admin.getVm(vmName("web"))).status))
      expect(report).toBeInstanceOf(Forbidden)
      const reports = yield* Effect.flip(admin.reportVmStatuses(nodeId(1), [{ name: vmName("web"), status: (yield* admin.getVm(vmName("web"))).status }]))
      expect(reports).toBeInstanceOf(Forbidden)
      expect(plane.calls.some((call) => call.method.startsWith("reportVmStatus"))).toBe(false)

      yield* admin.revokeToken(operator.id)
      expect(yield* Effect.flip(asOperator.listVms())).toBeInstanceOf(Unauthorized)
      expect(yield* Effect.flip(admin.revokeToken(operator.id))).toMatchObject({ code: "BLX_TOKEN_NOT_FOUND" })
    })
  )
})

describe("a node's credential acts for its own node; a member's for any (it forwards for hosts)", () => {
  it.scopedLive("a host's credential may not report, register or heartbeat for another node: 403, and nothing reaches the control plane", () =>
    Effect.gen(function* () {
      const { addr, plane } = yield* serve({ auth: { adminTokens: ["root-token"], clusterSecret: "cluster" }, isMember: (id) => id === 1 })
      const admin = yield* clientOf(addr, "root-token")
      const node1 = (yield* admin.listNodes())[0]!
      const host3 = yield* clientOf(addr, nodeCredential("cluster", 3))
      const member1 = yield* clientOf(addr, nodeCredential("cluster", 1))
      const status = new VmStatus({ phase: "running", since: 1, pid: 7, restarts: 0 })
      const info = (id: number) => new NodeInfo({ ...node1, id: nodeId(id), address: `127.0.0.1:${7000 + id}` as HostPort })

      // For itself: taken.
      expect((yield* host3.registerNode(info(3))).id).toBe(3)
      yield* host3.reportVmStatuses(nodeId(3), [{ name: vmName("web"), status }])
      expect(plane.calls.filter((c) => c.method === "reportVmStatuses").map((c) => c.subject)).toEqual(["3:web:running"])
      // For node 4: refused, naming the credential and what to use.
      const calls = plane.calls.length
      for (const refused of [
        yield* Effect.flip(host3.reportVmStatuses(nodeId(4), [{ name: vmName("web"), status }])),
        yield* Effect.flip(host3.reportVmStatus(vmName("web"), nodeId(4), status)),
        yield* Effect.flip(host3.registerNode(info(4))),
        yield* Effect.flip(host3.heartbeat(nodeId(4), {}))
      ]) {
        expect(refused).toBeInstanceOf(Forbidden)
        expect(refused.message).toContain("node 3's credential acts only for node 3, not node 4")
      }
      expect(plane.calls.length).toBe(calls)
      // A member forwards for hosts: its credential acts for node 4.
      yield* member1.reportVmStatuses(nodeId(4), [{ name: vmName("web"), status }])
      expect((yield* member1.registerNode(info(4))).id).toBe(4)
    })
  )
})

describe("the authenticator", () => {
  const record = (token: string, role: "read-only" | "operator" | "admin") =>
    new ApiTokenRecord({ id: TokenId.make(token.slice(5, 21)), role, hash: sha256Hex(token), createdAt: 0 })

  it.effect("ignores the token file's final newline, fails closed on an empty token, needs the Bearer scheme", () =>
    Effect.gen(function* () {
      const check = makeAuthenticate({ adminTokens: ["s3cret\n"] })
      expect(yield* check("Bearer s3cret", "127.0.0.1")).toMatchObject({ kind: "token", role: "admin" })
      yield* check("BEARER s3cret", "127.0.0.1")
      for (const header of [undefined, "", "Bearer", "Bearer ", "Bearer s3cre", "Bearer s3cret2", "Token s3cret", "s3cret"]) {
        expect(yield* Effect.flip(check(header, "127.0.0.1"))).toBeInstanceOf(Unauthorized)
      }
      const empty = makeAuthenticate({ adminTokens: ["  \n"] })
      for (const header of [undefined, "", "Bearer ", "Bearer x"]) {
        expect(yield* Effect.flip(empty(header, "127.0.0.1"))).toBeInstanceOf(Unauthorized)
      }
    })
  )

  it.effect("replicated tokens by id and hash; node credentials by HMAC of the cluster secret, from loopback only when the secret is the public default", () =>
    Effect.gen(function* () {
      const token = replicatedToken("0123456789abcdef", "A".repeat(43))
      const stored = record(token, "operator")
      const check = makeAuthenticate({ clusterSecret: "cluster", tokens: (id) => (id === stored.id ? stored : undefined) })
      expect(yield* check(`Bearer ${token}`, "10.0.0.9")).toMatchObject({ kind: "token", role: "operator" })
      // Same id, another secret: refused (the hash differs).
      expect(yield* Effect.flip(check(`Bearer ${replicatedToken("0123456789abcdef", "B".repeat(43))}`, "10.0.0.9"))).toBeInstanceOf(Unauthorized)

      expect(yield* check(`Bearer ${nodeCredential("cluster", 3)}`, "10.0.0.9")).toEqual({ kind: "node", node: 3 })
      // Another cluster's secret, or node 3's MAC claimed by node 4: refused.
      expect(yield* Effect.flip(check(`Bearer ${nodeCredential("other", 3)}`, "10.0.0.9"))).toBeInstanceOf(Unauthorized)
      const forged = nodeCredential("cluster", 3).replace("blxn_3_", "blxn_4_")
      expect(yield* Effect.flip(check(`Bearer ${forged}`, "10.0.0.9"))).toBeInstanceOf(Unauthorized)

      const loopbackOnly = makeAuthenticate({ clusterSecret: "public", nodeCredentialsFromLoopbackOnly: true })
      expect(yield* loopbackOnly(`Bearer ${nodeCredential("public", 2)}`, "::ffff:127.0.0.1")).toEqual({ kind: "node", node: 2 })
      const remote = yield* Effect.flip(loopbackOnly(`Bearer ${nodeCredential("public", 2)}`, "10.0.0.9"))
      expect(remote.message).toContain("clusterSecretFile")
      // Without a cluster secret no node credential is accepted at all.
      expect(yield* Effect.flip(makeAuthenticate({})(`Bearer ${nodeCredential("x", 2)}`, "127.0.0.1"))).toBeInstanceOf(Unauthorized)
    })
  )
})

describe("requests the API does not declare, and failures it cannot encode", () => {
  it.scopedLive("an unknown route is a 404 naming the method and path and pointing at /openapi.json; HEAD is answered as GET", () =>
    Effect.gen(function* () {
      const { url } = yield* serve({ auth: { adminTokens: ["s3cret-token"] } })
      for (const [method, path] of [["GET", "/v1/nope"], ["POST", "/v1/nope"], ["GET", "/"], ["GET", "/v1/vms/web/nope"]] as const) {
        const response = yield* raw(url, { method, path })
        expectInvalid(response, 404, [`${method} ${path}`, "/openapi.json"])
        expect(response.allow).toBeUndefined()
      }
      const head = yield* raw(url, { method: "HEAD", path: "/v1/health" })
      expect(head.status).toBe(200)
      expect(head.text).toBe("")
    })
  )

  it.scopedLive("a known path asked with a method it does not take is a 405 listing the methods it takes in Allow", () =>
    Effect.gen(function* () {
      const { url } = yield* serve({ auth: { adminTokens: ["s3cret-token"] } })
      const cases = [
        ["POST", "/v1/health", "GET, HEAD"],
        ["DELETE", "/v1/vms", "GET, HEAD, POST"],
        ["PUT", "/v1/vms/web", "GET, HEAD, PATCH, DELETE"],
        ["GET", "/v1/vms/web/start", "POST"],
        ["PATCH", "/v1/nodes/2", "PUT"],
        ["POST", "/openapi.json", "GET, HEAD"]
      ] as const
      for (const [method, path, allow] of cases) {
        const response = yield* raw(url, { method, path })
        expectInvalid(response, 405, [`${method} ${path}`, allow])
        expect(response.allow).toBe(allow)
      }
    })
  )

  it.scopedLive("a defect is answered 500 and logged with its cause; the server keeps serving; requests are logged when asked", () =>
    Effect.gen(function* () {
      const logs: Array<string> = []
      const capture = Logger.make(({ message, cause }) => void logs.push(`${String(message)} ${Cause.pretty(cause)}`))
      const { url } = yield* serve({ logRequests: true }, (plane) => ({ ...plane, listVms: () => Effect.die(new Error("boom")) })).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, capture))
      )
      const logged = (part: string) =>
        Effect.suspend(() => (logs.some((line) => line.includes(part)) ? Effect.void : Effect.fail(`nothing logged with ${part}`))).pipe(
          Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.upTo("5 seconds")))
        )

      const failed = yield* raw(url, { path: "/v1/vms" })
      expect(failed.status).toBe(500)
      yield* logged("GET /v1/vms failed unexpectedly")
      expect(logs.find((line) => line.includes("failed unexpectedly"))).toContain("boom")
      expect((yield* raw(url, { path: "/v1/health" })).status).toBe(200)
      yield* logged("API: GET /v1/health 200")
    })
  )
})
