/**
 * The fencing watchdog's loop (`Watchdog.run`) on the TestClock, over a `SimulatedHypervisor` and
 * a lease kept in memory (`MemoryFence`), alone and beside the agent whose daemon dies, restarts,
 * or comes back while a fence round runs. The real process is tested in test/node.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber, Layer, Scope, TestClock } from "effect"
import { checkNoVmRunsTwice, vmsRunningTwice } from "../../src/agent/Invariants.js"
import * as Watchdog from "../../src/agent/Watchdog.js"
import * as C from "../../src/domain/Command.js"
import { BackendFailed, StorageCorrupt } from "../../src/domain/Errors.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { SimulatedHypervisor } from "../../src/vm/SimulatedHypervisor.js"
import { VmBackend } from "../../src/vm/VmBackend.js"
import {
  advance,
  FakeCluster,
  FencingMs,
  IntervalMs,
  makeHarness,
  MemoryFence,
  nodeInfo,
  self,
  settle,
  spec,
  vm
} from "./harness.js"

const web = vm("web")
const db = vm("db")

/** A host whose runners `web` and `db` were started by an earlier daemon. */
const hostWithVms = Effect.gen(function* () {
  const hv = new SimulatedHypervisor({ node: self })
  const earlier = yield* Scope.make()
  const backend = yield* hv.makeBackend.pipe(Scope.extend(earlier))
  for (const name of [web, db]) {
    yield* backend.prepare(spec(name))
    yield* backend.start(name)
  }
  yield* Scope.close(earlier, Exit.void)
  return hv
})

const now = Clock.currentTimeMillis

/** Moves the clock to `at` exactly and lets every fiber run. */
const until = (at: number) => Effect.flatMap(now, (t) => Effect.zipRight(TestClock.adjust(Math.max(0, at - t)), settle))

