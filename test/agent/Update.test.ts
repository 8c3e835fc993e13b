import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as C from "../../src/domain/Command.js"
import { RunnerConfig } from "../../src/domain/VmSpec.js"
import { SimulatedHypervisor } from "../../src/vm/SimulatedHypervisor.js"
import { advance, FakeCluster, IntervalMs, makeHarness, self, vm } from "./harness.js"

const web = vm("web")

/** Node 1 with `web` created and started. */
const running = () => {
  const cluster = new FakeCluster()
  cluster.register(1)
  cluster.create("web")
  cluster.start("web")
  return cluster
}

const update = (cluster: FakeCluster, path: string) =>
  cluster.apply(new C.UpdateVm({ name: web, source: new RunnerConfig({ path }) })).vm!

describe("Agent: vm update (microvm -u)", () => {
  it.scoped("builds the new generation while the old runner keeps running, showing progress, then restarts onto it", () =>
    Effect.gen(function* () {
      const cluster = running()
      const hv = new SimulatedHypervisor({ node: self, prepareDelay: "5 seconds" })
      const h = yield* makeHarness({ cluster, hv })
      yield* advance(8 * IntervalMs)
      const oldPid = hv.pidOf(web)!
      expect(cluster.vm("web")!.status).toMatchObject({ phase: "running", pid: oldPid, generation: 0 })

      expect(update(cluster, "/runners/web-2").generation).toBe(1)
      yield* advance(3 * IntervalMs)
      // Mid-build: the old runner still runs, and the status shows the build and its newest line.
      expect(hv.pidOf(web)).toBe(oldPid)
      const building = cluster.vm("web")!.status
      expect(building).toMatchObject({ phase: "running", pid: oldPid, build: { state: "building", generation: 1 } })
      expect(building.build!.lastLine).toMatch(/^building web: step \d of 5$/)

      yield* advance(5 * IntervalMs)
      const newPid = hv.pidOf(web)!
      expect(newPid).not.toBe(oldPid)
      expect((hv.runningSpec(web)!.source as RunnerConfig).path).toBe("/runners/web-2")
      const done = cluster.vm("web")!.status
      expect(done).toMatchObject({ phase: "running", pid: newPid, generation: 1, restarts: 0 })
      expect(done.build).toBeUndefined()
      expect(done.lastError).toBeUndefined()
      // An update is not a crash: nothing counts as a restart.
      expect(h.reports.some((r) => r.status.phase === "failed")).toBe(false)
    }))

  it.scoped("a failed build leaves the running VM untouched and reports the error; a new update is tried", () =>
    Effect.gen(function* () {
      const cluster = running()
      const hv = new SimulatedHypervisor({ node: self })
      yield* makeHarness({ cluster, hv })
      yield* advance(2 * IntervalMs)
      const oldPid = hv.pidOf(web)!

      hv.failNextPrepare(web, "error: attribute 'microvm' missing")
      update(cluster, "/runners/broken")
      yield* advance(5 * IntervalMs)
      expect(hv.pidOf(web)).toBe(oldPid)
      expect(hv.startCount(web)).toBe(1)
      expect((hv.runningSpec(web)!.source as RunnerConfig).path).toBe("/runners/web")
      const status = cluster.vm("web")!.status
      expect(status).toMatchObject({ phase: "running", pid: oldPid, generation: 0, build: { state: "failed", generation: 1 } })
      expect(status.lastError).toContain("update to spec generation 1 failed")
      expect(status.lastError).toContain("attribute 'microvm' missing")

      // Not retried in a loop: the same generation is not built again.
      yield* advance(10 * IntervalMs)
      expect(hv.pidOf(web)).toBe(oldPid)

      // The same source again is a new attempt (a new generation), which succeeds this time.
      expect(update(cluster, "/runners/broken").generation).toBe(2)
      yield* advance(3 * IntervalMs)
      expect(hv.pidOf(web)).not.toBe(oldPid)
      expect(cluster.vm("web")!.status).toMatchObject({ phase: "running", generation: 2 })
      expect(cluster.vm("web")!.status.build).toBeUndefined()
    }))

  it.scoped("a restart-policy change alone does not restart the VM", () =>
    Effect.gen(function* () {
      const cluster = running()
      const hv = new SimulatedHypervisor({ node: self })
      yield* makeHarness({ cluster, hv })
      yield* advance(2 * IntervalMs)
      const pid = hv.pidOf(web)
      expect(cluster.apply(new C.UpdateVm({ name: web, restartPolicy: "always" })).vm!.generation ?? 0).toBe(0)
      yield* advance(3 * IntervalMs)
      expect(hv.pidOf(web)).toBe(pid)
      expect(hv.startCount(web)).toBe(1)
    }))
})
