/** Leader election (Raft §5.2, §5.4.1), PreVote (thesis §9.6) and CheckQuorum (thesis §6.2, §4.2.3). */
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import { Raft } from "../../src/raft/Raft.js"
import { entriesWithTerms, makeLeader, newRaft, readMessages } from "./helpers.js"
import { Network, plain, seededRandom } from "./network.js"

describe("leader election", () => {
  it("a follower that hears from no leader for an election timeout becomes a candidate of the next term", () => {
    const r = newRaft(1, [1, 2, 3])
    for (let i = 0; i < 20 && r.role === "follower"; i++) r.tick()
    expect(r.role).toBe("candidate")
    expect(r.term).toBe(1)
    expect(r.vote).toBe(1)
    const msgs = readMessages(r)
    expect(msgs.map((m) => [m.type, m.to, m.term])).toEqual([
      ["vote", 2, 1],
      ["vote", 3, 1]
    ])
  })

  it("election timeouts are randomized in [electionTick, 2*electionTick)", () => {
    const seen = new Set<number>()
    for (let seed = 1; seed <= 200; seed++) {
      const r = new Raft({
        ...plain,
        id: 1,
        storage: MemoryStorage.withLog([1, 2, 3], []),
        random: seededRandom(seed)
      })
      let ticks = 0
      while (r.role === "follower") {
        r.tick()
        ticks++
      }
      expect(ticks).toBeGreaterThanOrEqual(10)
      expect(ticks).toBeLessThan(20)
      seen.add(ticks)
    }
    expect(seen.size).toBe(10)
  })

  it("a candidate that receives votes from a majority becomes leader and appends an empty entry of its term, naming itself", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    const st = net.node(1).status()
    expect(st.role).toBe("leader")
    expect(st.term).toBe(2)
    const last = net.storages.get(1)!.entries(2, 3, 1e9)
    expect(last).toEqual([{ index: 2, term: 2, kind: "empty", data: "1" }])
    expect(net.node(2).status().lead).toBe(1)
    expect(net.node(3).status().lead).toBe(1)
    // The empty entry commits everywhere.
    expect(net.ids().map((id) => net.node(id).status().commit)).toEqual([2, 2, 2])
  })

  it("a candidate that a majority rejects returns to follower", () => {
    const r = newRaft(1, [1, 2, 3])
    r.campaign()
    readMessages(r)
    r.step({ type: "voteResp", term: 1, from: 2, to: 1, reject: true })
    expect(r.role).toBe("candidate")
    r.step({ type: "voteResp", term: 1, from: 3, to: 1, reject: true })
    expect(r.role).toBe("follower")
  })

  it("each server votes for at most one candidate per term, first come first served", () => {
    const r = newRaft(1, [1, 2, 3])
    r.step({ type: "vote", term: 5, from: 2, to: 1, index: 0, logTerm: 0, transfer: false })
    r.step({ type: "vote", term: 5, from: 3, to: 1, index: 0, logTerm: 0, transfer: false })
    // A retransmitted request from the candidate we voted for is granted again.
    r.step({ type: "vote", term: 5, from: 2, to: 1, index: 0, logTerm: 0, transfer: false })
    expect(readMessages(r).map((m) => [m.type, m.to, "reject" in m ? m.reject : undefined])).toEqual([
      ["voteResp", 2, false],
      ["voteResp", 3, true],
      ["voteResp", 2, false]
    ])
    expect(r.vote).toBe(2)
    expect(r.term).toBe(5)
  })

  it("candidate with an out-of-date log does not get the vote (lower last term, or same term and shorter)", () => {
    // Voter's log: terms [1, 2, 2] (last index 3, last term 2).
    const cases: Array<[index: number, logTerm: number, granted: boolean]> = [
      [5, 1, false], // longer but older last term
      [2, 2, false], // same last term, shorter
      [3, 2, true], // identical
      [4, 2, true], // same last term, longer
      [1, 3, true] // newer last term, shorter
    ]
    for (const [index, logTerm, granted] of cases) {
      const r = newRaft(1, [1, 2, 3], {}, entriesWithTerms([1, 2, 2]), { term: 2, vote: 0, commit: 0 })
      r.step({ type: "vote", term: 3, from: 2, to: 1, index, logTerm, transfer: false })
      const [resp] = readMessages(r)
      expect(resp).toMatchObject({ type: "voteResp", reject: !granted })
    }
  })

  it("a server that sees a higher term reverts to follower and adopts the term", () => {
    const r = newRaft(1, [1, 2, 3])
    makeLeader(r)
    expect(r.role).toBe("leader")
    r.step({ type: "heartbeat", term: r.term + 3, from: 2, to: 1, commit: 0 })
    expect(r.role).toBe("follower")
    expect(r.term).toBe(4)
    expect(r.lead).toBe(2)
  })

  it("a candidate that receives AppendEntries from a leader of its term steps down", () => {
    const r = newRaft(1, [1, 2, 3])
    r.campaign()
    readMessages(r)
    r.step({ type: "app", term: 1, from: 3, to: 1, index: 0, logTerm: 0, entries: [], commit: 0 })
    expect(r.role).toBe("follower")
    expect(r.lead).toBe(3)
  })

  it("messages from an older term are ignored", () => {
    const r = newRaft(1, [1, 2, 3], {}, [], { term: 5, vote: 0, commit: 0 })
    r.step({ type: "app", term: 4, from: 2, to: 1, index: 0, logTerm: 0, entries: entriesWithTerms([4]), commit: 1 })
    expect(r.log.lastIndex()).toBe(0)
    expect(r.lead).toBe(0)
    expect(r.term).toBe(5)
  })

  it("after a split vote a new election at a higher term elects a leader", () => {
    const net = new Network([1, 2, 3, 4])
    // 1 and 2 campaign at once; 1 gets 3's vote, 2 gets 4's: nobody has 3 of 4.
    net.node(1).campaign()
    net.node(2).campaign()
    const q = net.takeQueue()
    for (const m of q) {
      if (m.type === "vote" && ((m.from === 1 && m.to === 3) || (m.from === 2 && m.to === 4))) net.deliver(m)
    }
    net.stabilize()
    expect(net.leader()).toBeUndefined()
    net.tickAll(40)
    const leader = net.leader()
    expect(leader).toBeDefined()
    expect(net.node(leader!).status().term).toBeGreaterThan(2)
  })

  it("a single-voter cluster elects itself and commits alone", () => {
    const net = new Network([1])
    net.campaign(1)
    expect(net.node(1).status().role).toBe("leader")
    const res = net.node(1).propose("x")
    expect(res.ok).toBe(true)
    net.stabilize()
    expect(net.state.get(1)).toEqual(["x"])
  })
})

