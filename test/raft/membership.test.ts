/**
 * Single-server membership changes (thesis §4.1, §4.2.1; fix from Ongaro, raft-dev 2015): learners,
 * promotion, removal, one change at a time, taking effect when applied.
 */
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import { encodeConfChange } from "../../src/raft/Raft.js"
import { RawNode } from "../../src/raft/RawNode.js"
import type { ConfState } from "../../src/raft/Types.js"
import { applyChangeToConfState } from "../../src/raft/Types.js"
import type { NodeOptions } from "./network.js"
import { Network, plain, seededRandom } from "./network.js"

/** A 3-voter cluster with leader 1 and node 4 joined as a learner. */
const withLearner = (): Network => {
  const net = new Network([1, 2, 3])
  net.campaign(1)
  net.node(1).propose("before-join")
  net.stabilize()
  net.add(4, new MemoryStorage())
  expect(net.node(1).proposeConfChange({ type: "addLearner", nodeId: 4, address: "10.0.0.4:7001" }).ok).toBe(true)
  net.stabilize()
  net.tickAll(2)
  return net
}

describe("membership changes", () => {
  it("a new server joins as a learner: it gets the configuration by snapshot and then the log", () => {
    const net = withLearner()
    expect(net.node(1).confState()).toEqual({ voters: [1, 2, 3], learners: [4] })
    expect(net.node(4).confState()).toEqual({ voters: [1, 2, 3], learners: [4] })
    expect(net.delivered.some((m) => m.type === "snap" && m.to === 4)).toBe(true)
    expect(net.state.get(4)).toEqual(["before-join"])
    net.node(1).propose("after-join")
    net.stabilize()
    expect(net.state.get(4)).toEqual(["before-join", "after-join"])
    const change = [...net.appliedLog.get(4)!.values()].find((e) => e.kind === "confChange")
    expect(change?.data).toContain("10.0.0.4:7001")
  })

  it("a learner receives the log but is not counted for quorum", () => {
    const net = withLearner()
    net.partition([1, 4], [2, 3])
    net.node(1).propose("needs-a-voter")
    net.tickAll(2)
    expect(net.storages.get(4)!.lastIndex()).toBe(net.storages.get(1)!.lastIndex())
    expect(net.state.get(1)).not.toContain("needs-a-voter")
  })

  it("a learner never campaigns", () => {
    const net = withLearner()
    net.isolate(4)
    net.tick(4, 100)
    net.stabilize()
    expect(net.node(4).status()).toMatchObject({ role: "follower", term: net.node(1).status().term })
    const r = net.node(4).raft
    expect(r.promotable()).toBe(false)
  })

  it("candidates do not ask learners for votes, and a learner's vote is not counted", () => {
    const net = withLearner()
    net.node(2).campaign()
    const votes = net.takeQueue().filter((m) => m.type === "vote")
    expect(votes.map((m) => m.to)).toEqual([1, 3])
    // A grant from the learner does not make a majority of the voters {1, 2, 3}.
    const r = net.node(3).raft
    r.campaign()
    const term = r.term
    r.step({ type: "voteResp", term, from: 4, to: 3, reject: false })
    expect(r.role).toBe("candidate")
    r.step({ type: "voteResp", term, from: 1, to: 3, reject: false })
    expect(r.role).toBe("leader")
  })

  it("a promoted learner becomes a voter: it counts for quorum", () => {
    const net = withLearner()
    expect(net.node(1).proposeConfChange({ type: "promote", nodeId: 4 }).ok).toBe(true)
    net.stabilize()
    expect(net.node(1).confState()).toEqual({ voters: [1, 2, 3, 4], learners: [] })
    expect(net.node(4).raft.promotable()).toBe(true)
    // With four voters, 1 and 2 are not a majority any more: 1, 2 and 4 are.
    net.partition([1, 2], [3, 4])
    net.node(1).propose("two-of-four")
    net.tickAll(2)
    expect(net.state.get(1)).not.toContain("two-of-four")
    net.heal()
    net.partition([1, 2, 4], [3])
    net.tickAll(2)
    expect(net.state.get(1)).toContain("two-of-four")
  })

  it("conf changes take effect when applied, not when appended", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.isolate(2)
    net.isolate(3)
    const res = net.node(1).proposeConfChange({ type: "addLearner", nodeId: 4 })
    expect(res.ok).toBe(true)
    net.stabilize()
    // Appended (and persisted) on the leader, but not committed: not in effect.
    expect(net.storages.get(1)!.lastIndex()).toBe(3)
    expect(net.node(1).confState().learners).toEqual([])
    net.heal()
    net.tick(1, 1)
    for (let i = 0; i < 20 && net.node(1).status().commit < 3; i++) for (const m of net.takeQueue()) net.deliver(m)
    // Committed, but the Ready carrying it has not been applied and advanced yet: not in effect.
    expect(net.node(1).status().commit).toBe(3)
    expect(net.node(1).confState().learners).toEqual([])
    net.processReady(1)
    expect(net.node(1).confState().learners).toEqual([4])
  })

  it("a leader refuses a new conf change while one is not yet applied (one at a time)", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    const first = net.node(1).proposeConfChange({ type: "addLearner", nodeId: 4 })
    expect(first).toMatchObject({ ok: true, index: 3 })
    expect(net.node(1).proposeConfChange({ type: "addLearner", nodeId: 5 })).toEqual({
      ok: false,
      reason: "confChangePending",
      pendingIndex: 3
    })
    net.stabilize()
    expect(net.node(1).proposeConfChange({ type: "addLearner", nodeId: 5 }).ok).toBe(true)
  })

  it("a new leader must commit an entry of its own term before proposing a conf change", () => {
    const net = new Network([1, 2, 3])
    net.drop = (m) => m.type === "app"
    net.campaign(1)
    expect(net.node(1).status().role).toBe("leader")
    expect(net.node(1).status().commit).toBe(1)
    expect(net.node(1).proposeConfChange({ type: "addLearner", nodeId: 4 })).toEqual({
      ok: false,
      reason: "confChangePending",
      pendingIndex: 2
    })
    // Ordinary proposals are fine meanwhile.
    expect(net.node(1).propose("x").ok).toBe(true)
    net.drop = undefined
    net.tickAll(2)
    expect(net.node(1).status().commit).toBe(3)
    expect(net.node(1).proposeConfChange({ type: "addLearner", nodeId: 4 }).ok).toBe(true)
  })

  it("invalid conf changes are refused", () => {
    const net = withLearner()
    const n = net.node(1)
    expect(n.proposeConfChange({ type: "addLearner", nodeId: 2 })).toMatchObject({ ok: false, reason: "invalidConfChange" })
    expect(n.proposeConfChange({ type: "addLearner", nodeId: 4 })).toMatchObject({ ok: false, reason: "invalidConfChange" })
    expect(n.proposeConfChange({ type: "promote", nodeId: 2 })).toMatchObject({ ok: false, reason: "invalidConfChange" })
    expect(n.proposeConfChange({ type: "remove", nodeId: 9 })).toMatchObject({ ok: false, reason: "invalidConfChange" })
    expect(net.node(2).proposeConfChange({ type: "remove", nodeId: 3 })).toEqual({ ok: false, reason: "notLeader", leader: 1 })
    const single = new Network([1])
    single.campaign(1)
    expect(single.node(1).proposeConfChange({ type: "remove", nodeId: 1 })).toMatchObject({
      ok: false,
      reason: "invalidConfChange"
    })
  })

  it("removing a voter shrinks the quorum", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    expect(net.node(1).proposeConfChange({ type: "remove", nodeId: 3 }).ok).toBe(true)
    net.stabilize()
    expect(net.node(1).confState().voters).toEqual([1, 2])
    net.crash(3)
    net.node(1).propose("with two")
    net.stabilize()
    expect(net.state.get(1)).toEqual(["with two"])
    expect(net.state.get(2)).toEqual(["with two"])
  })

  it("a removed follower never campaigns", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.node(1).proposeConfChange({ type: "remove", nodeId: 3 })
    net.stabilize()
    expect(net.node(3).confState().voters).toEqual([1, 2])
    const term = net.node(3).status().term
    net.tick(3, 100)
    net.stabilize()
    expect(net.node(3).status()).toMatchObject({ role: "follower", term })
    expect(net.leader()).toBe(1)
  })

  it("removing the leader: once the removal is applied it tells a caught-up voter to campaign and steps down, never campaigns again, the rest elect a leader", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    expect(net.node(1).proposeConfChange({ type: "remove", nodeId: 1 }).ok).toBe(true)
    net.stabilize()
    const removedAt = net.delivered.length
    // Its successor was caught up: told to campaign (TimeoutNow), and it stepped down.
    expect(net.node(1).status().role).toBe("follower")
    expect(net.node(2).confState().voters).toEqual([2, 3])
    expect(net.delivered.some((m) => m.type === "timeoutNow" && m.from === 1)).toBe(true)
    net.tickAll(40)
    const leader = net.leader()
    expect([2, 3]).toContain(leader)
    expect(net.node(1).status().role).toBe("follower")
    const after = net.delivered.slice(removedAt)
    expect(after.some((m) => (m.type === "vote" || m.type === "preVote") && m.from === 1)).toBe(false)
    net.node(leader!).propose("without 1")
    net.stabilize()
    expect(net.state.get(2)).toContain("without 1")
    expect(net.state.get(3)).toContain("without 1")
  })

  it("a leader removing itself hands over before it steps down: the voter left elects itself although it never heard that the removal committed", () => {
    // Two voters, 3 leading. Its removal commits with 2's acknowledgement, but the messages that
    // would tell 2 so are lost, as is an entry 3 appended after it: 2 still counts 3 as a voter,
    // and 3's longer log makes it refuse 2 its vote. A leader that stepped down at once left 2
    // campaigning forever.
    const net = new Network([2, 3])
    net.campaign(3)
    net.node(3).propose("x")
    net.stabilize()
    expect(net.node(3).proposeConfChange({ type: "remove", nodeId: 3 }).ok).toBe(true)
    const removal = net.node(3).status().lastIndex
    const carryingRemoval = net.takeQueue()
    expect(net.node(3).propose("after the removal").ok).toBe(true)
    let lossy = true
    net.drop = (m) =>
      lossy && m.from === 3 && m.to === 2 && (m.type === "app" || m.type === "heartbeat") && (m.commit >= removal || (m.type === "app" && m.entries.some((e) => e.index > removal)))
    for (const m of carryingRemoval) net.deliver(m)
    net.stabilize()
    expect(net.node(3).confState().voters).toEqual([2])
    expect(net.node(2).status()).toMatchObject({ commit: removal - 1, lastIndex: removal })
    expect(net.node(2).confState().voters).toEqual([2, 3])
    lossy = false
    for (let i = 0; i < 60 && net.leader() !== 2; i++) {
      net.tickAll(1)
      net.stabilize()
    }
    expect(net.leader()).toBe(2)
    expect(net.node(2).confState().voters).toEqual([2])
    // 2 may have won alone (it learned the removal first): 3 then steps down when its hand-over
    // times out, an election timeout at most.
    for (let i = 0; i < 12 && net.node(3).status().role === "leader"; i++) {
      net.tickAll(1)
      net.stabilize()
    }
    expect(net.node(3).status().role).toBe("follower")
    net.node(2).propose("alone")
    net.stabilize()
    expect(net.state.get(2)).toEqual(["x", "after the removal", "alone"])
  })

  it("a Ready that applies a membership change is synced even when only the commit index moved: a node that forgot that commit would count the old membership again", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.stabilize()
    const follower = net.node(2)
    const seen: Array<{ readonly mustSync: boolean; readonly entries: number }> = []
    const ready = follower.ready.bind(follower)
    follower.ready = () => {
      const rd = ready()
      if (rd.committedEntries.some((e) => e.kind === "confChange")) seen.push({ mustSync: rd.mustSync, entries: rd.entries.length })
      return rd
    }
    net.add(4, new MemoryStorage())
    expect(net.node(1).proposeConfChange({ type: "addLearner", nodeId: 4 }).ok).toBe(true)
    net.stabilize()
    // The entry came in one append, its commit index in a later message: a Ready with nothing else to write.
    expect(seen).toContainEqual({ mustSync: true, entries: 0 })
    expect(seen.every((r) => r.mustSync)).toBe(true)
  })

  it("a restarted node rebuilds its configuration from the snapshot and the conf changes up to applied", () => {
    const net = withLearner()
    const st = net.storages.get(2)!
    const applied = net.node(2).status().applied
    const restarted = new RawNode({ ...plain, id: 2, storage: st, random: seededRandom(2), applied })
    expect(restarted.confState()).toEqual({ voters: [1, 2, 3], learners: [4] })
    // With applied at the snapshot, the change is re-delivered and takes effect on advance instead.
    const fresh = new RawNode({ ...plain, id: 2, storage: st, random: seededRandom(2), applied: 1 })
    expect(fresh.confState()).toEqual({ voters: [1, 2, 3], learners: [] })
    const rd = fresh.ready()
    expect(rd.committedEntries.some((e) => e.kind === "confChange")).toBe(true)
    fresh.advance(rd)
    expect(fresh.confState()).toEqual({ voters: [1, 2, 3], learners: [4] })
  })

  it("applyChangeToConfState leaves the configuration unchanged for invalid changes", () => {
    const cs = { voters: [1, 2], learners: [3] }
    expect(applyChangeToConfState(cs, { type: "addLearner", nodeId: 1 })).toBe(cs)
    expect(applyChangeToConfState(cs, { type: "promote", nodeId: 2 })).toBe(cs)
    expect(applyChangeToConfState(cs, { type: "remove", nodeId: 9 })).toBe(cs)
    expect(applyChangeToConfState(cs, { type: "promote", nodeId: 3 })).toEqual({ voters: [1, 2, 3], learners: [] })
    expect(applyChangeToConfState(cs, { type: "remove", nodeId: 3 })).toEqual({ voters: [1, 2], learners: [] })
  })
})

