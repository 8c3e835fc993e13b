/**
 * Randomised scenarios over the synchronous network: reordering, duplication, delay and loss of
 * messages, partitions, crashes and restarts, compaction, membership changes, leadership
 * transfers and reads — with Raft's safety properties checked after every step (Figure 3):
 * Election Safety, Log Matching / State Machine Safety, Leader Completeness.
 */
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import type { Message } from "../../src/raft/Message.js"
import { Network, plain, seededRandom } from "./network.js"

export interface FuzzResult {
  readonly proposed: number
  readonly applied: number
  readonly leaders: number
  readonly snapshots: number
  readonly transfers: number
  readonly reads: number
  readonly confChanges: number
}

export const fuzz = (seed: number, steps: number, unsafe = false): FuzzResult => {
  const rnd = seededRandom(seed * 7 + 3)
  const chance = (pct: number) => rnd(100) < pct
  const preVote = chance(50)
  const checkQuorum = chance(50)
  const options = {
    ...plain,
    preVote,
    checkQuorum,
    maxSizePerMsg: 200,
    maxInflightMsgs: 4,
    unsafeCommitPreviousTermByCounting: unsafe
  }
  const net = new Network([1, 2, 3, 4, 5], options, seed)
  const leaderOfTerm = new Map<number, number>()
  let delayed: Array<Message> = []
  let proposed = 0
  let joined = false

  /**
   * For each committed index, an upper bound on the term in which it was committed: the highest
   * term any node had when it was first seen applied. Leaders of later terms must hold it.
   */
  const committedBy = new Map<number, { term: number; bound: number }>()
  const checkInvariants = () => {
    let maxTerm = 0
    for (const id of net.ids()) maxTerm = Math.max(maxTerm, net.storages.get(id)!.hardState.term, net.isDown(id) ? 0 : net.node(id).status().term)
    for (const applied of net.appliedLog.values()) {
      for (const [index, e] of applied) if (!committedBy.has(index)) committedBy.set(index, { term: e.term, bound: maxTerm })
    }
    for (const id of net.ids()) {
      if (net.isDown(id)) continue
      const st = net.node(id).status()
      if (st.role !== "leader") continue
      const prev = leaderOfTerm.get(st.term)
      if (prev !== undefined && prev !== id) throw new Error(`two leaders in term ${st.term}: ${prev} and ${id}`)
      leaderOfTerm.set(st.term, id)
      // Leader Completeness: every applied entry is in the leader's log (where not compacted).
      const log = net.node(id).raft.log
      for (const [index, c] of committedBy) {
        if (c.bound >= st.term) continue
        const t = log.term(index)
        if (index > log.lastIndex() || (t !== undefined && t !== c.term)) {
          throw new Error(`leader ${id} of term ${st.term} lacks entry ${index} committed by term ${c.bound}`)
        }
      }
    }
    const v = net.safetyViolations()
    if (v.length > 0) throw new Error(v.join("; "))
  }

  const deliverSome = () => {
    const batch = [...delayed, ...net.takeQueue()]
    delayed = []
    // Shuffle (Fisher–Yates with the seeded source).
    for (let i = batch.length - 1; i > 0; i--) {
      const j = rnd(i + 1)
      const t = batch[i]!
      batch[i] = batch[j]!
      batch[j] = t
    }
    for (const m of batch) {
      const r = rnd(100)
      if (r < 5) continue // lost
      if (r < 15) {
        delayed.push(m) // late
        continue
      }
      net.deliver(m)
      if (r < 18) net.deliver(m) // duplicated
    }
  }

  for (let step = 0; step < steps; step++) {
    const a = rnd(1000)
    const leader = net.leader()
    if (a < 30) {
      net.heal()
      net.partition(...(chance(50) ? [[1, 2], [3, 4, 5]] : [[1, 2, 3], [4, 5]]))
    } else if (a < 60) {
      net.heal()
    } else if (a < 80) {
      const id = 1 + rnd(5)
      if (net.isDown(id)) net.restart(id)
      else if (net.ids().filter((i) => net.isDown(i)).length < 2) net.crash(id)
    } else if (a < 90) {
      const id = net.ids()[rnd(net.ids().length)]!
      if (!net.isDown(id)) net.compact(id)
    } else if (a < 100 && leader !== undefined) {
      net.node(leader).transferLeader(1 + rnd(5))
    } else if (a < 110 && leader !== undefined) {
      net.node(leader).readIndex(`r${step}`)
    } else if (a < 120 && leader !== undefined) {
      if (!joined) {
        if (net.node(leader).proposeConfChange({ type: "addLearner", nodeId: 6 }).ok) {
          net.add(6, new MemoryStorage(), options)
          joined = true
        }
      } else {
        const cs = net.node(leader).confState()
        if (cs.learners.includes(6)) net.node(leader).proposeConfChange({ type: "promote", nodeId: 6 })
        else if (cs.voters.includes(6) && cs.voters.length > 3) net.node(leader).proposeConfChange({ type: "remove", nodeId: 6 })
      }
    } else if (a < 500 && leader !== undefined) {
      if (net.node(leader).propose(`s${seed}.${proposed}`).ok) proposed++
    }
    for (const id of net.ids()) net.tick(id)
    deliverSome()
    checkInvariants()
  }
  // Liveness: heal everything; a leader emerges and everybody converges.
  net.heal()
  for (const id of net.ids()) if (net.isDown(id)) net.restart(id)
  for (const m of delayed) net.deliver(m)
  net.tickAll(80)
  const l = net.leader()
  if (l === undefined) throw new Error(`seed ${seed}: no leader after healing`)
  const res = net.node(l).propose("final")
  if (!res.ok) throw new Error(`seed ${seed}: final proposal refused: ${res.reason}`)
  net.tickAll(10)
  checkInvariants()
  const members = net.node(l).confState()
  const expected = net.state.get(l)!.join("|")
  for (const id of [...members.voters, ...members.learners]) {
    if (net.state.get(id)!.join("|") !== expected) throw new Error(`seed ${seed}: node ${id} did not converge`)
  }
  let confChanges = 0
  for (const e of net.appliedLog.get(l)!.values()) if (e.kind === "confChange") confChanges++
  return {
    proposed,
    applied: net.state.get(l)!.length,
    leaders: leaderOfTerm.size,
    snapshots: net.delivered.filter((m) => m.type === "snap").length,
    transfers: net.delivered.filter((m) => m.type === "timeoutNow").length,
    reads: [...net.readStates.values()].reduce((n, rs) => n + rs.length, 0),
    confChanges
  }
}

describe("randomised safety", () => {
  it("Election Safety, Log Matching, Leader Completeness and State Machine Safety hold under faults", () => {
    for (let seed = 1; seed <= 12; seed++) {
      const r = fuzz(seed, 400)
      expect(r.applied).toBeGreaterThan(0)
    }
  })
})
