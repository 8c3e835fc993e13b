/**
 * A peer back as another incarnation of its id (`Raft.reportRestarted`, from the transport's
 * `PeerRestarted`): its data directory was replaced, so nothing it acknowledged or granted before
 * counts, and its log may be empty.
 */
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import { makeLeader, newRaft, persist, readMessages } from "./helpers.js"
import { Network } from "./network.js"

const progressOf = (net: Network, leader: number, id: number) => net.node(leader).status().progress.find((p) => p.id === id)

describe("a peer back as another incarnation", () => {
  it("the leader starts its progress over (match 0, probing) and catches the empty log up without a commit index beyond it", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    for (let i = 0; i < 5; i++) net.node(1).propose(`x${i}`)
    net.stabilize()
    const last = net.node(1).status().lastIndex
    expect(progressOf(net, 1, 3)).toMatchObject({ match: last, state: "replicate" })
    // Node 3 comes back on an empty data directory.
    net.crash(3)
    net.add(3, new MemoryStorage())
    net.node(1).reportRestarted(3)
    expect(progressOf(net, 1, 3)).toMatchObject({ match: 0, next: last + 1, state: "probe" })
    // No message to it carries a commit index beyond what it holds when it gets it.
    net.rewrite = (m) => {
      if (m.to === 3 && m.type === "heartbeat") expect(m.commit).toBeLessThanOrEqual(net.node(3).status().lastIndex)
      return m
    }
    net.tickAll(3)
    net.stabilize()
    expect(net.state.get(3)).toEqual(["x0", "x1", "x2", "x3", "x4"])
    expect(progressOf(net, 1, 3)).toMatchObject({ match: last, state: "replicate" })
  })

  it("without the report, the empty log stops on the leader's first heartbeat (why the transport reports it)", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    for (let i = 0; i < 5; i++) net.node(1).propose(`x${i}`)
    net.stabilize()
    net.crash(3)
    net.add(3, new MemoryStorage())
    expect(() => {
      net.tickAll(3)
      net.stabilize()
    }).toThrow(/commit \d+ from leader 1 \(term \d+\) is beyond the last index 0 of node 3: this node lost entries it had acknowledged/)
  })

  it("what the leader had not handed out for the earlier life is dropped; the next message is a probe", () => {
    const r = newRaft(1, [1, 2, 3])
    makeLeader(r)
    const last = r.log.lastIndex()
    for (const from of [2, 3]) r.step({ type: "appResp", from, to: 1, term: r.term, index: last, reject: false, rejectHint: 0, logTerm: 0 })
    readMessages(r)
    r.propose("x")
    persist(r)
    r.tick()
    r.flush()
    // An append and a heartbeat that says the entries up to `last` are committed there.
    expect(r.msgs.filter((m) => m.to === 3).map((m) => (m.type === "heartbeat" ? `heartbeat ${m.commit}` : m.type)).sort()).toEqual(["app", `heartbeat ${last}`])
    r.reportRestarted(3)
    const toThree = readMessages(r).filter((m) => m.to === 3)
    expect(toThree).toHaveLength(1)
    expect(toThree[0]).toMatchObject({ type: "app", index: r.log.lastIndex(), entries: [] })
    // Node 2's message is untouched.
    r.propose("y")
    expect(readMessages(r).filter((m) => m.to === 2).length).toBeGreaterThan(0)
  })

  it("a candidate forgets the vote of a voter back as another incarnation", () => {
    const r = newRaft(1, [1, 2, 3, 4, 5])
    r.campaign()
    persist(r)
    const term = r.term
    r.step({ type: "voteResp", from: 2, to: 1, term, reject: false })
    expect(r.role).toBe("candidate")
    r.reportRestarted(2)
    // With node 2's vote it would now have 3 of 5; without it, 2.
    r.step({ type: "voteResp", from: 3, to: 1, term, reject: false })
    expect(r.role).toBe("candidate")
    r.step({ type: "voteResp", from: 4, to: 1, term, reject: false })
    expect(r.role).toBe("leader")
  })

  it("is ignored for itself, for unknown peers and by followers (beyond dropping their messages)", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.node(1).reportRestarted(1)
    net.node(1).reportRestarted(9)
    net.node(2).reportRestarted(3)
    expect(net.node(1).status().progress.find((p) => p.id === 1)?.match).toBe(net.node(1).status().lastIndex)
    net.node(1).propose("z")
    net.stabilize()
    expect(net.state.get(3)).toEqual(["z"])
  })
})