describe("Watchdog: the loop", () => {
  it.scoped("leaves the VMs alone while the lease is renewed, and stops every one just after it runs out", () =>
    Effect.gen(function* () {
      const hv = yield* hostWithVms
      const fence = new MemoryFence(self)
      yield* fence.hostFence.renew(FencingMs)
      const watchdog = yield* Effect.forkScoped(Watchdog.run(fence.watchdog(hv)))
      yield* settle
      // A daemon in contact renews the lease (every fencingMs / 4) for ten deadlines.
      for (let t = 0; t < 10 * FencingMs; t += FencingMs / 4) {
        yield* fence.hostFence.renew((yield* now) + FencingMs)
        yield* advance(FencingMs / 4)
        expect(hv.runningVms()).toEqual([db, web])
      }
      expect(fence.published).toEqual(["watching"])

      // Renewals stop (the daemon died): nothing happens up to the deadline, everything just after.
      const deadline = fence.validUntil!
      yield* until(deadline)
      expect(hv.runningVms()).toEqual([db, web])
      yield* until(deadline + 1)
      expect(hv.runningVms()).toEqual([])
      expect(fence.published).toEqual(["watching", "fencing", "watching"])
      // The daemon still runs (hung, or cut off): the watchdog keeps watching.
      yield* advance(3 * FencingMs)
      expect(watchdog.unsafePoll()).toBeNull()
    }))

  it.scoped("without a lease, or with a damaged one, the node is fenced fencingMs after the watchdog started", () =>
    Effect.gen(function* () {
      for (const damaged of [false, true]) {
        const hv = yield* hostWithVms
        const fence = new MemoryFence(self)
        if (damaged) fence.damaged = new StorageCorrupt({ node: self, subject: "lease.json", message: "the lease file is not valid" })
        const started = yield* now
        const watchdog = yield* Effect.fork(Watchdog.run(fence.watchdog(hv)))
        yield* until(started + FencingMs)
        expect(hv.runningVms()).toEqual([db, web])
        yield* until(started + FencingMs + 1)
        expect(hv.runningVms()).toEqual([])
        yield* Fiber.interrupt(watchdog)
      }
    }))

  it.scoped("a lease renewed as a fence round begins, or while it lists the runners, stops nothing", () =>
    Effect.gen(function* () {
      // 1. Renewed right after the watchdog published `fencing`: it re-reads the lease and stops nothing.
      const hv = yield* hostWithVms
      const fence = new MemoryFence(self)
      yield* fence.hostFence.renew(FencingMs)
      fence.onPublish = (phase) =>
        phase === "fencing" ? Effect.flatMap(now, (t) => fence.hostFence.renew(t + FencingMs)) : Effect.void
      yield* Effect.forkScoped(Watchdog.run(fence.watchdog(hv)))
      yield* until(FencingMs + 1)
      expect(fence.published).toEqual(["watching", "fencing", "watching"])
      expect(hv.runningVms()).toEqual([db, web])

      // 2. Renewed while the round lists the runners (after its first look at the lease): the VMs are
      // left to the daemon. (Once the stops are issued they all go at once, see below.)
      const hv2 = yield* hostWithVms
      const fence2 = new MemoryFence(self)
      const start = yield* now
      yield* fence2.hostFence.renew(start + FencingMs)
      const renewingWhileListing = Layer.scoped(
        VmBackend,
        Effect.map(hv2.makeBackend, (backend) => ({
          ...backend,
          list: backend.list.pipe(Effect.tap(() => Effect.flatMap(now, (t) => fence2.hostFence.renew(t + FencingMs))))
        }))
      )
      yield* Effect.forkScoped(Watchdog.run({ ...fence2.watchdog(hv2), backend: renewingWhileListing }))
      yield* until(start + FencingMs + 1)
      expect(hv2.runningVms()).toEqual([db, web])
      expect(fence2.phase).toBe("watching")
    }))

  it.scoped("with surveyMs it lists the runners that often while the lease is valid, one listing at a time and never waited for; the round is on time regardless", () =>
    Effect.gen(function* () {
      const hv = yield* hostWithVms
      const fence = new MemoryFence(self)
      yield* fence.hostFence.renew(FencingMs)
      let listings = 0
      let hang = false
      const counting = Layer.scoped(
        VmBackend,
        Effect.map(hv.makeBackend, (backend) => ({
          ...backend,
          list: Effect.suspend(() => {
            listings++
            return hang ? Effect.never : backend.list
          })
        }))
      )
      yield* Effect.forkScoped(Watchdog.run({ ...fence.watchdog(hv), backend: counting, surveyMs: FencingMs / 2 }))
      const renewFor = (ms: number) =>
        Effect.gen(function* () {
          for (let t = 0; t < ms; t += FencingMs / 4) {
            yield* fence.hostFence.renew((yield* now) + FencingMs)
            yield* advance(FencingMs / 4)
          }
        })
      yield* settle
      expect(listings).toBe(1)
      yield* renewFor(4 * FencingMs)
      // At the start, then every FencingMs / 2 (the loop wakes every pollMs = FencingMs / 4).
      expect(listings).toBe(9)
      expect(hv.runningVms()).toEqual([db, web])
      // A listing that hangs (a stalled disk): none starts beside it, and the loop goes on.
      hang = true
      yield* renewFor(FencingMs)
      const during = listings
      yield* renewFor(2 * FencingMs)
      expect(listings).toBe(during)
      // Renewals stop: the round lists (a listing of its own) and stops every VM just after the deadline.
      hang = false
      yield* until(fence.validUntil! + 1)
      expect(hv.runningVms()).toEqual([])
    }))

  it.scoped("a stop that hangs after its VM stopped (its cleanup on a stalled disk) does not hold up the other VMs' stops", () =>
    Effect.gen(function* () {
      const hv = yield* hostWithVms
      const fence = new MemoryFence(self)
      yield* fence.hostFence.renew(FencingMs)
      // db (listed first) stops, then its stop never returns, as a write to a stalled disk does not.
      const hanging = Layer.scoped(
        VmBackend,
        Effect.map(hv.makeBackend, (backend) => ({
          ...backend,
          stop: (name: typeof web, timeout: Parameters<typeof backend.stop>[1]) =>
            name === db ? Effect.zipRight(backend.stop(name, timeout), Effect.never) : backend.stop(name, timeout)
        }))
      )
      yield* Effect.forkScoped(Watchdog.run({ ...fence.watchdog(hv), backend: hanging }))
      yield* until(FencingMs + 1)
      expect(hv.runningVms()).toEqual([])
      // The round waits for its stops: it is still fencing, so a daemon back in contact starts nothing yet.
      expect(fence.phase).toBe("fencing")
    }))

  it.scoped("a record write that hangs (the data directory's disk stalled) does not hold up the stops: every VM is stopped within publishWaitMs of the deadline", () =>
    Effect.gen(function* () {
      const hv = yield* hostWithVms
      const fence = new MemoryFence(self)
      yield* fence.hostFence.renew(FencingMs)
      let writes = 0
      // Every write of the record hangs, as a write to a stalled disk does.
      const stalled = { ...fence.watchdog(hv), publish: () => Effect.zipRight(Effect.sync(() => writes++), Effect.never), publishWaitMs: 50 }
      const watchdog = yield* Effect.forkScoped(Watchdog.run(stalled))
      yield* until(FencingMs + 1)
      expect(writes).toBe(1)
      expect(hv.runningVms()).toEqual([db, web])
      yield* until(FencingMs + 1 + 50)
      expect(hv.runningVms()).toEqual([])
      // The loop goes on (the daemon runs but is cut off): it keeps watching, the write still hung.
      yield* advance(3 * FencingMs)
      expect(watchdog.unsafePoll()).toBeNull()
      expect(writes).toBe(1)
    }))

  it.scoped("lease reads that never answer (the data directory's disk stalled) do not hold it up: the deadline read last stands, and every VM stops within 2 × readWaitMs of it", () =>
    Effect.gen(function* () {
      const hv = yield* hostWithVms
      const fence = new MemoryFence(self)
      yield* fence.hostFence.renew(FencingMs)
      const options = fence.watchdog(hv)
      let stalled = false
      // From FencingMs / 2 on, every read of the lease and of the record hangs, as a read of a stalled disk does.
      const hanging = <A, E>(read: Effect.Effect<A, E>) => Effect.suspend(() => (stalled ? Effect.never : read))
      const watchdog = yield* Effect.forkScoped(
        Watchdog.run({ ...options, lease: hanging(options.lease), stillOwner: hanging(options.stillOwner), readWaitMs: 50 })
      )
      yield* until(FencingMs / 2)
      stalled = true
      // A renewal written meanwhile cannot be read: it does not count.
      yield* fence.hostFence.renew(FencingMs + 10_000)
      yield* until(FencingMs)
      expect(hv.runningVms()).toEqual([db, web])
      // The round re-reads the lease twice (before listing, before stopping): neither answers within readWaitMs.
      yield* advance(1 + 2 * 50, 1)
      expect(hv.runningVms()).toEqual([])
      expect(fence.published).toEqual(["watching", "fencing", "watching"])
      // It keeps watching: a round every fencingMs while the lease (as read last) stays expired.
      yield* advance(3 * FencingMs)
      expect(watchdog.unsafePoll()).toBeNull()
      expect(fence.published.length).toBeGreaterThanOrEqual(2 * 3)
      // The disk answers again, and a daemon back in contact renews: the renewals are seen, no further round runs.
      stalled = false
      const rounds = fence.published.length
      for (let t = 0; t < 2 * FencingMs; t += FencingMs / 4) {
        yield* fence.hostFence.renew((yield* now) + FencingMs)
        yield* advance(FencingMs / 4)
      }
      expect(fence.published.length).toBe(rounds)
    }))

  it.scoped("a lease read that answers late but before the deadline counts; a record read that never answers leaves it in charge", () =>
    Effect.gen(function* () {
      const hv = yield* hostWithVms
      const fence = new MemoryFence(self)
      yield* fence.hostFence.renew(FencingMs)
      const options = fence.watchdog(hv)
      // Each lease read answers after 400 ms (a slow disk); the record is never answered.
      const slow = Effect.zipRight(Effect.sleep("400 millis"), options.lease)
      yield* Effect.forkScoped(Watchdog.run({ ...options, lease: slow, stillOwner: Effect.never, readWaitMs: 50 }))
      // A daemon renews every FencingMs / 4 up to 2 * FencingMs: no read answers after the deadline it read.
      for (let t = 0; t < 2 * FencingMs; t += FencingMs / 4) {
        yield* fence.hostFence.renew((yield* now) + FencingMs)
        yield* advance(FencingMs / 4)
        expect(hv.runningVms()).toEqual([db, web])
      }
      // Renewals stop: the VMs stop just after the deadline (plus the round's two re-reads, each given readWaitMs).
      const deadline = fence.validUntil!
      yield* until(deadline)
      expect(hv.runningVms()).toEqual([db, web])
      yield* advance(1 + 2 * 50, 1)
      expect(hv.runningVms()).toEqual([])
    }))

  it.scoped("a stop that fails is retried at the next poll", () =>
    Effect.gen(function* () {
      const hv = yield* hostWithVms
      const fence = new MemoryFence(self)
      let failures = 1
      const failingOnce = Layer.scoped(
        VmBackend,
        Effect.map(hv.makeBackend, (backend) => ({
          ...backend,
          stop: (name: typeof web, timeout: Parameters<typeof backend.stop>[1]) =>
            name === web && failures-- > 0
              ? Effect.fail(new BackendFailed({ node: self, subject: name, message: `VM "${name}": stop failed (injected)` }))
              : backend.stop(name, timeout)
        }))
      )
      const started = yield* now
      yield* Effect.forkScoped(Watchdog.run({ ...fence.watchdog(hv), backend: failingOnce, pollMs: 250 }))
      yield* until(started + FencingMs + 1)
      expect(hv.runningVms()).toEqual([web])
      yield* advance(250, 50)
      expect(hv.runningVms()).toEqual([])
    }))

  it.scoped("ends once nothing is left to guard (lease run out, no VM running, its daemon gone), or when another watchdog takes over", () =>
    Effect.gen(function* () {
      const hv = yield* hostWithVms
      const fence = new MemoryFence(self)
      yield* fence.hostFence.renew(1000)
      const watchdog = yield* Effect.fork(Watchdog.run(fence.watchdog(hv)))
      yield* until(1001)
      expect(hv.runningVms()).toEqual([])
      expect(watchdog.unsafePoll()).toBeNull() // its daemon (the lease's writer) still runs
      fence.daemonAlive = false
      yield* until(1001 + FencingMs)
      expect(yield* Fiber.join(watchdog)).toBe("idle")

      const replaced = yield* Effect.fork(Watchdog.run(new MemoryFence(self).watchdog(new SimulatedHypervisor())))
      yield* settle
      expect(replaced.unsafePoll()).toBeNull()
      const other = new MemoryFence(self)
      other.watchdogRunning = false // its record now names another process
      const ended = yield* Effect.fork(Watchdog.run(other.watchdog(new SimulatedHypervisor())))
      yield* advance(1000)
      expect(yield* Fiber.join(ended)).toBe("replaced")
      yield* Fiber.interrupt(replaced)
    }))
})

