import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Schema, Scope, Stream, TestClock } from "effect"
import { NodeId } from "../../src/domain/NodeId.js"
import { InlineConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { layerSimulated, SimulatedHypervisor } from "../../src/vm/SimulatedHypervisor.js"
import { VmBackend } from "../../src/vm/VmBackend.js"
import { vmName } from "./fixtures.js"

const node = Schema.decodeSync(NodeId)(4)
const web = vmName("web")
const spec = (name: string) => VmSpec.make({ name: vmName(name), source: InlineConfig.make({ module: "{ }" }) })

describe("SimulatedHypervisor", () => {
  it.scoped("start and stop take virtual time only; since comes from the Clock", () =>
    Effect.gen(function* () {
      const hv = new SimulatedHypervisor({ node, startDelay: "2 seconds", stopDelay: "1 second" })
      const vms = yield* hv.makeBackend
      yield* vms.prepare(spec("web"))
      const starting = yield* Effect.fork(vms.start(web))
      yield* TestClock.adjust("1999 millis")
      expect(hv.isRunning(web)).toBe(false)
      yield* TestClock.adjust("1 millis")
      const pid = yield* Fiber.join(starting)
      expect(pid).toBe(1000)
      expect(hv.runningVms()).toEqual([web])
      expect(yield* vms.status(web)).toEqual(expect.objectContaining({ _tag: "Running", pid, since: 2000, adopted: false }))
      expect(yield* vms.start(web)).toBe(pid)
      expect(hv.startCount(web)).toBe(1)
      const stopping = yield* Effect.fork(vms.stop(web, "5 seconds"))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(stopping)
      expect(hv.runningVms()).toEqual([])
      expect(yield* vms.status(web)).toEqual(expect.objectContaining({ _tag: "Absent" }))
    }))

  it.scoped("an injected start failure fails that start only", () =>
    Effect.gen(function* () {
      const hv = new SimulatedHypervisor({ node })
      const vms = yield* hv.makeBackend
      yield* vms.prepare(spec("web"))
      hv.failNextStart(web, "KVM not available")
      const error = yield* Effect.flip(vms.start(web))
      expect(error).toMatchObject({ _tag: "BackendFailed", subject: "web", node })
      expect(error.message).toContain("KVM not available")
      expect(hv.isRunning(web)).toBe(false)
      expect(yield* vms.start(web)).toBeGreaterThan(0)
      expect(hv.isRunning(web)).toBe(true)

      hv.failNextPrepare(vmName("db"))
      expect((yield* Effect.flip(vms.prepare(spec("db")))).message).toContain("injected build failure")
      expect((yield* Effect.flip(vms.start(vmName("db")))).message).toContain("is not prepared")
    }))

  it.scoped("an injected crash is an exit event with its code and leaves the VM exited", () =>
    Effect.gen(function* () {
      const hv = new SimulatedHypervisor({ node })
      const vms = yield* hv.makeBackend
      const events = yield* vms.subscribe
      yield* vms.prepare(spec("web"))
      yield* vms.start(web)
      expect(yield* hv.crash(web, 3)).toBe(true)
      expect(Option.getOrThrow(yield* Stream.runHead(events))).toMatchObject({ name: "web", process: "vm", exitCode: 3 })
      expect(yield* vms.status(web)).toMatchObject({ _tag: "Exited", exitCode: 3 })
      expect(hv.runningVms()).toEqual([])
      expect(yield* hv.crash(web)).toBe(false)
      // The restart policy starts it again: a new pid.
      const pid = yield* vms.start(web)
      expect(hv.pidOf(web)).toBe(pid)
      expect(hv.startCount(web)).toBe(2)
    }))

  it.effect("VMs outlive a daemon restart (adopted by the next backend) but not a power loss", () =>
    Effect.gen(function* () {
      const hv = new SimulatedHypervisor({ node })
      const first = yield* Scope.make()
      const before = yield* hv.makeBackend.pipe(Scope.extend(first))
      yield* before.prepare(spec("web"))
      const pid = yield* before.start(web)
      yield* Scope.close(first, Exit.void)

      const after = yield* Effect.scoped(
        Effect.gen(function* () {
          const backend = yield* VmBackend
          return yield* backend.list
        })
      ).pipe(Effect.provide(layerSimulated(hv)))
      expect(after).toEqual([{ name: web, state: expect.objectContaining({ _tag: "Running", pid, adopted: true }) }])
      expect(hv.startCount(web)).toBe(1)

      hv.powerLoss()
      const listed = yield* Effect.scoped(Effect.flatMap(hv.makeBackend, (b) => b.list))
      expect(listed.map((o) => o.state._tag)).toEqual(["Absent"])
    }))
})
