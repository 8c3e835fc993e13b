/**
 * The full-service tier: real `RaftNode` services on virtual time, under seeded faults.
 */
import { Effect, Layer } from "effect"
import { execFileSync } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { RaftNode } from "../../src/raft/RaftNode.js"
import { profiles } from "../../src/sim/Explorer.js"
import { kvStack, kvWorkload, runFullService, simulate } from "../../src/sim/FullService.js"

const root = path.resolve(import.meta.dirname, "../..")

describe("full-service tier: a run is a seed", () => {
  it("the same seed gives the same run, bit for bit, in this process; another seed another run", () => {
    const a = simulate({ seed: 3 })
    const b = simulate({ seed: 3 })
    const c = simulate({ seed: 4 })
    expect(b).toEqual(a)
    expect(c.traceHash).not.toBe(a.traceHash)
  })

  it("the same seed gives the same trace hash in two other processes (the built CLI)", () => {
    const here = simulate({ seed: 6 })
    const there = [0, 1].map(
      () =>
        (JSON.parse(execFileSync(process.execPath, [path.join(root, "bin/blixard.js"), "sim", "--seed", "6", "--full", "--json"], { encoding: "utf8" })) as {
          traceHash: string
        }).traceHash
    )
    expect(there).toEqual([here.traceHash, here.traceHash])
  })
})

describe("full-service tier: safety and liveness under seeded faults", () => {
  it("seeds of the default profile keep every invariant, stay linearizable and recover after healing", async () => {
    const failures: Array<string> = []
    let operations = 0
    let crashes = 0
    let snapshots = 0
    let unknown = 0
    for (let seed = 1; seed <= 6; seed++) {
      // Each run is synchronous: let the test runner's worker answer its runner between seeds.
      await new Promise((resolve) => setImmediate(resolve))
      const r = simulate({ ...profiles.default, seed })
      operations += r.stats.operations
      crashes += r.stats.crashes
      snapshots += r.stats.snapshotsInstalled
      unknown += r.stats.unknownOutcomes
      if (!r.ok) failures.push(`seed ${seed}: ${r.violation}`)
      else expect(r.linearizability).toBe("ok")
    }
    expect(failures).toEqual([])
    // The runs did exercise what they claim to: load, crashes, snapshot installs, unknown outcomes.
    expect(operations).toBeGreaterThan(6 * 200)
    expect(crashes).toBeGreaterThanOrEqual(6)
    expect(snapshots).toBeGreaterThanOrEqual(6)
    expect(unknown).toBeGreaterThan(0)
  })

  it("nodes crashed and rebuilt from their durable store (leaders too, between fsync and send) rejoin and catch up", async () => {
    // The crashpoints profile: 3 nodes, leaders crash with their entries durable but unsent, and
    // restart from their MemoryStore; liveness then needs every node to apply a new entry.
    let crashes = 0
    for (let seed = 1; seed <= 5; seed++) {
      // Each run is synchronous: let the test runner's worker answer its runner between seeds.
      await new Promise((resolve) => setImmediate(resolve))
      const r = simulate({ ...profiles.crashpoints, seed })
      expect(r.violation).toBeUndefined()
      expect(r.linearizability).toBe("ok")
      crashes += r.stats.crashes
    }
    expect(crashes).toBeGreaterThanOrEqual(15)
  })

  it("a voter back with an empty data directory is refused, removed, and made a voter again through a learner", async () => {
    // The amnesia profile: half the restarts come back wiped under the old id. As the daemon does
    // (`refuseAmnesia`), such a node does not start while a peer lists it as a voter; the operator
    // removes it, it starts empty, is added as a learner, catches up and is promoted — before the
    // liveness phase counts it. Let straight back in, seeds 3 and 4 break Raft (Bugs.ts, `amnesia`).
    let refusals = 0
    let changes = 0
    for (let seed = 1; seed <= 4; seed++) {
      // Each run is synchronous: let the test runner's worker answer its runner between seeds.
      await new Promise((resolve) => setImmediate(resolve))
      const r = simulate({ ...profiles.amnesia, seed })
      expect(r.violation).toBeUndefined()
      expect(r.linearizability).toBe("ok")
      expect(r.counts?.["refusals"]).toBe(r.counts?.["wiped"])
      refusals += r.counts?.["refusals"] ?? 0
      changes += r.stats.membershipChanges
    }
    expect(refusals).toBeGreaterThanOrEqual(3)
    // At least the learner and its promotion per refusal (a removal whose answer timed out is not counted).
    expect(changes).toBeGreaterThanOrEqual(2 * refusals)
  })

  it("a learner that acknowledged entries and comes back empty has itself removed before it starts, then joins again", async () => {
    // The learners profile wipes a re-added node again once it is a learner that acknowledged
    // entries (`wipeLearners`). As its daemon does (`refuseAmnesia`, `isWipedLearner`), it has itself
    // removed before its Raft node starts; its join adds it back with a fresh progress. Started as
    // it is (`--bug wiped-learner`), seed 1 stops on a commit index beyond its empty log.
    let removals = 0
    for (const seed of [1, 21]) {
      await new Promise((resolve) => setImmediate(resolve))
      const r = simulate({ ...profiles.learners, seed })
      expect(r.violation).toBeUndefined()
      expect(r.linearizability).toBe("ok")
      removals += r.counts?.["learnerRemovals"] ?? 0
    }
    expect(removals).toBeGreaterThanOrEqual(2)
    const bug = simulate({ ...profiles.learners, seed: 1, bug: "wiped-learner" })
    expect(bug.violation).toMatch(/beyond the last index/)
  })

  it("the liveness phase has a bound: a cluster that cannot commit within it fails the run", () => {
    const ok = simulate({ seed: 2, livenessMs: 10_000 })
    expect(ok.ok).toBe(true)
    // A commit needs a round trip and every message takes at least 1 ms: no cluster commits a new
    // entry everywhere within 1 ms of the faults healing — the run must say so rather than pass.
    const tight = simulate({ seed: 2, livenessMs: 1 })
    expect(tight.ok).toBe(false)
    expect(tight.violation).toMatch(/liveness: no leader committed a new entry on every node within 1 ms after the faults healed/)
  })
})