describe("Watchdog beside the agent: a daemon that dies", () => {
  /** Node 1 alone, `web` placed on it and started; its agent runs in its own scope (the daemon). */
  const oneNode = Effect.gen(function* () {
    const cluster = new FakeCluster()
    cluster.register(1)
    cluster.create("web")
    cluster.start("web")
    const hv = new SimulatedHypervisor({ node: self, firstPid: 1000 })
    const fence = new MemoryFence(self)
    yield* Effect.forkScoped(Watchdog.run(fence.watchdog(hv)))
    const daemon = yield* Scope.make()
    const h = yield* makeHarness({ cluster, hv, hostFence: fence.hostFence }).pipe(Scope.extend(daemon))
    expect(hv.runningVms()).toEqual([web])
    return { cluster, hv, fence, daemon, h }
  })

  it.scoped("the agent renews the lease with its own fencing deadline; its VMs stop just after the lease of a dead daemon runs out", () =>
    Effect.gen(function* () {
      const { fence, hv, daemon } = yield* oneNode
      for (let t = 0; t < 4 * FencingMs; t += 100) {
        yield* advance(100)
        // Renewed at least every fencingMs / 4, with contact (here: now) + fencingMs.
        const ahead = fence.validUntil! - (yield* now)
        expect(ahead).toBeGreaterThan(FencingMs - FencingMs / 4 - 100)
        expect(ahead).toBeLessThanOrEqual(FencingMs)
      }
      // kill -9: the agent's fibers are gone, the runner is not.
      yield* Scope.close(daemon, Exit.void)
      fence.daemonAlive = false
      const deadline = fence.validUntil!
      yield* until(deadline)
      expect(hv.runningVms()).toEqual([web])
      yield* until(deadline + 1)
      expect(hv.runningVms()).toEqual([])
    }))

  it.scoped("a daemon restarted within fencingMs renews the lease and adopts its VM: nothing stopped, nothing started twice", () =>
    Effect.gen(function* () {
      const { cluster, fence, hv, daemon } = yield* oneNode
      yield* advance(2 * IntervalMs)
      yield* Scope.close(daemon, Exit.void)
      const deadline = fence.validUntil!
      yield* advance(FencingMs / 2)
      const restarted = yield* makeHarness({ cluster, hv, hostFence: fence.hostFence })
      yield* until(deadline + 1)
      yield* advance(3 * FencingMs)
      expect(hv.runningVms()).toEqual([web])
      expect(hv.startCount(web)).toBe(1)
      expect(fence.published).toEqual(["watching"])
      expect(yield* restarted.agent.fenced).toBe(false)
      expect(cluster.vm("web")!.status).toMatchObject({ phase: "running", pid: hv.pidOf(web), restarts: 0 })
    }))

  it.scoped("an agent in contact starts nothing while a fence round runs, and no runner while no watchdog runs", () =>
    Effect.gen(function* () {
      const { cluster, fence, hv } = yield* oneNode
      cluster.create("db")
      fence.phase = "fencing" // a round is stopping runners
      cluster.start("db")
      yield* advance(3 * IntervalMs)
      expect(hv.startCount(db)).toBe(0)
      fence.phase = "watching"
      fence.watchdogRunning = false
      yield* advance(3 * IntervalMs)
      expect(hv.startCount(db)).toBe(0)
      fence.watchdogRunning = true
      yield* advance(IntervalMs)
      expect(hv.runningVms()).toEqual([db, web])
    }))
})

