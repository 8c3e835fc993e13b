/**
 * The node's ControlPlane over three in-process Raft nodes: forwarding to the leader, idempotent
 * retries, revisions, linearizable reads, membership changes.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Either, Exit } from "effect"
import type { ControlPlaneShape } from "../../src/api/ControlPlane.js"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import { sha256Hex } from "../../src/api/Auth.js"
import { parseJoinToken, presented } from "../../src/domain/JoinToken.js"
import { HostPort } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import * as Daemon from "../../src/node/Daemon.js"
import * as NodeControlPlane from "../../src/node/NodeControlPlane.js"
import { RaftCluster, value } from "../support/RaftCluster.js"

const address = (id: number) => `127.0.0.1:${7000 + id}`
const spec = (name: string) => new VmSpec({ name: VmName.make(name), source: new RunnerConfig({ path: `/runners/${name}` }) })

/** Three nodes whose ControlPlanes forward to each other in-process (the API client's role). */
const setup = (
  voters: ReadonlyArray<number> = [1, 2, 3],
  sourcePolicy?: NodeControlPlane.NodeControlPlaneOptions["sourcePolicy"],
  caFingerprint?: string,
  publicClusterSecret?: boolean
) =>
  Effect.gen(function* () {
    const cluster = new RaftCluster(
      voters,
      () => {
        const holder = new ClusterStateHolder()
        for (const id of voters) holder.current.members.set(id, address(id))
        return holder
      },
      (holder) => holder.layer()
    )
    const planes = new Map<string, ControlPlaneShape>()
    const plane = (id: number): ControlPlaneShape => {
      const made = NodeControlPlane.make({
        raft: cluster.node(id),
        state: cluster.state(id),
        remote: (addr) => planes.get(addr)!,
        catchUpTimeoutMs: 5_000,
        sourcePolicy,
        caFingerprint,
        publicClusterSecret
      })
      planes.set(address(id), made)
      return made
    }
    for (const id of voters) yield* cluster.start(id)
    const leader = yield* cluster.leader()
    return { cluster, plane, leader, followers: voters.filter((id) => id !== leader) }
  })

const failure = <A, E>(exit: Exit.Exit<A, E>) => (Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined)

