import { describe, expect, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import * as path from "node:path"
import { explore, profiles } from "../../src/sim/Explorer.js"

const root = path.resolve(import.meta.dirname, "../..")

describe("explorer: safety and liveness under seeded faults", () => {
  for (const [name, profile, seeds] of [
    ["default", profiles.default, 150],
    ["crashpoints", profiles.crashpoints, 150]
  ] as const) {
    it(`${seeds} seeds of the ${name} profile keep every invariant, stay linearizable and recover after healing`, () => {
      const failures: Array<string> = []
      let operations = 0
      let crashes = 0
      let snapshots = 0
      for (let seed = 1; seed <= seeds; seed++) {
        const r = explore({ ...profile, seed })
        operations += r.stats.operations
        crashes += r.stats.crashes
        snapshots += r.stats.snapshotsInstalled
        if (!r.ok) failures.push(`seed ${seed}: ${r.violation}`)
        else expect(r.linearizability).toBe("ok")
      }
      expect(failures).toEqual([])
      // The runs did exercise what they claim to: load, crashes and snapshot installs.
      expect(operations).toBeGreaterThan(seeds * 30)
      expect(crashes).toBeGreaterThan(seeds / 10)
      expect(snapshots).toBeGreaterThan(seeds / 10)
    })
  }

  it("100 seeds of the churn profile (voters removed, re-added as learners, promoted, the leader included) keep every invariant and end with every node a voter", () => {
    const failures: Array<string> = []
    let changes = 0
    for (let seed = 1; seed <= 100; seed++) {
      const r = explore({ ...profiles.churn, seed })
      changes += r.stats.membershipChanges
      if (!r.ok) failures.push(`seed ${seed}: ${r.violation}`)
      else expect(r.linearizability).toBe("ok")
    }
    expect(failures).toEqual([])
    // Each run makes several changes (a removal is undone by two: add as learner, promote), and the
    // liveness phase only passes once every node applied the probe, so every node is a member again.
    expect(changes).toBeGreaterThan(100 * 5)
  })
})

describe("explorer: leadership transfers and slow Readys", () => {
  it("100 seeds of the transfer profile (an operator asking random nodes for transfers every few hundred ms) keep every invariant, CheckQuorum included", () => {
    const failures: Array<string> = []
    let transfers = 0
    for (let seed = 1; seed <= 100; seed++) {
      const r = explore({ ...profiles.transfer, seed })
      transfers += r.counts?.transfers ?? 0
      if (!r.ok) failures.push(`seed ${seed}: ${r.violation}`)
      else expect(r.linearizability).toBe("ok")
    }
    expect(failures).toEqual([])
    expect(transfers).toBeGreaterThan(100 * 10)
  })

  it("100 seeds of the reconfig profile (churn, a snapshot every 4 entries, Readys persisting for up to 40 ms) keep every invariant, each node's configuration included", () => {
    const failures: Array<string> = []
    let snapshots = 0
    for (let seed = 1; seed <= 100; seed++) {
      const r = explore({ ...profiles.reconfig, seed })
      snapshots += r.stats.snapshotsInstalled
      if (!r.ok) failures.push(`seed ${seed}: ${r.violation}`)
      else expect(r.linearizability).toBe("ok")
    }
    expect(failures).toEqual([])
    expect(snapshots).toBeGreaterThan(100)
  })

  it("200 seeds of the snapreconfig profile (churn on one node, a snapshot behind every entry, a follower cut off every ~300 ms) keep every invariant and converge", () => {
    const failures: Array<string> = []
    let snapshots = 0
    let changes = 0
    for (let seed = 1; seed <= 200; seed++) {
      const r = explore({ ...profiles.snapreconfig, seed })
      snapshots += r.stats.snapshotsInstalled
      changes += r.stats.membershipChanges
      if (!r.ok) failures.push(`seed ${seed}: ${r.violation}`)
    }
    expect(failures).toEqual([])
    expect(snapshots).toBeGreaterThan(200 * 10)
    expect(changes).toBeGreaterThan(200 * 10)
  })
})

describe("explorer: a run is a seed", () => {
  it("the same seed gives the same run, bit for bit; another seed another run", () => {
    const a = explore({ seed: 42 })
    const b = explore({ seed: 42 })
    const c = explore({ seed: 43 })
    expect(b).toEqual(a)
    expect(c.traceHash).not.toBe(a.traceHash)
  })

  it("the same seed gives the same trace hash in another process", () => {
    const here = explore({ seed: 7, ...profiles.crashpoints })
    const script = `import("${path.join(root, "dist/src/sim/Explorer.js")}").then(({ explore, profiles }) => process.stdout.write(explore({ seed: 7, ...profiles.crashpoints }).traceHash))`
    const there = execFileSync(process.execPath, ["-e", script], { encoding: "utf8" })
    expect(there).toBe(here.traceHash)
  })
})
