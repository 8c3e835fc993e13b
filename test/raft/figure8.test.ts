/**
 * Raft paper, Figure 8: a leader cannot conclude that an entry of an earlier term is committed
 * just because it is stored on a majority. The test switch `unsafeCommitPreviousTermByCounting`
 * re-introduces exactly that bug so the simulator can prove it would catch it; this scenario shows
 * the switch is unsafe and the real rule is safe.
 */
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import type { Message } from "../../src/raft/Message.js"
import { entriesWithTerms } from "./helpers.js"
import { Network, plain } from "./network.js"

const voters = [1, 2, 3, 4, 5]

/**
 * Figure 8 (b): S1 led term 2 and replicated index 2 to S2 only; S5 led term 3 and appended its
 * own index 2. Everybody has seen term 3.
 */
const figure8 = (unsafe: boolean): Network => {
  const hs = { term: 3, vote: 0, commit: 1 }
  const logs: Record<number, Array<number>> = { 1: [1, 2], 2: [1, 2], 3: [1], 4: [1], 5: [1, 3] }
  const storages = new Map(voters.map((id) => [id, MemoryStorage.withLog(voters, entriesWithTerms(logs[id]!), hs)]))
  return new Network(voters, { ...plain, unsafeCommitPreviousTermByCounting: unsafe }, 1, storages)
}

/** Only the leader learns the commit index (as if it crashed before telling anyone). */
const hideCommit = (m: Message): Message =>
  (m.type === "app" || m.type === "heartbeat") && m.to !== 1 ? { ...m, commit: Math.min(m.commit, 1) } : m

const runScenario = (net: Network, s3GetsCurrentTermEntry: boolean): void => {
  // (c) S5 is down; S1 wins term 4 with S2 and S3, appends its empty entry at 3, and replicates
  // index 2 (term 2) to S3 — but not, in the dangerous case, index 3.
  net.partition([1, 2, 3], [4], [5])
  net.rewrite = (m) => {
    const h = hideCommit(m)
    if (!s3GetsCurrentTermEntry && h.type === "app" && h.to === 3) {
      return { ...h, entries: h.entries.filter((e) => e.index <= 2) }
    }
    return h
  }
  net.campaign(1)
  expect(net.node(1).status()).toMatchObject({ role: "leader", term: 4 })
  expect(net.storages.get(3)!.term(2)).toBe(2)
  // (d) S1 crashes; S5 campaigns among S2, S3, S4.
  net.crash(1)
  net.heal()
  net.rewrite = hideCommit
  for (let i = 0; i < 5 && net.node(5).status().role !== "leader"; i++) net.campaign(5)
  net.rewrite = undefined
  net.tickAll(30)
}

describe("Figure 8", () => {
  it("with the unsafe switch, a previous-term entry committed by counting replicas is later overwritten", () => {
    const net = figure8(true)
    runScenario(net, false)
    // S1 committed and applied index 2 from term 2 …
    expect(net.appliedLog.get(1)!.get(2)?.term).toBe(2)
    // … S5 won term 5 with S3's and S4's votes and committed its own index 2 from term 3.
    expect(net.leader()).toBe(5)
    expect(net.appliedLog.get(5)!.get(2)?.term).toBe(3)
    expect(net.safetyViolations()).toContain("index 2: node 1 applied term 2, node 2 applied term 3")
  })

  it("leader only commits entries from its current term by counting replicas: Figure 8 stays safe", () => {
    const net = figure8(false)
    runScenario(net, false)
    // S1 did not commit index 2 (its own term-4 entry was not on a majority), so overwriting it is fine.
    expect(net.appliedLog.get(1)!.has(2)).toBe(false)
    expect(net.leader()).toBe(5)
    expect(net.safetyViolations()).toEqual([])
  })

  it("once an entry of the current term is on a majority, earlier entries are committed and survive", () => {
    const net = figure8(false)
    runScenario(net, true)
    expect(net.appliedLog.get(1)!.get(2)?.term).toBe(2)
    // S5 cannot win (S2 and S3 hold a term-4 entry); S2 or S3 leads and keeps index 2 from term 2.
    const leader = net.leader()
    expect([2, 3]).toContain(leader)
    for (const id of [2, 3, 4, 5]) expect(net.appliedLog.get(id)!.get(2)?.term).toBe(2)
    expect(net.safetyViolations()).toEqual([])
  })
})
