/** Log compaction and InstallSnapshot (Raft §7), with chunked transfer. */
import { describe, expect, it } from "vitest"
import type { Message, MsgSnap } from "../../src/raft/Message.js"
import { entriesWithTerms, newRaft, readMessages } from "./helpers.js"
import { Network, plain } from "./network.js"

const snaps = (net: Network, to: number): Array<MsgSnap> =>
  net.delivered.filter((m): m is MsgSnap => m.type === "snap" && m.to === to)

/** Leader 1 with `n` entries applied that node 3 missed; then the leader compacts its log. */
const behindCompactedLog = (n: number, options = plain): Network => {
  const net = new Network([1, 2, 3], options)
  net.campaign(1)
  net.isolate(3)
  for (let i = 0; i < n; i++) net.node(1).propose(`value-${i}-${"x".repeat(40)}`)
  net.stabilize()
  net.compact(1)
  return net
}

describe("snapshots", () => {
  it("a follower behind the compacted log is sent the snapshot and installs it via Ready", () => {
    const net = behindCompactedLog(10)
    const leaderSnap = net.storages.get(1)!.snapshot()
    expect(leaderSnap.metadata.index).toBe(12)
    expect(net.storages.get(1)!.firstIndex()).toBe(13)
    net.heal()
    net.tickAll(3)
    expect(snaps(net, 3).length).toBeGreaterThan(0)
    expect(net.storages.get(3)!.snapshot()).toEqual(leaderSnap)
    expect(net.state.get(3)).toEqual(net.state.get(1))
    expect(net.node(3).status()).toMatchObject({ commit: 12, applied: 12, firstIndex: 13 })
    // Replication resumes after the snapshot.
    expect(net.node(1).status().progress.find((p) => p.id === 3)).toMatchObject({ state: "replicate", match: 12 })
    net.node(1).propose("after")
    net.stabilize()
    expect(net.state.get(3)!.at(-1)).toBe("after")
  })

  it("a follower that installed a snapshot the leader has since compacted past is sent the newer one at once", () => {
    const net = behindCompactedLog(10)
    const first = net.storages.get(1)!.snapshot().metadata.index
    // Hold back node 3's acknowledgement of the installed snapshot while the leader moves on.
    let held: Message | undefined
    net.drop = (m) => {
      if (held === undefined && m.type === "appResp" && m.from === 3 && m.index === first && !m.reject) {
        held = m
        return true
      }
      return false
    }
    net.heal()
    net.tickAll(1)
    expect(held).toBeDefined()
    expect(net.node(3).status().commit).toBe(first)
    net.isolate(3)
    for (let i = 0; i < 5; i++) net.node(1).propose(`later-${i}`)
    net.stabilize()
    net.compact(1)
    const newer = net.storages.get(1)!.snapshot().metadata.index
    expect(newer).toBeGreaterThan(first)
    net.heal()
    // The acknowledgement arrives with no tick in between: the newer snapshot leaves at once, not
    // after an election timeout of heartbeats (the stall rule).
    net.node(1).step(held!)
    const sent = net.takeQueue().filter((m): m is MsgSnap => m.type === "snap" && m.to === 3)
    expect(sent.map((m) => m.metadata.index)).toEqual([newer])
    for (const m of sent) net.deliver(m)
    net.stabilize()
    expect(net.node(1).status().progress.find((p) => p.id === 3)).toMatchObject({ state: "replicate", match: newer })
    expect(net.state.get(3)).toEqual(net.state.get(1))
  })

  it("snapshots are sent in chunks of at most maxSizePerMsg that the follower reassembles", () => {
    const net = behindCompactedLog(20, { ...plain, maxSizePerMsg: 100 })
    const data = net.storages.get(1)!.snapshotData()
    expect(data.length).toBeGreaterThan(1000)
    net.heal()
    net.tickAll(3)
    const chunks = snaps(net, 3)
    expect(chunks).toHaveLength(Math.ceil(data.length / 100))
    expect(chunks.every((c) => c.data.length <= 100 && c.totalSize === data.length)).toBe(true)
    expect(chunks.map((c) => c.offset)).toEqual(chunks.map((_, i) => i * 100))
    expect(chunks.map((c) => c.data).join("")).toBe(data)
    expect(net.state.get(3)).toEqual(net.state.get(1))
  })

  it("chunks arriving out of order are reassembled (the network reorders; a burst must not livelock)", () => {
    const r = newRaft(2, [1, 2, 3])
    const metadata = { index: 5, term: 1, confState: { voters: [1, 2, 3], learners: [] } }
    const chunk = (offset: number, data: string) =>
      ({ type: "snap", term: 1, from: 1, to: 2, metadata, offset, totalSize: 6, data }) as const
    r.step(chunk(4, "ef"))
    r.step(chunk(0, "ab"))
    // Each chunk is acknowledged with what the follower holds without a gap.
    expect(readMessages(r)).toMatchObject([
      { type: "snapAck", index: 5, received: 0 },
      { type: "snapAck", index: 5, received: 2 }
    ])
    r.step(chunk(2, "cd"))
    expect(readMessages(r)).toMatchObject([{ type: "appResp", index: 5, reject: false }])
    expect(r.log.unstable.snapshot).toEqual({ metadata, data: "abcdef" })
  })

  it("a lost middle chunk is retried after an election timeout of heartbeats", () => {
    const net = behindCompactedLog(20, { ...plain, maxSizePerMsg: 100 })
    let dropped = false
    net.drop = (m) => {
      if (!dropped && m.type === "snap" && m.offset === 200) {
        dropped = true
        return true
      }
      return false
    }
    net.heal()
    net.tickAll(15)
    expect(dropped).toBe(true)
    expect(snaps(net, 3).filter((c) => c.offset === 0)).toHaveLength(2)
    expect(net.state.get(3)).toEqual(net.state.get(1))
  })

  it("the leader keeps at most maxSnapshotChunksInflight chunks unacknowledged (flow control)", () => {
    const net = behindCompactedLog(20, { ...plain, maxSizePerMsg: 100, maxSnapshotChunksInflight: 3 })
    const data = net.storages.get(1)!.snapshotData()
    const chunks = Math.ceil(data.length / 100)
    expect(chunks).toBeGreaterThan(10)
    net.heal()
    net.tick(1) // a heartbeat; its answer makes the leader probe, then start the snapshot
    // Deliver round by round: chunks sent but not yet acknowledged never exceed the window.
    const sent = new Set<number>()
    let acked = 0
    for (let round = 0; round < 100; round++) {
      const batch = net.takeQueue()
      if (batch.length === 0) break
      for (const m of batch) {
        if (m.type === "snap" && m.to === 3) sent.add(m.offset)
        if (m.type === "snapAck" && m.from === 3) acked = Math.max(acked, m.received)
      }
      const unacked = [...sent].filter((offset) => offset >= acked).length
      expect(unacked).toBeLessThanOrEqual(3)
      for (const m of batch) net.deliver(m)
    }
    expect(sent.size).toBe(chunks)
    expect(net.state.get(3)).toEqual(net.state.get(1))
    expect(net.node(1).status().progress.find((p) => p.id === 3)?.state).toBe("replicate")
  })

  it("a transmission started over resumes where the follower's acknowledgement says", () => {
    const net = behindCompactedLog(20, { ...plain, maxSizePerMsg: 100, maxSnapshotChunksInflight: 2 })
    const chunks = Math.ceil(net.storages.get(1)!.snapshotData().length / 100)
    let dropped = 0
    // Lose the ninth chunk's first two sendings: the transfer stalls and starts over from offset 0.
    net.drop = (m) => m.type === "snap" && m.offset === 800 && dropped++ < 2
    net.heal()
    net.tickAll(40)
    expect(dropped).toBe(3)
    expect(net.state.get(3)).toEqual(net.state.get(1))
    // Started over twice, yet fewer chunks went out than in two full transmissions.
    expect(snaps(net, 3).filter((c) => c.offset === 0).length).toBe(3)
    expect(snaps(net, 3).length).toBeLessThan(2 * chunks)
  })

  it("chunks that do not fit the announced size are refused", () => {
    const r = newRaft(2, [1, 2, 3])
    const metadata = { index: 5, term: 1, confState: { voters: [1, 2, 3], learners: [] } }
    r.step({ type: "snap", term: 1, from: 1, to: 2, metadata, offset: 4, totalSize: 6, data: "xyz" })
    expect(readMessages(r)).toMatchObject([{ type: "appResp", index: 5, reject: true }])
    expect(r.log.unstable.snapshot).toBeUndefined()
  })

  it("a lost final chunk is retried after an election timeout of heartbeats", () => {
    const net = behindCompactedLog(20, { ...plain, maxSizePerMsg: 100 })
    let dropped = false
    net.drop = (m) => {
      if (!dropped && m.type === "snap" && m.offset + m.data.length === m.totalSize) {
        dropped = true
        return true
      }
      return false
    }
    net.heal()
    net.tickAll(3)
    expect(dropped).toBe(true)
    expect(net.node(1).status().progress.find((p) => p.id === 3)?.state).toBe("snapshot")
    net.tickAll(12)
    expect(net.state.get(3)).toEqual(net.state.get(1))
    expect(net.node(1).status().progress.find((p) => p.id === 3)?.state).toBe("replicate")
  })

  it("duplicated chunks are ignored during reassembly", () => {
    const r = newRaft(2, [1, 2, 3])
    const metadata = { index: 5, term: 1, confState: { voters: [1, 2, 3], learners: [] } }
    const chunk = (offset: number, data: string) =>
      ({ type: "snap", term: 1, from: 1, to: 2, metadata, offset, totalSize: 6, data }) as const
    r.step(chunk(0, "ab"))
    r.step(chunk(0, "ab"))
    r.step(chunk(2, "cd"))
    r.step(chunk(2, "cd"))
    expect(readMessages(r).map((m) => (m.type === "snapAck" ? m.received : m.type))).toEqual([2, 2, 4, 4])
    r.step(chunk(4, "ef"))
    expect(readMessages(r)).toMatchObject([{ type: "appResp", index: 5, reject: false }])
    expect(r.log.unstable.snapshot).toEqual({ metadata, data: "abcdef" })
    expect(r.log.committed).toBe(5)
  })

  it("a snapshot that is not newer than the follower's commit index is ignored", () => {
    const r = newRaft(2, [1, 2, 3], {}, entriesWithTerms([1, 1, 1]), { term: 1, vote: 0, commit: 3 })
    const metadata = { index: 2, term: 1, confState: { voters: [1, 2, 3], learners: [] } }
    r.step({ type: "snap", term: 1, from: 1, to: 2, metadata, offset: 0, totalSize: 1, data: "s" })
    expect(readMessages(r)).toMatchObject([{ type: "appResp", index: 3, reject: false }])
    expect(r.log.unstable.snapshot).toBeUndefined()
    expect(r.log.lastIndex()).toBe(3)
  })

  it("a snapshot whose last entry the follower already has only advances the commit index", () => {
    const r = newRaft(2, [1, 2, 3], {}, entriesWithTerms([1, 1, 1, 1]), { term: 1, vote: 0, commit: 1 })
    const metadata = { index: 3, term: 1, confState: { voters: [1, 2, 3], learners: [] } }
    r.step({ type: "snap", term: 1, from: 1, to: 2, metadata, offset: 0, totalSize: 1, data: "s" })
    expect(r.log.unstable.snapshot).toBeUndefined()
    expect(r.log.committed).toBe(3)
    expect(r.log.lastIndex()).toBe(4)
  })

  it("installing a snapshot adopts its configuration", () => {
    const r = newRaft(4, [])
    const metadata = { index: 7, term: 2, confState: { voters: [1, 2, 3], learners: [4] } }
    r.step({ type: "snap", term: 2, from: 1, to: 4, metadata, offset: 0, totalSize: 2, data: "[]" })
    expect(r.confState()).toEqual({ voters: [1, 2, 3], learners: [4] })
    expect(r.promotable()).toBe(false)
  })

  it("a restarted node serves the compacted log from its snapshot and re-applies entries after it", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    for (let i = 0; i < 4; i++) net.node(1).propose(`v${i}`)
    net.stabilize()
    net.compact(2)
    net.node(1).propose("v4")
    net.stabilize()
    net.crash(2)
    net.node(1).propose("v5")
    net.stabilize()
    expect(net.storages.get(2)!.firstIndex()).toBe(7)
    net.restart(2)
    net.processReady(2)
    expect(net.state.get(2)).toEqual(["v0", "v1", "v2", "v3", "v4"])
    net.tickAll(2)
    expect(net.state.get(2)).toEqual(["v0", "v1", "v2", "v3", "v4", "v5"])
    expect(net.safetyViolations()).toEqual([])
  })
})
