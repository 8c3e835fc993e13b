/** The Ready/advance protocol. */
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import type { Ready } from "../../src/raft/RawNode.js"
import { RawNode } from "../../src/raft/RawNode.js"
import { Network, plain, seededRandom } from "./network.js"

const node = (id: number, voters: Array<number>) =>
  new RawNode({ ...plain, id, storage: MemoryStorage.bootstrap({ voters, learners: [] }), random: seededRandom(id) })

describe("RawNode Ready/advance", () => {
  it("a campaign yields a Ready with the new term and vote to sync, and the vote requests to send after it", () => {
    const n = node(1, [1, 2, 3])
    expect(n.hasReady()).toBe(false)
    n.campaign()
    expect(n.hasReady()).toBe(true)
    const rd = n.ready()
    expect(rd.hardState).toEqual({ term: 2, vote: 1, commit: 1 })
    expect(rd.mustSync).toBe(true)
    expect(rd.softState).toEqual({ lead: 0, role: "candidate" })
    expect(rd.messages.map((m) => [m.type, m.to])).toEqual([
      ["vote", 2],
      ["vote", 3]
    ])
    expect(() => n.ready()).toThrow(/advance/)
    expect(n.hasReady()).toBe(false)
    n.advance(rd)
    expect(n.hasReady()).toBe(false)
  })

  it("a sole voter leads only once its term and vote are durable, and commits only what is durable", () => {
    const st = MemoryStorage.bootstrap({ voters: [1], learners: [2] })
    const n = new RawNode({ ...plain, id: 1, storage: st, random: seededRandom(1) })
    const persist = (rd: Ready) => {
      st.append(rd.entries)
      if (rd.hardState !== undefined) st.setHardState(rd.hardState)
    }
    n.campaign()
    // Its own vote wins, but not before the new term and vote are on disk.
    expect(n.propose("too early")).toMatchObject({ ok: false, reason: "notLeader" })
    const vote = n.ready()
    expect(vote.hardState).toEqual({ term: 2, vote: 1, commit: 1 })
    expect(vote.mustSync).toBe(true)
    expect(vote.softState).toEqual({ lead: 0, role: "candidate" })
    expect(vote.messages).toEqual([])
    persist(vote)
    n.advance(vote)
    expect(n.role).toBe("leader")
    expect(n.propose("a")).toMatchObject({ ok: true, index: 3, term: 2 })
    // Its appends leave for the learner with the commit index of before: nothing is durable yet.
    const append = n.ready()
    expect(append.entries.map((e) => [e.index, e.kind])).toEqual([
      [2, "empty"],
      [3, "normal"]
    ])
    expect(append.committedEntries).toEqual([])
    expect(append.messages.map((m) => (m.type === "app" ? [m.to, m.commit, m.entries.length] : m.type))).toEqual([[2, 1, 2]])
    persist(append)
    n.advance(append)
    // Durable now: they commit (the learner hears of it with its next append or heartbeat).
    const commit = n.ready()
    expect(commit.committedEntries.map((e) => e.index)).toEqual([2, 3])
    expect(commit.mustSync).toBe(false)
    persist(commit)
    n.advance(commit)
    expect(n.status()).toMatchObject({ applied: 3, commit: 3, lastIndex: 3 })
    expect(n.hasReady()).toBe(false)
    expect(n.raft.log.unstableEntries()).toEqual([])
  })

  it("a vote or append acknowledged to itself is ignored once the node has moved to a later term", () => {
    const st = MemoryStorage.bootstrap({ voters: [1], learners: [] })
    const n = new RawNode({ ...plain, id: 1, storage: st, random: seededRandom(1) })
    n.campaign()
    const vote = n.ready()
    // Before the vote is durable, a message of a later term arrives (say, from a removed peer).
    n.step({ type: "heartbeat", term: 7, from: 2, to: 1, commit: 1 })
    st.setHardState(vote.hardState!)
    n.advance(vote)
    expect(n.role).toBe("follower")
    expect(n.term).toBe(7)
  })

  it("createSnapshot captures the applied index, its term and the configuration", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.node(1).propose("a")
    net.stabilize()
    expect(net.node(1).createSnapshot("state")).toEqual({
      metadata: { index: 3, term: 2, confState: { voters: [1, 2, 3], learners: [] } },
      data: "state"
    })
  })

  it("status reports role, term, commit, applied and per-peer progress for cluster status", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    net.node(1).propose("a")
    net.stabilize()
    const st = net.node(1).status()
    expect(st).toMatchObject({ id: 1, role: "leader", lead: 1, term: 2, commit: 3, applied: 3 })
    expect(st.progress.map((p) => [p.id, p.match, p.state])).toEqual([
      [1, 3, "replicate"],
      [2, 3, "replicate"],
      [3, 2, "replicate"]
    ])
    expect(net.node(2).status().progress).toEqual([])
  })

  it("is deterministic: the same seed gives the same message trace", () => {
    const run = (seed: number) => {
      const net = new Network([1, 2, 3, 4, 5], { ...plain, preVote: true, checkQuorum: true }, seed)
      for (let i = 0; i < 60; i++) {
        net.tickAll(1)
        const l = net.leader()
        if (l !== undefined && i % 3 === 0) net.node(l).propose(`c${i}`)
      }
      return JSON.stringify(net.delivered)
    }
    expect(run(7)).toBe(run(7))
    expect(run(7)).not.toBe(run(8))
  })
})