describe("PreVote", () => {
  it("a partitioned node rejoining does not disrupt the term (PreVote)", () => {
    const net = new Network([1, 2, 3], { ...plain, preVote: true })
    net.campaign(1)
    const term = net.node(1).status().term
    net.isolate(3)
    net.tick(3, 100)
    net.stabilize()
    // It kept trying pre-votes but never incremented its term.
    expect(net.node(3).status().term).toBe(term)
    net.heal()
    net.tickAll(3)
    expect(net.leader()).toBe(1)
    expect(net.ids().map((id) => net.node(id).status().term)).toEqual([term, term, term])
  })

  it("without PreVote the rejoining node forces a new election at a higher term", () => {
    const net = new Network([1, 2, 3], plain)
    net.campaign(1)
    const term = net.node(1).status().term
    net.isolate(3)
    net.tick(3, 100)
    net.stabilize()
    expect(net.node(3).status().term).toBeGreaterThan(term)
    net.heal()
    net.tickAll(30)
    expect(net.node(net.leader()!).status().term).toBeGreaterThan(term)
  })

  it("a pre-vote does not change the voter's term or vote", () => {
    const r = newRaft(1, [1, 2, 3], { preVote: true }, [], { term: 2, vote: 3, commit: 0 })
    r.step({ type: "preVote", term: 3, from: 2, to: 1, index: 0, logTerm: 0, transfer: false })
    const [resp] = readMessages(r)
    expect(resp).toMatchObject({ type: "preVoteResp", term: 3, reject: false })
    expect(r.term).toBe(2)
    expect(r.vote).toBe(3)
  })

  it("a pre-candidate only increments its term once a majority granted the pre-vote", () => {
    const r = newRaft(1, [1, 2, 3], { preVote: true })
    r.campaign()
    expect(r.role).toBe("preCandidate")
    expect(r.term).toBe(0)
    const msgs = readMessages(r)
    expect(msgs.map((m) => [m.type, m.term])).toEqual([
      ["preVote", 1],
      ["preVote", 1]
    ])
    r.step({ type: "preVoteResp", term: 1, from: 2, to: 1, reject: false })
    expect(r.role).toBe("candidate")
    expect(r.term).toBe(1)
    expect(readMessages(r).map((m) => m.type)).toEqual(["vote", "vote"])
  })
})

