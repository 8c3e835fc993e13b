/**
 * Events derived from applied entries, through the state machine the Raft driver applies to: what
 * each command changed, in order, and the same events on a node that decodes the entries as on the
 * node that proposed them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import { TokenHash, TokenId } from "../../src/domain/ApiToken.js"
import { SealedKey } from "../../src/domain/CaRotation.js"
import { EventBatch } from "../../src/domain/ClusterEvent.js"
import * as C from "../../src/domain/Command.js"
import { JoinTokenId } from "../../src/domain/JoinToken.js"
import { HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import { VmStatus } from "../../src/domain/VmStatus.js"
import { batchJson, EventLog } from "../../src/events/EventLog.js"
import type { Entry } from "../../src/raft/Types.js"

const id = (n: number) => NodeId.make(n)
const vm = (s: string) => VmName.make(s)
const node = (n: number, memoryMiB = 4096) =>
  new NodeInfo({
    id: id(n),
    address: HostPort.make(`127.0.0.1:${7000 + n}`),
    capacity: new Resources({ vcpus: 8, memoryMiB }),
    labels: {},
    state: "active",
    health: "up"
  })
const spec = (name: string, memoryMiB = 512) => new VmSpec({ name: vm(name), source: new RunnerConfig({ path: `/runners/${name}` }), memoryMiB })
const encode = Schema.encodeSync(C.CommandEnvelopeJson)
const decodeBatch = Schema.decodeUnknownSync(Schema.parseJson(EventBatch))

/** Applies `commands` as entries 1, 2, … and returns each entry's events (as `GET /v1/events` sends them, decoded). */
const run = (commands: ReadonlyArray<C.Command | Entry>, own = false) => {
  const holder = new ClusterStateHolder(new EventLog(100))
  commands.forEach((command, i) => {
    const index = i + 1
    if ("index" in command) return void holder.applyEntry({ ...command, index })
    const envelope = new C.CommandEnvelope({ command, proposedAt: 1000 + index })
    const data = encode(envelope)
    if (own) holder.proposing(data, envelope)
    holder.applyEntry({ index, term: 1, kind: "normal", data })
  })
  return (holder.events.after(0, 1000) ?? []).map((batch) => decodeBatch(batchJson(batch)))
}

const types = (batches: ReturnType<typeof run>) => batches.map((b) => [b.index, b.events.map((e) => e.type).join(" ")])

