/** Linearizable reads with ReadIndex (thesis §6.4); why there are no leases (§6.4.1). */
import { describe, expect, it } from "vitest"
import { Network, plain, type NodeOptions } from "./network.js"

describe("ReadIndex", () => {
  it("the leader answers with its commit index after a heartbeat round confirms its leadership", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.node(1).propose("w")
    net.stabilize()
    expect(net.node(1).readIndex("req-1")).toEqual({ ok: true })
    const q = net.takeQueue()
    expect(q.filter((m) => m.type === "heartbeat").map((m) => (m.type === "heartbeat" ? m.context : ""))).toEqual([
      "req-1",
      "req-1"
    ])
    expect(net.readStates.get(1)).toEqual([])
    for (const m of q) net.deliver(m)
    net.stabilize()
    expect(net.readStates.get(1)).toEqual([{ index: 3, context: "req-1" }])
  })

  it("one acknowledgement beside the leader's own is a majority of three", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    net.node(1).readIndex("r")
    net.stabilize()
    expect(net.readStates.get(1)).toEqual([{ index: 2, context: "r" }])
  })

  it("a leader cut off from the quorum never answers (no stale read)", () => {
    const net = new Network([1, 2, 3, 4, 5])
    net.campaign(1)
    net.partition([1, 2], [3, 4, 5])
    net.node(1).readIndex("stale?")
    net.tickAll(30)
    expect(net.readStates.get(1)).toEqual([])
  })

  it("a follower forwards ReadIndex to the leader and receives the read point", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.node(1).propose("w")
    net.stabilize()
    expect(net.node(2).readIndex("from-2")).toEqual({ ok: true })
    net.stabilize()
    expect(net.readStates.get(2)).toEqual([{ index: 3, context: "from-2" }])
    expect(net.readStates.get(1)).toEqual([])
  })

  it("a follower without a known leader refuses", () => {
    const net = new Network([1, 2, 3])
    expect(net.node(2).readIndex("x")).toEqual({ ok: false, reason: "noLeader" })
  })

  /**
   * Follower 2 asks for a read point with context "2:1"; the heartbeat round confirming it is lost.
   * A write commits at 3. Then "2:1" arrives again (the requester restarted and counts from 1 again).
   */
  const repeatedContext = (options = plain) => {
    const net = new Network([1, 2, 3], options)
    net.campaign(1)
    net.drop = (m) => m.type === "heartbeat" && m.context !== undefined
    net.send({ type: "readIndex", term: 0, from: 2, to: 1, context: "2:1" })
    net.node(1).propose("w")
    net.stabilize()
    expect(net.node(1).commitIndex).toBe(3)
    net.send({ type: "readIndex", term: 0, from: 2, to: 1, context: "2:1" })
    net.drop = undefined
    net.tickAll(3)
    return net
  }

  it("a context repeated while its request is pending is answered to neither: no read point older than the request", () => {
    const net = repeatedContext()
    expect(net.readStates.get(2)).toEqual([])
    net.send({ type: "readIndex", term: 0, from: 2, to: 1, context: "2:2" })
    net.tickAll(1)
    expect(net.readStates.get(2)).toEqual([{ index: 3, context: "2:2" }])
  })

  it("the unsafe switch (matching a repeated context to the pending request) answers it with the older read point", () => {
    const net = repeatedContext({ ...plain, unsafeMatchRepeatedReadContexts: true })
    expect(net.readStates.get(2)).toEqual([{ index: 2, context: "2:1" }])
  })

  it("a new leader defers ReadIndex until it has committed an entry of its term", () => {
    const net = new Network([1, 2, 3])
    net.drop = (m) => m.type === "app"
    net.campaign(1)
    net.node(1).readIndex("early")
    net.stabilize()
    expect(net.delivered.some((m) => m.type === "heartbeat" && m.context === "early")).toBe(false)
    expect(net.readStates.get(1)).toEqual([])
    net.drop = undefined
    net.tickAll(2)
    expect(net.readStates.get(1)).toEqual([{ index: 2, context: "early" }])
  })

  it("a heartbeat round confirming a later request confirms the earlier ones too", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.drop = (m) => m.type === "heartbeat" && m.context === "a"
    net.node(1).readIndex("a")
    net.node(1).readIndex("b")
    net.stabilize()
    expect(net.readStates.get(1)).toEqual([
      { index: 2, context: "a" },
      { index: 2, context: "b" }
    ])
  })

  it("a lost confirmation round is retried with the next heartbeat", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.drop = (m) => m.type === "heartbeatResp"
    net.node(1).readIndex("retry")
    net.stabilize()
    net.drop = undefined
    expect(net.readStates.get(1)).toEqual([])
    net.tickAll(1)
    expect(net.readStates.get(1)).toEqual([{ index: 2, context: "retry" }])
  })

  it("a single-voter leader answers at once", () => {
    const net = new Network([1])
    net.campaign(1)
    net.node(1).readIndex("solo")
    net.processReady(1)
    expect(net.readStates.get(1)).toEqual([{ index: 2, context: "solo" }])
  })

  /**
   * Leader 1 hands leadership to 2 and is cut off right after sending TimeoutNow: 2 wins at once
   * (a transfer's votes override the followers' leases) and commits "w2". Clocks play no part.
   * Returns node 2's commit index after "w2" and what node 1 answers to a read begun after that.
   */
  const readOnDeposedLeader = (options: NodeOptions) => {
    const net = new Network([1, 2, 3], { ...plain, checkQuorum: true, preVote: true, ...options })
    net.campaign(1)
    net.node(1).propose("w1")
    net.stabilize()
    net.node(1).transferLeader(2)
    for (const m of net.takeQueue()) net.deliver(m)
    net.isolate(1)
    net.stabilize()
    expect(net.leader()).toBe(2)
    net.node(2).propose("w2")
    net.stabilize()
    const written = net.node(2).status().commit
    expect(net.state.get(3)).toEqual(["w1", "w2"])
    expect(net.node(1).status().role).toBe("leader") // it has not heard of term 2 yet
    net.node(1).readIndex("after-w2")
    net.stabilize()
    return { written, answers: net.readStates.get(1)! }
  }

  it("a deposed leader never answers a read begun after the new leader's write (no lease mode)", () => {
    const { answers } = readOnDeposedLeader({})
    expect(answers).toEqual([])
  })

  it("unsafeLeaseBasedReads re-injects the removed lease mode: the deposed leader answers a stale read index", () => {
    const { written, answers } = readOnDeposedLeader({ unsafeLeaseBasedReads: true })
    expect(answers).toHaveLength(1)
    expect(answers[0]!.index).toBeLessThan(written)
  })
})
