/** Leadership transfer (thesis §3.10). */
import { describe, expect, it } from "vitest"
import { Network, plain, type NodeOptions } from "./network.js"

describe("leadership transfer", () => {
  it("transfer to an up-to-date follower: TimeoutNow, and the target wins the next term at once", () => {
    const net = new Network([1, 2, 3], { ...plain, checkQuorum: true, preVote: true })
    net.campaign(1)
    const term = net.node(1).status().term
    expect(net.node(1).transferLeader(2)).toEqual({ ok: true })
    net.stabilize()
    expect(net.delivered.filter((m) => m.type === "timeoutNow").map((m) => [m.from, m.to])).toEqual([[1, 2]])
    expect(net.leader()).toBe(2)
    expect(net.node(2).status().term).toBe(term + 1)
    expect(net.node(1).status()).toMatchObject({ role: "follower", lead: 2 })
  })

  it("transfer to a lagging follower: the leader first brings it up to date, then sends TimeoutNow", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.isolate(2)
    net.node(1).propose("missed-by-2")
    net.stabilize()
    net.heal()
    const start = net.delivered.length
    net.node(1).transferLeader(2)
    net.stabilize()
    const trace = net.delivered.slice(start)
    const caughtUp = trace.findIndex((m) => m.type === "appResp" && m.from === 2 && !m.reject && m.index === 3)
    const timeoutNow = trace.findIndex((m) => m.type === "timeoutNow")
    expect(caughtUp).toBeGreaterThanOrEqual(0)
    expect(timeoutNow).toBeGreaterThan(caughtUp)
    expect(net.leader()).toBe(2)
    expect(net.state.get(2)).toContain("missed-by-2")
  })

  it("proposals are refused while a transfer is in progress", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.isolate(2)
    net.node(1).transferLeader(2)
    net.stabilize()
    expect(net.node(1).propose("x")).toEqual({ ok: false, reason: "transferInProgress", transferee: 2 })
    expect(net.node(1).proposeConfChange({ type: "remove", nodeId: 3 })).toEqual({
      ok: false,
      reason: "transferInProgress",
      transferee: 2
    })
  })

  it("a transfer that does not complete within an election timeout is aborted", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.isolate(2)
    net.node(1).transferLeader(2)
    net.tick(1, 9)
    net.stabilize()
    expect(net.node(1).status().leadTransferee).toBe(2)
    net.tick(1, 1)
    net.stabilize()
    expect(net.node(1).status()).toMatchObject({ role: "leader", leadTransferee: 0 })
    expect(net.node(1).propose("x").ok).toBe(true)
  })

  /** Leader 1 is cut off from both followers while transfer requests keep arriving every 5 ticks. */
  const leaderUnderTransferRequests = (options: NodeOptions) => {
    const net = new Network([1, 2, 3], { ...plain, checkQuorum: true, ...options })
    net.campaign(1)
    net.isolate(1)
    for (let round = 0; round < 10; round++) {
      net.node(1).transferLeader(round % 2 === 0 ? 2 : 3)
      net.tick(1, 5)
      net.stabilize()
    }
    return net.node(1).status()
  }

  it("transfer requests do not postpone CheckQuorum: a leader without quorum steps down", () => {
    // 50 ticks are five election timeouts without hearing from a quorum.
    expect(leaderUnderTransferRequests({}).role).not.toBe("leader")
  })

  it("unsafeTransferPostponesCheckQuorum re-injects the bug: the leader without quorum stays", () => {
    expect(leaderUnderTransferRequests({ unsafeTransferPostponesCheckQuorum: true }).role).toBe("leader")
  })

  it("a transfer request made on a follower is forwarded to the leader", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    expect(net.node(3).transferLeader(2)).toEqual({ ok: true })
    net.stabilize()
    expect(net.leader()).toBe(2)
  })

  it("transfer to a learner or a non-member is refused; to itself is a no-op", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    expect(net.node(1).transferLeader(9)).toEqual({ ok: false, reason: "notVoter" })
    expect(net.node(1).transferLeader(1)).toEqual({ ok: true })
    expect(net.node(1).status().leadTransferee).toBe(0)
    const alone = new Network([1, 2, 3])
    expect(alone.node(2).transferLeader(1)).toEqual({ ok: false, reason: "noLeader" })
  })
})

describe("driver reports", () => {
  it("reportUnreachable moves a replicating follower back to probing", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    expect(net.node(1).status().progress.find((p) => p.id === 2)?.state).toBe("replicate")
    net.node(1).reportUnreachable(2)
    expect(net.node(1).status().progress.find((p) => p.id === 2)?.state).toBe("probe")
    net.node(1).propose("x")
    net.tickAll(2)
    expect(net.state.get(2)).toEqual(["x"])
  })

  it("reportSnapshot(ok=false) makes the leader send the snapshot again", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    net.node(1).propose("x")
    net.stabilize()
    net.compact(1)
    net.heal()
    net.drop = (m) => m.type === "snap"
    net.tickAll(2)
    expect(net.node(1).status().progress.find((p) => p.id === 3)?.state).toBe("snapshot")
    net.drop = undefined
    net.node(1).reportSnapshot(3, false)
    expect(net.node(1).status().progress.find((p) => p.id === 3)?.state).toBe("probe")
    net.tickAll(2)
    expect(net.state.get(3)).toEqual(["x"])
  })
})
