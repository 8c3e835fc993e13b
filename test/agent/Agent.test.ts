import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Exit, Logger, Scope, TestClock } from "effect"
import { backoffMs, type HostFence, shouldRestart, SinglyForMs } from "../../src/agent/Agent.js"
import { ClusterVersionTooLow, Unavailable } from "../../src/domain/Errors.js"
import { SimulatedHypervisor } from "../../src/vm/SimulatedHypervisor.js"
import {
  advance,
  FakeCluster,
  FencingMs,
  IntervalMs,
  makeHarness,
  MemoryFence,
  phases,
  Quorum,
  self,
  settle,
  spec,
  vm
} from "./harness.js"

const web = vm("web")

/** A cluster of node 1 only, with `web` created (placed on node 1) and, unless told, started. */
const oneNode = (policy: "always" | "on-failure" | "never" = "on-failure", start = true) => {
  const cluster = new FakeCluster()
  cluster.register(1)
  cluster.create("web", policy)
  if (start) cluster.start("web")
  return cluster
}

describe("Agent: desired state", () => {
  it.scoped("starts a VM placed here, reports starting then running, stops it, and removes it when deleted", () =>
    Effect.gen(function* () {
      const cluster = oneNode("on-failure", false)
      const h = yield* makeHarness({ cluster })
      expect(cluster.vm("web")?.node).toBe(self)
      yield* advance(2 * IntervalMs)
      expect(h.hv.startCount(web)).toBe(0) // desired stopped: nothing to do
      expect(h.reports).toEqual([])

      cluster.start("web")
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(true)
      expect(h.hv.startCount(web)).toBe(1)
      expect(phases(h, "web")).toEqual(["starting", "running"])
      const running = cluster.vm("web")!.status
      expect(running).toMatchObject({ phase: "running", pid: h.hv.pidOf(web), restarts: 0 })

      // Nothing changes: nothing is reported again.
      yield* advance(3 * IntervalMs)
      expect(phases(h, "web")).toEqual(["starting", "running"])

      cluster.stop("web")
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(false)
      expect(h.hv.isPrepared(web)).toBe(true) // stop keeps it managed
      expect(phases(h, "web")).toEqual(["starting", "running", "stopped"])
      expect(cluster.vm("web")!.status.phase).toBe("stopped")

      cluster.start("web")
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(true)
      expect(h.hv.startCount(web)).toBe(2)

      cluster.delete("web")
      const reported = h.reports.length
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(false)
      expect(h.hv.isPrepared(web)).toBe(false) // state directory removed
      expect(h.reports.length).toBe(reported) // nothing reported for a deleted VM
    }))

  it.scoped("never starts a VM placed on another node", () =>
    Effect.gen(function* () {
      const cluster = new FakeCluster()
      cluster.register(2)
      cluster.create("web")
      cluster.start("web")
      expect(cluster.vm("web")?.node).toBe(2)
      const h = yield* makeHarness({ cluster })
      yield* advance(5 * IntervalMs)
      expect(h.hv.startCount(web)).toBe(0)
      expect(h.hv.isPrepared(web)).toBe(false)
      expect(h.reports).toEqual([])
    }))

  it.scoped("a VM moving off this node (drained) is stopped and reported released; once moved, its state is removed", () =>
    Effect.gen(function* () {
      const cluster = oneNode()
      const h = yield* makeHarness({ cluster })
      expect(h.hv.isRunning(web)).toBe(true)
      cluster.register(2)
      cluster.drain(1)
      // It stays placed here until this node has stopped it for the move.
      const moving = cluster.vm("web")!
      expect([moving.node, moving.desired]).toEqual([1, "running"])
      expect(moving.moving).toBeDefined()
      const reported = h.reports.length
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(false)
      expect(h.reports.slice(reported).map((r) => [r.status.phase, r.status.released])).toEqual([["stopped", moving.moving]])
      expect(cluster.vm("web")?.node).toBe(2)
      // Moved: its state here is removed as an orphan's, with nothing more reported, and never started again.
      yield* advance(IntervalMs)
      expect(h.hv.isPrepared(web)).toBe(false)
      expect(h.reports.length).toBe(reported + 1)
      expect(h.hv.startCount(web)).toBe(1)
    }))

  it.scoped("a VM moving off this node is not started, nor restarted after an exit, even if its owner starts it", () =>
    Effect.gen(function* () {
      const cluster = new FakeCluster()
      cluster.register(1)
      cluster.create("web", "always")
      cluster.start("web")
      const h = yield* makeHarness({ cluster, confirmFresh: Effect.void })
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(true)
      // Drained with nowhere else to go: the move waits for this node's report, then the VM is pending.
      yield* h.hv.crash(web, 1)
      cluster.drain(1)
      cluster.start("web")
      yield* advance(5 * IntervalMs)
      expect(h.hv.startCount(web)).toBe(1)
      expect(h.hv.isRunning(web)).toBe(false)
      expect(cluster.vm("web")?.node).toBeUndefined()
    }))
})

