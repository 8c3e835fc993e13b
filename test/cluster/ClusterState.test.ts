import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import { ClusterState, RequestMemory } from "../../src/cluster/ClusterState.js"
import { TokenId } from "../../src/domain/ApiToken.js"
import * as C from "../../src/domain/Command.js"
import { CommandEnvelope } from "../../src/domain/Command.js"
import { HostPort, NodeInfo, ReleasesMoves } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import { Constraint, RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import { VmStatus } from "../../src/domain/VmStatus.js"

const id = (n: number) => NodeId.make(n)
const vmName = (s: string) => VmName.make(s)
const node = (n: number, memoryMiB = 4096, labels: Record<string, string> = {}) =>
  new NodeInfo({
    id: id(n),
    address: HostPort.make(`127.0.0.1:${7000 + n}`),
    capacity: new Resources({ vcpus: 8, memoryMiB }),
    labels,
    state: "active",
    health: "up",
    capabilities: [ReleasesMoves]
  })
/** A node of a version from before capabilities were advertised: it never releases a VM moving off it. */
const oldNode = (n: number, memoryMiB = 4096) => {
  const { capabilities: _, ...rest } = node(n, memoryMiB)
  return new NodeInfo(rest)
}
const spec = (name: string, over: Partial<ConstructorParameters<typeof VmSpec>[0]> = {}) =>
  new VmSpec({ name: vmName(name), source: new RunnerConfig({ path: `/runners/${name}` }), memoryMiB: 1024, ...over })

/** Node `from` reports the VM stopped for its current move (what its agent does once it stopped it). */
const release = (c: Cluster, name: string, from: number, phase: "stopped" | "failed" = "stopped") => {
  const moving = c.vm(name).moving
  c.ok(new C.ReportVmStatus({ name: vmName(name), node: id(from), status: new VmStatus({ phase, since: c.now, restarts: 0, ...(moving !== undefined ? { released: moving } : {}) }) }))
  return c.vm(name)
}

class Cluster {
  readonly state = new ClusterState()
  private index = 0
  now = 1_000
  run(command: C.Command, requestId?: string) {
    this.now += 10
    return this.state.apply(++this.index, new CommandEnvelope({ command, proposedAt: this.now, ...(requestId ? { requestId } : {}) }))
  }
  ok(command: C.Command) {
    const result = this.run(command)
    if (Either.isLeft(result)) throw new Error(`refused: ${result.left.message}`)
    return result.right
  }
  vm(name: string) {
    return this.state.vms.get(name)!
  }
}

/** Same content (a snapshot's records may list their fields in another order than live ones). */
const sameState = (a: ClusterState, b: ClusterState): boolean => {
  expect(JSON.parse(a.snapshot())).toEqual(JSON.parse(b.snapshot()))
  return true
}

const threeNodes = () => {
  const c = new Cluster()
  for (const n of [1, 2, 3]) c.ok(new C.RegisterNode({ info: node(n) }))
  return c
}

describe("VM lifecycle", () => {
  it("create places the VM on a node and the record names it; start and stop change only the desired state", () => {
    const c = threeNodes()
    const created = c.ok(new C.CreateVm({ spec: spec("web") })).vm!
    expect(created.node).toBe(1)
    expect(created.desired).toBe("stopped")
    expect(created.status.phase).toBe("stopped")
    c.ok(new C.StartVm({ name: vmName("web") }))
    expect(c.vm("web").desired).toBe("running")
    c.ok(new C.StopVm({ name: vmName("web") }))
    expect(c.vm("web").desired).toBe("stopped")
    expect(c.state.vms.has("web")).toBe(true)
    c.ok(new C.DeleteVm({ name: vmName("web") }))
    expect(c.state.vms.has("web")).toBe(false)
  })

  it("starting a VM whose runner failed is the retry: the start clears the failed status", () => {
    const c = threeNodes()
    c.ok(new C.CreateVm({ spec: spec("web", { restartPolicy: "never" }) }))
    c.ok(new C.StartVm({ name: vmName("web") }))
    const failed = new VmStatus({ phase: "failed", since: 5, exitCode: 7, lastError: "runner exited with code 7", restarts: 2 })
    c.ok(new C.ReportVmStatus({ name: vmName("web"), node: id(1), status: failed }))
    c.ok(new C.StartVm({ name: vmName("web") }))
    expect(c.vm("web").status).toMatchObject({ phase: "stopped", since: c.now, restarts: 2 })
    expect(c.vm("web").status.lastError).toBeUndefined()
    // A start of a VM that has not failed leaves its status alone.
    const running = new VmStatus({ phase: "running", since: 6, pid: 42, restarts: 2 })
    c.ok(new C.ReportVmStatus({ name: vmName("web"), node: id(1), status: running }))
    c.ok(new C.StartVm({ name: vmName("web") }))
    expect(c.vm("web").status).toEqual(running)
  })

  it("spreads VMs across nodes by free memory", () => {
    const c = threeNodes()
    for (const name of ["a", "b", "c"]) c.ok(new C.CreateVm({ spec: spec(name) }))
    expect(["a", "b", "c"].map((n) => c.vm(n).node)).toEqual([1, 2, 3])
  })

  it("refuses a duplicate name, an unknown VM and a stale revision with their codes", () => {
    const c = threeNodes()
    c.ok(new C.CreateVm({ spec: spec("web") }))
    const dup = c.run(new C.CreateVm({ spec: spec("web") }))
    expect(Either.isLeft(dup) && dup.left.code).toBe("BLX_VM_EXISTS")
    const missing = c.run(new C.StartVm({ name: vmName("nope") }))
    expect(Either.isLeft(missing) && missing.left.code).toBe("BLX_VM_NOT_FOUND")
    const revision = c.vm("web").revision
    const stale = c.run(new C.StopVm({ name: vmName("web"), ifRevision: revision - 1 }))
    expect(Either.isLeft(stale) && stale.left.code).toBe("BLX_CONFLICT")
    c.ok(new C.StartVm({ name: vmName("web"), ifRevision: revision }))
    expect(c.vm("web").revision).toBe(revision + 1)
  })

  it("a VM that fits nowhere stays pending with the reason, and is placed when a node with room joins", () => {
    const c = threeNodes()
    c.ok(new C.CreateVm({ spec: spec("big", { memoryMiB: 8192 }) }))
    expect(c.vm("big").node).toBeUndefined()
    expect(c.vm("big").status.phase).toBe("pending")
    expect(c.vm("big").pendingReason).toMatch(/node 1: not enough memory \(4096 MiB free, needs 8192 MiB\)/)
    c.ok(new C.RegisterNode({ info: node(4, 16384) }))
    expect(c.vm("big").node).toBe(4)
    expect(c.vm("big").pendingReason).toBeUndefined()
  })

  it("deleting a VM frees what it reserved: a pending VM that now fits is placed", () => {
    const c = new Cluster()
    c.ok(new C.RegisterNode({ info: node(1, 2048) }))
    c.ok(new C.CreateVm({ spec: spec("first", { memoryMiB: 2048 }) }))
    c.ok(new C.CreateVm({ spec: spec("second", { memoryMiB: 2048 }) }))
    expect(c.vm("first").node).toBe(1)
    expect(c.vm("second").node).toBeUndefined()
    c.ok(new C.DeleteVm({ name: vmName("first") }))
    expect(c.vm("second").node).toBe(1)
    expect(c.vm("second").status.phase).toBe("stopped")
  })

  it("honours label constraints and anti-affinity groups", () => {
    const c = new Cluster()
    c.ok(new C.RegisterNode({ info: node(1, 4096, { zone: "a" }) }))
    c.ok(new C.RegisterNode({ info: node(2, 4096, { zone: "b" }) }))
    c.ok(new C.CreateVm({ spec: spec("pinned", { constraints: [new Constraint({ key: "zone", op: "eq", value: "b" })] }) }))
    expect(c.vm("pinned").node).toBe(2)
    c.ok(new C.CreateVm({ spec: spec("db1", { antiAffinity: "db" }) }))
    c.ok(new C.CreateVm({ spec: spec("db2", { antiAffinity: "db" }) }))
    c.ok(new C.CreateVm({ spec: spec("db3", { antiAffinity: "db" }) }))
    expect(new Set([c.vm("db1").node, c.vm("db2").node])).toEqual(new Set([1, 2]))
    expect(c.vm("db3").node).toBeUndefined()
    expect(c.vm("db3").pendingReason).toMatch(/anti-affinity group db/)
  })

  it("does not place a VM on a node holding a foreign VM directory of its name; the node's snapshot keeps the list", () => {
    const c = new Cluster()
    c.ok(new C.RegisterNode({ info: new NodeInfo({ ...node(1), foreignVms: ["web", "legacy_vm"] }) }))
    c.ok(new C.CreateVm({ spec: spec("web") }))
    expect(c.vm("web").node).toBeUndefined()
    expect(c.vm("web").pendingReason).toMatch(/node 1: holds a VM directory "web" that is not Blixard's/)
    c.ok(new C.RegisterNode({ info: node(2) }))
    expect(c.vm("web").node).toBe(2)
    const restored = ClusterState.restore(c.state.snapshot())
    expect(restored.nodes.get(id(1))?.foreignVms).toEqual(["web", "legacy_vm"])
    expect(restored.nodes.get(id(2))?.foreignVms).toBeUndefined()
  })
})

describe("nodes", () => {
  it("a node marked down has its VMs rescheduled; a stale status report from it is ignored", () => {
    const c = threeNodes()
    c.ok(new C.CreateVm({ spec: spec("web") }))
    c.ok(new C.StartVm({ name: vmName("web") }))
    expect(c.vm("web").node).toBe(1)
    c.ok(new C.SetNodeHealth({ id: id(1), health: "down", at: c.now }))
    expect(c.vm("web").node).toBe(2)
    expect(c.vm("web").desired).toBe("running")
    const before = c.vm("web")
    c.ok(new C.ReportVmStatus({ name: vmName("web"), node: id(1), status: new VmStatus({ phase: "running", since: 1, restarts: 0 }) }))
    expect(c.vm("web")).toBe(before)
    c.ok(new C.ReportVmStatus({ name: vmName("web"), node: id(2), status: new VmStatus({ phase: "running", since: 2, pid: 42, restarts: 0 }) }))
    expect(c.vm("web").status.pid).toBe(42)
  })

  it("cordon stops new placements; drain moves VMs away; uncordon makes the node usable again", () => {
    const c = new Cluster()
    c.ok(new C.RegisterNode({ info: node(1) }))
    c.ok(new C.RegisterNode({ info: node(2) }))
    c.ok(new C.SetNodeState({ id: id(1), state: "cordoned" }))
    c.ok(new C.CreateVm({ spec: spec("a") }))
    c.ok(new C.CreateVm({ spec: spec("b") }))
    expect([c.vm("a").node, c.vm("b").node]).toEqual([2, 2])
    c.ok(new C.SetNodeState({ id: id(1), state: "active" }))
    c.ok(new C.SetNodeState({ id: id(2), state: "draining" }))
    // Node 2 stops them first; each moves once node 2 has reported it stopped for the move.
    expect([c.vm("a").node, c.vm("b").node]).toEqual([2, 2])
    release(c, "a", 2)
    release(c, "b", 2)
    expect([c.vm("a").node, c.vm("b").node]).toEqual([1, 1])
    // A cordon survives the node re-registering after a restart.
    c.ok(new C.RegisterNode({ info: node(2) }))
    expect(c.state.nodes.get(2)!.state).toBe("draining")
  })

  it("a VM leaves a live node in two phases: only a report of it stopped for this very move places it elsewhere", () => {
    const c = threeNodes()
    c.ok(new C.CreateVm({ spec: spec("web") }))
    c.ok(new C.StartVm({ name: vmName("web") }))
    c.ok(new C.ReportVmStatus({ name: vmName("web"), node: id(1), status: new VmStatus({ phase: "running", since: 1, pid: 7, restarts: 0 }) }))
    const before = c.vm("web")
    c.ok(new C.SetNodeState({ id: id(1), state: "draining" }))
    const moving = c.vm("web")
    expect([moving.node, moving.moving, moving.revision]).toEqual([1, before.revision + 1, before.revision + 1])
    // Draining again does not begin another move.
    c.ok(new C.SetNodeState({ id: id(1), state: "draining" }))
    expect(c.vm("web")).toBe(moving)
    // Reports without the move's proof (made before node 1 saw it), or of it still running, keep it there.
    c.ok(new C.ReportVmStatus({ name: vmName("web"), node: id(1), status: new VmStatus({ phase: "stopped", since: 2, restarts: 0 }) }))
    c.ok(new C.ReportVmStatus({ name: vmName("web"), node: id(1), status: new VmStatus({ phase: "stopped", since: 2, restarts: 0, released: moving.moving! - 1 }) }))
    c.ok(new C.ReportVmStatus({ name: vmName("web"), node: id(1), status: new VmStatus({ phase: "running", since: 3, pid: 7, restarts: 0, released: moving.moving! }) }))
    expect([c.vm("web").node, c.vm("web").moving]).toEqual([1, moving.moving])
    // Another node's report proves nothing.
    c.ok(new C.ReportVmStatus({ name: vmName("web"), node: id(2), status: new VmStatus({ phase: "stopped", since: 3, restarts: 0, released: moving.moving! }) }))
    expect(c.vm("web").node).toBe(1)
    const moved = release(c, "web", 1)
    expect(moved.node).not.toBe(1)
    expect(moved.moving).toBeUndefined()
    expect([moved.desired, moved.status.phase]).toEqual(["running", "stopped"]) // its new node starts it
  })

  it("a move is called off when its node is made active or cordoned again, unless the VM no longer fits there", () => {
    const c = new Cluster()
    c.ok(new C.RegisterNode({ info: node(1, 4096) }))
    c.ok(new C.RegisterNode({ info: node(2, 16384) }))
    c.ok(new C.SetNodeState({ id: id(2), state: "cordoned" }))
    c.ok(new C.CreateVm({ spec: spec("a") }))
    c.ok(new C.CreateVm({ spec: spec("b") }))
    c.ok(new C.SetNodeState({ id: id(2), state: "active" }))
    // b outgrows node 1 (a resize move), then node 1 is drained (a for the drain).
    c.ok(new C.UpdateVm({ name: vmName("b"), memoryMiB: 4096 }))
    c.ok(new C.SetNodeState({ id: id(1), state: "draining" }))
    expect([c.vm("a").moving !== undefined, c.vm("b").moving !== undefined]).toEqual([true, true])
    const a = c.vm("a")
    c.ok(new C.SetNodeState({ id: id(1), state: "cordoned" }))
    expect([c.vm("a").node, c.vm("a").moving, c.vm("a").revision]).toEqual([1, undefined, a.revision + 1])
    expect(c.vm("b").moving).toBeDefined()
    // The proof of the cancelled move does not move it.
    c.ok(new C.ReportVmStatus({ name: vmName("a"), node: id(1), status: new VmStatus({ phase: "stopped", since: 2, restarts: 0, released: a.moving! }) }))
    expect(c.vm("a").node).toBe(1)
    expect(release(c, "b", 1).node).toBe(2)
  })

  it("a node marked down or removed mid-move gives its VMs up at once; a VM deleted or stopped mid-move", () => {
    const c = threeNodes()
    for (const name of ["a", "b", "c"]) {
      c.ok(new C.CreateVm({ spec: spec(name), desired: "running" }))
      expect(c.vm(name).node).toBe(name === "a" ? 1 : name === "b" ? 2 : 3)
    }
    c.ok(new C.SetNodeState({ id: id(1), state: "draining" }))
    c.ok(new C.SetNodeHealth({ id: id(1), health: "down", at: c.now }))
    expect([c.vm("a").node, c.vm("a").moving]).toEqual([2, undefined])
    c.ok(new C.SetNodeState({ id: id(3), state: "draining" }))
    c.ok(new C.RemoveNode({ id: id(3) }))
    expect([c.vm("c").node, c.vm("c").moving]).toEqual([2, undefined])
    // Stopped mid-move: it still moves once released, and stays stopped.
    c.ok(new C.RegisterNode({ info: node(1) }))
    c.ok(new C.SetNodeState({ id: id(1), state: "active" }))
    c.ok(new C.SetNodeState({ id: id(2), state: "draining" }))
    c.ok(new C.StopVm({ name: vmName("b") }))
    expect(c.vm("b").moving).toBeDefined()
    expect([release(c, "b", 2).node, c.vm("b").desired]).toEqual([1, "stopped"])
    // Deleted mid-move: gone (its node stops it as an orphan).
    c.ok(new C.DeleteVm({ name: vmName("a") }))
    expect(c.state.vms.has("a")).toBe(false)
    // A move survives a snapshot.
    expect(c.vm("c").moving).toBeDefined()
    sameState(ClusterState.restore(c.state.snapshot()), c.state)
    expect(ClusterState.restore(c.state.snapshot()).vms.get("c")!.moving).toBe(c.vm("c").moving)
  })

  it("a host id held by one incarnation is refused to another while the node is up; marked down, the new one takes it", () => {
    const c = threeNodes()
    const a = "00000000-0000-4000-8000-00000000000a"
    const b = "00000000-0000-4000-8000-00000000000b"
    const host = (incarnation?: string) => new NodeInfo({ ...node(9), ...(incarnation !== undefined ? { incarnation } : {}) })
    c.ok(new C.RegisterNode({ info: host(a) }))
    c.ok(new C.CreateVm({ spec: spec("h"), desired: "running" }))
    const refused = c.run(new C.RegisterNode({ info: host(b) }))
    expect(Either.isLeft(refused) && refused.left.code).toBe("BLX_NODE_ID_IN_USE")
    expect(c.state.nodes.get(9)!.incarnation).toBe(a)
    // The same incarnation again (a restart), and a host of an older version that sends none, keep it.
    c.ok(new C.RegisterNode({ info: host(a) }))
    expect(c.ok(new C.RegisterNode({ info: host() })).node!.incarnation).toBe(a)
    c.ok(new C.SetNodeHealth({ id: id(9), health: "down", at: c.now }))
    expect(c.ok(new C.RegisterNode({ info: host(b) })).node).toMatchObject({ incarnation: b, health: "up" })
    expect(ClusterState.restore(c.state.snapshot()).nodes.get(9)!.incarnation).toBe(b)
  })

  it("a node of an older version (no releases-moves) never releases: its moves wait, say for what, and complete once it registers upgraded or is marked down", () => {
    const c = new Cluster()
    c.ok(new C.RegisterNode({ info: oldNode(1) }))
    for (const n of [2, 3]) {
      c.ok(new C.RegisterNode({ info: node(n) }))
      c.ok(new C.SetNodeState({ id: id(n), state: "cordoned" }))
    }
    for (const name of ["a", "b", "c"]) c.ok(new C.CreateVm({ spec: spec(name), desired: "running" }))
    for (const n of [2, 3]) c.ok(new C.SetNodeState({ id: id(n), state: "active" }))
    const onOne = ["a", "b", "c"]
    expect(onOne.map((name) => c.vm(name).node)).toEqual([1, 1, 1])
    const wait = /^waits for node 1 to be upgraded or marked down: its version does not stop and release VMs moving off it/
    // An update after which a VM no longer fits, and a drain: both wait for node 1, and say so.
    c.ok(new C.UpdateVm({ name: vmName("a"), memoryMiB: 4096 }))
    expect([c.vm("a").node, c.vm("a").moving !== undefined]).toEqual([1, true])
    expect(c.vm("a").movingReason).toMatch(wait)
    c.ok(new C.SetNodeState({ id: id(1), state: "draining" }))
    for (const name of onOne) expect([c.vm(name).moving !== undefined, c.vm(name).movingReason]).toEqual([true, expect.stringMatching(wait)])
    // What the old agent reports (stopped, without `released`) moves nothing: never a one-step move.
    c.ok(new C.ReportVmStatus({ name: vmName(onOne[1]!), node: id(1), status: new VmStatus({ phase: "stopped", since: 2, restarts: 0 }) }))
    expect(c.vm(onOne[1]!).node).toBe(1)
    // The wait is replicated state: it survives a snapshot; a snapshot of before these fields decodes.
    sameState(ClusterState.restore(c.state.snapshot()), c.state)
    const old = JSON.parse(c.state.snapshot())
    for (const vm of old.vms) delete vm.movingReason
    for (const n of old.nodes) delete n.capabilities
    expect(ClusterState.restore(JSON.stringify(old)).nodes.get(2)!.capabilities).toBeUndefined()
    // Node 1 registers again, upgraded: the moves no longer wait (its agent now releases them).
    const before = c.vm(onOne[0]!)
    c.ok(new C.RegisterNode({ info: node(1) }))
    expect([c.vm(onOne[0]!).movingReason, c.vm(onOne[0]!).moving, c.vm(onOne[0]!).revision]).toEqual([undefined, before.moving, before.revision + 1])
    expect(release(c, onOne[0]!, 1).node).not.toBe(1)
    // Registering old again (a downgrade) makes the rest wait again; marked down, it gives them up at once.
    c.ok(new C.RegisterNode({ info: oldNode(1) }))
    expect(c.vm(onOne[1]!).movingReason).toMatch(wait)
    c.ok(new C.SetNodeHealth({ id: id(1), health: "down", at: c.now }))
    for (const name of onOne.slice(1)) expect([c.vm(name).node === 1, c.vm(name).moving, c.vm(name).movingReason]).toEqual([false, undefined, undefined])
  })

  it("unknown nodes are refused with BLX_NODE_NOT_FOUND", () => {
    const c = threeNodes()
    const r = c.run(new C.SetNodeState({ id: id(9), state: "cordoned" }))
    expect(Either.isLeft(r) && r.left.code).toBe("BLX_NODE_NOT_FOUND")
  })
})

describe("determinism and snapshots", () => {
  it("a retried request id applies once and returns the first result", () => {
    const c = threeNodes()
    const first = c.run(new C.CreateVm({ spec: spec("web") }), "req-1")
    const again = c.run(new C.CreateVm({ spec: spec("web") }), "req-1")
    expect(Either.isRight(again)).toBe(true)
    expect(again).toEqual(first)
    expect(Either.isLeft(c.run(new C.CreateVm({ spec: spec("web") }), "req-2"))).toBe(true)
  })

  it("request ids are remembered up to RequestMemory, the oldest forgotten first, also after a restore", () => {
    const c = threeNodes()
    let restored: Cluster | undefined
    const stop = (n: number) => new C.StopVm({ name: vmName(`vm-${n}`) })
    for (let n = 1; n <= RequestMemory + 5; n++) {
      c.run(stop(n), `req-${n}`)
      restored?.run(stop(n), `req-${n}`)
      if (n === 100) {
        const state = ClusterState.restore(c.state.snapshot())
        restored = Object.assign(new Cluster(), { state, index: state.appliedIndex, now: c.now })
      }
    }
    expect(c.state.requests.size).toBe(RequestMemory)
    expect([...c.state.requests.keys()].slice(0, 2)).toEqual(["req-6", "req-7"])
    sameState(restored!.state, c.state)
    // A forgotten id applies again; a remembered one returns its first result.
    c.ok(new C.CreateVm({ spec: spec("vm-1") }))
    c.ok(new C.CreateVm({ spec: spec("vm-7") }))
    expect(Either.isRight(c.run(stop(1), "req-1"))).toBe(true)
    expect(Either.isLeft(c.run(stop(7), "req-7"))).toBe(true)
  })

  it("the cluster id and member addresses travel in snapshots", () => {
    const c = threeNodes()
    c.state.clusterId = "3f1c0b0e-cluster"
    c.state.applyMembership(100, { type: "addLearner", nodeId: 4, address: "127.0.0.1:7004" })
    const restored = ClusterState.restore(c.state.snapshot())
    expect(restored.clusterId).toBe("3f1c0b0e-cluster")
    expect(restored.members.get(4)).toBe("127.0.0.1:7004")
    expect(restored.appliedIndex).toBe(100)
  })

  it("API tokens: created with the leader's clock, kept as hashes, revoked once, carried in snapshots", () => {
    const c = threeNodes()
    const tokenId = TokenId.make("00112233445566aa")
    const created = c.ok(new C.CreateApiToken({ id: tokenId, name: "ci", role: "operator", hash: "c".repeat(64) }))
    expect(created.token).toEqual({ id: tokenId, name: "ci", role: "operator", createdAt: c.now })
    expect(created.token).not.toHaveProperty("hash")
    expect(c.state.tokens.get(tokenId)?.hash).toBe("c".repeat(64))
    // The same id again is refused, not overwritten.
    const again = c.run(new C.CreateApiToken({ id: tokenId, role: "admin", hash: "d".repeat(64) }))
    expect(Either.isLeft(again) && again.left.code).toBe("BLX_INVALID_ARGUMENT")
    expect(c.state.tokens.get(tokenId)?.role).toBe("operator")

    const restored = ClusterState.restore(c.state.snapshot())
    expect(restored.tokens.get(tokenId)).toEqual(c.state.tokens.get(tokenId))
    // A snapshot written before tokens existed restores with none.
    const old = JSON.parse(c.state.snapshot())
    delete old.tokens
    expect(ClusterState.restore(JSON.stringify(old)).tokens.size).toBe(0)

    c.ok(new C.RevokeApiToken({ id: tokenId }))
    expect(c.state.tokens.has(tokenId)).toBe(false)
    const missing = c.run(new C.RevokeApiToken({ id: tokenId }))
    expect(Either.isLeft(missing) && missing.left.code).toBe("BLX_TOKEN_NOT_FOUND")
  })

  it("refuses to apply an entry twice or out of order", () => {
    const c = threeNodes()
    expect(() => c.state.apply(2, new CommandEnvelope({ command: new C.RemoveNode({ id: id(1) }), proposedAt: 0 }))).toThrow(/in order/)
  })

  const commandArb = fc.oneof(
    fc.constantFrom("a", "b", "c", "d").map((n) => new C.CreateVm({ spec: spec(n, { memoryMiB: 1024 + 512 * n.charCodeAt(0) % 3 }) })),
    fc.constantFrom("a", "b", "c", "d").map((n) => new C.StartVm({ name: vmName(n) })),
    fc.constantFrom("a", "b", "c", "d").map((n) => new C.StopVm({ name: vmName(n) })),
    fc.constantFrom("a", "b", "c", "d").map((n) => new C.DeleteVm({ name: vmName(n) })),
    fc.integer({ min: 1, max: 4 }).map((n) => new C.RegisterNode({ info: node(n, 2048 * n) })),
    fc.tuple(fc.integer({ min: 1, max: 4 }), fc.constantFrom("up" as const, "down" as const)).map(
      ([n, health]) => new C.SetNodeHealth({ id: id(n), health, at: 0 })
    ),
    fc.tuple(fc.integer({ min: 1, max: 4 }), fc.constantFrom("active" as const, "cordoned" as const, "draining" as const)).map(
      ([n, state]) => new C.SetNodeState({ id: id(n), state })
    ),
    fc.integer({ min: 1, max: 4 }).map((n) => new C.RemoveNode({ id: id(n) }))
  )

  it("property: the same commands give the same state, a snapshot restores it exactly, and no node is over capacity", () =>
    fc.assert(
      fc.property(fc.array(commandArb, { maxLength: 60 }), fc.nat(), (commands, cut) => {
        const a = new Cluster()
        const b = new Cluster()
        // A third replica restored from a snapshot part-way through must go on exactly like the others
        // (placement indexes are rebuilt from the snapshot, not carried in it).
        const at = commands.length === 0 ? 0 : cut % commands.length
        const c = new Cluster()
        commands.forEach((command, i) => {
          a.run(command)
          b.run(command)
          if (i === at) {
            const restored = ClusterState.restore(a.state.snapshot())
            Object.assign(c, { state: restored, index: restored.appliedIndex, now: a.now })
          } else if (i > at) c.run(command)
        })
        // Replicas built the same way write byte-identical snapshots; a replica restored from one holds
        // the same state (records rebuilt from a snapshot may list their fields in another order).
        expect(a.state.snapshot()).toBe(b.state.snapshot())
        if (commands.length > 0) sameState(c.state, a.state)
        sameState(ClusterState.restore(a.state.snapshot()), a.state)
        for (const info of a.state.nodes.values()) {
          const hosted = [...a.state.vms.values()].filter((vm) => vm.node === info.id)
          expect(hosted.reduce((sum, vm) => sum + vm.spec.memoryMiB, 0)).toBeLessThanOrEqual(info.capacity.memoryMiB)
        }
        for (const vm of a.state.vms.values()) {
          if (vm.node !== undefined) expect(a.state.nodes.get(vm.node)?.health).not.toBe("down")
        }
      }),
      { numRuns: 200 }
    ))
})

describe("vm update", () => {
  const twoNodes = () => {
    const c = new Cluster()
    c.ok(new C.RegisterNode({ info: node(1, 4096) }))
    c.ok(new C.RegisterNode({ info: node(2, 8192) }))
    return c
  }

  it("replaces the spec's source and resources, bumps the generation only when the runner must change, and honours ifRevision", () => {
    const c = twoNodes()
    c.ok(new C.CreateVm({ spec: spec("web") }))
    c.ok(new C.StartVm({ name: vmName("web") }))
    const before = c.vm("web")
    const updated = c.ok(new C.UpdateVm({ name: vmName("web"), source: new RunnerConfig({ path: "/runners/web-2" }), vcpus: 2 })).vm!
    expect(updated.spec.source).toEqual(new RunnerConfig({ path: "/runners/web-2" }))
    expect(updated.spec.vcpus).toBe(2)
    expect(updated.spec.memoryMiB).toBe(1024)
    expect(updated.generation).toBe(1)
    expect(updated.revision).toBe(before.revision + 1)
    expect(updated.desired).toBe("running")
    expect(updated.node).toBe(before.node)

    expect(c.ok(new C.UpdateVm({ name: vmName("web"), restartPolicy: "never" })).vm!.generation).toBe(1)
    expect(c.ok(new C.UpdateVm({ name: vmName("web"), source: new RunnerConfig({ path: "/runners/web-2" }) })).vm!.generation).toBe(1)

    const stale = c.run(new C.UpdateVm({ name: vmName("web"), vcpus: 4, ifRevision: before.revision }))
    expect(Either.isLeft(stale) && stale.left._tag).toBe("Conflict")
    expect(c.vm("web").spec.vcpus).toBe(2)
    const missing = c.run(new C.UpdateVm({ name: vmName("nope"), vcpus: 4 }))
    expect(Either.isLeft(missing) && missing.left._tag).toBe("VmNotFound")
  })

  it("a VM that no longer fits its node moves to one it fits on, or waits pending; growing in place does not count its own reservation", () => {
    const c = new Cluster()
    c.ok(new C.RegisterNode({ info: node(1, 4096, { zone: "a" }) }))
    c.ok(new C.RegisterNode({ info: node(2, 8192, { zone: "b" }) }))
    c.ok(new C.CreateVm({ spec: spec("web", { memoryMiB: 3072 }) }))
    expect(c.vm("web").node).toBe(2)
    c.ok(new C.CreateVm({ spec: spec("db", { memoryMiB: 4096, constraints: [new Constraint({ key: "zone", op: "eq", value: "a" })] }) }))
    expect(c.vm("db").node).toBe(1)
    // Growing to 8192 fits node 2 only without counting web's own 3072 there: it stays.
    expect(c.ok(new C.UpdateVm({ name: vmName("web"), memoryMiB: 8192 })).vm!.node).toBe(2)
    // db grows past node 1, and may not go to node 2 (zone): pending, saying why.
    expect(c.ok(new C.UpdateVm({ name: vmName("db"), memoryMiB: 6144 })).vm!.moving).toBeDefined()
    const pending = release(c, "db", 1)
    expect(pending.node).toBeUndefined()
    expect(pending.pendingReason).toContain("not enough memory")
    // Shrunk again, it is placed.
    expect(c.ok(new C.UpdateVm({ name: vmName("db"), memoryMiB: 2048 })).vm!.node).toBe(1)
    // A bigger node joins; web grows beyond node 2's capacity and moves there.
    c.ok(new C.RegisterNode({ info: node(3, 16384, { zone: "b" }) }))
    expect(c.vm("web").node).toBe(2)
    // It moves in two phases: node 2 stops it first, then it is placed on node 3.
    const moving = c.ok(new C.UpdateVm({ name: vmName("web"), memoryMiB: 12288 })).vm!
    expect([moving.node, moving.moving]).toEqual([2, moving.revision])
    const moved = release(c, "web", 2)
    expect(moved.node).toBe(3)
    expect(moved.generation).toBe(2)
    expect(moved.status.phase).toBe("stopped") // its new node starts it (desired is kept)
  })
})

describe("status reports, many to an entry (ReportVmStatuses)", () => {
  /** Four running VMs, node 1 draining (its VMs are moving: a report `released` for the move lets one go). */
  const draining = () => {
    const c = new Cluster()
    for (const n of [1, 2]) c.ok(new C.RegisterNode({ info: node(n) }))
    for (const name of ["a", "b", "c", "d"]) c.ok(new C.CreateVm({ spec: spec(name), desired: "running" }))
    c.ok(new C.SetNodeState({ id: id(2), state: "active" }))
    c.ok(new C.SetNodeState({ id: id(1), state: "draining" }))
    return c
  }
  const reportArb = fc.record({
    name: fc.constantFrom("a", "b", "c", "d", "ghost"),
    node: fc.integer({ min: 1, max: 2 }),
    phase: fc.constantFrom("running" as const, "stopped" as const, "failed" as const),
    release: fc.boolean(),
    pid: fc.integer({ min: 1, max: 5 })
  })

  it("property: a batch applies exactly as its reports one entry each, in order (stale ones ignored, a released move placed elsewhere)", () =>
    fc.assert(
      fc.property(fc.array(reportArb, { minLength: 1, maxLength: 40 }), fc.integer({ min: 1, max: 8 }), (drawn, size) => {
        const batched = draining()
        const single = draining()
        expect([...batched.state.vms.values()].some((vm) => vm.moving !== undefined)).toBe(true)
        const at = batched.now + 10
        // What each report says is drawn against the state before any of them (a release names the VM's move then).
        const reports = drawn.map((r) => {
          const moving = batched.state.vms.get(r.name)?.moving
          const status = new VmStatus({ phase: r.phase, since: at, pid: r.pid, restarts: 0, ...(r.release && moving !== undefined ? { released: moving } : {}) })
          return { node: id(r.node), report: { name: vmName(r.name), status } }
        })
        let index = 100
        for (const { node: from, report } of reports) {
          expect(Either.isRight(single.state.apply(++index, new CommandEnvelope({ command: new C.ReportVmStatus({ ...report, node: from }), proposedAt: at })))).toBe(true)
        }
        // The same reports, consecutive ones of one node `size` to an entry.
        index = 100
        for (let i = 0; i < reports.length; ) {
          const from = reports[i]!.node
          let j = i
          while (j < reports.length && j - i < size && reports[j]!.node === from) j++
          const command = new C.ReportVmStatuses({ node: from, reports: reports.slice(i, j).map((r) => r.report) })
          expect(Either.isRight(batched.state.apply(++index, new CommandEnvelope({ command, proposedAt: at })))).toBe(true)
          i = j
        }
        expect(JSON.parse(JSON.stringify([...batched.state.vms.values()]))).toEqual(JSON.parse(JSON.stringify([...single.state.vms.values()])))
        expect([...batched.state.nodes.values()]).toEqual([...single.state.nodes.values()])
      }),
      { numRuns: 300 }
    ))

  it("a cluster below log version 3 refuses a batch, changing nothing, as a replica of an older release skips it", () => {
    const c = draining()
    c.state.clusterVersion = 2
    const before = c.state.snapshot()
    const result = c.run(new C.ReportVmStatuses({ node: id(1), reports: [{ name: vmName("a"), status: new VmStatus({ phase: "running", since: 1, pid: 9, restarts: 0 }) }] }))
    expect(Either.isLeft(result) && result.left._tag).toBe("ClusterVersionTooLow")
    expect(JSON.parse(c.state.snapshot())).toEqual({ ...JSON.parse(before), appliedIndex: c.state.appliedIndex })
  })

  it("the command decodes only with 1 to MaxStatusReports reports", () => {
    const report = { name: "a", status: { phase: "running", since: 1, restarts: 0 } }
    const decode = Schema.decodeUnknownEither(C.Command)
    expect(Either.isRight(decode({ _tag: "ReportVmStatuses", node: 1, reports: [report] }))).toBe(true)
    expect(Either.isLeft(decode({ _tag: "ReportVmStatuses", node: 1, reports: [] }))).toBe(true)
    expect(Either.isRight(decode({ _tag: "ReportVmStatuses", node: 1, reports: Array(C.MaxStatusReports).fill(report) }))).toBe(true)
    expect(Either.isLeft(decode({ _tag: "ReportVmStatuses", node: 1, reports: Array(C.MaxStatusReports + 1).fill(report) }))).toBe(true)
  })
})
