/**
 * The cluster's log version (`src/cluster/ClusterVersion.ts`) in the replicated state machine:
 * raised only once every member registered the new one, commands of a newer version refused alike
 * on every replica, older semantics (one-step moves) while the cluster is below two-step moves, and
 * a node of an older release stopping on a log above its own.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Either, Exit, Option, Schema } from "effect"
import type { ApplyResult } from "../../src/cluster/ClusterState.js"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import { LogVersion, OldestLogVersion, releaseTooOld, TwoStepMoves, unsafeVersionToRaiseEarly, versionRefusal, versionToRaise } from "../../src/cluster/ClusterVersion.js"
import { SealedKey } from "../../src/domain/CaRotation.js"
import * as C from "../../src/domain/Command.js"
import { HostPort, NodeInfo, ReleasesMoves } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import { StateMachine, type StateMachineShape } from "../../src/raft/StateMachine.js"
import type { Entry } from "../../src/raft/Types.js"

const id = (n: number) => NodeId.make(n)

/** A node of this release (`logVersion`), or of one before log versions (none). */
const node = (n: number, logVersion?: number) =>
  new NodeInfo({
    id: id(n),
    address: HostPort.make(`127.0.0.1:${7000 + n}`),
    capacity: new Resources({ vcpus: 8, memoryMiB: 4096 }),
    labels: {},
    state: "active",
    health: "up",
    capabilities: [ReleasesMoves],
    ...(logVersion !== undefined ? { logVersion } : {})
  })

const envelope = (command: C.Command, requestId?: string) =>
  new C.CommandEnvelope({ command, proposedAt: 1_000, ...(requestId !== undefined ? { requestId } : {}) })

const encode = Schema.encodeSync(C.CommandEnvelopeJson)
const entry = (index: number, command: C.Command, requestId?: string): Entry => ({ index, term: 1, kind: "normal", data: encode(envelope(command, requestId)) })

/** A state as a cluster of the oldest log version has it: founded before log versions. */
const oldest = (): ClusterState => {
  const state = new ClusterState()
  state.clusterVersion = OldestLogVersion
  for (const m of [1, 2, 3]) state.members.set(m, `127.0.0.1:${7000 + m}`)
  return state
}

const applier = (state: ClusterState) => {
  let index = state.appliedIndex
  return (command: C.Command, requestId?: string): ApplyResult => state.apply(++index, envelope(command, requestId))
}

const code = (result: ApplyResult | undefined) => (result !== undefined && Either.isLeft(result) ? result.left.code : "applied")

const rotation = () =>
  new C.StartCaRotation({
    ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    fingerprint: "f1".repeat(32),
    previous: "0a".repeat(32),
    keys: [1, 2, 3].map((n) => new SealedKey({ node: id(n), ephemeralKey: "AA==", iv: "AA==", ciphertext: "AA==", tag: "AA==" }))
  })

