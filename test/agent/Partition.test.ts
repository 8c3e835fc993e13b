/**
 * Two agents (nodes 1 and 2) and the invariant checker: node 1 is cut off from the majority, which
 * marks it down after `nodeDownMs` and reschedules its VM on node 2. Node 1's stale state still
 * places the VM there; only fencing keeps the VM from running twice.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { checkNoVmRunsTwice, vmsRunningTwice } from "../../src/agent/Invariants.js"
import * as C from "../../src/domain/Command.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { FakeCluster, FencingMs, makeHarness, nodeInfo, Quorum, settle, spec, vm } from "./harness.js"

const NodeDownMs = FencingMs + 1000 // the configuration's rule: fencingMs plus two election timeouts
const web = vm("web")

/** The same command applied to each replica's state. */
const everywhere = (replicas: ReadonlyArray<FakeCluster>, command: C.Command) => {
  for (const r of replicas) r.apply(command)
}

describe("Agents under a partition", () => {
  it.scoped("a VM rescheduled away from a partitioned node never runs on both nodes", () =>
    Effect.gen(function* () {
      const view1 = new FakeCluster() // node 1's replica
      const view2 = new FakeCluster() // the majority's replica (node 2's)
      const both = [view1, view2]
      everywhere(both, new C.RegisterNode({ info: nodeInfo(1) }))
      everywhere(both, new C.CreateVm({ spec: spec("web", "always") }))
      everywhere(both, new C.RegisterNode({ info: nodeInfo(2) }))
      everywhere(both, new C.StartVm({ name: web }))
      expect(view1.vm("web")?.node).toBe(1)

      const quorum1 = new Quorum()
      const a = yield* makeHarness({ node: NodeId.make(1), cluster: view1, quorum: quorum1 })
      const b = yield* makeHarness({ node: NodeId.make(2), cluster: view2 })
      const hosts = [[1, a.hv], [2, b.hv]] as const
      expect(a.hv.isRunning(web)).toBe(true)

      // Partition at P = now: node 1 hears nobody; its reports no longer reach the leader.
      yield* quorum1.lose
      a.leaderReachable = false
      const step = 100
      for (let t = step; t <= NodeDownMs + 3000; t += step) {
        yield* TestClock.adjust(step)
        // The majority's leader marks node 1 down after nodeDownMs: web is placed on node 2.
        if (t === NodeDownMs) view2.down(1)
        yield* settle
        yield* checkNoVmRunsTwice(hosts)
      }
      expect(view2.vm("web")?.node).toBe(2)
      expect(b.hv.isRunning(web)).toBe(true)
      expect(a.hv.isRunning(web)).toBe(false)
      expect(view1.vm("web")?.node).toBe(1) // node 1's state is still stale

      // The partition heals: node 1 catches up (the reschedule) before it has contact again.
      view1.down(1)
      quorum1.regain()
      a.leaderReachable = true
      for (let t = 0; t < 3000; t += step) {
        yield* TestClock.adjust(step)
        yield* settle
        yield* checkNoVmRunsTwice(hosts)
      }
      expect(a.hv.isPrepared(web)).toBe(false) // the orphan's state is removed on node 1
      expect(b.hv.isRunning(web)).toBe(true)
      expect(vmsRunningTwice(hosts)).toEqual([])
    }))
})