describe("Agent: restart policy", () => {
  it("backoff doubles from the initial delay up to the cap; the policies' exit rules", () => {
    const b = { initialMs: 1000, maxMs: 8000 }
    expect([1, 2, 3, 4, 5, 50].map((n) => backoffMs(n, b))).toEqual([1000, 2000, 4000, 8000, 8000, 8000])
    expect(shouldRestart("always", { exitCode: 0, signal: undefined })).toBe(true)
    expect(shouldRestart("on-failure", { exitCode: 0, signal: undefined })).toBe(false)
    expect(shouldRestart("on-failure", { exitCode: 3, signal: undefined })).toBe(true)
    expect(shouldRestart("on-failure", { exitCode: undefined, signal: "SIGKILL" })).toBe(true)
    expect(shouldRestart("on-failure", { exitCode: undefined, signal: undefined })).toBe(true)
    expect(shouldRestart("never", { exitCode: 3, signal: undefined })).toBe(false)
  })

  it.scoped("always: restarts after a crash with exponential backoff, counting restarts", () =>
    Effect.gen(function* () {
      const h = yield* makeHarness({ cluster: oneNode("always") })
      expect(h.hv.startCount(web)).toBe(1)

      yield* h.hv.crash(web, 1)
      yield* settle // the exit event wakes the agent at once
      expect(h.cluster.vm("web")!.status).toMatchObject({ phase: "starting", exitCode: 1, restarts: 1 })
      expect(h.cluster.vm("web")!.status.lastError).toContain("exited with code 1")
      yield* advance(IntervalMs - 100)
      expect(h.hv.isRunning(web)).toBe(false) // still backing off (1 s)
      yield* advance(100)
      expect(h.hv.isRunning(web)).toBe(true)
      expect(h.hv.startCount(web)).toBe(2)
      expect(h.cluster.vm("web")!.status).toMatchObject({ phase: "running", pid: h.hv.pidOf(web), restarts: 1 })
      expect(h.cluster.vm("web")!.status.exitCode).toBeUndefined()

      // A second crash soon after: the backoff doubles (2 s).
      yield* h.hv.crash(web, 0) // `always` restarts even after a clean exit
      yield* settle
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(false)
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(true)
      expect(h.hv.startCount(web)).toBe(3)
      expect(h.cluster.vm("web")!.status).toMatchObject({ phase: "running", restarts: 2 })
    }))

  it.scoped("on-failure: restarts after exit code 3, not after exit code 0", () =>
    Effect.gen(function* () {
      const h = yield* makeHarness({ cluster: oneNode("on-failure") })
      yield* h.hv.crash(web, 3)
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(true)
      expect(h.hv.startCount(web)).toBe(2)
      expect(h.cluster.vm("web")!.status).toMatchObject({ phase: "running", restarts: 1 })

      yield* h.hv.crash(web, 0)
      yield* advance(20 * IntervalMs)
      expect(h.hv.isRunning(web)).toBe(false)
      expect(h.hv.startCount(web)).toBe(2)
      const status = h.cluster.vm("web")!.status
      expect(status).toMatchObject({ phase: "failed", exitCode: 0, restarts: 1 })
      expect(status.lastError).toContain("exited with code 0")
      expect(phases(h, "web").filter((p) => p === "failed")).toHaveLength(1)

      // Stop then start again: the agent tries again.
      h.cluster.stop("web")
      yield* advance(IntervalMs)
      h.cluster.start("web")
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(true)
      expect(h.hv.startCount(web)).toBe(3)
    }))

  it.scoped("never: a crash is reported failed with its exit code, and not restarted", () =>
    Effect.gen(function* () {
      const h = yield* makeHarness({ cluster: oneNode("never") })
      yield* h.hv.crash(web, 7)
      yield* advance(20 * IntervalMs)
      expect(h.hv.startCount(web)).toBe(1)
      expect(h.hv.isRunning(web)).toBe(false)
      expect(h.cluster.vm("web")!.status).toMatchObject({ phase: "failed", exitCode: 7, restarts: 0 })
      expect(phases(h, "web")).toEqual(["starting", "running", "failed"])
    }))

  it.scoped("a failed VM starts again on a start, or on a new placement here; a restarted daemon leaves it down", () =>
    Effect.gen(function* () {
      const cluster = oneNode("never")
      const hv = new SimulatedHypervisor({ node: self })
      const first = yield* Scope.make()
      yield* makeHarness({ cluster, hv }).pipe(Scope.extend(first))
      yield* hv.crash(web, 7)
      yield* advance(3 * IntervalMs)
      expect(cluster.vm("web")!.status.phase).toBe("failed")

      // The daemon restarts: the replicated status, not its lost memory, keeps the VM down.
      yield* Scope.close(first, Exit.void)
      const h = yield* makeHarness({ cluster, hv })
      yield* advance(3 * IntervalMs)
      expect(hv.startCount(web)).toBe(1)

      // `vm start` again (no stop first) is the retry.
      cluster.start("web")
      yield* advance(IntervalMs)
      expect(hv.isRunning(web)).toBe(true)
      expect(hv.startCount(web)).toBe(2)

      // Failed again. The node is marked down (web goes pending: no other node can host it) and up
      // again before the agent's next round: web is placed here anew, and is started.
      yield* hv.crash(web, 7)
      yield* advance(3 * IntervalMs)
      expect(cluster.vm("web")!.status.phase).toBe("failed")
      cluster.down(1)
      cluster.up(1)
      expect(cluster.vm("web")).toMatchObject({ node: 1, desired: "running", status: { phase: "stopped" } })
      yield* advance(IntervalMs)
      expect(hv.isRunning(web)).toBe(true)
      expect(hv.startCount(web)).toBe(3)
      expect(phases(h, "web").slice(-2)).toEqual(["starting", "running"])
    }))

  it.scoped("a runner gone without an exit event (host power loss) counts as a failure", () =>
    Effect.gen(function* () {
      const h = yield* makeHarness({ cluster: oneNode("on-failure") })
      h.hv.powerLoss()
      yield* advance(IntervalMs) // noticed by the next round
      expect(h.cluster.vm("web")!.status).toMatchObject({ phase: "starting", restarts: 1 })
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(true)
      expect(h.hv.startCount(web)).toBe(2)
    }))

  it.scoped("a start failure is reported with lastError and retried with backoff", () =>
    Effect.gen(function* () {
      const hv = new SimulatedHypervisor({ node: self })
      hv.failNextStart(web, "KVM not available")
      hv.failNextStart(web, "KVM not available")
      const h = yield* makeHarness({ cluster: oneNode(), hv }) // first attempt at t=0 fails
      expect(hv.isRunning(web)).toBe(false)
      const status = h.cluster.vm("web")!.status
      expect(status.phase).toBe("starting")
      expect(status.lastError).toContain("KVM not available")

      yield* advance(IntervalMs) // t=1000: second attempt fails, next in 2 s
      expect(hv.isRunning(web)).toBe(false)
      yield* advance(IntervalMs) // t=2000: still backing off
      expect(hv.isRunning(web)).toBe(false)
      yield* advance(IntervalMs) // t=3000: third attempt succeeds
      expect(hv.isRunning(web)).toBe(true)
      expect(h.cluster.vm("web")!.status).toMatchObject({ phase: "running", pid: hv.pidOf(web), restarts: 0 })
      expect(h.cluster.vm("web")!.status.lastError).toBeUndefined()
      // The identical failure is reported once, not once per attempt.
      expect(h.reports.filter((r) => r.status.lastError !== undefined)).toHaveLength(1)
      expect(phases(h, "web")).toEqual(["starting", "starting", "running"])
    }))
})

