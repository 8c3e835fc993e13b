import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import { NotLeader, Timeout } from "../../src/domain/Errors.js"
import { fromRaft, leaderContactAt } from "../../src/agent/QuorumContact.js"
import type { RaftNodeShape } from "../../src/raft/RaftNode.js"

interface View {
  role: string
  lead: number
  voters: Array<number>
  /** `RaftNode.quorumAcks`: the loop-processed responses of this leader's term. */
  acks: Map<number, number>
  flushingSince: number | undefined
  /** How a ReadIndex round ends: after `ms` of the clock, with success or the error. */
  readIndex: { ms: number; ok: boolean }
  readIndexCalls: number
  /** `RaftNode.followerContact`: what the leader's heartbeat rounds proved. */
  heartbeats: number | undefined
}

/** A RaftNode fake with only what `fromRaft` reads; any other member dies loudly. */
const fakeRaft = (view: View) =>
  new Proxy(
    {
      id: 1,
      status: Effect.sync(() => ({ role: view.role, lead: view.lead, confState: { voters: view.voters, learners: [] } })),
      quorumAcks: Effect.sync(() => new Map(view.acks)),
      flushingSince: Effect.sync(() => view.flushingSince),
      followerContact: Effect.sync(() => view.heartbeats),
      readIndex: Effect.suspend(() => {
        view.readIndexCalls++
        const { ms, ok } = view.readIndex
        return Effect.zipRight(
          Effect.sleep(`${ms} millis`),
          ok ? Effect.void : Effect.fail(new Timeout({ message: "the linearizable read did not complete" }))
        )
      })
    },
    {
      get: (target, key) => {
        if (key in target) return target[key as keyof typeof target]
        throw new Error(`fakeRaft: ${String(key)} is not implemented`)
      }
    }
  ) as unknown as RaftNodeShape

describe("QuorumContact: when this node last had contact with a quorum", () => {
  it("a leader: the time by which a majority of the voters (itself included) had been heard from", () => {
    const base = { self: 1, now: 10_000 }
    const acks = new Map([
      [2, 9_900],
      [3, 4_000],
      [4, 2_000],
      [5, 9_000]
    ])
    // 5 voters: itself (now), 9900, 9000 make a majority of 3 → 9000.
    expect(leaderContactAt({ ...base, voters: [1, 2, 3, 4, 5], acks })).toBe(9_000)
    // 3 voters: itself and node 2 → 9900.
    expect(leaderContactAt({ ...base, voters: [1, 2, 3], acks })).toBe(9_900)
    // A single-node cluster is its own majority.
    expect(leaderContactAt({ ...base, voters: [1], acks: new Map() })).toBe(10_000)
    // Never heard from enough voters: no proof of contact.
    expect(leaderContactAt({ ...base, voters: [1, 2, 3], acks: new Map() })).toBeUndefined()
  })
})

