/**
 * A host that is not a Raft member (`HostAgent.ts`), over an in-memory control plane standing for
 * the members (two "servers" in front of it that can be made to fail or hang) and a simulated
 * hypervisor, on the TestClock: its registration, its mirror of the VMs placed on it, servers tried
 * in turn, and fencing from its heartbeats alone, counted from when each was SENT.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, TestClock } from "effect"
import { makeMemory } from "../../src/api/ControlPlaneMemory.js"
import type { ControlPlaneShape } from "../../src/api/ControlPlane.js"
import { Unavailable } from "../../src/domain/Errors.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { HostPort } from "../../src/domain/NodeInfo.js"
import { Resources } from "../../src/domain/Resources.js"
import { VmName } from "../../src/domain/VmName.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import * as HostAgent from "../../src/node/HostAgent.js"
import { layerSimulated, SimulatedHypervisor } from "../../src/vm/SimulatedHypervisor.js"

const host = NodeId.make(9)
const FencingMs = 2000
const IntervalMs = 100
const web = VmName.make("web")

type Mode = "up" | "down" | "hung"

/** The members behind two addresses, each of which can be made to refuse (down) or never answer (hung). */
const servers = () => {
  const plane = makeMemory({ node: host })
  const modes = new Map<string, Mode>([["a:1", "up"], ["b:1", "up"]])
  const asked = new Map<string, number>()
  const remote = (address: string): ControlPlaneShape => {
    const gate = <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.suspend((): Effect.Effect<A, E | Unavailable> => {
        asked.set(address, (asked.get(address) ?? 0) + 1)
        const mode = modes.get(address)
        return mode === "down"
          ? Effect.fail(new Unavailable({ subject: address, message: `${address} is down` }))
          : mode === "hung"
            ? Effect.never
            : effect
      })
    return {
      ...plane,
      listVms: (mode, query) => gate(plane.listVms(mode, query)),
      registerNode: (info) => gate(plane.registerNode(info)),
      heartbeat: (id, beat) => gate(plane.heartbeat(id, beat)),
      reportVmStatus: (name, node, status) => gate(plane.reportVmStatus(name, node, status))
    }
  }
  return { plane, modes, asked, remote, addresses: ["a:1", "b:1"] }
}

const advance = (ms: number, step = 50) =>
  Effect.gen(function* () {
    for (let left = ms; left > 0; left -= step) yield* TestClock.adjust(Math.min(step, left))
    yield* TestClock.adjust(0)
  })

const startHost = (s: ReturnType<typeof servers>, hv: SimulatedHypervisor) =>
  HostAgent.start({
    node: host,
    servers: s.addresses,
    remote: s.remote,
    advertise: HostPort.make("127.0.0.1:7009"),
    capacity: new Resources({ vcpus: 4, memoryMiB: 4096 }),
    labels: { rack: "r1" },
    fencingMs: FencingMs,
    intervalMs: IntervalMs
  }).pipe(Effect.provide(layerSimulated(hv)))

const createWeb = (s: ReturnType<typeof servers>) =>
  s.plane.createVm(new VmSpec({ name: web, source: new RunnerConfig({ path: "/nix/store/web-runner" }) }), { start: true })