describe("Agent: daemon restart", () => {
  it.scoped("adopts a runner still running from the previous daemon instead of starting a second copy", () =>
    Effect.gen(function* () {
      const cluster = oneNode()
      const hv = new SimulatedHypervisor({ node: self })
      // The previous daemon started `web` (and `old`, since deleted) then died; the runners live on.
      const previous = yield* Scope.make()
      const before = yield* hv.makeBackend.pipe(Scope.extend(previous))
      yield* before.prepare(spec("web"))
      const pid = yield* before.start(web)
      yield* before.prepare(spec("old"))
      yield* before.start(vm("old"))
      yield* Scope.close(previous, Exit.void)

      const h = yield* makeHarness({ cluster, hv })
      yield* advance(3 * IntervalMs)
      expect(hv.startCount(web)).toBe(1)
      expect(hv.pidOf(web)).toBe(pid)
      expect(cluster.vm("web")!.status).toMatchObject({ phase: "running", pid })
      expect(phases(h, "web")).toEqual(["running"])
      // The orphan is stopped and its state removed.
      expect(hv.isRunning(vm("old"))).toBe(false)
      expect(hv.isPrepared(vm("old"))).toBe(false)

      // The adopted runner's exits are still watched.
      yield* hv.crash(web, 2)
      yield* advance(IntervalMs)
      expect(hv.startCount(web)).toBe(2)
      expect(cluster.vm("web")!.status).toMatchObject({ phase: "running", restarts: 1 })
    }))

  it.scoped("removes nothing and starts nothing until the state is confirmed current", () =>
    Effect.gen(function* () {
      const hv = new SimulatedHypervisor({ node: self })
      const previous = yield* Scope.make()
      const before = yield* hv.makeBackend.pipe(Scope.extend(previous))
      yield* before.prepare(spec("web"))
      yield* before.start(web)
      yield* Scope.close(previous, Exit.void)

      // The restarted daemon has not re-applied its log yet: its state is empty.
      const cluster = new FakeCluster()
      let current = false
      yield* makeHarness({
        cluster,
        hv,
        confirmFresh: Effect.suspend(() =>
          current ? Effect.void : Effect.fail(new Unavailable({ message: "no leader known" }))
        )
      })
      yield* advance(2 * IntervalMs)
      expect(hv.isRunning(web)).toBe(true) // not mistaken for an orphan
      expect(hv.isPrepared(web)).toBe(true)

      // The log is applied (web is placed here and running) and the read is confirmed.
      cluster.register(1)
      cluster.create("web")
      cluster.start("web")
      current = true
      yield* advance(IntervalMs)
      expect(hv.startCount(web)).toBe(1)
      expect(cluster.vm("web")!.status).toMatchObject({ phase: "running", pid: hv.pidOf(web) })
    }))
})

