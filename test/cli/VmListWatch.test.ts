/**
 * `vm list --watch` keeps its own copy of the VMs current from the event stream (`VmListView.ts`):
 * desired-state changes and deletions are applied as they come, a VM whose record changed in more
 * than its event says is read alone, and the whole list is fetched again only after a resync.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Stream } from "effect"
import { ApiClient } from "../../src/api/Client.js"
import { watchVmList } from "../../src/cli/EventsCommand.js"
import type { FollowTarget } from "../../src/cli/EventFollow.js"
import { VmListView } from "../../src/cli/VmListView.js"
import type { ClusterEvent, EventBatch } from "../../src/domain/ClusterEvent.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { VmName } from "../../src/domain/VmName.js"
import { VmRecord, VmStatus } from "../../src/domain/VmStatus.js"
import { EventLog } from "../../src/events/EventLog.js"
import { serve, spec } from "../api/harness.js"
import { until } from "../support/SseClient.js"

const record = (name: string, fields: { revision?: number; desired?: "running" | "stopped"; node?: number; phase?: "stopped" | "running"; tier?: string } = {}) =>
  new VmRecord({
    spec: spec(name, fields.tier === undefined ? {} : { labels: { tier: fields.tier } }),
    desired: fields.desired ?? "stopped",
    ...(fields.node !== undefined ? { node: NodeId.make(fields.node) } : {}),
    status: new VmStatus({ phase: fields.phase ?? "stopped", since: 0, restarts: 0 }),
    revision: fields.revision ?? 1,
    createdAt: 0
  })

let index = 100
const batch = (...events: Array<ClusterEvent>): EventBatch => ({ index: ++index, term: 1, events: events as unknown as EventBatch["events"] })
const vm = (name: string) => VmName.make(name)
const names = (view: VmListView) => view.visible().map((r) => `${r.spec.name}:${r.desired}:${r.revision}`)

describe("VmListView", () => {
  it("applies desired-state changes and deletions itself, newer than its copy only", () => {
    const view = new VmListView({})
    view.reset([record("a", { revision: 3 }), record("b", { revision: 1 })])
    expect(view.apply(batch({ type: "vm.started", vm: vm("a"), revision: 4 }))).toBe(true)
    // An event its copy is already past (the list was read after it) changes nothing.
    expect(view.apply(batch({ type: "vm.stopped", vm: vm("a"), revision: 2 }))).toBe(false)
    expect(view.apply(batch({ type: "vm.deleted", vm: vm("b") }))).toBe(true)
    expect(names(view)).toEqual(["a:running:4"])
    expect(view.toRead()).toEqual([])
  })

  it("reads again a VM whose event does not carry its change, and only a read still current and not older", () => {
    const view = new VmListView({})
    view.reset([record("a", { revision: 2 })])
    view.apply(batch({ type: "vm.created", vm: vm("c"), revision: 1 }, { type: "vm.placed", vm: vm("c"), node: NodeId.make(1), revision: 1 }))
    view.apply(batch({ type: "vm.phase", vm: vm("a"), phase: "running", previous: "stopped", restarts: 0, revision: 3 }))
    // An event older than the copy asks for nothing.
    view.apply(batch({ type: "vm.placed", vm: vm("a"), node: NodeId.make(2), revision: 2 }))
    const reads = new Map(view.toRead())
    expect([...reads.keys()].sort()).toEqual(["a", "c"])

    // A read overtaken by a later event about the same VM is dropped; the later read counts.
    view.apply(batch({ type: "vm.status", vm: vm("c"), phase: "stopped", revision: 2 }))
    expect(view.settle(vm("c"), reads.get(vm("c"))!, record("c", { revision: 1 }))).toBe(false)
    const again = new Map(view.toRead()).get(vm("c"))!
    expect(view.settle(vm("c"), again, record("c", { revision: 2 }))).toBe(true)
    // A read older than what the stream already applied does not undo it.
    view.apply(batch({ type: "vm.started", vm: vm("a"), revision: 5 }))
    expect(view.settle(vm("a"), reads.get(vm("a"))!, record("a", { revision: 3, phase: "running" }))).toBe(false)
    expect(names(view)).toEqual(["a:running:5", "c:stopped:2"])

    // Deleted while a read was under way: the read's answer does not bring it back.
    view.apply(batch({ type: "vm.updated", vm: vm("c"), revision: 3 }))
    const late = new Map(view.toRead()).get(vm("c"))!
    view.apply(batch({ type: "vm.deleted", vm: vm("c") }))
    expect(view.settle(vm("c"), late, record("c", { revision: 3 }))).toBe(false)
    expect(names(view)).toEqual(["a:running:5"])
  })

  it("shows the query's page: filters on its copy, by name, after and limit", () => {
    const view = new VmListView({ label: [{ key: "tier", op: "eq", value: "web" }], after: vm("a"), limit: 2 })
    view.reset(["a", "b", "c", "d", "e"].map((name) => record(name, { tier: name === "c" ? "db" : "web" })))
    expect(view.visible().map((r) => r.spec.name)).toEqual(["b", "d"])
    view.apply(batch({ type: "vm.deleted", vm: vm("b") }))
    expect(view.visible().map((r) => r.spec.name)).toEqual(["d", "e"])
  })
})

/** A follow target over the API client, as the CLI makes one. */
const targetOf = (addr: string): FollowTarget => ({
  addr,
  open: (lastEventId) => Stream.unwrap(Effect.map(Effect.provide(ApiClient, ApiClient.layerFetch({ addr })), (client) => client.events(lastEventId)))
})