describe("membership and elections", () => {
  it("a node with committed but unapplied conf changes does not campaign", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.node(1).proposeConfChange({ type: "addLearner", nodeId: 4 })
    // Node 2 learns the entry is committed, but its driver has not applied it yet.
    for (let i = 0; i < 10 && net.node(2).raft.log.committed < 3; i++) {
      for (const m of net.takeQueue()) net.deliver(m)
    }
    const r = net.node(2).raft
    expect(r.log.committed).toBe(3)
    expect(r.log.applied).toBeLessThan(3)
    r.campaign()
    expect(r.role).toBe("follower")
    net.processReady(2)
    r.campaign()
    expect(r.role).toBe("candidate")
  })

  it("conf changes of an outstanding Ready do not take effect over a snapshot installed meanwhile (etcd#11510)", () => {
    expect(confAfterSnapshotDuringReady()).toEqual({ voters: [1, 2, 3], learners: [] })
  })

  it("the unsafe switch (re-applying them) corrupts the configuration", () => {
    expect(confAfterSnapshotDuringReady({ ...plain, unsafeReapplyConfChanges: true })).toEqual({ voters: [1, 2, 3], learners: [4] })
  })
})

/**
 * Follower 2 takes a Ready applying "add learner 4" (index 2); before it advances it, a snapshot
 * from after node 4's removal (index 5) is installed. Returns the configuration in the end.
 */
const confAfterSnapshotDuringReady = (options: NodeOptions = plain): ConfState => {
  const st = MemoryStorage.bootstrap({ voters: [1, 2, 3], learners: [] })
  const n = new RawNode({ ...options, id: 2, storage: st, random: seededRandom(2) })
  const add = { index: 2, term: 2, kind: "confChange" as const, data: encodeConfChange({ type: "addLearner", nodeId: 4 }) }
  n.step({ type: "app", term: 2, from: 1, to: 2, index: 1, logTerm: 1, entries: [add], commit: 2 })
  const rd = n.ready()
  expect(rd.committedEntries).toEqual([add])
  const data = "[]"
  const metadata = { index: 5, term: 2, confState: { voters: [1, 2, 3], learners: [] } }
  n.step({ type: "snap", term: 2, from: 1, to: 2, metadata, offset: 0, totalSize: data.length, data })
  st.append(rd.entries)
  if (rd.hardState !== undefined) st.setHardState(rd.hardState)
  n.advance(rd)
  const snap = n.ready()
  expect(snap.snapshot?.metadata.index).toBe(5)
  st.applySnapshot(snap.snapshot!)
  n.advance(snap)
  expect(n.status().applied).toBe(5)
  return n.confState()
}
