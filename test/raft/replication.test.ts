/** Log replication (Raft §5.3, §5.4.2): consistency check, commit rule, batching, flow control. */
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import type { Message, MsgApp } from "../../src/raft/Message.js"
import { entriesWithTerms, makeLeader, newRaft, readMessages } from "./helpers.js"
import { Network, plain, seededRandom } from "./network.js"

const apps = (msgs: ReadonlyArray<Message>, to: number): Array<MsgApp> =>
  msgs.filter((m): m is MsgApp => m.type === "app" && m.to === to)

describe("log replication", () => {
  it("leader replicates a proposal, commits it once a majority stored it, and followers apply it", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    const res = net.node(1).propose("set x=1")
    expect(res).toMatchObject({ ok: true, index: 3, term: 2 })
    net.stabilize()
    expect(net.node(1).status().commit).toBe(3)
    expect(net.state.get(1)).toEqual(["set x=1"])
    expect(net.state.get(2)).toEqual(["set x=1"])
    expect(net.state.get(3)).toEqual([])
    net.heal()
    net.tickAll(2)
    expect(net.state.get(3)).toEqual(["set x=1"])
  })

  it("an entry stored on a minority is not committed", () => {
    const net = new Network([1, 2, 3, 4, 5])
    net.campaign(1)
    net.isolate(3)
    net.isolate(4)
    net.isolate(5)
    net.node(1).propose("x")
    net.tickAll(3)
    expect(net.node(1).status().commit).toBe(2)
    expect(net.state.get(1)).toEqual([])
  })

  it("follower rejects AppendEntries whose previous entry does not match", () => {
    const r = newRaft(2, [1, 2, 3], {}, entriesWithTerms([1, 1, 2]), { term: 2, vote: 0, commit: 0 })
    r.step({ type: "app", term: 2, from: 1, to: 2, index: 3, logTerm: 3, entries: entriesWithTerms([3], 4), commit: 4 })
    r.step({ type: "app", term: 2, from: 1, to: 2, index: 5, logTerm: 2, entries: [], commit: 4 })
    expect(readMessages(r)).toEqual([
      { type: "appResp", term: 2, from: 2, to: 1, index: 3, reject: true, rejectHint: 3, logTerm: 2 },
      { type: "appResp", term: 2, from: 2, to: 1, index: 5, reject: true, rejectHint: 3, logTerm: 2 }
    ])
    expect(r.log.lastIndex()).toBe(3)
    expect(r.log.committed).toBe(0)
  })

  it("follower deletes conflicting entries and everything after them, then appends the leader's", () => {
    const r = newRaft(2, [1, 2, 3], {}, entriesWithTerms([1, 1, 2, 2]), { term: 2, vote: 0, commit: 1 })
    const leaderEntry = { index: 3, term: 3, kind: "normal" as const, data: "new" }
    r.step({ type: "app", term: 3, from: 1, to: 2, index: 2, logTerm: 1, entries: [leaderEntry], commit: 3 })
    expect(readMessages(r)).toMatchObject([{ type: "appResp", index: 3, reject: false }])
    expect(r.log.lastIndex()).toBe(3)
    expect(r.log.term(3)).toBe(3)
    expect(r.log.committed).toBe(3)
    expect(r.log.unstableEntries()).toEqual([leaderEntry])
  })

  it("a follower never truncates committed entries: an old, shorter AppendEntries is acknowledged, not applied", () => {
    const r = newRaft(2, [1, 2, 3], {}, entriesWithTerms([1, 1, 1]), { term: 1, vote: 0, commit: 3 })
    r.step({ type: "app", term: 1, from: 1, to: 2, index: 1, logTerm: 1, entries: [], commit: 3 })
    expect(readMessages(r)).toMatchObject([{ type: "appResp", index: 3, reject: false }])
    expect(r.log.lastIndex()).toBe(3)
  })

  it("leader only commits entries from its current term by counting replicas", () => {
    // Log [1:1, 2:2]; the leader is elected in term 3 and appends its empty entry at 3.
    const r = newRaft(1, [1, 2, 3], {}, entriesWithTerms([1, 2]), { term: 2, vote: 0, commit: 1 })
    makeLeader(r)
    expect(r.term).toBe(3)
    r.step({ type: "appResp", term: 3, from: 2, to: 1, index: 2, reject: false, rejectHint: 0, logTerm: 0 })
    // Entry 2 (term 2) is on a majority (1 and 2), yet it is not committed by counting.
    expect(r.log.committed).toBe(1)
    r.step({ type: "appResp", term: 3, from: 2, to: 1, index: 3, reject: false, rejectHint: 0, logTerm: 0 })
    // Once the current-term entry 3 is on a majority, it commits, and entry 2 with it.
    expect(r.log.committed).toBe(3)
  })

  it("the unsafe test switch makes the leader commit previous-term entries by counting (Figure 8 bug)", () => {
    const r = newRaft(1, [1, 2, 3], { unsafeCommitPreviousTermByCounting: true }, entriesWithTerms([1, 2]), {
      term: 2,
      vote: 0,
      commit: 1
    })
    makeLeader(r)
    r.step({ type: "appResp", term: 3, from: 2, to: 1, index: 2, reject: false, rejectHint: 0, logTerm: 0 })
    expect(r.log.committed).toBe(2)
  })

  it("followers learn the commit index from the next AppendEntries or heartbeat", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.node(1).propose("a")
    // Deliver the appends and their answers, but not the commit-carrying follow-ups.
    for (const m of net.takeQueue()) net.deliver(m)
    for (const m of net.takeQueue()) net.deliver(m)
    expect(net.node(1).status().commit).toBe(3)
    expect(net.node(2).status().commit).toBe(2)
    net.stabilize()
    expect(net.node(2).status().commit).toBe(3)
  })

  it("lazy commit (the daemon's setting): the commit index rides on the next AppendEntries, else goes alone at the next tick", () => {
    // heartbeatTick 3: the ticks below send no heartbeat, which would carry the commit index too.
    const lazy = { ...plain, heartbeatTick: 3, lazyCommit: true }
    const net = new Network([1, 2, 3], lazy)
    net.campaign(1)
    net.tick(1)
    net.stabilize()
    const commitOnly = () => net.delivered.filter((m) => m.type === "app" && m.entries.length === 0)
    expect(net.node(2).status().commit).toBe(2)
    net.delivered.length = 0
    net.node(1).propose("a")
    net.stabilize()
    // Committed on the leader; no AppendEntries went out just to tell the followers.
    expect(net.node(1).status().commit).toBe(3)
    expect(commitOnly()).toEqual([])
    expect(net.node(2).status().commit).toBe(2)
    // The next proposal's AppendEntries carries it.
    net.node(1).propose("b")
    for (const m of net.takeQueue()) net.deliver(m)
    expect(net.node(2).status().commit).toBe(3)
    net.stabilize()
    expect(net.state.get(2)).toEqual(["a"])
    expect(net.node(2).status().commit).toBe(3)
    // Nothing else to send: the next tick sends the commit index alone, once, to each follower.
    net.tick(1)
    const owed = net.takeQueue()
    expect(owed.map((m) => (m.type === "app" ? `${m.to}:${m.entries.length}:${m.commit}` : m.type))).toEqual(["2:0:4", "3:0:4"])
    for (const m of owed) net.deliver(m)
    net.stabilize()
    expect(net.state.get(3)).toEqual(["a", "b"])
    // Owed no more: the next tick (a heartbeat's) sends no AppendEntries.
    net.tick(1)
    expect(net.takeQueue().filter((m) => m.type === "app")).toEqual([])
  })

  it("batching: many proposals between two Readys go out as one AppendEntries per follower", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    for (let i = 0; i < 50; i++) expect(net.node(1).propose(`cmd${i}`).ok).toBe(true)
    const q = net.takeQueue()
    expect(apps(q, 2)).toHaveLength(1)
    expect(apps(q, 3)).toHaveLength(1)
    expect(apps(q, 2)[0]!.entries).toHaveLength(50)
    for (const m of q) net.deliver(m)
    net.stabilize()
    expect(net.state.get(3)).toHaveLength(50)
  })

  it("pipelining: a follower in replicate state has at most maxInflightMsgs AppendEntries in flight", () => {
    const net = new Network([1, 2, 3], { ...plain, maxSizePerMsg: 1, maxInflightMsgs: 3 })
    net.campaign(1)
    expect(net.node(1).status().progress.find((p) => p.id === 2)?.state).toBe("replicate")
    for (let i = 0; i < 10; i++) net.node(1).propose(`c${i}`)
    const q = net.takeQueue()
    // One entry per message (maxSizePerMsg), three in flight, the rest waits for acknowledgements.
    expect(apps(q, 2).map((m) => m.entries.map((e) => e.index))).toEqual([[3], [4], [5]])
    expect(net.node(1).status().progress.find((p) => p.id === 2)?.inflight).toBe(3)
    for (const m of q) net.deliver(m)
    net.stabilize()
    expect(net.state.get(2)).toHaveLength(10)
    expect(net.node(1).status().progress.find((p) => p.id === 2)?.inflight).toBe(0)
  })

  it("probe state: the leader sends one AppendEntries at a time until the follower answers", () => {
    const r = newRaft(1, [1, 2, 3])
    makeLeader(r)
    // The probe sent on election is outstanding: new proposals do not produce more appends to 2.
    r.propose("a")
    r.propose("b")
    expect(apps(readMessages(r), 2)).toEqual([])
    // A heartbeat answer lets the leader probe again.
    r.tick()
    expect(readMessages(r).map((m) => m.type)).toEqual(["heartbeat", "heartbeat"])
    r.step({ type: "heartbeatResp", term: 1, from: 2, to: 1 })
    const probe = apps(readMessages(r), 2)
    expect(probe).toHaveLength(1)
    expect(probe[0]!.index).toBe(0)
    expect(r.status().progress.find((p) => p.id === 2)?.state).toBe("probe")
    r.step({ type: "appResp", term: 1, from: 2, to: 1, index: 3, reject: false, rejectHint: 0, logTerm: 0 })
    expect(r.status().progress.find((p) => p.id === 2)).toMatchObject({ state: "replicate", match: 3, next: 4 })
  })

  it("fast back-off: the conflict term hint repairs a long divergent log in one rejection", () => {
    const leaderLog = entriesWithTerms([1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    const divergent = entriesWithTerms([1, ...Array<number>(50).fill(2)])
    const storages = new Map([
      [1, MemoryStorage.withLog([1, 2, 3], leaderLog, { term: 3, vote: 0, commit: 1 })],
      [2, MemoryStorage.withLog([1, 2, 3], divergent, { term: 2, vote: 0, commit: 1 })],
      [3, MemoryStorage.withLog([1, 2, 3], leaderLog, { term: 3, vote: 0, commit: 1 })]
    ])
    const net = new Network([1, 2, 3], plain, 1, storages)
    net.campaign(1)
    const rejections = net.delivered.filter((m) => m.type === "appResp" && m.from === 2 && m.reject)
    expect(rejections).toHaveLength(1)
    expect(net.storages.get(2)!.lastIndex()).toBe(12)
    expect(net.storages.get(2)!.term(11)).toBe(3)
    expect(net.node(2).status().commit).toBe(12)
  })

  it("fast back-off: a follower with a short log hints its last index", () => {
    const leaderLog = entriesWithTerms([1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    const storages = new Map([
      [1, MemoryStorage.withLog([1, 2, 3], leaderLog, { term: 1, vote: 0, commit: 1 })],
      [2, MemoryStorage.withLog([1, 2, 3], leaderLog.slice(0, 1), { term: 1, vote: 0, commit: 1 })],
      [3, MemoryStorage.withLog([1, 2, 3], leaderLog, { term: 1, vote: 0, commit: 1 })]
    ])
    const net = new Network([1, 2, 3], plain, 1, storages)
    net.campaign(1)
    const rej = net.delivered.filter((m) => m.type === "appResp" && m.from === 2 && m.reject)
    expect(rej).toMatchObject([{ index: 10, rejectHint: 1, logTerm: 1 }])
    expect(net.storages.get(2)!.lastIndex()).toBe(11)
  })

  it("a follower's lost AppendEntries is re-sent after a rejection reveals the gap", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.drop = (m) => m.type === "app" && m.to === 2
    net.node(1).propose("lost")
    net.stabilize()
    net.drop = undefined
    net.node(1).propose("next")
    net.stabilize()
    net.tickAll(2)
    expect(net.state.get(2)).toEqual(["lost", "next"])
  })

  it("a follower whose whole in-flight window was lost is probed again after an election timeout", () => {
    const net = new Network([1, 2, 3], { ...plain, maxSizePerMsg: 1, maxInflightMsgs: 2 })
    net.campaign(1)
    net.drop = (m) => m.type === "app" && m.to === 2
    for (let i = 0; i < 5; i++) net.node(1).propose(`p${i}`)
    net.stabilize()
    net.drop = undefined
    net.tickAll(15)
    expect(net.state.get(2)).toEqual(["p0", "p1", "p2", "p3", "p4"])
  })

  it("propose on a follower fails with notLeader, naming the leader when known", () => {
    const net = new Network([1, 2, 3])
    expect(net.node(2).propose("x")).toEqual({ ok: false, reason: "notLeader", leader: 0 })
    net.campaign(1)
    expect(net.node(2).propose("x")).toEqual({ ok: false, reason: "notLeader", leader: 1 })
  })

  it("uncommitted-bytes cap: proposals are refused once uncommitted payload would exceed it", () => {
    const net = new Network([1, 2, 3], { ...plain, maxUncommittedEntriesSize: 10 })
    net.campaign(1)
    net.isolate(1)
    const n = net.node(1)
    expect(n.propose("aaaaa").ok).toBe(true)
    expect(n.propose("bbbbb").ok).toBe(true)
    expect(n.propose("c")).toEqual({ ok: false, reason: "uncommittedSizeExceeded" })
    net.heal()
    net.tickAll(2)
    expect(net.state.get(1)).toEqual(["aaaaa", "bbbbb"])
    expect(n.propose("c").ok).toBe(true)
  })

  it("uncommitted-bytes cap: one oversized proposal is accepted when nothing is uncommitted", () => {
    const net = new Network([1, 2, 3], { ...plain, maxUncommittedEntriesSize: 4 })
    net.campaign(1)
    net.isolate(1)
    expect(net.node(1).propose("0123456789").ok).toBe(true)
    expect(net.node(1).propose("x").ok).toBe(false)
  })

  it("Log Matching and State Machine Safety hold under random partitions, drops and crashes", () => {
    for (let seed = 1; seed <= 8; seed++) {
      const rnd = seededRandom(seed * 101)
      const net = new Network([1, 2, 3, 4, 5], { ...plain, preVote: true, checkQuorum: true }, seed)
      net.drop = () => rnd(100) < 10
      let proposed = 0
      for (let step = 0; step < 300; step++) {
        const action = rnd(100)
        if (action < 5) {
          net.heal()
          const a = 1 + rnd(5)
          const b = 1 + rnd(5)
          if (a !== b) net.cutLink(a, b)
        } else if (action < 8) {
          net.heal()
        } else if (action < 10) {
          const id = 1 + rnd(5)
          if (net.isDown(id)) net.restart(id)
          else if (net.ids().filter((i) => net.isDown(i)).length < 2) net.crash(id)
        } else if (action < 40) {
          const l = net.leader()
          if (l !== undefined && net.node(l).propose(`s${seed}-${proposed}`).ok) proposed++
        }
        net.tickAll(1)
        expect(net.safetyViolations()).toEqual([])
      }
      // Liveness once healed: everybody converges on the same state.
      net.heal()
      net.drop = undefined
      for (const id of net.ids()) if (net.isDown(id)) net.restart(id)
      net.tickAll(60)
      const l = net.leader()
      expect(l).toBeDefined()
      net.node(l!).propose("final")
      net.tickAll(5)
      const states = net.ids().map((id) => net.state.get(id)!.join(","))
      expect(new Set(states).size).toBe(1)
      expect(net.state.get(1)!.at(-1)).toBe("final")
      expect(net.safetyViolations()).toEqual([])
    }
  })
})