describe("full-service tier: the transport across restarts, and proposals that outlive a leadership", () => {
  it("restarted processes get what their peers queued for the one before, and a crashed node's late messages; every invariant holds", async () => {
    // The restarts profile: a follower's process killed and started again within 400 ms about every
    // 400 ms (half the time the one restarted last), clients reading at every node.
    let queued = 0
    let late = 0
    let restarted = 0
    for (let seed = 1; seed <= 3; seed++) {
      // Each run is synchronous: let the test runner's worker answer its runner between seeds.
      await new Promise((resolve) => setImmediate(resolve))
      const r = simulate({ ...profiles.restarts, seed })
      expect(r.violation).toBeUndefined()
      expect(r.linearizability).toBe("ok")
      queued += r.stats.queued
      late += r.stats.late
      restarted += r.counts?.["restartedFollowers"] ?? 0
    }
    expect(restarted).toBeGreaterThan(3 * 10)
    expect(queued).toBeGreaterThan(restarted)
    expect(late).toBeGreaterThan(0)
  })

  it("a leader cut off with unreplicated proposals, then handed leadership back, answers every one of them", async () => {
    // The waiters profile, without its bug (Bugs.ts, overwrite-proposal-waiters): every request is
    // answered within two request timeouts, and the run waits for every request made before the heal.
    let isolated = 0
    for (let seed = 1; seed <= 3; seed++) {
      // Each run is synchronous: let the test runner's worker answer its runner between seeds.
      await new Promise((resolve) => setImmediate(resolve))
      const r = simulate({ ...profiles.waiters, seed })
      expect(r.violation).toBeUndefined()
      expect(r.linearizability).toBe("ok")
      isolated += r.counts?.["isolatedLeaders"] ?? 0
    }
    expect(isolated).toBeGreaterThanOrEqual(3 * 2)
  })

  it("a follower killed as its first ReadIndex request leaves, the round held open at the leader: its successor's reads see every write completed before them", async () => {
    // The stalereads profile, without its bug (Bugs.ts, reused-read-contexts, fails 64 % of its
    // seeds): the successor's first read has the number of the round its predecessor left waiting,
    // and begins once a write completed that the old round's read point does not cover.
    let restarts = 0
    for (let seed = 1; seed <= 3; seed++) {
      // Each run is synchronous: let the test runner's worker answer its runner between seeds.
      await new Promise((resolve) => setImmediate(resolve))
      const r = simulate({ ...profiles.stalereads, seed })
      expect(r.violation).toBeUndefined()
      expect(r.linearizability).toBe("ok")
      restarts += r.counts?.["readRestarts"] ?? 0
    }
    expect(restarts).toBeGreaterThanOrEqual(3 * 2)
  })
})

