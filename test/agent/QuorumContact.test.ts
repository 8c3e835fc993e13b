import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { fromRaft, quorumContactAt } from "../../src/agent/QuorumContact.js"
import type { RaftNodeShape } from "../../src/raft/RaftNode.js"

/** A RaftNode fake with only what `fromRaft` reads; any other member dies loudly. */
const fakeRaft = (view: { role: string; lead: number; voters: Array<number>; lastContact: Map<number, number> }) =>
  new Proxy(
    {
      id: 1,
      status: Effect.sync(() => ({ role: view.role, lead: view.lead, confState: { voters: view.voters, learners: [] } })),
      lastContact: Effect.sync(() => new Map(view.lastContact))
    },
    {
      get: (target, key) => {
        if (key in target) return target[key as keyof typeof target]
        throw new Error(`fakeRaft: ${String(key)} is not implemented`)
      }
    }
  ) as unknown as RaftNodeShape

const base = { self: 1, now: 10_000, leaderLagMs: 1000 }

describe("QuorumContact: when this node last had contact with a quorum", () => {
  it("a leader: the time by which a majority of the voters (itself included) had been heard from", () => {
    const lastContact = new Map([
      [2, 9_900],
      [3, 4_000],
      [4, 2_000],
      [5, 9_000]
    ])
    // 5 voters: itself (now), 9900, 9000 make a majority of 3 → 9000.
    expect(quorumContactAt({ ...base, role: "leader", leader: 1, voters: [1, 2, 3, 4, 5], lastContact })).toBe(9_000)
    // 3 voters: itself and node 2 → 9900.
    expect(quorumContactAt({ ...base, role: "leader", leader: 1, voters: [1, 2, 3], lastContact })).toBe(9_900)
    // A single-node cluster is its own majority.
    expect(quorumContactAt({ ...base, role: "leader", leader: 1, voters: [1], lastContact: new Map() })).toBe(10_000)
    // Never heard from enough voters: no proof of contact.
    expect(quorumContactAt({ ...base, role: "leader", leader: 1, voters: [1, 2, 3], lastContact: new Map() })).toBeUndefined()
  })

  it("a follower: its leader's last message, less the lag a minority leader may survive", () => {
    const lastContact = new Map([[2, 9_500]])
    expect(quorumContactAt({ ...base, role: "follower", leader: 2, voters: [], lastContact })).toBe(8_500)
    expect(quorumContactAt({ ...base, role: "follower", leader: 0, voters: [], lastContact })).toBeUndefined()
    expect(quorumContactAt({ ...base, role: "candidate", leader: 0, voters: [], lastContact })).toBeUndefined()
    expect(quorumContactAt({ ...base, role: "follower", leader: 3, voters: [], lastContact })).toBeUndefined()
  })
})

describe("QuorumContact.fromRaft", () => {
  it.effect("keeps the newest proven contact through an election, and follows the leader again after", () =>
    Effect.gen(function* () {
      const view = { role: "follower", lead: 2, voters: [1, 2, 3], lastContact: new Map([[2, 0]]) }
      const contact = yield* fromRaft(fakeRaft(view), { leaderLagMs: 1000 })
      yield* TestClock.setTime(5_000)
      view.lastContact.set(2, 4_900)
      expect(yield* contact).toBe(3_900)
      // The leader is gone and an election runs: the last proof stands (and ages).
      view.lead = 0
      view.role = "candidate"
      yield* TestClock.setTime(8_000)
      expect(yield* contact).toBe(3_900)
      // This node wins with node 3's vote: now a majority (itself and node 3) proves contact.
      view.role = "leader"
      view.lead = 1
      view.lastContact.set(3, 7_990)
      expect(yield* contact).toBe(7_990)
      // A stale proof never moves it back.
      view.role = "follower"
      view.lead = 2
      expect(yield* contact).toBe(7_990)
    }))
})
