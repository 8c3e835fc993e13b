import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import * as C from "../../src/domain/Command.js"
import { HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import * as HealthMonitor from "../../src/node/HealthMonitor.js"
import { proposeCommand } from "../../src/node/NodeControlPlane.js"
import { RaftCluster, value } from "../support/RaftCluster.js"

const info = (id: number, health: "up" | "down" = "up") =>
  new NodeInfo({
    id: NodeId.make(id),
    address: HostPort.make(`127.0.0.1:${7000 + id}`),
    capacity: new Resources({ vcpus: 4, memoryMiB: 4096 }),
    labels: {},
    state: "active",
    health
  })

describe("healthChanges", () => {
  const base = { self: 1, nodeDownMs: 1000, leadingSince: 0 }
  it("marks a node silent for longer than nodeDownMs down, and a node heard again up", () => {
    const changes = HealthMonitor.healthChanges({
      ...base,
      now: 5000,
      nodes: [info(1), info(2), info(3), info(4, "down")],
      lastContact: new Map([[2, 4500], [3, 3000], [4, 4900]])
    })
    expect(changes).toEqual([{ id: 3, health: "down" }, { id: 4, health: "up" }])
  })

  it("never marks itself down, and gives a new leader nodeDownMs of grace before judging", () => {
    const changes = HealthMonitor.healthChanges({
      ...base,
      leadingSince: 4500,
      now: 5000,
      nodes: [info(1, "down"), info(2)],
      lastContact: new Map()
    })
    expect(changes).toEqual([{ id: 1, health: "up" }])
  })
})

describe("HealthMonitor on a cluster", () => {
  it.scoped("the leader marks a crashed node down after nodeDownMs and its VMs move to a live node", () =>
    Effect.gen(function* () {
      const c = new RaftCluster([1, 2, 3], () => new ClusterStateHolder(), (h) => h.layer())
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      for (const id of [1, 2, 3]) value(yield* c.drive(proposeCommand(c.node(leader), new C.RegisterNode({ info: info(id) }))))
      const victim = [1, 2, 3].find((id) => id !== leader)!
      // Place a VM on the victim: cordon the others for the create, then uncordon.
      for (const id of [1, 2, 3]) {
        if (id !== victim) value(yield* c.drive(proposeCommand(c.node(leader), new C.SetNodeState({ id: NodeId.make(id), state: "cordoned" }))))
      }
      const spec = new VmSpec({ name: VmName.make("web"), source: new RunnerConfig({ path: "/runners/web" }) })
      value(yield* c.drive(proposeCommand(c.node(leader), new C.CreateVm({ spec }))))
      for (const id of [1, 2, 3]) {
        if (id !== victim) value(yield* c.drive(proposeCommand(c.node(leader), new C.SetNodeState({ id: NodeId.make(id), state: "active" }))))
      }
      expect(c.state(leader).current.vms.get("web")!.node).toBe(victim)

      yield* Effect.forkScoped(
        HealthMonitor.run({ raft: c.node(leader), nodes: () => c.state(leader).current.nodes.values(), nodeDownMs: 500, intervalMs: 50 })
      )
      let ticks = 0
      yield* c.until("a second (twice nodeDownMs) passes", () => Effect.succeed(++ticks > 100))
      expect([...c.state(leader).current.nodes.values()].map((n) => n.health)).toEqual(["up", "up", "up"])
      yield* c.crash(victim)
      yield* c.until("the victim is marked down and web moved", () =>
        Effect.succeed(
          c.state(leader).current.nodes.get(victim)!.health === "down" &&
            c.state(leader).current.vms.get("web")!.node !== undefined &&
            c.state(leader).current.vms.get("web")!.node !== victim
        )
      )
      yield* c.start(victim, false)
      yield* c.until("the victim is marked up again once it answers", () =>
        Effect.succeed(c.state(leader).current.nodes.get(victim)!.health === "up")
      )
    })
  )
})