describe("QuorumContact.fromRaft", () => {
  const follower = (): View => ({
    role: "follower",
    lead: 2,
    voters: [1, 2, 3],
    acks: new Map(),
    flushingSince: undefined,
    readIndex: { ms: 10, ok: true },
    readIndexCalls: 0,
    heartbeats: undefined
  })

  it.scoped("a follower whose leader's heartbeats proved contact within the probe interval sends no ReadIndex round; once that proof is older, it probes", () =>
    Effect.gen(function* () {
      const view = follower()
      view.heartbeats = 0
      const contact = yield* fromRaft(fakeRaft(view), { probeEveryMs: 500 })
      expect(yield* contact).toBe(0)
      // Heartbeat proofs keep coming, 200 ms behind the clock: no probe.
      for (let t = 100; t <= 3000; t += 100) {
        yield* TestClock.adjust("100 millis")
        view.heartbeats = t - 200
      }
      expect(view.readIndexCalls).toBe(0)
      expect(yield* contact).toBe(2800)
      // The heartbeats stop proving anything (a leader of an older build, a failover): probes again.
      yield* TestClock.adjust("1100 millis")
      expect(view.readIndexCalls).toBeGreaterThan(0)
      expect(yield* contact).toBeGreaterThan(2800)
    }))

  it.scoped("a follower's contact is the send time of its newest ReadIndex round that succeeded", () =>
    Effect.gen(function* () {
      const view = follower()
      const contact = yield* fromRaft(fakeRaft(view), { probeEveryMs: 500 })
      yield* TestClock.adjust("1 millis")
      // The first probe went out at 0 and is answered at 10.
      expect(yield* contact).toBeUndefined()
      yield* TestClock.adjust("20 millis")
      expect(yield* contact).toBe(0)
      // Probes leave every 500 ms: the next at 500, answered at 510.
      yield* TestClock.adjust("600 millis")
      expect(yield* contact).toBe(500)
      expect(view.readIndexCalls).toBe(2)
    }))

  it.scoped("a one-way partition: the follower still hears its leader, but its probes fail, so contact ages", () =>
    Effect.gen(function* () {
      const view = follower()
      const contact = yield* fromRaft(fakeRaft(view), { probeEveryMs: 500 })
      yield* TestClock.adjust("20 millis")
      expect(yield* contact).toBe(0)
      // From now on the leader does not hear this node: every ReadIndex times out, while the
      // leader's messages keep arriving.
      view.readIndex = { ms: 1000, ok: false }
      for (let t = 1000; t <= 10_000; t += 1000) yield* TestClock.adjust("1000 millis")
      expect(view.readIndexCalls).toBeGreaterThan(5)
      expect(yield* contact).toBe(0)
    }))

  it.scoped("keeps the newest proof through an election, and a leader measures its majority", () =>
    Effect.gen(function* () {
      const view = follower()
      const contact = yield* fromRaft(fakeRaft(view), { probeEveryMs: 500 })
      yield* TestClock.adjust("20 millis")
      expect(yield* contact).toBe(0)
      // The leader is gone and an election runs: no probes (no leader to ask); the last proof stands.
      view.lead = 0
      view.role = "candidate"
      const calls = view.readIndexCalls
      yield* TestClock.adjust("3000 millis")
      expect(view.readIndexCalls).toBe(calls)
      expect(yield* contact).toBe(0)
      // This node wins with node 3's vote: itself and node 3 make a majority.
      view.role = "leader"
      view.lead = 1
      view.acks.set(3, 2_990)
      expect(yield* contact).toBe(2_990)
      // Stepping down again: a stale proof never moves it back.
      view.role = "follower"
      view.lead = 2
      view.readIndex = { ms: 10, ok: false }
      yield* TestClock.adjust("2000 millis")
      expect(yield* contact).toBe(2_990)
    }))

  it.scoped("a storage write outstanding since s caps the contact at s, for a leader and a follower; it counts again once the write completes", () =>
    Effect.gen(function* () {
      const view = follower()
      const contact = yield* fromRaft(fakeRaft(view), { probeEveryMs: 500 })
      yield* TestClock.adjust("520 millis")
      expect(yield* contact).toBe(500)
      // A write starts at 520 and does not complete: probes that succeed afterwards prove nothing.
      view.flushingSince = 520
      yield* TestClock.adjust("2000 millis")
      expect(view.readIndexCalls).toBeGreaterThan(3)
      expect(yield* contact).toBe(520)
      // Leading meanwhile, with fresh acks from a majority: still capped.
      view.role = "leader"
      view.lead = 1
      view.acks.set(2, 2_500)
      expect(yield* contact).toBe(520)
      view.flushingSince = undefined
      expect(yield* contact).toBe(2_500)
    }))

  it.scoped("a probe sent to a leader that died does not hold up the probes to its successor", () =>
    Effect.gen(function* () {
      const view = follower()
      // The first round never answers (its leader is gone); the next ones do.
      let calls = 0
      const raft = fakeRaft(view)
      const flaky = new Proxy(raft, {
        get: (target, key) =>
          key === "readIndex"
            ? Effect.suspend(() => (++calls === 1 ? Effect.never : Effect.zipRight(Effect.sleep("10 millis"), Effect.void)))
            : target[key as keyof RaftNodeShape]
      })
      const contact = yield* fromRaft(flaky, { probeEveryMs: 500 })
      yield* TestClock.adjust("520 millis")
      // The second probe left at 500 while the first still hung, and was answered at 510.
      expect(calls).toBe(2)
      expect(yield* contact).toBe(500)
    }))

  it.scoped("a refused probe (the node it asked is not the leader) proves nothing", () =>
    Effect.gen(function* () {
      const view = follower()
      const raft = fakeRaft(view)
      const refusing = new Proxy(raft, {
        get: (target, key) =>
          key === "readIndex" ? Effect.fail(new NotLeader({ message: "node 1 is not the leader" })) : target[key as keyof RaftNodeShape]
      })
      const contact = yield* fromRaft(refusing, { probeEveryMs: 100 })
      const waited = yield* Effect.fork(TestClock.adjust("1000 millis"))
      yield* Fiber.join(waited)
      expect(yield* contact).toBeUndefined()
    }))
})
