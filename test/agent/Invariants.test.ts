import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { checkNoVmRunsTwice, vmsRunningTwice } from "../../src/agent/Invariants.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { SimulatedHypervisor } from "../../src/vm/SimulatedHypervisor.js"
import { spec, vm } from "./harness.js"

const host = (n: number) => new SimulatedHypervisor({ node: NodeId.make(n), firstPid: n * 1000 })

const run = (hv: SimulatedHypervisor, ...names: Array<string>) =>
  Effect.gen(function* () {
    const backend = yield* hv.makeBackend
    for (const name of names) {
      yield* backend.prepare(spec(name))
      yield* backend.start(vm(name))
    }
  })

describe("Invariants: no VM runs on two nodes at once", () => {
  it.scoped("holds while each VM runs on one node, and names the VM and both nodes when broken", () =>
    Effect.gen(function* () {
      const [a, b, c] = [host(1), host(2), host(3)]
      yield* run(a, "web")
      yield* run(b, "db")
      yield* run(c, "cache")
      const hosts = [[1, a], [2, b], [3, c]] as const
      expect(vmsRunningTwice(hosts)).toEqual([])
      yield* checkNoVmRunsTwice(hosts)

      // `web` rescheduled to node 3 while still running on node 1 (fencing failed).
      yield* run(c, "web")
      expect(vmsRunningTwice(hosts)).toEqual([{ name: "web", nodes: [1, 3] }])
      const error = yield* Effect.flip(checkNoVmRunsTwice(hosts))
      expect(error).toMatchObject({ _tag: "InvariantViolated", code: "BLX_INVARIANT_VIOLATED", subject: "web" })
      expect(error.message).toBe('VM "web" runs on nodes 1, 3 at once')

      // Once it stopped on node 1 the invariant holds again; a crashed (stopped) copy does not count.
      yield* a.crash(vm("web"), 1)
      yield* checkNoVmRunsTwice(hosts)
      expect(vmsRunningTwice(hosts)).toEqual([])
    }))
})
