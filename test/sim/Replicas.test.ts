/**
 * The checks on the replicas of the cluster state (`src/sim/Replicas.ts`), as the orchestration
 * workload's rolling upgrade relies on them: replicas that apply an entry differently, an older
 * release applying past a raise of the cluster's log version, a raise while a member lags, and a
 * version that goes down are each caught; a correct upgrade passes.
 */
import { describe, expect, it } from "vitest"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import * as C from "../../src/domain/Command.js"
import { HostPort, NodeInfo, ReleasesMoves } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import type { Entry } from "../../src/raft/Types.js"
import { ReplicaChecks } from "../../src/sim/Replicas.js"
import { Schema } from "effect"

const id = (n: number) => NodeId.make(n)
const node = (n: number, logVersion: number) =>
  new NodeInfo({
    id: id(n),
    address: HostPort.make(`node${n}.sim:7001`),
    capacity: new Resources({ vcpus: 8, memoryMiB: 4096 }),
    labels: {},
    state: "active",
    health: "up",
    capabilities: [ReleasesMoves],
    logVersion
  })
const encode = Schema.encodeSync(C.CommandEnvelopeJson)
const entry = (index: number, command: C.Command): Entry => ({ index, term: 1, kind: "normal", data: encode(new C.CommandEnvelope({ command, proposedAt: 1_000 })) })

/** A replica `n` founded at log version 1, members 1 and 2, whose state plays release `release`. */
const replica = (checks: ReplicaChecks, n: number, release: number, reported = release) => {
  const holder: ClusterStateHolder = new ClusterStateHolder(checks.events(n, reported, 1, () => holder.current), { node: n })
  holder.current.clusterVersion = 1
  holder.current.release = release
  for (const m of [1, 2]) holder.current.members.set(m, `node${m}.sim:7001`)
  return holder
}

/** Both members registered log version 2, a VM runs, the version is raised, the VM's node is drained. */
const upgrade = (raiseMembers: ReadonlyArray<number> = [1, 2], second = 2): Array<Entry> => [
  entry(1, new C.RegisterNode({ info: node(1, 2) })),
  entry(2, new C.RegisterNode({ info: node(2, second) })),
  entry(3, new C.CreateVm({ spec: new VmSpec({ name: VmName.make("web"), source: new RunnerConfig({ path: "/runners/web" }) }), desired: "running" })),
  entry(4, new C.SetClusterVersion({ version: 2, members: raiseMembers.map(id) })),
  entry(5, new C.SetNodeState({ id: id(1), state: "draining" })),
  entry(6, new C.SetNodeState({ id: id(2), state: "draining" }))
]

const applyAll = (holder: ClusterStateHolder, entries: ReadonlyArray<Entry>) => {
  for (const e of entries) holder.applyEntry(e)
}

describe("replica checks", () => {
  it("pass a rolling upgrade applied alike by every replica", () => {
    const checks = new ReplicaChecks()
    for (const n of [1, 2]) applyAll(replica(checks, n, 2), upgrade())
    expect(checks.check()).toBeUndefined()
    expect(checks.highest).toBe(2)
  })

  it("catch a replica that applies an entry differently: a drain in one step where the others make it in two", () => {
    const checks = new ReplicaChecks()
    applyAll(replica(checks, 1, 2), upgrade())
    // Reported as of this release, but moving as the older one does.
    applyAll(replica(checks, 2, 1, 2), upgrade())
    expect(checks.check()).toMatch(/replicas applied entry [56] differently: node 1: .*vm\.moving.*; node 2: .*vm\.moved/)
  })

  it("catch an older release applying an entry after the raise, instead of stopping", () => {
    const checks = new ReplicaChecks()
    applyAll(replica(checks, 2, 1), upgrade())
    expect(checks.check()).toBe(
      "node 2, a release of log version 1, applied entry 5 at cluster log version 2: it must stop (BLX_RELEASE_TOO_OLD) at the entry that raised the version"
    )
  })

  it("catch a raise while a member registered a lower log version (the raise listing only the others)", () => {
    const checks = new ReplicaChecks()
    applyAll(replica(checks, 1, 2), upgrade([1], 1))
    expect(checks.check()).toMatch(/log version was raised to 2 at entry 4 \(on node 1\) while members had registered a lower one: node 2 \(log version 1\)/)
  })

  it("catch a version that goes down: a replica restoring a state from before the raise", () => {
    const checks = new ReplicaChecks()
    applyAll(replica(checks, 1, 2), upgrade())
    const late = replica(checks, 2, 2)
    late.current.appliedIndex = 5
    late.events.reset(5)
    expect(checks.check()).toMatch(/log version went down: node 2 restored a snapshot at index 5 at log version 1, but it was raised to 2 at index 4/)
  })
})
