/**
 * `ContactProof`, alone: when a leader may tell a follower that a stamp of its is proven (it arrived
 * before a round a majority of the voters acknowledged in the leader's term), and what a follower
 * accepts.
 */
import { describe, expect, it } from "vitest"
import { ContactProof } from "../../src/raft/ContactProof.js"
import type { Message } from "../../src/raft/Message.js"

const hb = (from: number, to: number, term: number): Message => ({ type: "heartbeat", from, to, term, commit: 0 })
const resp = (from: number, to: number, term: number, round: number | undefined, stamp: number): Message => ({
  type: "heartbeatResp",
  from,
  to,
  term,
  ...(round !== undefined ? { round } : {}),
  stamp
})

/** Leader 1 of voters `voters`, term 5: sends one heartbeat round to `to`, answers what it stamped. */
const leader = (voters: ReadonlyArray<number>) => {
  const p = new ContactProof()
  const round = (to: ReadonlyArray<number>) => {
    const out = p.outgoing(to.map((t) => hb(1, t, 5)), 5, "leader", () => voters, 1, 0)
    return out as ReadonlyArray<Extract<Message, { type: "heartbeat" }>>
  }
  const ack = (from: number, round: number | undefined, stamp: number) => p.stepped(resp(from, 1, 5, round, stamp), 5, "leader", 1)
  return { round, ack }
}

describe("ContactProof: the leader", () => {
  it("proves a stamp once a majority acknowledged a round sent after the stamp arrived", () => {
    const l = leader([1, 2, 3])
    expect(l.round([2, 3]).map((m) => [m.round, m.proven])).toEqual([
      [1, undefined],
      [1, undefined]
    ])
    // Node 2 answers round 1 with stamp 1000; it arrived after round 1 was sent.
    l.ack(2, 1, 1000)
    // Round 2: the majority (leader at 2, node 2 at 1) has acknowledged round 1 only, which left before the stamp arrived.
    expect(l.round([2, 3])[0]!.proven).toBeUndefined()
    // Node 3 answers round 2: a majority (leader, node 3) now acknowledged a round sent after the stamp.
    l.ack(3, 2, 3000)
    const r3 = l.round([2, 3])
    expect(r3[0]!.proven).toBe(1000)
    // Node 3's stamp arrived after round 2 was sent: not yet proven (the majority's best is round 2).
    expect(r3[1]!.proven).toBeUndefined()
  })

  it("a follower's own acknowledgements alone prove nothing in five voters: the majority must have answered", () => {
    const l = leader([1, 2, 3, 4, 5])
    l.round([2, 3, 4, 5])
    l.ack(2, 1, 1000)
    for (let i = 0; i < 5; i++) {
      const out = l.round([2, 3, 4, 5])
      expect(out[0]!.proven).toBeUndefined()
      l.ack(2, out[0]!.round, 1001 + i)
    }
    // Node 3 too: with the leader, three of five answered a round after the first stamp.
    l.ack(3, 6, 5000)
    expect(l.round([2, 3, 4, 5])[0]!.proven).toBe(1004)
  })

  it("a new term starts over: acknowledgements and stamps of an earlier term prove nothing", () => {
    const p = new ContactProof()
    p.outgoing([hb(1, 2, 5)], 5, "leader", () => [1, 2, 3], 1, 0)
    p.stepped(resp(2, 1, 5, 1, 1000), 5, "leader", 1)
    p.outgoing([hb(1, 2, 5)], 5, "leader", () => [1, 2, 3], 1, 0)
    // Leading term 7 now: node 2's stamp and acknowledgement were of term 5.
    const out = p.outgoing([hb(1, 2, 7), hb(1, 3, 7)], 7, "leader", () => [1, 2, 3], 1, 0) as ReadonlyArray<Extract<Message, { type: "heartbeat" }>>
    expect(out[0]!.proven).toBeUndefined()
  })
})

describe("ContactProof: the follower", () => {
  const heartbeat = (term: number, from: number, round: number, proven: number): Message => ({ type: "heartbeat", from, to: 2, term, commit: 0, round, proven })

  it("stamps its answers with its clock and the leader's newest round; counts a proof only of a stamp it sent, from its leader in its term", () => {
    const f = new ContactProof()
    // Before it answered anything, a 'proof' is none of its stamps.
    f.stepped(heartbeat(5, 1, 1, 900), 5, "follower", 1)
    expect(f.proven).toBeUndefined()
    const [answer] = f.outgoing([{ type: "heartbeatResp", from: 2, to: 1, term: 5 }], 5, "follower", () => [], 2, 1000)
    expect(answer).toMatchObject({ stamp: 1000, round: 1 })
    f.outgoing([{ type: "heartbeatResp", from: 2, to: 1, term: 5 }], 5, "follower", () => [], 2, 1100)
    // A stamp later than any it sent (a faked or corrupted one) or earlier than its first: refused.
    f.stepped(heartbeat(5, 1, 2, 1200), 5, "follower", 1)
    f.stepped(heartbeat(5, 1, 2, 999), 5, "follower", 1)
    expect(f.proven).toBeUndefined()
    // From another node than its leader, or of another term than its own: refused.
    f.stepped(heartbeat(5, 3, 2, 1000), 5, "follower", 1)
    f.stepped(heartbeat(4, 1, 2, 1000), 5, "follower", 1)
    expect(f.proven).toBeUndefined()
    f.stepped(heartbeat(5, 1, 2, 1000), 5, "follower", 1)
    expect(f.proven).toBe(1000)
    // Never backwards.
    f.stepped(heartbeat(5, 1, 3, 1100), 5, "follower", 1)
    f.stepped(heartbeat(5, 1, 4, 1000), 5, "follower", 1)
    expect(f.proven).toBe(1100)
  })
})

describe("ContactProof: a peer back as another process", () => {
  it("the stamps of its earlier process are not returned to it", () => {
    const p = new ContactProof()
    const round = () => p.outgoing([hb(1, 2, 5), hb(1, 3, 5)], 5, "leader", () => [1, 2, 3], 1, 0) as ReadonlyArray<Extract<Message, { type: "heartbeat" }>>
    round()
    p.stepped(resp(2, 1, 5, 1, 1000), 5, "leader", 1)
    round()
    p.stepped(resp(3, 1, 5, 2, 1100), 5, "leader", 1)
    p.restarted(2)
    expect(round()[0]!.proven).toBeUndefined()
  })
})
