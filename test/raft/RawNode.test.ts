/** The Ready/advance protocol. */
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
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

  it("a single node: entries to persist and the same entries committed, applied once on advance", () => {
    const st = MemoryStorage.bootstrap({ voters: [1], learners: [] })
    const n = new RawNode({ ...plain, id: 1, storage: st, random: seededRandom(1) })
    n.campaign()
    n.propose("a")
    const rd = n.ready()
    expect(rd.entries.map((e) => [e.index, e.kind])).toEqual([
      [2, "empty"],
      [3, "normal"]
    ])
    expect(rd.committedEntries.map((e) => e.index)).toEqual([2, 3])
    expect(rd.softState).toEqual({ lead: 1, role: "leader" })
    st.append(rd.entries)
    st.setHardState(rd.hardState!)
    n.advance(rd)
    expect(n.status()).toMatchObject({ applied: 3, commit: 3, lastIndex: 3 })
    expect(n.hasReady()).toBe(false)
    expect(n.raft.log.unstableEntries()).toEqual([])
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