describe("Watchdog: a VM rescheduled away from a node whose daemon died", () => {
  const NodeDownMs = FencingMs + 1000 // the configuration's rule: fencingMs plus two election timeouts

  /** Nodes 1 and 2; `web` runs on node 1; node 1's daemon dies at P = now, its host and runner live on. */
  const run = (withWatchdog: boolean) =>
    Effect.gen(function* () {
      const view1 = new FakeCluster()
      const view2 = new FakeCluster()
      for (const command of [
        new C.RegisterNode({ info: nodeInfo(1) }),
        new C.CreateVm({ spec: spec("web", "always") }),
        new C.RegisterNode({ info: nodeInfo(2) }),
        new C.StartVm({ name: web })
      ]) {
        view1.apply(command)
        view2.apply(command)
      }
      const fence1 = new MemoryFence(NodeId.make(1))
      const hv1 = new SimulatedHypervisor({ node: NodeId.make(1), firstPid: 1000 })
      if (withWatchdog) yield* Effect.forkScoped(Watchdog.run(fence1.watchdog(hv1)))
      const daemon1 = yield* Scope.make()
      yield* makeHarness({ node: NodeId.make(1), cluster: view1, hv: hv1, hostFence: fence1.hostFence }).pipe(Scope.extend(daemon1))
      const b = yield* makeHarness({ node: NodeId.make(2), cluster: view2 })
      expect(hv1.isRunning(web)).toBe(true)
      yield* advance(2 * IntervalMs)

      yield* Scope.close(daemon1, Exit.void)
      fence1.daemonAlive = false
      const hosts = [[1, hv1], [2, b.hv]] as const
      const twice: Array<ReadonlyArray<unknown>> = []
      for (let t = 100; t <= NodeDownMs + 3000; t += 100) {
        yield* TestClock.adjust(100)
        // The leader last heard from node 1 at P: it marks it down after nodeDownMs, web moves to node 2.
        if (t === NodeDownMs) view2.down(1)
        yield* settle
        if (withWatchdog) yield* checkNoVmRunsTwice(hosts)
        else twice.push(vmsRunningTwice(hosts))
      }
      expect(view2.vm("web")?.node).toBe(2)
      expect(b.hv.isRunning(web)).toBe(true)
      return { hv1, twice }
    })

  it.scoped("never runs on both nodes: the watchdog stops it before the cluster starts it elsewhere", () =>
    Effect.gen(function* () {
      const { hv1 } = yield* run(true)
      expect(hv1.isRunning(web)).toBe(false)
    }))

  it.scoped("without the watchdog it would run on both (the gap the watchdog closes)", () =>
    Effect.gen(function* () {
      const { hv1, twice } = yield* run(false)
      expect(hv1.isRunning(web)).toBe(true)
      expect(twice.at(-1)).toEqual([{ name: web, nodes: [1, 2] }])
    }))
})