describe("HostAgent", () => {
  it.scoped("registers, runs the VM placed on it and reports it; a VM deleted from the mirror is stopped and removed", () =>
    Effect.gen(function* () {
      const s = servers()
      const hv = new SimulatedHypervisor({ node: host })
      yield* createWeb(s)
      yield* startHost(s, hv)
      yield* advance(1000)
      const nodes = yield* s.plane.listNodes("linearizable", {})
      expect(nodes.find((n) => n.id === host)).toMatchObject({ address: "127.0.0.1:7009", capacity: { vcpus: 4, memoryMiB: 4096 }, labels: { rack: "r1" } })
      expect(hv.isRunning(web)).toBe(true)
      expect((yield* s.plane.getVm(web, "linearizable")).status).toMatchObject({ phase: "running", pid: hv.pidOf(web) })

      // Deleted on the servers: the next refresh of the mirror shows it gone, so it is an orphan.
      yield* s.plane.deleteVm(web, {})
      yield* advance(1000)
      expect(hv.isRunning(web)).toBe(false)
      expect(hv.isPrepared(web)).toBe(false)
      expect(hv.startCount(web)).toBe(1)
    }))

  it.scoped("a server that refuses or hangs is passed over: heartbeats go on through the other and the VM runs on past fencingMs", () =>
    Effect.gen(function* () {
      const s = servers()
      const hv = new SimulatedHypervisor({ node: host })
      yield* createWeb(s)
      yield* startHost(s, hv)
      yield* advance(1000)
      expect(hv.isRunning(web)).toBe(true)

      s.modes.set("a:1", "down")
      const before = s.asked.get("b:1") ?? 0
      yield* advance(3 * FencingMs)
      expect(hv.isRunning(web)).toBe(true)
      expect(s.asked.get("b:1")! - before).toBeGreaterThan(10)

      // Now b hangs (no answer at all, as a stopped process) and a is back.
      s.modes.set("a:1", "up")
      s.modes.set("b:1", "hung")
      yield* advance(3 * FencingMs)
      expect(hv.isRunning(web)).toBe(true)
      expect(hv.startCount(web)).toBe(1)
    }))

  it.scoped("without an answered heartbeat for fencingMs the host stops its VMs, not before; starts nothing meanwhile; runs them again once answered", () =>
    Effect.gen(function* () {
      const s = servers()
      const hv = new SimulatedHypervisor({ node: host })
      yield* createWeb(s)
      yield* startHost(s, hv)
      yield* advance(1000)
      expect(hv.isRunning(web)).toBe(true)

      s.modes.set("a:1", "hung")
      s.modes.set("b:1", "hung")
      yield* advance(FencingMs / 2)
      expect(hv.isRunning(web)).toBe(true)
      yield* advance(FencingMs)
      expect(hv.isRunning(web)).toBe(false)
      yield* advance(2 * FencingMs)
      expect(hv.startCount(web)).toBe(1)

      s.modes.set("a:1", "up")
      s.modes.set("b:1", "up")
      yield* advance(2000)
      expect(hv.isRunning(web)).toBe(true)
      expect(hv.startCount(web)).toBe(2)
    }))

  it.scoped("contact is the SEND time of the newest answered heartbeat, not the time the answer came", () =>
    Effect.gen(function* () {
      const s = servers()
      const answerAfterMs = 1500
      const slow = (address: string): ControlPlaneShape => {
        const plane = s.remote(address)
        return { ...plane, heartbeat: (id, beat) => Effect.delay(plane.heartbeat(id, beat), answerAfterMs) }
      }
      const beats = yield* HostAgent.heartbeats({
        node: host,
        servers: HostAgent.makeServers(host, s.addresses, slow),
        remote: slow,
        beat: {},
        periodMs: 10_000,
        timeoutMs: FencingMs,
        unknown: () => {}
      })
      yield* advance(answerAfterMs - 100)
      expect(yield* beats.contact).toBeUndefined()
      yield* advance(200)
      // Answered at 1,500 ms; sent at 0.
      expect(yield* beats.contact).toBe(0)
    }))

  it.scoped("a heartbeat answered after the host's fencing timeout proves nothing: it is given up", () =>
    Effect.gen(function* () {
      const s = servers()
      const late = (address: string): ControlPlaneShape => {
        const plane = s.remote(address)
        return { ...plane, heartbeat: (id, beat) => Effect.delay(plane.heartbeat(id, beat), FencingMs + 500) }
      }
      const beats = yield* HostAgent.heartbeats({
        node: host,
        servers: HostAgent.makeServers(host, s.addresses, late),
        remote: late,
        beat: {},
        periodMs: 10_000,
        timeoutMs: FencingMs,
        unknown: () => {}
      })
      yield* advance(FencingMs + 1000)
      expect(yield* beats.contact).toBeUndefined()
    }))

  it.scoped("the mirror keeps the view of the read started last: an earlier read answered later is dropped", () =>
    Effect.gen(function* () {
      const s = servers()
      yield* createWeb(s)
      const answers: Array<Deferred.Deferred<void>> = []
      const held: HostAgent.Servers = {
        current: () => "a:1",
        suspect: () => {},
        call: (f) =>
          Effect.gen(function* () {
            const gate = yield* Deferred.make<void>()
            answers.push(gate)
            // The view at the time of the read, handed over when the test releases it.
            const view = yield* f(s.plane)
            yield* Deferred.await(gate)
            return view
          }) as never
      }
      const m = HostAgent.mirror(host, held)
      const older = yield* Effect.fork(m.refresh) // reads: web placed here
      yield* TestClock.adjust(0)
      yield* s.plane.deleteVm(web, {})
      const newer = yield* Effect.fork(m.refresh) // reads: nothing here
      yield* TestClock.adjust(0)
      expect(answers).toHaveLength(2)
      yield* Deferred.succeed(answers[1]!, undefined)
      yield* Fiber.join(newer)
      expect([...m.state().vms.keys()]).toEqual([])
      yield* Deferred.succeed(answers[0]!, undefined)
      yield* Fiber.join(older)
      expect([...m.state().vms.keys()]).toEqual([])
    }))
})