describe("NodeControlPlane", () => {
  it.scoped("a VM whose runner is outside the allowed prefixes is refused before anything is proposed", () =>
    Effect.gen(function* () {
      const { cluster, plane, followers, leader } = yield* setup([1, 2, 3], { allowedRunnerPrefixes: ["/runners"] })
      for (const id of [1, 2, 3]) plane(id)
      const applied = (yield* cluster.node(leader).status).applied
      const attack = new VmSpec({ name: VmName.make("evil"), source: new RunnerConfig({ path: "/srv/anything" }) })
      const refused = failure(yield* cluster.drive(plane(followers[0]!).createVm(attack, { start: false })))
      expect(refused).toMatchObject({ code: "BLX_RUNNER_NOT_ALLOWED", node: followers[0] })
      expect((yield* cluster.node(leader).status).applied).toBe(applied)
      expect(value(yield* cluster.drive(plane(followers[0]!).createVm(spec("web"), { start: false }))).spec.name).toBe("web")
    })
  )

  it.scoped("API tokens: made on the leader (also through a follower), listed without their hash, revoked everywhere", () =>
    Effect.gen(function* () {
      const { cluster, plane, followers } = yield* setup()
      for (const id of [1, 2, 3]) plane(id)
      const created = value(yield* cluster.drive(plane(followers[0]!).createToken("operator", "ci")))
      expect(created.token).toMatch(/^blxt_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/)
      for (const id of [1, 2, 3]) {
        const listed = value(yield* cluster.drive(plane(id).listTokens("linearizable")))
        expect(listed).toEqual([{ id: created.id, name: "ci", role: "operator", createdAt: created.createdAt }])
        expect(listed[0]).not.toHaveProperty("hash")
        // Every replica holds the hash of the token, never the token.
        expect(JSON.stringify(cluster.state(id).current.snapshot())).not.toContain(created.token.slice(22))
      }
      value(yield* cluster.drive(plane(followers[1]!).revokeToken(created.id)))
      expect(value(yield* cluster.drive(plane(followers[0]!).listTokens("linearizable")))).toEqual([])
    })
  )

  it.scoped("join tokens: made on the leader pinning the CA, consumed once through any member; a bad token costs no log entry", () =>
    Effect.gen(function* () {
      const fingerprint = "ab".repeat(32)
      const { cluster, plane, followers, leader } = yield* setup([1, 2, 3], undefined, fingerprint)
      for (const id of [1, 2, 3]) plane(id)
      const created = value(yield* cluster.drive(plane(followers[0]!).createJoinToken(60_000)))
      const parts = Either.getOrThrow(parseJoinToken(created.token))
      expect(parts.fingerprint).toBe(fingerprint)
      expect(parts.id).toBe(created.id)
      expect(created.expiresAt - created.createdAt).toBe(60_000)
      const hash = sha256Hex(presented(parts))
      for (const id of [1, 2, 3]) {
        expect(cluster.state(id).current.snapshot()).not.toContain(parts.secret)
        expect(value(yield* cluster.drive(plane(id).listJoinTokens("linearizable")))).toEqual([{ id: created.id, createdAt: created.createdAt, expiresAt: created.expiresAt }])
      }
      // Refused on the leader before it proposes: the wrong secret, or a member's id.
      const before = (yield* cluster.node(leader).status).lastIndex
      expect(failure(yield* cluster.drive(plane(followers[1]!).consumeJoinToken(parts.id, sha256Hex("wrong"), NodeId.make(4))))).toMatchObject({ code: "BLX_JOIN_TOKEN_INVALID" })
      expect(failure(yield* cluster.drive(plane(followers[1]!).consumeJoinToken(parts.id, hash, NodeId.make(followers[0]!))))).toMatchObject({ code: "BLX_INVALID_ARGUMENT" })
      expect((yield* cluster.node(leader).status).lastIndex).toBe(before)
      const key = "cd".repeat(32)
      expect(value(yield* cluster.drive(plane(followers[1]!).consumeJoinToken(parts.id, hash, NodeId.make(4), key)))).toMatchObject({ usedBy: 4 })
      expect(failure(yield* cluster.drive(plane(followers[0]!).consumeJoinToken(parts.id, hash, NodeId.make(5), key)))).toMatchObject({ code: "BLX_JOIN_TOKEN_USED" })
      expect(failure(yield* cluster.drive(plane(followers[0]!).consumeJoinToken(parts.id, hash, NodeId.make(4), "ef".repeat(32))))).toMatchObject({ code: "BLX_JOIN_TOKEN_USED" })
      // Node 4 with its key again (its answer was lost), forwarded by another follower: admitted, nothing changes.
      expect(value(yield* cluster.drive(plane(followers[0]!).consumeJoinToken(parts.id, hash, NodeId.make(4), key)))).toMatchObject({ usedBy: 4 })
      for (const id of [1, 2, 3]) expect(cluster.state(id).current.joinTokens.get(parts.id)?.usedBy).toBe(4)
      value(yield* cluster.drive(plane(leader).revokeJoinToken(parts.id)))
      expect(value(yield* cluster.drive(plane(followers[0]!).listJoinTokens("linearizable")))).toEqual([])
    })
  )

  it.scoped("on the public development secret no join token is made (BLX_CLUSTER_SECRET_REQUIRED): it would hand that secret out", () =>
    Effect.gen(function* () {
      const { cluster, plane, followers, leader } = yield* setup([1, 2, 3], undefined, "ab".repeat(32), true)
      for (const id of [1, 2, 3]) plane(id)
      const before = (yield* cluster.node(leader).status).lastIndex
      const refused = failure(yield* cluster.drive(plane(followers[0]!).createJoinToken(60_000)))
      expect(refused).toMatchObject({ code: "BLX_CLUSTER_SECRET_REQUIRED", subject: "clusterSecretFile", node: followers[0] })
      expect((refused as { message: string }).message).toMatch(/public development cluster secret.*--cluster-secret-file.*restart them all/)
      expect((yield* cluster.node(leader).status).lastIndex).toBe(before)
    })
  )

  it.scoped("without TLS there is no CA to pin: no join token is made", () =>
    Effect.gen(function* () {
      const { cluster, plane, followers } = yield* setup()
      for (const id of [1, 2, 3]) plane(id)
      expect(failure(yield* cluster.drive(plane(followers[0]!).createJoinToken(60_000)))).toMatchObject({ code: "BLX_INVALID_ARGUMENT", message: expect.stringMatching(/insecure-plaintext/) })
    })
  )

  it.scoped("a write sent to a follower is forwarded to the leader and visible to a linearizable read everywhere", () =>
    Effect.gen(function* () {
      const { cluster, plane, followers } = yield* setup()
      for (const id of [1, 2, 3]) plane(id)
      const created = value(yield* cluster.drive(plane(followers[0]!).createVm(spec("web"), { start: false })))
      expect(created.spec.name).toBe("web")
      for (const id of [1, 2, 3]) {
        const listed = value(yield* cluster.drive(plane(id).listVms("linearizable")))
        expect(listed.map((vm) => vm.spec.name)).toEqual(["web"])
      }
      const missing = failure(yield* cluster.drive(plane(followers[1]!).getVm(VmName.make("nope"), "linearizable")))
      expect(missing).toMatchObject({ code: "BLX_VM_NOT_FOUND" })
    })
  )

  it.scoped("a retried write with the same idempotency key applies once; a stale revision is refused", () =>
    Effect.gen(function* () {
      const { cluster, plane, leader } = yield* setup()
      for (const id of [1, 2, 3]) plane(id)
      const p = plane(leader)
      const first = value(yield* cluster.drive(p.createVm(spec("db"), { requestId: "create-db-1", start: false })))
      const retry = value(yield* cluster.drive(p.createVm(spec("db"), { requestId: "create-db-1", start: false })))
      expect(retry).toEqual(first)
      const dup = failure(yield* cluster.drive(p.createVm(spec("db"), { requestId: "create-db-2", start: false })))
      expect(dup).toMatchObject({ code: "BLX_VM_EXISTS" })
      const started = value(yield* cluster.drive(p.startVm(VmName.make("db"), { ifRevision: first.revision })))
      expect(started.desired).toBe("running")
      const stale = failure(yield* cluster.drive(p.stopVm(VmName.make("db"), { ifRevision: first.revision })))
      expect(stale).toMatchObject({ code: "BLX_CONFLICT" })
    })
  )

  it.scoped("cluster status asked of a follower comes from the leader: every member, its role and lag", () =>
    Effect.gen(function* () {
      const { cluster, plane, leader, followers } = yield* setup()
      for (const id of [1, 2, 3]) plane(id)
      value(yield* cluster.drive(plane(leader).createVm(spec("a"), { start: false })))
      const status = value(yield* cluster.drive(plane(followers[0]!).clusterStatus))
      expect(status.node).toBe(leader)
      expect(status.leader).toBe(leader)
      expect(status.members.map((m) => [m.id, m.role, m.address])).toEqual(
        [1, 2, 3].map((id) => [id, id === leader ? "leader" : "follower", address(id)])
      )
      expect(status.commit).toBeGreaterThan(1)
    })
  )

  it.scoped("join adds a node as a learner, waits for it to catch up, then promotes it; leave removes it", () =>
    Effect.gen(function* () {
      const { cluster, plane, leader, followers } = yield* setup()
      for (const id of [1, 2, 3]) plane(id)
      for (const name of ["a", "b", "c"]) value(yield* cluster.drive(plane(leader).createVm(spec(name), { start: false })))
      yield* cluster.start(4, false)
      plane(4)
      const joined = value(yield* cluster.drive(plane(followers[0]!).join(NodeId.make(4), HostPort.make(address(4)))))
      expect(joined.members.map((m) => m.id)).toEqual([1, 2, 3, 4])
      expect(joined.members.find((m) => m.id === 4)!.role).toBe("follower")
      expect(joined.members.find((m) => m.id === 4)!.address).toBe(address(4))
      // The new member serves linearizable reads of everything written before it joined.
      const vms = value(yield* cluster.drive(plane(4).listVms("linearizable")))
      expect(vms.map((vm) => vm.spec.name)).toEqual(["a", "b", "c"])
      const left = value(yield* cluster.drive(plane(4).leave(NodeId.make(followers[1]!))))
      expect(left.members.map((m) => m.id)).toEqual([1, 2, 3, 4].filter((id) => id !== followers[1]))
    })
  )

  it.scoped("a node whose id is still a voter is refused when it asks to join (it lost its data); once removed, it joins as a new member", () =>
    Effect.gen(function* () {
      const { cluster, plane, leader, followers } = yield* setup()
      for (const id of [1, 2, 3]) plane(id)
      value(yield* cluster.drive(plane(leader).createVm(spec("kept"), { start: false })))
      // Node `wiped` lost its data directory: only a node without Raft state asks to join. (It does
      // not run yet: the daemon asks its peers before it starts its Raft node.)
      const wiped = followers[1]!
      yield* cluster.crash(wiped)
      cluster.members.delete(wiped)
      const refused = failure(yield* cluster.drive(plane(followers[0]!).join(NodeId.make(wiped), HostPort.make(address(wiped)))))
      expect(refused).toMatchObject({ code: "BLX_MEMBER_AMNESIA", node: leader, subject: String(wiped) })
      expect((refused as { message: string }).message).toContain(`blixard cluster leave --id ${wiped}`)
      expect((yield* cluster.node(leader).status).confState.voters).toContain(wiped)
      // What the daemon asks before starting its Raft node gives the same answer.
      const remote = (addr: string) => plane(Number(addr.split(":")[1]) - 7000)
      const peers = [{ name: `node ${leader}`, address: address(leader) }]
      const check = (node: number) =>
        Effect.either(Daemon.refuseAmnesia({ node: NodeId.make(node), peers, remote, dataDir: "/data", incarnation: "fresh" }))
      const before = yield* cluster.drive(check(wiped))
      expect(Exit.isSuccess(before) && Either.isLeft(before.value) ? before.value.left : undefined).toMatchObject({ code: "BLX_MEMBER_AMNESIA", subject: "/data" })
      const newcomer = yield* cluster.drive(check(9))
      expect(Exit.isSuccess(newcomer) && Either.isRight(newcomer.value)).toBe(true)
      // Removed, it starts on its empty directory, joins as a learner, catches up, and is promoted.
      value(yield* cluster.drive(plane(leader).leave(NodeId.make(wiped))))
      yield* cluster.start(wiped, false)
      plane(wiped)
      const joined = value(yield* cluster.drive(plane(followers[0]!).join(NodeId.make(wiped), HostPort.make(address(wiped)))))
      expect(joined.members.find((m) => m.id === wiped)?.role).toBe("follower")
      const vms = value(yield* cluster.drive(plane(wiped).listVms("linearizable")))
      expect(vms.map((vm) => vm.spec.name)).toEqual(["kept"])
    })
  )

  it.scoped("a learner that acknowledged entries and comes back empty is removed before its Raft node starts, then joins afresh", () =>
    Effect.gen(function* () {
      const { cluster, plane, leader, followers } = yield* setup()
      for (const id of [1, 2, 3]) plane(id)
      for (const name of ["a", "b", "c"]) value(yield* cluster.drive(plane(leader).createVm(spec(name), { start: false })))
      // Node 4 is a learner (its join under way) that has acknowledged the log...
      yield* cluster.start(4, false)
      plane(4)
      value(yield* cluster.drive(cluster.node(leader).proposeConfChange({ type: "addLearner", nodeId: 4, address: HostPort.make(address(4)) })))
      const commit = (yield* cluster.node(leader).status).commit
      yield* cluster.until("node 4 acknowledged the log", () =>
        Effect.map(cluster.node(leader).status, (st) => (st.progress.find((p) => p.id === 4)?.match ?? 0) >= commit)
      )
      // ...then loses its data directory and starts again, empty.
      yield* cluster.crash(4)
      cluster.members.delete(4)
      const remote = (addr: string) => plane(Number(addr.split(":")[1]) - 7000)
      const peers = [{ name: `node ${followers[0]}`, address: address(followers[0]!) }]
      // What the daemon does before it starts its Raft node: the leader's progress still holds what
      // the lost log acknowledged, so node 4 is removed (and is re-added afresh by its join).
      const checked = yield* cluster.drive(Daemon.refuseAmnesia({ node: NodeId.make(4), peers, remote, dataDir: "/data", incarnation: "fresh" }))
      expect(Exit.isSuccess(checked)).toBe(true)
      const confState = (yield* cluster.node(leader).status).confState
      expect([...confState.voters, ...confState.learners]).not.toContain(4)
      yield* cluster.start(4, false)
      plane(4)
      const joined = value(yield* cluster.drive(plane(followers[0]!).join(NodeId.make(4), HostPort.make(address(4)))))
      expect(joined.members.find((m) => m.id === 4)?.role).toBe("follower")
      // Promoted with the whole log: it serves a linearizable read of what was written before.
      const vms = value(yield* cluster.drive(plane(4).listVms("linearizable")))
      expect(vms.map((vm) => vm.spec.name)).toEqual(["a", "b", "c"])
      expect((yield* cluster.node(4).status).lastIndex).toBeGreaterThanOrEqual(commit)
    })
  )

  it.scoped("the unsafe switch (admitting amnesiac voters) lets such a node back in at once", () =>
    Effect.gen(function* () {
      const { cluster, plane, leader, followers } = yield* setup()
      plane(followers[0]!)
      const unsafe = NodeControlPlane.make({ raft: cluster.node(leader), state: cluster.state(leader), unsafeAdmitAmnesiacVoters: true })
      const joined = yield* cluster.drive(unsafe.join(NodeId.make(followers[1]!), HostPort.make(address(followers[1]!))))
      expect(Exit.isSuccess(joined)).toBe(true)
    })
  )

  it.scoped("leadership transfer through any node moves the lead", () =>
    Effect.gen(function* () {
      const { cluster, plane, followers } = yield* setup()
      for (const id of [1, 2, 3]) plane(id)
      const target = followers[0]!
      value(yield* cluster.drive(plane(followers[1]!).transferLeader(NodeId.make(target))))
      expect(yield* cluster.leader()).toBe(target)
      const health = value(yield* cluster.drive(plane(target).health))
      expect(health).toMatchObject({ status: "ok", node: target, role: "leader", leader: target })
    })
  )
})

describe("the leader's refusal of a join", () => {
  const self = NodeId.make(1)
  it("a voter asking to join lost its data (BLX_MEMBER_AMNESIA), unless a membership change is not applied yet: then it is told to retry", () => {
    const voters = { confState: { voters: [1, 2, 3] } }
    expect(NodeControlPlane.joinRefusal(self, 4, { ...voters, applied: 10, pendingConfIndex: 12 })).toBeUndefined()
    expect(NodeControlPlane.joinRefusal(self, 3, { ...voters, applied: 12, pendingConfIndex: 12 })).toMatchObject({ code: "BLX_MEMBER_AMNESIA", subject: "3" })
    // A new leader whose log holds its predecessor's removal of node 3, not applied yet.
    const pending = NodeControlPlane.joinRefusal(self, 3, { ...voters, applied: 10, pendingConfIndex: 12 })
    expect(pending).toMatchObject({ code: "BLX_UNAVAILABLE", subject: "3" })
    expect(pending?.message).toContain("retry the join")
  })
})