describe("full-service tier: the node's composition is a parameter", () => {
  it("extra per-node services start with each incarnation of a node, over its RaftNode, and stop at its crash", () => {
    const events: Array<string> = []
    const r = runFullService(
      { ...profiles.crashpoints, seed: 1 },
      {
        ...kvStack,
        services: (_kv, node) =>
          Layer.scopedDiscard(
            Effect.gen(function* () {
              const raft = yield* RaftNode
              events.push(`start ${node} as ${raft.id}`)
              yield* Effect.addFinalizer(() => Effect.sync(() => void events.push(`stop ${node}`)))
            })
          )
      },
      kvWorkload()
    )
    expect(r.violation).toBeUndefined()
    const starts = events.filter((e) => e.startsWith("start"))
    const stops = events.filter((e) => e.startsWith("stop"))
    expect(starts.slice(0, 3)).toEqual(["start 1 as 1", "start 2 as 2", "start 3 as 3"])
    // Every crash stops the node's services and every restart starts them again; the end of the
    // run stops the rest.
    expect(starts.length).toBe(3 + r.stats.crashes)
    expect(stops.length).toBe(starts.length)
  })
})

describe("full-service tier: it catches a known bug", () => {
  it("a voter let back in on a wiped data directory votes twice in one term: the vote check says so, at the second grant", () => {
    // Profile votes kills a node as its vote grant leaves and brings it back empty while the
    // election goes on. Seed 17: node 2 grants term 2 to node 3, is wiped, and is asked again by
    // node 1. Refused while a voter (the fix), the same seed keeps every invariant.
    const bugged = simulate({ ...profiles.votes, seed: 17, bug: "amnesia" })
    expect(bugged.violation).toMatch(/node 2 voted twice in term 2: for 3, then for 1 \(after a restart on a wiped data directory\?\)/)
    const fixed = simulate({ ...profiles.votes, seed: 17 })
    expect(fixed.violation).toBeUndefined()
    expect(fixed.counts?.["votersWiped"]).toBeGreaterThanOrEqual(1)
    expect(fixed.counts?.["refusals"]).toBeGreaterThanOrEqual(1)
  })

  // The bug needs a particular sequence of leader changes and crashes. Since crash points follow the
  // driver's order (a leader's appends leave before its save, so a crash there loses the save), the
  // daemon's timing (a heartbeat every 2 ticks) and the transport's (a restarted node gets what its
  // peers queued for it), 2 of seeds 1–600 of this profile produce it, at seeds 360 and 449
  // (measured; ~2.5 s a seed under load). The search starts at 355 to keep the suite's cost; the
  // bound is 600.
  it("the Figure 8 bug (a leader committing a previous-term entry by counting replicas) is caught within 600 seeds", async () => {
    let caught: { seed: number; violation: string } | undefined
    for (let seed = 355; seed <= 600 && caught === undefined; seed++) {
      // Each run is synchronous: let the test runner's worker answer its runner between seeds.
      await new Promise((resolve) => setImmediate(resolve))
      const r = simulate({ ...profiles.crashpoints, safetyMs: 40_000, seed, bug: "figure8" })
      if (!r.ok) caught = { seed, violation: r.violation! }
    }
    expect(caught).toBeDefined()
    expect(caught!.violation).toMatch(/leader completeness|committed entry changed|acknowledged write lost|linearizability|internal assertion/)
  }, 240_000)
})