describe("vm list --watch against a real server", () => {
  it.scopedLive("lists once, then reads only the VMs the events name; a resync lists again", () =>
    Effect.gen(function* () {
      const log = new EventLog(100)
      const { addr, plane } = yield* serve({ events: { log, heartbeatMs: 60_000 } })
      const client = yield* Effect.provide(ApiClient, ApiClient.layerFetch({ addr }))
      for (const name of ["web", "db"]) yield* client.createVm(spec(name), { start: false })
      const view = new VmListView({})
      const fetchAll = client.listVms()
      view.reset(yield* fetchAll)
      const shown: Array<Array<string>> = []
      const count = (method: string) => plane.calls.filter((call) => call.method === method).length
      const lists = count("listVms")
      const fiber = yield* Effect.fork(
        watchVmList({
          targets: [targetOf(addr)],
          from: 2,
          view,
          fetchAll,
          read: (name) => client.getVm(name).pipe(Effect.catchIf((error) => error._tag === "VmNotFound", () => Effect.succeed(undefined))),
          show: (records) => Effect.sync(() => void shown.push(records.map((r) => `${r.spec.name}:${r.desired}`))),
          intervalMs: 50
        })
      )
      const last = () => shown[shown.length - 1]?.join(" ")

      // A start the stream says all of: applied as it comes, nothing read.
      const started = yield* client.startVm(vm("web"))
      log.publish(3, 1, 0, [{ type: "vm.started", vm: vm("web"), revision: started.revision }])
      yield* Effect.promise(() => until("web shown running", () => last() === "db:stopped web:running"))
      expect(count("getVm")).toBe(0)

      // A creation carries no spec: that one VM is read, the list is not.
      yield* client.createVm(spec("cache"))
      log.publish(4, 1, 0, [{ type: "vm.created", vm: vm("cache"), revision: 1 }])
      yield* Effect.promise(() => until("cache shown", () => last() === "cache:running db:stopped web:running"))
      expect(plane.calls.filter((call) => call.method === "getVm").map((call) => call.subject)).toEqual(["cache"])
      yield* client.deleteVm(vm("db"))
      log.publish(5, 1, 0, [{ type: "vm.deleted", vm: vm("db") }])
      yield* Effect.promise(() => until("db gone", () => last() === "cache:running web:running"))
      expect(count("listVms")).toBe(lists)

      // The node replaced its state (a snapshot): the stream says resync, the list is fetched again.
      yield* client.createVm(spec("late"), { start: false })
      log.reset(10)
      yield* Effect.promise(() => until("the list fetched again", () => last() === "cache:running late:stopped web:running"))
      expect(count("listVms")).toBe(lists + 1)
      yield* Effect.sleep(Duration.millis(100))
      yield* Fiber.interrupt(fiber)
    })
  )
})