describe("events derived from applied entries", () => {
  it("a VM's life: created and placed, started, its phases, labels, stopped, deleted", () => {
    const batches = run([
      new C.RegisterNode({ info: node(1) }),
      new C.CreateVm({ spec: spec("web") }),
      new C.StartVm({ name: vm("web") }),
      new C.ReportVmStatus({ name: vm("web"), node: id(1), status: new VmStatus({ phase: "starting", since: 5, restarts: 0 }) }),
      new C.ReportVmStatus({ name: vm("web"), node: id(1), status: new VmStatus({ phase: "running", since: 6, pid: 42, restarts: 0 }) }),
      new C.ReportVmStatus({ name: vm("web"), node: id(1), status: new VmStatus({ phase: "running", since: 6, pid: 43, restarts: 1 }) }),
      new C.SetVmLabels({ name: vm("web"), labels: { team: "a" } }),
      new C.StopVm({ name: vm("web") }),
      new C.DeleteVm({ name: vm("web") })
    ])
    expect(types(batches)).toEqual([
      [1, "node.registered"],
      [2, "vm.created vm.placed"],
      [3, "vm.started"],
      [4, "vm.phase"],
      [5, "vm.phase"],
      [6, "vm.status"],
      [7, "vm.updated"],
      [8, "vm.stopped"],
      [9, "vm.deleted"]
    ])
    expect(batches[1]).toEqual({
      index: 2,
      term: 1,
      at: 1002,
      events: [
        { type: "vm.created", vm: "web", revision: 2 },
        { type: "vm.placed", vm: "web", node: 1, revision: 2 }
      ]
    })
    expect(batches[4]!.events[0]).toEqual({ type: "vm.phase", vm: "web", phase: "running", previous: "starting", node: 1, restarts: 0, revision: 5 })
    expect(batches[8]!.events[0]).toEqual({ type: "vm.deleted", vm: "web", node: 1 })
  })

  it("a refused command, a stale report and a retried request change nothing, so they have no events", () => {
    const batches = run([
      new C.RegisterNode({ info: node(1) }),
      new C.StartVm({ name: vm("nope") }),
      new C.ReportVmStatus({ name: vm("nope"), node: id(1), status: new VmStatus({ phase: "running", since: 1, restarts: 0 }) }),
      new C.SetNodeState({ id: id(9), state: "cordoned" })
    ])
    expect(types(batches)).toEqual([[1, "node.registered"]])
  })

  it("a node going down moves its VMs; one that fits nowhere is pending with the scheduler's reason", () => {
    const batches = run([
      new C.RegisterNode({ info: node(1) }),
      new C.RegisterNode({ info: node(2, 1024) }),
      new C.CreateVm({ spec: spec("a", 2048) }),
      new C.CreateVm({ spec: spec("b", 512) }),
      new C.SetNodeState({ id: id(2), state: "cordoned" }),
      new C.SetNodeHealth({ id: id(1), health: "down", at: 10 }),
      new C.SetNodeState({ id: id(2), state: "active" }),
      new C.SetNodeHealth({ id: id(1), health: "up", at: 20 }),
      new C.SetNodeState({ id: id(2), state: "draining" }),
      // Node 2 stops b for the move (revision 3) and says so: only now does b move.
      new C.ReportVmStatus({ name: vm("b"), node: id(2), status: new VmStatus({ phase: "stopped", since: 30, restarts: 0, released: 3 }) }),
      new C.RemoveNode({ id: id(2) })
    ])
    expect(types(batches)).toEqual([
      [1, "node.registered"],
      [2, "node.registered"],
      [3, "vm.created vm.placed"],
      [4, "vm.created vm.placed"],
      [5, "node.cordoned"],
      [6, "node.down vm.moved vm.pending vm.phase"],
      [7, "node.uncordoned vm.pending"],
      [8, "node.up vm.placed vm.phase"],
      [9, "node.draining vm.moving"],
      [10, "vm.moved"],
      [11, "node.removed"]
    ])
    const down = batches[5]!.events
    expect(down[1]).toEqual({ type: "vm.moved", vm: "a", from: 1, revision: 4 })
    expect(down[2]).toEqual({ type: "vm.pending", vm: "a", reason: "no node can host a — node 1: down; node 2: cordoned", revision: 4 })
    expect(down[3]).toEqual({ type: "vm.phase", vm: "a", phase: "pending", previous: "stopped", restarts: 0, revision: 4 })
    // Still pending, for a new reason: a new event.
    expect(batches[6]!.events[1]).toMatchObject({ type: "vm.pending", vm: "a", reason: expect.stringContaining("not enough memory") })
    expect(batches[7]!.events[1]).toEqual({ type: "vm.placed", vm: "a", node: 1, revision: 6 })
    expect(batches[8]!.events[1]).toEqual({ type: "vm.moving", vm: "b", from: 2, revision: 3 })
    expect(batches[9]!.events).toEqual([{ type: "vm.moved", vm: "b", from: 2, to: 1, revision: 5 }])
  })

  it("a move called off (its node made active again before it stopped the VM) says so, and nothing moved", () => {
    const batches = run([
      new C.RegisterNode({ info: node(1) }),
      new C.RegisterNode({ info: node(2) }),
      new C.CreateVm({ spec: spec("a", 512) }),
      new C.SetNodeState({ id: id(1), state: "draining" }),
      new C.SetNodeState({ id: id(1), state: "active" })
    ])
    expect(types(batches).slice(3)).toEqual([
      [4, "node.draining vm.moving"],
      [5, "node.uncordoned vm.moving"]
    ])
    expect(batches[4]!.events[1]).toEqual({ type: "vm.moving", vm: "a", from: 1, cancelled: true, revision: 4 })
  })

  it("membership, a new leader and API tokens", () => {
    const batches = run([
      { index: 0, term: 2, kind: "empty", data: "3" },
      { index: 0, term: 2, kind: "confChange", data: JSON.stringify({ type: "addLearner", nodeId: 4, address: "127.0.0.1:7004" }) },
      { index: 0, term: 2, kind: "confChange", data: JSON.stringify({ type: "promote", nodeId: 4 }) },
      { index: 0, term: 2, kind: "confChange", data: JSON.stringify({ type: "remove", nodeId: 4 }) },
      { index: 0, term: 3, kind: "empty", data: "" },
      new C.CreateApiToken({ id: TokenId.make("0123456789abcdef"), name: "ci", role: "read-only", hash: TokenHash.make("a".repeat(64)) }),
      new C.RevokeApiToken({ id: TokenId.make("0123456789abcdef") })
    ])
    expect(batches.map((b) => b.events)).toEqual([
      [{ type: "leader.changed", term: 2, leader: 3 }],
      [{ type: "node.joined", node: 4, address: "127.0.0.1:7004" }],
      [{ type: "node.promoted", node: 4 }],
      [{ type: "node.left", node: 4 }],
      [{ type: "leader.changed", term: 3 }],
      [{ type: "token.created", id: "0123456789abcdef", role: "read-only", name: "ci" }],
      [{ type: "token.revoked", id: "0123456789abcdef" }]
    ])
    expect(batches[0]).not.toHaveProperty("at")
  })

  it("join tokens: made with their expiry, used by a node (a refused use is no event), revoked", () => {
    const id = JoinTokenId.make("00000000000000aa")
    const hash = "e".repeat(64)
    const batches = run([
      new C.CreateJoinToken({ id, hash, ttlMs: 60_000 }),
      new C.ConsumeJoinToken({ id, hash, node: NodeId.make(4) }),
      new C.ConsumeJoinToken({ id, hash, node: NodeId.make(5) }),
      new C.RevokeJoinToken({ id })
    ])
    expect(batches.map((b) => b.events)).toEqual([
      [{ type: "joinToken.created", id, expiresAt: batches[0]!.at! + 60_000 }],
      [{ type: "joinToken.used", id, node: 4 }],
      [{ type: "joinToken.revoked", id }]
    ])
  })

  it("the node that proposed the entries derives the same events as a node that decodes them", () => {
    const commands = [
      new C.RegisterNode({ info: node(1) }),
      new C.CreateVm({ spec: spec("web") }),
      new C.StartVm({ name: vm("web") }),
      new C.SetVmLabels({ name: vm("web"), labels: { x: "y" } }),
      new C.DeleteVm({ name: vm("web") })
    ]
    expect(run(commands, true)).toEqual(run(commands, false))
  })

  it("a CA rotation: started, each member's move, finished (a refused finish says nothing)", () => {
    const fresh = "f1".repeat(32)
    const previous = "0a".repeat(32)
    const sealed = (n: number) => new SealedKey({ node: id(n), ephemeralKey: "AA==", iv: "AA==", ciphertext: "AA==", tag: "AA==" })
    const member = (n: number): Entry => ({ index: 0, term: 1, kind: "confChange", data: JSON.stringify({ type: "addLearner", nodeId: n, address: `127.0.0.1:${7000 + n}` }) })
    const batches = run([
      member(1),
      member(2),
      new C.StartCaRotation({ ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", fingerprint: fresh, previous, keys: [sealed(1), sealed(2)] }),
      new C.CaRotationMoved({ node: id(2), fingerprint: fresh }),
      new C.CaRotationMoved({ node: id(2), fingerprint: fresh }),
      new C.FinishCaRotation({ fingerprint: fresh }),
      new C.CaRotationMoved({ node: id(1), fingerprint: fresh }),
      new C.FinishCaRotation({ fingerprint: fresh })
    ])
    expect(types(batches).slice(2)).toEqual([
      [3, "ca.rotation.started"],
      [4, "ca.rotation.moved"],
      [7, "ca.rotation.moved"],
      [8, "ca.rotation.finished"]
    ])
    const events = batches.flatMap((b) => b.events)
    expect(events.find((e) => e.type === "ca.rotation.started")).toEqual({ type: "ca.rotation.started", fingerprint: fresh, previous })
    expect(events.filter((e) => e.type === "ca.rotation.moved").map((e) => e.type === "ca.rotation.moved" && e.node)).toEqual([2, 1])
    expect(events.find((e) => e.type === "ca.rotation.finished")).toEqual({ type: "ca.rotation.finished", fingerprint: fresh, previous })
  })
})
