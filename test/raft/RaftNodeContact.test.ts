/**
 * What a `RaftNode` proves about quorum contact (`quorumAcks`, `flushingSince`, and
 * `QuorumContact.fromRaft` over them) when its storage stops completing writes: real nodes over
 * in-memory storage whose writes can be held (a stalled disk), an in-memory network, `TestClock`.
 *
 * The scenario of the double run: the leader's disk stalls, its Raft loop waits in a save, the
 * others elect a new leader whose messages keep arriving at the stalled node. Those messages must
 * not count as the stalled leader's quorum answering it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Logger, TestClock } from "effect"
import { fromRaft } from "../../src/agent/QuorumContact.js"
import type * as RaftNode from "../../src/raft/RaftNode.js"
import { DefaultHeartbeatTick } from "../../src/raft/RaftNode.js"
import { KvStore } from "../../src/sim/KvStore.js"
import { RaftCluster, tickMs, value } from "../support/RaftCluster.js"

const put = (key: string, value: string) => JSON.stringify({ op: "put", key, value })

class Cluster extends RaftCluster<KvStore> {
  constructor(voters: ReadonlyArray<number>, options: Partial<RaftNode.RaftNodeConfig> = {}) {
    super(voters, () => new KvStore(), (kv) => kv.layer(), options)
  }
}

/** Log lines, captured. */
const captured = () => {
  const lines: Array<string> = []
  const logger = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ message }) => {
      lines.push(Array.isArray(message) ? message.map(String).join(" ") : String(message))
    })
  )
  return { lines, logger }
}

/**
 * Three nodes; the leader's storage stalls while it appends a write; the other two elect a new
 * leader, which keeps sending to the stalled one. Returns what the stalled node proves meanwhile.
 */
const stallTheLeader = (options: Partial<RaftNode.RaftNodeConfig>) =>
  Effect.gen(function* () {
    const c = new Cluster([1, 2, 3], { storageStallMs: 1000, storageLocation: "/var/lib/blixard", ...options })
    for (const id of [1, 2, 3]) yield* c.start(id)
    const old = yield* c.leader()
    value(yield* c.drive(c.node(old).propose(put("before", "1"))))
    const stalled = c.node(old)
    const contact = yield* fromRaft(stalled, { probeEveryMs: 100 })
    yield* c.until("the leader proves contact with its majority", () => Effect.map(contact, (t) => t !== undefined))

    c.members.get(old)!.writes.unsafeClose()
    const stalledAt = (yield* TestClock.currentTimeMillis)
    // A write makes its loop save (and wait there): the disk never completes it.
    const write = yield* Effect.fork(stalled.propose(put("during", "1")))
    const others = [1, 2, 3].filter((id) => id !== old)
    let next = 0
    yield* c.until("the others elect a new leader", () =>
      Effect.map(Effect.forEach(others, (id) => c.node(id).role), (roles) => {
        const i = roles.indexOf("leader")
        next = i >= 0 ? others[i]! : 0
        return i >= 0
      })
    )
    value(yield* c.drive(c.node(next).propose(put("after", "1"))))
    // Long after: the new leader's messages keep arriving at the stalled node.
    yield* c.until("3 s of the stall pass", () => Effect.map(TestClock.currentTimeMillis, (now) => now >= stalledAt + 3000))
    const now = yield* TestClock.currentTimeMillis
    const result = {
      old,
      next,
      stalledAt,
      now,
      role: (yield* stalled.status).role,
      heardFromNewLeader: (yield* stalled.lastContact).get(next),
      acks: yield* stalled.quorumAcks,
      flushingSince: yield* stalled.flushingSince,
      contact: yield* contact
    }
    c.members.get(old)!.writes.unsafeOpen()
    yield* c.until("the old leader follows the new one and has its write", () =>
      Effect.map(stalled.leader, (lead) => lead === next && c.state(old).get("after") === "1")
    )
    yield* Fiber.interrupt(write)
    return { ...result, contactAfter: yield* contact, roleAfter: (yield* stalled.status).role }
  })

