import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import type { Entry } from "../../src/raft/Types.js"
import { entrySize } from "../../src/raft/Types.js"

const entry = (index: number, term: number, size = 20): Entry => ({ index, term, kind: "normal", data: `${index}:${term}:`.padEnd(size, "x") })

/** A mirror that spills to `durable` (which keeps every entry), and what it must read as: `durable` itself. */
const pair = (keepBytes: number) => {
  const durable = new MemoryStorage()
  const mirror = MemoryStorage.mirror()
  mirror.spill((lo, hi, maxBytes) => durable.entries(lo, hi, maxBytes), keepBytes)
  return { durable, mirror }
}

const sameLog = (mirror: MemoryStorage, durable: MemoryStorage, maxBytes: ReadonlyArray<number>) => {
  expect(mirror.firstIndex()).toBe(durable.firstIndex())
  expect(mirror.lastIndex()).toBe(durable.lastIndex())
  for (let i = durable.firstIndex() - 2; i <= durable.lastIndex() + 1; i++) expect(mirror.term(i), `term(${i})`).toBe(durable.term(i))
  const first = durable.firstIndex()
  const end = durable.lastIndex() + 1
  for (let lo = first; lo < end; lo += 3) {
    for (const hi of [lo + 1, Math.min(end, lo + 7), end]) {
      for (const max of maxBytes) expect(mirror.entries(lo, hi, max), `entries(${lo}, ${hi}, ${max})`).toEqual(durable.entries(lo, hi, max))
    }
  }
}

describe("MemoryStorage.spill (a mirror's bounded tail)", () => {
  it("keeps at most keepBytes of committed entries in memory and reads the rest from storage", () => {
    const { durable, mirror } = pair(1_000)
    const entries = Array.from({ length: 500 }, (_, i) => entry(i + 1, 1 + Math.floor(i / 100)))
    for (let i = 0; i < entries.length; i += 10) {
      const batch = entries.slice(i, i + 10)
      durable.append(batch)
      mirror.append(batch)
      mirror.setHardState({ term: 5, vote: 1, commit: i + 10 })
      expect(mirror.inMemory().bytes).toBeLessThanOrEqual(1_000 + 10 * entrySize(entries[0]!))
    }
    expect(mirror.inMemory().entries).toBeLessThan(50)
    sameLog(mirror, durable, [0, 100, 1_000, Number.POSITIVE_INFINITY])
  })

  it("never spills an entry that is not committed (a follower may still truncate it)", () => {
    const { durable, mirror } = pair(100)
    const entries = Array.from({ length: 50 }, (_, i) => entry(i + 1, 1))
    durable.append(entries)
    mirror.append(entries)
    mirror.setHardState({ term: 1, vote: 0, commit: 20 })
    expect(mirror.inMemory().entries).toBeGreaterThanOrEqual(30)
    // A new leader's entries replace the uncommitted suffix from 30.
    const replaced = Array.from({ length: 5 }, (_, i) => entry(30 + i, 2))
    durable.append(replaced)
    mirror.append(replaced)
    sameLog(mirror, durable, [0, Number.POSITIVE_INFINITY])
  })

  it("answers as the durable log does through any appends, conflicts, commits, compactions and snapshots", () => {
    type Op =
      | { readonly op: "append"; readonly back: number; readonly count: number; readonly size: number }
      | { readonly op: "commit"; readonly by: number }
      | { readonly op: "compact"; readonly back: number }
      | { readonly op: "snapshot"; readonly ahead: number }
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 5, arbitrary: fc.record({ op: fc.constant("append" as const), back: fc.nat(6), count: fc.integer({ min: 1, max: 12 }), size: fc.integer({ min: 1, max: 80 }) }) },
      { weight: 3, arbitrary: fc.record({ op: fc.constant("commit" as const), by: fc.nat(15) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant("compact" as const), back: fc.nat(30) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant("snapshot" as const), ahead: fc.nat(5) }) }
    )
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), fc.integer({ min: 0, max: 600 }), (ops, keepBytes) => {
        const { durable, mirror } = pair(keepBytes)
        let term = 1
        let commit = 0
        for (const o of ops) {
          if (o.op === "append") {
            // Overwrite at most the uncommitted suffix (what a follower's log does), with a newer term.
            const from = Math.max(commit + 1, durable.firstIndex(), durable.lastIndex() + 1 - o.back)
            if (o.back > 0) term++
            const batch = Array.from({ length: o.count }, (_, i) => entry(from + i, term, o.size))
            durable.append(batch)
            mirror.append(batch)
          } else if (o.op === "commit") {
            commit = Math.min(durable.lastIndex(), commit + o.by)
            mirror.setHardState({ term, vote: 0, commit })
          } else if (o.op === "compact") {
            const to = Math.max(durable.firstIndex() - 1, commit - o.back)
            // As the driver does: the mirror first, then storage.
            mirror.compact(to)
            durable.compact(to)
          } else {
            const index = durable.lastIndex() + 1 + o.ahead
            const snap = { metadata: { index, term: term + 1, confState: { voters: [1], learners: [] } }, data: "" }
            term++
            durable.applySnapshot(snap)
            mirror.applySnapshot(snap)
            commit = index
            mirror.setHardState({ term, vote: 0, commit })
          }
          expect(mirror.inMemory().bytes).toBeGreaterThanOrEqual(0)
        }
        sameLog(mirror, durable, [0, 60, 300, Number.POSITIVE_INFINITY])
        // Everything committed beyond the last keepBytes is out of memory.
        const uncommitted = durable.lastIndex() > commit ? durable.entries(Math.max(commit + 1, durable.firstIndex()), durable.lastIndex() + 1, Number.POSITIVE_INFINITY) : []
        const uncommittedBytes = uncommitted.reduce((a, e) => a + entrySize(e), 0)
        expect(mirror.inMemory().bytes).toBeLessThanOrEqual(Math.max(keepBytes, uncommittedBytes + 12 * (80 + 24)) + 12 * (80 + 24))
      }),
      { numRuns: 500 }
    )
  })
})
