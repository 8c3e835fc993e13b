import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import * as C from "../../src/domain/Command.js"
import { HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import type { ControlPlaneShape } from "../../src/api/ControlPlane.js"
import * as HealthMonitor from "../../src/node/HealthMonitor.js"
import * as HostContact from "../../src/node/HostContact.js"
import * as NodeControlPlane from "../../src/node/NodeControlPlane.js"
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

describe("nextLookIn", () => {
  const spacing = { intervalMs: 100, downIntervalMs: 500, maxMs: 1000 }
  const base = { self: 1, nodeDownMs: 6000, leadingSince: 0, now: 10_000 }
  it("sleeps until just past the earliest instant a node judged up could be down, within [intervalMs, maxMs]", () => {
    // Node 3 last heard at 4,500: down at 10,500, so 501 ms from now; node 2 later.
    expect(HealthMonitor.nextLookIn({ ...base, nodes: [info(1), info(2), info(3)], lastContact: new Map([[2, 9_900], [3, 4_500]]) }, spacing)).toBe(501)
    // Everyone heard just now: the next look at most maxMs away.
    expect(HealthMonitor.nextLookIn({ ...base, nodes: [info(1), info(2)], lastContact: new Map([[2, 9_990]]) }, spacing)).toBe(1000)
    // Due already (its change not proposed yet, or not committed): intervalMs, not a spin.
    expect(HealthMonitor.nextLookIn({ ...base, nodes: [info(1), info(2)], lastContact: new Map([[2, 1_000]]) }, spacing)).toBe(100)
    // A new leader's grace counts as contact.
    expect(HealthMonitor.nextLookIn({ ...base, leadingSince: 9_000, nodes: [info(1), info(2)], lastContact: new Map() }, spacing)).toBe(1000)
    expect(HealthMonitor.nextLookIn({ ...base, leadingSince: 4_200, nodes: [info(1), info(2)], lastContact: new Map() }, spacing)).toBe(201)
  })

  it("looks every downIntervalMs while a node is down (hearing from it again is not scheduled); never waits on itself", () => {
    expect(HealthMonitor.nextLookIn({ ...base, nodes: [info(1), info(2), info(3, "down")], lastContact: new Map([[2, 9_990]]) }, spacing)).toBe(500)
    expect(HealthMonitor.nextLookIn({ ...base, nodes: [info(1)], lastContact: new Map() }, spacing)).toBe(1000)
  })

  it("never lets a node silent for nodeDownMs go unjudged past intervalMs: a look planned from any earlier contact comes before, and the next after, its deadline", () => {
    // Contact stops at P; the leader looks at times it plans itself, starting anywhere before P.
    for (const P of [5_000, 5_037, 5_999]) {
      for (let start = P - 3_000; start <= P; start += 137) {
        let now = start
        for (;;) {
          const heard = Math.min(now, P)
          const input = { self: 1, nodeDownMs: 6000, leadingSince: 0, now, nodes: [info(1), info(2)], lastContact: new Map([[2, heard]]) }
          if (HealthMonitor.healthChanges(input).length > 0) break
          now += HealthMonitor.nextLookIn(input, spacing)
        }
        expect(now).toBeGreaterThan(P + 6000)
        expect(now).toBeLessThanOrEqual(P + 6000 + spacing.intervalMs)
      }
    }
  })
})

/**
 * Three Raft members, each with its control plane (forwarding to the leader through the others'
 * planes) and its own record of host heartbeats; `viaFollower` is a follower's plane.
 */
const membersWithPlanes = (options: { readonly hostFencingLimitMs?: number } = {}) =>
  Effect.gen(function* () {
    const address = (id: number) => `127.0.0.1:${7000 + id}`
    const c = new RaftCluster(
      [1, 2, 3],
      () => {
        const holder = new ClusterStateHolder()
        for (const id of [1, 2, 3]) holder.current.members.set(id, address(id))
        return holder
      },
      (h) => h.layer()
    )
    for (const id of [1, 2, 3]) yield* c.start(id)
    const leader = yield* c.leader()
    const follower = [1, 2, 3].find((id) => id !== leader)!
    const contact = new Map([1, 2, 3].map((id) => [id, HostContact.make()]))
    const planes = new Map<string, ControlPlaneShape>()
    for (const id of [1, 2, 3]) {
      planes.set(address(id), NodeControlPlane.make({ raft: c.node(id), state: c.state(id), remote: (a) => planes.get(a)!, hostContact: contact.get(id)!, ...options }))
    }
    return { c, leader, follower, contact, viaFollower: planes.get(address(follower))! }
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

  it.scoped("a host that is not a Raft member is up while it heartbeats through a follower, down (its VMs moved) once it stops", () =>
    Effect.gen(function* () {
      const { c, leader, follower, contact, viaFollower } = yield* membersWithPlanes()
      const host = NodeId.make(9)

      // Unregistered: refused with the advice to register first.
      const unknown = value(yield* c.drive(Effect.flip(viaFollower.heartbeat(host, {}))))
      expect(unknown).toMatchObject({ code: "BLX_NODE_NOT_FOUND", subject: "9" })

      // The members are cordoned, so the only place for a VM is the host.
      for (const id of [1, 2, 3]) value(yield* c.drive(proposeCommand(c.node(leader), new C.RegisterNode({ info: new NodeInfo({ ...info(id), state: "cordoned" }) }))))
      value(yield* c.drive(viaFollower.registerNode(info(9))))
      const spec = new VmSpec({ name: VmName.make("web"), source: new RunnerConfig({ path: "/runners/web" }) })
      value(yield* c.drive(proposeCommand(c.node(leader), new C.CreateVm({ spec }))))
      expect(c.state(leader).current.vms.get("web")!.node).toBe(9)

      yield* Effect.forkScoped(
        HealthMonitor.run({
          raft: c.node(leader),
          nodes: () => c.state(leader).current.nodes.values(),
          nodeDownMs: 500,
          intervalMs: 50,
          hostContact: contact.get(leader)!
        })
      )
      // Heartbeats every 100 ms for two seconds (four times nodeDownMs): answered by the leader, recorded there only.
      for (let beat = 0; beat < 20; beat++) {
        expect(value(yield* c.drive(viaFollower.heartbeat(host, {})))).toMatchObject({ node: 9, leader })
        let ticks = 0
        yield* c.until("100 ms pass", () => Effect.succeed(++ticks > 10))
      }
      expect(contact.get(leader)!.size()).toBe(1)
      expect(contact.get(follower)!.size()).toBe(0)
      expect(c.state(leader).current.nodes.get(host)!.health).toBe("up")
      expect(c.state(leader).current.vms.get("web")!.node).toBe(9)

      // It stops: marked down, and its VM is placed elsewhere once a member takes VMs again.
      yield* c.until("the silent host is marked down", () => Effect.succeed(c.state(leader).current.nodes.get(host)!.health === "down"))
      value(yield* c.drive(proposeCommand(c.node(leader), new C.SetNodeState({ id: NodeId.make(leader), state: "active" }))))
      yield* c.until("web moved to the leader", () => Effect.succeed(c.state(leader).current.vms.get("web")!.node === leader))
    })
  )

  it.scoped("a host's heartbeats are refused under another incarnation's id, or with a fencing timeout the members' nodeDownMs does not allow", () =>
    Effect.gen(function* () {
      const { c, leader, viaFollower } = yield* membersWithPlanes({ hostFencingLimitMs: 4000 })
      const host = NodeId.make(9)
      const a = "00000000-0000-4000-8000-00000000000a"
      const b = "00000000-0000-4000-8000-00000000000b"
      value(yield* c.drive(viaFollower.registerNode(new NodeInfo({ ...info(9), incarnation: a }))))

      const commit = (yield* c.node(leader).status).commit
      const second = value(yield* c.drive(Effect.flip(viaFollower.registerNode(new NodeInfo({ ...info(9), incarnation: b })))))
      expect(second).toMatchObject({ code: "BLX_NODE_ID_IN_USE", subject: "9" })
      expect(second.message).toContain(a)
      expect((yield* c.node(leader).status).commit).toBe(commit) // refused before it was proposed

      expect(value(yield* c.drive(viaFollower.heartbeat(host, { incarnation: a, fencingMs: 3000 })))).toMatchObject({ node: 9, leader })
      expect(value(yield* c.drive(viaFollower.heartbeat(host, {})))).toMatchObject({ node: 9, leader })
      expect(value(yield* c.drive(Effect.flip(viaFollower.heartbeat(host, { incarnation: b }))))).toMatchObject({ code: "BLX_NODE_ID_IN_USE" })
      const tooLong = value(yield* c.drive(Effect.flip(viaFollower.heartbeat(host, { incarnation: a, fencingMs: 4001 }))))
      expect(tooLong).toMatchObject({ code: "BLX_INVALID_ARGUMENT" })
      expect(tooLong.message).toContain("fencingMs ≤ 4000")

      // Marked down, a host's beats count nothing until it registers again (the host does, on this
      // answer); then the incarnation that registers first holds the id and the other is refused.
      value(yield* c.drive(proposeCommand(c.node(leader), new C.SetNodeHealth({ id: host, health: "down", at: 0 }))))
      expect(value(yield* c.drive(Effect.flip(viaFollower.heartbeat(host, { incarnation: a }))))).toMatchObject({ code: "BLX_NODE_NOT_FOUND" })
      value(yield* c.drive(viaFollower.registerNode(new NodeInfo({ ...info(9), incarnation: b }))))
      expect(value(yield* c.drive(Effect.flip(viaFollower.heartbeat(host, { incarnation: a }))))).toMatchObject({ code: "BLX_NODE_ID_IN_USE" })
      expect(value(yield* c.drive(Effect.flip(viaFollower.registerNode(new NodeInfo({ ...info(9), incarnation: a })))))).toMatchObject({ code: "BLX_NODE_ID_IN_USE" })
      expect(value(yield* c.drive(viaFollower.heartbeat(host, { incarnation: b })))).toMatchObject({ node: 9 })
    })
  )
})