describe("RaftNode: quorum contact is proven inside the Raft loop", () => {
  it.scoped("a leader stuck in a save stops proving contact, while a higher-term leader's messages keep arriving", () =>
    Effect.gen(function* () {
      const { lines, logger } = captured()
      const r = yield* stallTheLeader({}).pipe(Effect.provide(logger))
      // Its loop never stepped the new leader's messages: the core still says leader...
      expect(r.role).toBe("leader")
      // ...and they keep arriving (the receiver sees them).
      expect(r.heardFromNewLeader).toBeGreaterThan(r.now - 200)
      // But nothing answered this leader since its loop stalled: no ack is newer than the stall.
      expect(r.acks.size).toBeGreaterThan(0)
      for (const at of r.acks.values()) expect(at).toBeLessThanOrEqual(r.stalledAt)
      expect(r.flushingSince).toBeDefined()
      expect(r.flushingSince!).toBeGreaterThanOrEqual(r.stalledAt)
      // So its contact ages from before the stall: it fences fencingMs after that.
      expect(r.contact).toBeDefined()
      expect(r.contact!).toBeLessThanOrEqual(r.stalledAt)
      // It says so, naming itself and its data directory, once the write is outstanding for storageStallMs.
      const stall = lines.find((l) => l.startsWith("BLX_STORAGE_STALLED"))
      expect(stall).toMatch(new RegExp(`^BLX_STORAGE_STALLED: node ${r.old}'s data directory /var/lib/blixard has not completed a write`))
      expect(stall).toContain("fences")
      expect(lines.some((l) => l.includes("reported stalled (BLX_STORAGE_STALLED) completed"))).toBe(true)
      // Once the disk completes, it steps down on the new leader's term, and follows it.
      expect(r.roleAfter).toBe("follower")
    }))

  it.scoped("DELIBERATELY UNSAFE unsafeContactFromAnyMessage: the stuck leader 'proves' contact from the new leader's messages (the double-run bug)", () =>
    Effect.gen(function* () {
      const r = yield* stallTheLeader({ unsafeContactFromAnyMessage: true })
      expect(r.role).toBe("leader")
      expect(r.flushingSince).toBeUndefined()
      // The receiver's stamps of any message count: the contact follows the new leader's messages.
      expect(r.contact!).toBeGreaterThan(r.now - 200)
    }))
})

/** Three nodes with `QuorumContact.fromRaft` on each, as the daemon runs them; the followers have proven contact once. */
const quietCluster = Effect.gen(function* () {
  const c = new Cluster([1, 2, 3])
  for (const id of [1, 2, 3]) yield* c.start(id)
  const leader = yield* c.leader()
  const followers = [1, 2, 3].filter((id) => id !== leader)
  // One election timeout (DefaultElectionTick ticks), as `Orchestration` probes.
  const contacts = new Map<number, Effect.Effect<number | undefined>>()
  for (const id of [1, 2, 3]) contacts.set(id, yield* fromRaft(c.node(id), { probeEveryMs: 10 * tickMs }))
  yield* c.until("every follower proves contact", () =>
    Effect.map(Effect.forEach(followers, (id) => contacts.get(id)!), (ts) => ts.every((t) => t !== undefined))
  )
  return { c, leader, followers, contacts }
})

describe("RaftNode: a follower's quorum contact comes from its leader's heartbeat rounds", () => {
  it.scoped("a quiet cluster: the leader sends one heartbeat round per heartbeat interval, no more; no ReadIndex rounds; contact stays fresh", () =>
    Effect.gen(function* () {
      const { c, leader, followers, contacts } = yield* quietCluster
      let heartbeats = 0
      let readIndexes = 0
      c.net.filter = (m) => {
        if (m.type === "heartbeat" && m.from === leader) heartbeats++
        if (m.type === "readIndex") readIndexes++
        return true
      }
      const ticks = 200
      let n = 0
      yield* c.until(`${ticks} ticks`, () => Effect.succeed(++n > ticks))
      c.net.filter = undefined
      // A heartbeat round every DefaultHeartbeatTick (2) ticks, to both followers: 100 rounds. With
      // each follower proving contact by a ReadIndex round every election timeout (10 ticks), each
      // of which makes the leader send a heartbeat round of its own, it was 140.
      const rounds = heartbeats / followers.length
      expect(rounds).toBeLessThanOrEqual(ticks / DefaultHeartbeatTick + 3)
      expect(readIndexes).toBe(0)
      // Contact lags by two to three heartbeat intervals: far from fencing.
      const now = yield* TestClock.currentTimeMillis
      for (const id of followers) {
        const at = yield* c.node(id).followerContact
        expect(at).toBeDefined()
        expect(now - at!).toBeLessThanOrEqual(4 * DefaultHeartbeatTick * tickMs)
        expect(yield* contacts.get(id)!).toBe(at)
      }
    }))

  it.scoped("a one-way partition: the follower keeps hearing its leader but is not heard, so its contact stops; it resumes once heard again", () =>
    Effect.gen(function* () {
      const { c, leader, followers, contacts } = yield* quietCluster
      const cut = followers[0]!
      c.net.filter = (m) => !(m.from === cut && m.to === leader)
      const cutAt = yield* TestClock.currentTimeMillis
      yield* c.until("1 s passes", () => Effect.map(TestClock.currentTimeMillis, (now) => now >= cutAt + 1000))
      // It still hears its leader, and follows it...
      expect((yield* c.node(cut).lastContact).get(leader)!).toBeGreaterThan(cutAt + 900)
      expect(yield* c.node(cut).leader).toBe(leader)
      // ...but nothing it sent since the cut arrived: no proof is newer than the cut, from the
      // heartbeats or from the ReadIndex probes (they do not arrive either).
      expect((yield* c.node(cut).followerContact)!).toBeLessThanOrEqual(cutAt)
      expect((yield* contacts.get(cut)!)!).toBeLessThanOrEqual(cutAt)
      // The other follower proves on.
      const other = followers[1]!
      expect((yield* contacts.get(other)!)!).toBeGreaterThan(cutAt + 900)
      c.net.filter = undefined
      yield* c.until("the cut follower proves contact again", () => Effect.map(contacts.get(cut)!, (t) => t !== undefined && t > cutAt + 1000))
    }))
})