describe("Agent: fencing", () => {
  it.scoped("stops every runner after fencingMs without quorum contact, starts nothing, and resumes when contact is back", () =>
    Effect.gen(function* () {
      const cluster = oneNode()
      cluster.create("db")
      cluster.start("db")
      const quorum = new Quorum()
      const h = yield* makeHarness({ cluster, quorum })
      expect(h.hv.runningVms()).toEqual([vm("db"), web])

      yield* advance(500)
      yield* quorum.lose // contact frozen at t=500
      yield* TestClock.adjust(FencingMs) // t=3500: exactly fencingMs, not longer
      yield* settle
      expect(h.hv.runningVms()).toEqual([vm("db"), web])
      expect(yield* h.agent.fenced).toBe(false)
      yield* TestClock.adjust(1) // t=3501: the agent woke at the deadline, not at its next interval
      yield* settle
      expect(h.hv.runningVms()).toEqual([])
      expect(yield* h.agent.fenced).toBe(true)
      expect(cluster.vm("web")!.status.phase).toBe("stopped")
      expect(cluster.vm("web")!.status.lastError).toContain("fencing")

      // Nothing starts while fenced: neither a new VM nor the fenced ones, nor after a crash.
      cluster.create("new")
      cluster.start("new")
      yield* advance(10 * IntervalMs)
      expect(h.hv.runningVms()).toEqual([])
      expect(h.hv.startCount(vm("new"))).toBe(0)

      quorum.regain()
      yield* advance(IntervalMs)
      expect(yield* h.agent.fenced).toBe(false)
      expect(h.hv.runningVms()).toEqual([vm("db"), vm("new"), web])
      // Fencing is not a crash: no restart is counted.
      expect(cluster.vm("web")!.status).toMatchObject({ phase: "running", restarts: 0 })
      expect(cluster.vm("web")!.status.lastError).toBeUndefined()
    }))

  it.scoped("fences on time while a long build holds the reconcile round, and does not start the built VM", () =>
    Effect.gen(function* () {
      const cluster = oneNode()
      cluster.create("zeta") // sorted after web: its slow build starts once web runs
      cluster.start("zeta")
      const quorum = new Quorum()
      const h = yield* makeHarness({
        cluster,
        quorum,
        wrap: (backend) => ({
          ...backend,
          prepare: (s, onProgress) =>
            s.name === "zeta" ? Effect.zipRight(Effect.sleep("60 seconds"), backend.prepare(s, onProgress)) : backend.prepare(s, onProgress)
        })
      })
      expect(h.hv.runningVms()).toEqual([web])
      yield* advance(500)
      yield* quorum.lose
      yield* TestClock.adjust(FencingMs + 1)
      yield* settle
      expect(h.hv.runningVms()).toEqual([]) // the watchdog did not wait for the build
      expect(cluster.vm("web")!.status.lastError).toContain("fencing")
      yield* advance(60_000) // the build finishes while fenced: zeta is not started
      expect(h.hv.isPrepared(vm("zeta"))).toBe(true)
      expect(h.hv.startCount(vm("zeta"))).toBe(0)
      expect(h.hv.runningVms()).toEqual([])

      quorum.regain()
      yield* advance(IntervalMs)
      expect(h.hv.runningVms()).toEqual([web])
      yield* advance(60_000, 1000)
      expect(h.hv.runningVms()).toEqual([web, vm("zeta")])
    }))

  it.scoped("a fencing stop that hangs after its VM stopped (its clean-up on a stalled state directory) holds up no other VM's stop", () =>
    Effect.gen(function* () {
      const cluster = oneNode()
      cluster.create("db") // listed before web
      cluster.start("db")
      const quorum = new Quorum()
      const h = yield* makeHarness({
        cluster,
        quorum,
        wrap: (backend) => ({
          ...backend,
          stop: (name, timeout) => (name === "db" ? Effect.zipRight(backend.stop(name, timeout), Effect.never) : backend.stop(name, timeout))
        })
      })
      expect(h.hv.runningVms()).toEqual([vm("db"), web])
      yield* advance(500)
      yield* quorum.lose
      yield* TestClock.adjust(FencingMs + 1)
      yield* settle
      expect(h.hv.runningVms()).toEqual([])
      expect(cluster.vm("web")!.status.lastError).toContain("fencing")
    }))

  it.scoped("a start waits for the lease renewal of its contact: none goes on while the write is unfinished, in contact or not", () =>
    Effect.gen(function* () {
      const cluster = oneNode()
      const quorum = new Quorum()
      const fence = new MemoryFence(self)
      // Closed, the gate holds every lease write (a stalled data directory) until it is opened.
      const gate = yield* Effect.makeLatch(true)
      const hostFence: HostFence = { ...fence.hostFence, renew: (validUntil) => Effect.zipRight(gate.await, fence.hostFence.renew(validUntil)) }
      const h = yield* makeHarness({ cluster, quorum, hostFence })
      expect(h.hv.runningVms()).toEqual([web])
      yield* advance(500)
      yield* gate.close
      yield* advance(IntervalMs) // a renewal is now under way, and hangs
      cluster.create("db")
      cluster.start("db")
      yield* advance(3 * FencingMs, IntervalMs) // in contact all along: not fenced, but db waits
      expect(yield* h.agent.fenced).toBe(false)
      expect(h.hv.startCount(vm("db"))).toBe(0)
      yield* gate.open
      yield* advance(FencingMs, IntervalMs)
      expect(h.hv.runningVms()).toEqual([vm("db"), web])
      // db started once the lease written covered its start.
      expect(fence.validUntil).toBeGreaterThan(yield* Clock.currentTimeMillis)
    }))

  it.scoped("a lease write that hangs while in contact does not hold up fencing: the VMs stop at last contact + fencingMs, and the hang is logged once", () =>
    Effect.gen(function* () {
      const cluster = oneNode()
      cluster.create("db")
      cluster.start("db")
      const quorum = new Quorum()
      const fence = new MemoryFence(self)
      let hang = false
      // Once `hang` is set, a lease write never ends (a stalled disk under the data directory).
      const hostFence: HostFence = {
        ...fence.hostFence,
        renew: (validUntil) => (hang ? Effect.never : fence.hostFence.renew(validUntil))
      }
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => {
        logs.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
      })
      const h = yield* makeHarness({ cluster, quorum, hostFence }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      expect(h.hv.runningVms()).toEqual([vm("db"), web])
      yield* advance(500)
      hang = true
      yield* advance(1000) // still in contact: a renewal starts, and hangs
      yield* quorum.lose // contact frozen at t=1500
      yield* advance(FencingMs) // t=4500: exactly fencingMs, not longer
      expect(h.hv.runningVms()).toEqual([vm("db"), web])
      yield* TestClock.adjust(1)
      yield* settle
      expect(h.hv.runningVms()).toEqual([])
      expect(yield* h.agent.fenced).toBe(true)
      expect(cluster.vm("web")!.status.lastError).toContain("fencing")
      const hung = logs.filter((l) => l.includes("lease") && l.includes("has not finished"))
      expect(hung).toHaveLength(1)
      expect(hung[0]).toContain(`node ${self}`)
      expect(hung[0]).toContain(fence.hostFence.dataDir)

      // Nothing starts while the renewal it depends on is unfinished, even with contact back.
      quorum.regain()
      yield* advance(5 * IntervalMs)
      expect(h.hv.runningVms()).toEqual([])
      expect(h.hv.startCount(web)).toBe(1)
    }))

  it.scoped("a node that never reaches the quorum after start-up starts nothing and fences adopted runners", () =>
    Effect.gen(function* () {
      const cluster = oneNode()
      const hv = new SimulatedHypervisor({ node: self })
      const previous = yield* Scope.make()
      const before = yield* hv.makeBackend.pipe(Scope.extend(previous))
      yield* before.prepare(spec("web"))
      yield* before.start(web)
      yield* Scope.close(previous, Exit.void)
      cluster.create("db")
      cluster.start("db")

      const quorum = new Quorum()
      quorum.up = false // never in contact since this daemon started
      const h = yield* makeHarness({ cluster, hv, quorum })
      yield* advance(FencingMs)
      expect(hv.runningVms()).toEqual([web]) // adopted, within the grace period; db not started
      yield* advance(IntervalMs)
      expect(hv.runningVms()).toEqual([])
      expect(hv.startCount(vm("db"))).toBe(0)
      expect(yield* h.agent.fenced).toBe(true)
    }))
})