describe("CheckQuorum", () => {
  it("a leader that has not heard from a quorum within an election timeout steps down", () => {
    const net = new Network([1, 2, 3], { ...plain, checkQuorum: true })
    net.campaign(1)
    net.tickAll(25)
    expect(net.node(1).status().role).toBe("leader") // hears from the quorum
    net.isolate(1)
    net.tick(1, 10)
    net.stabilize()
    expect(net.node(1).status().role).toBe("leader")
    net.tick(1, 10)
    net.stabilize()
    expect(net.node(1).status().role).toBe("follower")
  })

  it("a follower that heard from a live leader within the election timeout ignores vote requests (lease)", () => {
    const net = new Network([1, 2, 3], { ...plain, checkQuorum: true })
    net.campaign(1)
    const term = net.node(1).status().term
    // Node 3 is cut off from the leader only, times out and asks 2 for its vote.
    net.cutLink(1, 3)
    net.tick(3, 30)
    net.tick(1, 1)
    net.tick(2, 1)
    net.stabilize()
    expect(net.node(3).status().role).toBe("candidate")
    expect(net.node(2).status().term).toBe(term)
    expect(net.node(2).status().vote).toBe(1)
    expect(net.node(1).status().role).toBe("leader")
    expect(net.delivered.some((m) => m.type === "vote" && m.from === 3 && m.to === 2)).toBe(true)
    const votes = net.delivered.filter((m) => m.type === "voteResp" && m.from === 2 && m.to === 3)
    expect(votes).toEqual([])
  })

  it("a vote request sent for a leadership transfer overrides the lease", () => {
    const r = newRaft(2, [1, 2, 3], { checkQuorum: true })
    r.step({ type: "heartbeat", term: 1, from: 1, to: 2, commit: 0 })
    readMessages(r)
    r.step({ type: "vote", term: 2, from: 3, to: 2, index: 0, logTerm: 0, transfer: false })
    expect(readMessages(r)).toEqual([])
    r.step({ type: "vote", term: 2, from: 3, to: 2, index: 0, logTerm: 0, transfer: true })
    expect(readMessages(r)).toMatchObject([{ type: "voteResp", to: 3, reject: false }])
    expect(r.term).toBe(2)
  })

  it("a stale leader learns the higher term from a follower's answer to its AppendEntries and steps down", () => {
    const r = newRaft(2, [1, 2, 3], { checkQuorum: true }, [], { term: 5, vote: 0, commit: 0 })
    r.step({ type: "heartbeat", term: 3, from: 1, to: 2, commit: 0 })
    const [resp] = readMessages(r)
    expect(resp).toMatchObject({ type: "appResp", term: 5, to: 1 })
    const old = newRaft(1, [1, 2, 3], { checkQuorum: true })
    makeLeader(old)
    old.step({ ...resp!, term: 5 })
    expect(old.role).toBe("follower")
    expect(old.term).toBe(5)
  })
})
