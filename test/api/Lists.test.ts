/**
 * `GET /v1/vms` and `GET /v1/nodes` page and filter on the server; `POST /v1/vms` takes a spec with
 * only `name` and `source`, the rest from the same defaults as the CLI, and starts it on request.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { ApiClient } from "../../src/api/Client.js"
import { HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { Resources } from "../../src/domain/Resources.js"
import { StartOnCreate, VmSpecDefaults } from "../../src/domain/VmSpec.js"
import { nodeId, raw, serve, spec, vmName } from "./harness.js"

const clientOf = (addr: string) => Effect.provide(ApiClient, ApiClient.layerFetch({ addr }))
const names = (vms: ReadonlyArray<{ readonly spec: { readonly name: string } }>) => vms.map((vm) => vm.spec.name)

describe("GET /v1/vms pages and filters", () => {
  it.scopedLive("pages in name order with limit and after; filters by node, phase and labels", () =>
    Effect.gen(function* () {
      const { addr, url, plane } = yield* serve()
      const client = yield* clientOf(addr)
      // Created out of order: the pages come by name.
      for (const [name, tier] of [["vm-d", "web"], ["vm-a", "db"], ["vm-c", "web"], ["vm-e", "db"], ["vm-b", "web"]] as const) {
        yield* client.createVm(spec(name, { labels: { tier, ...(name === "vm-a" ? { zone: "z1" } : {}) } }))
      }
      yield* client.startVm(vmName("vm-c"))

      expect(names(yield* client.listVms())).toEqual(["vm-a", "vm-b", "vm-c", "vm-d", "vm-e"])
      expect(names(yield* client.listVms({ limit: 2 }))).toEqual(["vm-a", "vm-b"])
      expect(names(yield* client.listVms({ limit: 2, after: vmName("vm-b") }))).toEqual(["vm-c", "vm-d"])
      expect(names(yield* client.listVms({ limit: 2, after: vmName("vm-d") }))).toEqual(["vm-e"])
      // The cursor need not exist any more (a VM deleted between pages).
      expect(names(yield* client.listVms({ after: vmName("vm-bb") }))).toEqual(["vm-c", "vm-d", "vm-e"])

      expect(names(yield* client.listVms({ phase: "running" }))).toEqual(["vm-c"])
      expect(names(yield* client.listVms({ node: nodeId(1), phase: "stopped", limit: 2 }))).toEqual(["vm-a", "vm-b"])
      expect(names(yield* client.listVms({ node: nodeId(2) }))).toEqual([])
      const raw1 = yield* raw(url, { path: "/v1/vms?label=tier%3Dweb&label=tier!%3Ddb&limit=2&after=vm-b" })
      expect(raw1.status).toBe(200)
      expect(names(raw1.json as Array<{ spec: { name: string } }>)).toEqual(["vm-c", "vm-d"])
      expect(names((yield* raw(url, { path: "/v1/vms?label=zone=z1" })).json as Array<{ spec: { name: string } }>)).toEqual(["vm-a"])
      expect(names((yield* raw(url, { path: "/v1/vms?label=tier!=web" })).json as Array<{ spec: { name: string } }>)).toEqual(["vm-a", "vm-e"])
      expect(plane.calls.filter((c) => c.method === "listVms").every((c) => c.read === "linearizable")).toBe(true)
    })
  )

  it.scopedLive("a bad limit, cursor, phase or label selector is 400 BLX_INVALID_ARGUMENT naming it", () =>
    Effect.gen(function* () {
      const { url } = yield* serve()
      for (const [query, field] of [
        ["limit=0", "limit"],
        ["limit=ten", "limit"],
        ["limit=100001", "limit"],
        ["after=Not_A_Name", "after"],
        ["phase=sleeping", "phase"],
        ["node=0", "node"],
        ["label=tier", "label"],
        ["label=bad%20key=x", "label"]
      ] as const) {
        const answer = yield* raw(url, { path: `/v1/vms?${query}` })
        expect(answer.status, query).toBe(400)
        const error = answer.json as { code: string; message: string }
        expect(error.code).toBe("BLX_INVALID_ARGUMENT")
        expect(error.message, query).toContain(field)
      }
      expect((yield* raw(url, { path: "/v1/vms?label=tier" })).json).toMatchObject({ message: expect.stringContaining("KEY=VALUE or KEY!=VALUE") })
    })
  )
})

describe("GET /v1/nodes pages and filters", () => {
  it.scopedLive("by id, with limit and after; by state, health and labels", () =>
    Effect.gen(function* () {
      const { addr } = yield* serve()
      const client = yield* clientOf(addr)
      for (const id of [5, 3, 2, 4]) {
        yield* client.registerNode(
          new NodeInfo({
            id: nodeId(id),
            address: HostPort.make(`127.0.0.1:${7000 + id}`),
            capacity: new Resources({ vcpus: 4, memoryMiB: 4096 }),
            labels: { zone: id % 2 === 0 ? "even" : "odd" },
            state: "active",
            health: id === 5 ? "down" : "up"
          })
        )
      }
      yield* client.cordon(nodeId(3))
      const ids = (nodes: ReadonlyArray<NodeInfo>) => nodes.map((n) => n.id)
      expect(ids(yield* client.listNodes())).toEqual([1, 2, 3, 4, 5])
      expect(ids(yield* client.listNodes({ limit: 2, after: nodeId(2) }))).toEqual([3, 4])
      expect(ids(yield* client.listNodes({ state: "cordoned" }))).toEqual([3])
      expect(ids(yield* client.listNodes({ health: "down" }))).toEqual([5])
      expect(ids(yield* client.listNodes({ label: [] }))).toEqual([1, 2, 3, 4, 5])
    })
  )
})

describe("POST /v1/vms takes the CLI's defaults", () => {
  it.scopedLive("only name and source are required; the rest are VmSpecDefaults; it starts unless start: false", () =>
    Effect.gen(function* () {
      const { url } = yield* serve()
      const created = yield* raw(url, {
        method: "POST",
        path: "/v1/vms",
        body: JSON.stringify({ spec: { name: "web", source: { _tag: "Runner", path: "/nix/store/x-web" } } })
      })
      expect(created.status).toBe(201)
      expect(StartOnCreate).toBe(true)
      expect(created.json).toMatchObject({
        desired: "running",
        spec: { name: "web", vcpus: VmSpecDefaults.vcpus, memoryMiB: VmSpecDefaults.memoryMiB, labels: {}, constraints: [], restartPolicy: VmSpecDefaults.restartPolicy }
      })
      const declared = yield* raw(url, {
        method: "POST",
        path: "/v1/vms",
        body: JSON.stringify({ spec: { name: "db", source: { _tag: "Runner", path: "/nix/store/x-db" }, memoryMiB: 2048 }, start: false })
      })
      expect(declared.status).toBe(201)
      expect(declared.json).toMatchObject({ desired: "stopped", spec: { name: "db", vcpus: 1, memoryMiB: 2048 } })
      const notBoolean = yield* raw(url, { method: "POST", path: "/v1/vms", body: JSON.stringify({ spec: { name: "c", source: { _tag: "Runner", path: "/x" } }, start: "no" }) })
      expect(notBoolean.status).toBe(400)
      expect((notBoolean.json as { message: string }).message).toContain("start")

      // Still strict: a typo is an error, and a given field is still checked.
      const typo = yield* raw(url, { method: "POST", path: "/v1/vms", body: JSON.stringify({ spec: { name: "a", source: { _tag: "Runner", path: "/x" }, vcpu: 2 } }) })
      expect(typo.status).toBe(400)
      expect((typo.json as { message: string }).message).toContain("vcpu")
      const bad = yield* raw(url, { method: "POST", path: "/v1/vms", body: JSON.stringify({ spec: { name: "a", source: { _tag: "Runner", path: "/x" }, vcpus: 0 } }) })
      expect(bad.status).toBe(400)
      expect((bad.json as { message: string }).message).toContain("spec.vcpus")
      const missing = yield* raw(url, { method: "POST", path: "/v1/vms", body: JSON.stringify({ spec: { name: "a" } }) })
      expect(missing.status).toBe(400)
      expect((missing.json as { message: string }).message).toContain("spec.source")
    })
  )

  it.scopedLive("the client sends start as asked (a follower forwarding a --no-start create keeps it stopped)", () =>
    Effect.gen(function* () {
      const { addr } = yield* serve()
      const client = yield* clientOf(addr)
      expect((yield* client.createVm(spec("started"))).desired).toBe("running")
      expect((yield* client.createVm(spec("declared"), { start: false })).desired).toBe("stopped")
      expect((yield* client.createVm(spec("asked"), { start: true })).desired).toBe("running")
    })
  )
})