describe("cluster log version", () => {
  it("rises only once every member (voters and learners, not hosts) registered the new one, and never falls", () => {
    const state = oldest()
    const apply = applier(state)
    const members = [1, 2, 3]
    apply(new C.RegisterNode({ info: node(1, 2) }))
    apply(new C.RegisterNode({ info: node(2, 2) }))
    // Node 3 (say, a learner) still runs a release before log versions; host 4 (no member) too.
    apply(new C.RegisterNode({ info: node(3) }))
    apply(new C.RegisterNode({ info: node(4) }))
    expect(versionToRaise(state, members)).toBeUndefined()
    // A leader that raised anyway is refused on every replica: the entry names who lags.
    const early = apply(new C.SetClusterVersion({ version: 2, members: members.map(id) }))
    expect(code(early)).toBe("BLX_CLUSTER_VERSION")
    expect(Either.isLeft(early) && early.left.message).toMatch(/node 3 \(log version 1\) registered a lower one; upgrade them first/)
    expect(state.clusterVersion).toBe(1)

    apply(new C.RegisterNode({ info: node(3, 2) }))
    // Host 4 is not a member: it does not apply the log, so it does not hold the version back.
    expect(versionToRaise(state, members)).toBe(2)
    expect(code(apply(new C.SetClusterVersion({ version: 2, members: members.map(id) })))).toBe("applied")
    expect(state.clusterVersion).toBe(2)
    expect(code(apply(new C.SetClusterVersion({ version: 1, members: [] })))).toBe("applied")
    expect(state.clusterVersion).toBe(2)
    // It is in the snapshot; a snapshot from before log versions is of the oldest.
    expect(ClusterState.restore(state.snapshot()).clusterVersion).toBe(2)
    const old = JSON.parse(state.snapshot()) as Record<string, unknown>
    delete old["clusterVersion"]
    expect(ClusterState.restore(JSON.stringify(old)).clusterVersion).toBe(OldestLogVersion)
  })

  it("a command of a newer log version is refused before the version rises, on every replica alike, as an older replica skips it", () => {
    const state = oldest()
    const holder = new ClusterStateHolder()
    holder.current = oldest()
    const apply = applier(state)
    for (const m of [1, 2, 3]) {
      const command = new C.RegisterNode({ info: node(m, m === 3 ? undefined : 2) })
      apply(command)
      holder.applyEntry(entry(m, command))
    }
    const refusal = versionRefusal(state, rotation(), 1)
    expect(refusal?.code).toBe("BLX_CLUSTER_VERSION")
    expect(refusal?.message).toMatch(/StartCaRotation needs log version 2, but the cluster runs at log version 1 .*members below it: node 3 \(log version 1\); upgrade them/)
    const direct = apply(rotation(), "rotate-1")
    const decoded = holder.applyEntry(entry(4, rotation(), "rotate-1"))
    expect(code(direct)).toBe("BLX_CLUSTER_VERSION")
    expect(decoded).toEqual(direct)
    // Nothing changed but the applied index, and the request id is not remembered (a retry after
    // the upgrade applies): what a replica that cannot decode the entry does.
    for (const s of [state, holder.current]) {
      expect(s.caRotation).toBeUndefined()
      expect(s.requests.has("rotate-1")).toBe(false)
      expect(s.appliedIndex).toBe(4)
    }
    expect(holder.current.snapshot()).toBe(state.snapshot())

    apply(new C.RegisterNode({ info: node(3, 2) }))
    apply(new C.SetClusterVersion({ version: 2, members: [1, 2, 3].map(id) }))
    expect(versionRefusal(state, rotation())).toBeUndefined()
    expect(code(apply(rotation(), "rotate-1"))).toBe("applied")
    expect(state.caRotation?.fingerprint).toBe("f1".repeat(32))
  })

  it("below two-step moves, a drain moves VMs in one step on every replica, as the older members do; from it on, in two", () => {
    const drain = (version: number) => {
      const state = oldest()
      state.clusterVersion = version
      const apply = applier(state)
      apply(new C.RegisterNode({ info: node(1, LogVersion) }))
      apply(new C.RegisterNode({ info: node(2, LogVersion) }))
      const created = apply(new C.CreateVm({ spec: new VmSpec({ name: VmName.make("web"), source: new RunnerConfig({ path: "/runners/web" }) }), desired: "running" }))
      const from = Either.isRight(created) ? created.right.vm!.node! : id(0)
      apply(new C.SetNodeState({ id: from, state: "draining" }))
      return { from, vm: state.vms.get("web")! }
    }
    const old = drain(TwoStepMoves - 1)
    expect(old.vm.node).not.toBe(old.from)
    expect(old.vm.moving).toBeUndefined()
    const current = drain(TwoStepMoves)
    expect(current.vm.node).toBe(current.from)
    expect(current.vm.moving).toBeDefined()
  })

  it("the unsafe early raise (the simulator's --bug raise-version-early) takes a majority, which the replicas' own check then lets through", () => {
    const state = oldest()
    const apply = applier(state)
    apply(new C.RegisterNode({ info: node(1, 2) }))
    apply(new C.RegisterNode({ info: node(2, 2) }))
    apply(new C.RegisterNode({ info: node(3) }))
    expect(versionToRaise(state, [1, 2, 3])).toBeUndefined()
    const early = unsafeVersionToRaiseEarly(state, [1, 2, 3])
    expect(early).toEqual({ version: 2, members: [1, 2] })
    expect(code(apply(new C.SetClusterVersion({ version: 2, members: early!.members.map(id) })))).toBe("applied")
    expect(state.clusterVersion).toBe(2)
    // A minority is not enough, and nothing is raised at the cluster's own version.
    expect(unsafeVersionToRaiseEarly(oldest(), [1, 2, 3])).toBeUndefined()
  })

  it("an older release (as the simulator plays one) moves in one step whatever the cluster's version, and stops on a log above its own", () => {
    const state = oldest()
    state.clusterVersion = TwoStepMoves
    state.release = TwoStepMoves - 1
    const apply = applier(state)
    apply(new C.RegisterNode({ info: node(1, LogVersion) }))
    apply(new C.RegisterNode({ info: node(2, LogVersion) }))
    const created = apply(new C.CreateVm({ spec: new VmSpec({ name: VmName.make("web"), source: new RunnerConfig({ path: "/runners/web" }) }), desired: "running" }))
    const from = Either.isRight(created) ? created.right.vm!.node! : id(0)
    apply(new C.SetNodeState({ id: from, state: "draining" }))
    expect(state.vms.get("web")!.node).not.toBe(from)
    expect(releaseTooOld(TwoStepMoves, { node: 3 }, TwoStepMoves - 1)?.message).toMatch(
      new RegExp(`node 3 runs a release of log version ${TwoStepMoves - 1}, but the cluster's log is at version ${TwoStepMoves}`)
    )
    expect(releaseTooOld(TwoStepMoves, { node: 3 })).toBeUndefined()
  })
})

