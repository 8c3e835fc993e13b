/**
 * Real `RaftNode`s talking through `PeerTransport` over loopback TCP (in-memory storage, the KV state
 * machine, real time): they elect a leader, replicate a write, and after the leader stops, the others
 * (which see it unreachable) elect a new one and keep writing; a learner back on an emptied data
 * directory is caught up from scratch, its peers having read its new incarnation at the handshake.
 */
import { HttpServer } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Effect, ExecutionStrategy, Exit, Fiber, Layer, Scope } from "effect"
import { layerStandalone, layerTransport, RaftPeers, type RaftPeersShape } from "../../src/net/PeerTransport.js"
import * as RaftNode from "../../src/raft/RaftNode.js"
import { KvStore } from "../../src/sim/KvStore.js"
import { layerMemory, MemoryStore } from "../../src/storage/RaftStorage.js"
import { eventually, freePort, secret } from "./harness.js"

interface Member {
  readonly id: number
  readonly address: string
  readonly kv: KvStore
  readonly raft: RaftNode.RaftNodeShape
  readonly peers: RaftPeersShape
  readonly stop: Effect.Effect<void>
}

/** Node `id`, founding a cluster of `voters` (undefined: joining one), its data directory's `incarnation`. */
const start = (id: number, voters: ReadonlyArray<number> | undefined, options: { readonly incarnation?: string; readonly port?: number } = {}) =>
  Effect.gen(function* () {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const kv = new KvStore()
    const Net = layerTransport({ self: id, clusterSecret: secret, requestTimeoutMs: 1000, backoffMaxMs: 300, incarnation: options.incarnation })
    const Http = layerStandalone({ port: options.port ?? 0, host: "127.0.0.1" })
    const Raft = RaftNode.layer({ id, tickMs: 20, requestTimeoutMs: 10_000, bootstrap: voters }).pipe(
      Layer.provide(Layer.mergeAll(layerMemory(new MemoryStore()), kv.layer()))
    )
    const context = yield* Layer.buildWithScope(Layer.mergeAll(Http, Raft).pipe(Layer.provideMerge(Net)), scope)
    const address = Context.get(context, HttpServer.HttpServer).address
    return {
      id,
      address: address._tag === "TcpAddress" ? `127.0.0.1:${address.port}` : "",
      kv,
      raft: Context.get(context, RaftNode.RaftNode),
      peers: Context.get(context, RaftPeers),
      stop: Scope.close(scope, Exit.void)
    } satisfies Member
  })

/** The leader every live member agrees on. */
const agreedLeader = (members: ReadonlyArray<Member>) =>
  Effect.gen(function* () {
    let leader = 0
    yield* eventually(
      "the members agree on a leader",
      Effect.map(Effect.forEach(members, (m) => m.raft.leader), (leaders) => {
        leader = leaders[0] ?? 0
        return leader !== 0 && leaders.every((l) => l === leader) && members.some((m) => m.id === leader)
      }),
      30_000
    )
    return members.find((m) => m.id === leader)!
  })

const put = (key: string, value: string) => JSON.stringify({ op: "put", key, value })

describe("RaftNode over PeerTransport", () => {
  it.scopedLive("three nodes elect, replicate, and fail over when the leader stops", () =>
    Effect.gen(function* () {
      const voters = [1, 2, 3]
      const members = yield* Effect.forEach(voters, (id) => start(id, voters))
      for (const a of members) for (const b of members) if (a.id !== b.id) yield* a.peers.set(b.id, b.address)

      const leader = yield* agreedLeader(members)
      yield* leader.raft.propose(put("k", "v1"))
      yield* eventually("every node applied k=v1", Effect.sync(() => members.every((m) => m.kv.get("k") === "v1")), 30_000)

      yield* leader.stop
      const rest = members.filter((m) => m.id !== leader.id)
      const next = yield* agreedLeader(rest)
      expect(next.id).not.toBe(leader.id)
      yield* next.raft.propose(put("k", "v2"))
      yield* eventually("the survivors applied k=v2", Effect.sync(() => rest.every((m) => m.kv.get("k") === "v2")), 30_000)
    })
  )

  it.scopedLive("a learner back on an emptied data directory, never removed: its leader reads the new incarnation and replicates to it from scratch", () =>
    Effect.gen(function* () {
      const voters = [1, 2, 3]
      const members = yield* Effect.forEach(voters, (id) => start(id, voters, { incarnation: `node-${id}` }))
      const port = yield* Effect.promise(freePort)
      const first = yield* start(4, undefined, { incarnation: "node-4-first", port })
      const all = [...members, first]
      for (const a of all) for (const b of all) if (a.id !== b.id) yield* a.peers.set(b.id, b.address)
      const leader = yield* agreedLeader(members)
      // Applied: so is the leader's first entry of its term, before which it takes no membership change.
      yield* leader.raft.propose(put("first", "write"))
      yield* leader.raft.proposeConfChange({ type: "addLearner", nodeId: 4 })
      for (let i = 0; i < 5; i++) yield* leader.raft.propose(put(`k${i}`, `${i}`))
      yield* eventually("the learner applied k4", Effect.sync(() => first.kv.get("k4") === "4"), 30_000)
      // It stops; its leader queues heartbeats for it (their commit index up to what its log held).
      yield* first.stop
      for (let i = 5; i < 10; i++) yield* leader.raft.propose(put(`k${i}`, `${i}`))
      yield* eventually(
        "the leader holds messages for the stopped learner",
        Effect.map(leader.peers.stats, (stats) => (stats.find((s) => s.id === 4)?.queued ?? 0) > 0),
        30_000
      )
      // Back on an emptied data directory, at the same address.
      const second = yield* start(4, undefined, { incarnation: "node-4-second", port })
      for (const m of members) yield* second.peers.set(m.id, m.address)
      const driver = yield* Effect.fork(second.raft.await)
      yield* eventually(
        "the learner applied k9 again (or stopped)",
        Effect.map(driver.poll, (ended) => ended._tag === "Some" || second.kv.get("k9") === "9"),
        30_000
      )
      const ended = yield* driver.poll
      expect(ended._tag === "Some" ? Cause.pretty(Exit.isFailure(ended.value) ? ended.value.cause : Cause.empty) : "running").toBe("running")
      expect(second.kv.get("k0")).toBe("0")
      const seen = (yield* leader.peers.stats).find((s) => s.id === 4)!
      expect(seen.incarnation).toBe("node-4-second")
      expect(seen.droppedRestarted).toBeGreaterThan(0)
      yield* Fiber.interrupt(driver)
    })
  )
})