describe("Agent: status reports", () => {
  it.scoped("a failed report is retried with the newest status, and an unchanged status is not sent again", () =>
    Effect.gen(function* () {
      const cluster = oneNode("always", false)
      const h = yield* makeHarness({ cluster })
      h.leaderReachable = false
      cluster.start("web")
      yield* advance(IntervalMs)
      expect(h.hv.isRunning(web)).toBe(true) // reporting never blocks the work
      expect(h.refused.length).toBeGreaterThan(0)
      expect(cluster.vm("web")!.status.phase).toBe("stopped")
      yield* advance(3 * IntervalMs)

      h.leaderReachable = true
      yield* advance(IntervalMs)
      // Only the newest status goes out once the leader answers.
      expect(phases(h, "web")).toEqual(["running"])
      expect(cluster.vm("web")!.status).toMatchObject({ phase: "running", pid: h.hv.pidOf(web) })
      yield* advance(5 * IntervalMs)
      expect(phases(h, "web")).toEqual(["running"])
    }))
})

describe("Agent: status reports, many VMs to a request", () => {
  const names = ["v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8"]
  /** Node 1 with eight VMs started (as many as its eight vCPUs hold). */
  const eight = () => {
    const cluster = new FakeCluster()
    cluster.register(1)
    for (const name of names) {
      cluster.create(name)
      cluster.start(name)
    }
    return cluster
  }

  it.scoped("eight VMs started at once are reported in batches, each VM's statuses in order", () =>
    Effect.gen(function* () {
      const cluster = eight()
      const h = yield* makeHarness({ cluster })
      yield* advance(2 * IntervalMs)
      for (const name of names) {
        expect(h.hv.isRunning(vm(name))).toBe(true)
        expect(phases(h, name)).toEqual(["starting", "running"])
        expect(cluster.vm(name)!.status).toMatchObject({ phase: "running", pid: h.hv.pidOf(vm(name)) })
      }
      // Sixteen statuses, no single-VM report, fewer requests than statuses (the starts go one at a time, so how many fewer varies).
      expect(h.deliveries).not.toContain(0)
      expect(h.deliveries.reduce((a, b) => a + b, 0)).toBe(16)
      expect(Math.max(...h.deliveries)).toBeGreaterThan(1)
    }))

  it.scoped("a cluster below log version 3 gets one VM per request; one that refuses a batch too, until a batch is tried again after SinglyForMs", () =>
    Effect.gen(function* () {
      const older = eight()
      older.state.clusterVersion = 2
      const h = yield* makeHarness({ cluster: older, batchRefusal: new Unavailable({ message: "a batch was sent to a cluster below log version 3" }) })
      yield* advance(2 * IntervalMs)
      expect(names.map((name) => older.vm(name)!.status.phase)).toEqual(names.map(() => "running"))
      expect(h.deliveries).toEqual(Array(16).fill(0))

      // The state says log version 3 but a member refuses the batch (as the API does for a member of an older release).
      const cluster = eight()
      const g = yield* makeHarness({ cluster, batchRefusal: new ClusterVersionTooLow({ message: "node 3 runs log version 2" }) })
      yield* advance(2 * IntervalMs)
      expect(names.map((name) => cluster.vm(name)!.status.phase)).toEqual(names.map(() => "running"))
      // (The refused batch's VMs kept only their newest status: fewer than sixteen went.)
      expect(g.deliveries.length).toBeGreaterThanOrEqual(8)
      expect(new Set(g.deliveries)).toEqual(new Set([0]))
      g.batchRefusal = undefined
      for (const name of names) cluster.stop(name)
      const stopped = g.deliveries.length
      yield* advance(2 * IntervalMs)
      expect(names.map((name) => cluster.vm(name)!.status.phase)).toEqual(names.map(() => "stopped"))
      expect(g.deliveries.slice(stopped)).toEqual(Array(8).fill(0)) // still within SinglyForMs
      yield* advance(SinglyForMs)
      for (const name of names) cluster.start(name)
      const started = g.deliveries.length
      yield* advance(2 * IntervalMs)
      expect(names.map((name) => cluster.vm(name)!.status.phase)).toEqual(names.map(() => "running"))
      expect(g.deliveries.slice(started).length).toBeGreaterThan(0)
      expect(g.deliveries.slice(started)).not.toContain(0)
    }))
})