describe("RawNode persistence and limits", () => {
  it("a restarted node keeps its persisted term and vote: it never votes twice in a term", () => {
    const net = new Network([1, 2, 3])
    net.send({ type: "vote", term: 5, from: 2, to: 1, index: 1, logTerm: 1, transfer: false })
    expect(net.storages.get(1)!.hardState).toMatchObject({ term: 5, vote: 2 })
    net.crash(1)
    net.restart(1)
    expect(net.node(1).status()).toMatchObject({ term: 5, vote: 2, role: "follower" })
    const before = net.delivered.length
    net.send({ type: "vote", term: 5, from: 3, to: 1, index: 1, logTerm: 1, transfer: false })
    expect(net.delivered.slice(before).find((m) => m.type === "voteResp" && m.to === 3)).toMatchObject({ reject: true })
  })

  it("committed entries are handed out in pages of maxCommittedSizePerReady", () => {
    const st = MemoryStorage.bootstrap({ voters: [1], learners: [] })
    const n = new RawNode({ ...plain, id: 1, storage: st, random: seededRandom(1), maxCommittedSizePerReady: 100 })
    n.campaign()
    const vote = n.ready()
    st.setHardState(vote.hardState!)
    n.advance(vote)
    n.proposeBatch(Array.from({ length: 10 }, (_, i) => `entry-${i}`)) // 31 bytes each with overhead
    const pages: Array<Array<number>> = []
    while (n.hasReady()) {
      const rd = n.ready()
      st.append(rd.entries)
      if (rd.hardState !== undefined) st.setHardState(rd.hardState)
      pages.push(rd.committedEntries.map((e) => e.index))
      n.advance(rd)
    }
    expect(pages.flat()).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    expect(pages.length).toBeGreaterThan(3)
    expect(pages.every((p) => p.length <= 4)).toBe(true)
  })

  it("proposeBatch is all or nothing under the uncommitted cap", () => {
    const net = new Network([1, 2, 3], { ...plain, maxUncommittedEntriesSize: 10 })
    net.campaign(1)
    net.isolate(1)
    expect(net.node(1).proposeBatch(["aaaa", "bbbb"]).ok).toBe(true)
    const last = net.node(1).status().lastIndex
    expect(net.node(1).proposeBatch(["cc", "dd"])).toEqual({ ok: false, reason: "uncommittedSizeExceeded" })
    expect(net.node(1).status().lastIndex).toBe(last)
  })

  it("invalid configurations are rejected at construction", () => {
    const mk = (o: object) => () =>
      new RawNode({ ...plain, ...o, id: 1, storage: new MemoryStorage(), random: seededRandom(1) })
    expect(mk({ electionTick: 1, heartbeatTick: 1 })).toThrow(/electionTick/)
    expect(mk({ heartbeatTick: 0 })).toThrow(/heartbeatTick/)
    expect(mk({ maxInflightMsgs: 0 })).toThrow(/maxInflightMsgs/)
    expect(() => new RawNode({ ...plain, id: 0, storage: new MemoryStorage(), random: seededRandom(1) })).toThrow(/id/)
  })
})

describe("RawNode accessors", () => {
  it("cheap accessors agree with status()", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.node(1).propose("a")
    net.stabilize()
    for (const id of net.ids()) {
      const n = net.node(id)
      const st = n.status()
      expect([n.role, n.lead, n.term, n.commitIndex, n.appliedIndex]).toEqual([st.role, st.lead, st.term, st.commit, st.applied])
    }
  })
})