describe("a node of an older release than the cluster's log", () => {
  const location = "/var/lib/blixard"
  const newer = LogVersion + 1
  const snapshotAt = (version: number): string => {
    const state = new ClusterState()
    state.clusterVersion = version
    return state.snapshot()
  }
  const metadata = { index: 5, term: 1, confState: { voters: [1], learners: [] } }
  /** Runs `use` on the holder's `StateMachine` layer; the error it failed with, if it did. */
  const failureOf = <A>(holder: ClusterStateHolder, use: (machine: StateMachineShape) => Effect.Effect<A, unknown>) =>
    Effect.map(Effect.exit(Effect.flatMap(StateMachine, use).pipe(Effect.provide(holder.layer()))), (exit) =>
      Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) as { code: string; message: string; subject?: string } | undefined : undefined
    )

  it.effect("stops at start-up on a snapshot above its release, naming its data directory and both versions", () =>
    Effect.gen(function* () {
      const holder = new ClusterStateHolder(undefined, { node: 1, location })
      const error = yield* failureOf(holder, (m) => m.restore({ metadata, data: snapshotAt(newer) }))
      expect(error?.code).toBe("BLX_RELEASE_TOO_OLD")
      expect(error?.subject).toBe(location)
      expect(error?.message).toContain(`node 1 (data directory ${location}) runs a release of log version ${LogVersion}, but the cluster's log is at version ${newer}`)
      expect(error?.message).toMatch(/Upgrade the node's blixard binary/)
      // A snapshot at its own version restores.
      expect(yield* failureOf(holder, (m) => m.restore({ metadata, data: snapshotAt(LogVersion) }))).toBeUndefined()
    })
  )

  it.effect("stops at the entry that raises the version beyond its own, applying nothing after it", () =>
    Effect.gen(function* () {
      const holder = new ClusterStateHolder(undefined, { node: 2, location })
      // Node 2 was upgraded (its record says so), then started again on an older binary.
      const entries = [
        entry(1, new C.RegisterNode({ info: node(1, newer) })),
        entry(2, new C.RegisterNode({ info: node(2, newer) })),
        entry(3, new C.SetClusterVersion({ version: newer, members: [id(1), id(2)] })),
        entry(4, new C.RegisterNode({ info: node(3, newer) }))
      ]
      const error = yield* failureOf(holder, (m) => m.apply(entries))
      expect(error?.code).toBe("BLX_RELEASE_TOO_OLD")
      expect(error?.message).toContain(`node 2 (data directory ${location})`)
      expect(holder.current.appliedIndex).toBe(3)
      expect(holder.current.nodes.has(3)).toBe(false)
    })
  )
})
