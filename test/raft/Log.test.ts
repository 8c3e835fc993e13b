/** The log (stable storage + unstable suffix) and MemoryStorage. */
import { describe, expect, it } from "vitest"
import { limitSize, RaftLog } from "../../src/raft/Log.js"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import { type MsgSnap, snapshotChunk } from "../../src/raft/Message.js"
import { entriesWithTerms, leaderSendingSnapshot } from "./helpers.js"

const logWith = (stable: Array<number>, unstable: Array<number> = []): RaftLog => {
  const log = new RaftLog(MemoryStorage.withLog([1], entriesWithTerms(stable)))
  if (unstable.length > 0) log.append(entriesWithTerms(unstable, stable.length + 1))
  return log
}

describe("RaftLog", () => {
  it("reads terms and entries across the stable and unstable parts", () => {
    const log = logWith([1, 1, 2], [2, 3])
    expect(log.firstIndex()).toBe(1)
    expect(log.lastIndex()).toBe(5)
    expect([0, 1, 2, 3, 4, 5, 6].map((i) => log.term(i))).toEqual([0, 1, 1, 2, 2, 3, undefined])
    expect(log.slice(2, 6, 1e9)?.map((e) => e.index)).toEqual([2, 3, 4, 5])
    expect(log.unstableEntries().map((e) => e.index)).toEqual([4, 5])
  })

  it("findConflict returns the first new or conflicting index, 0 if all present", () => {
    const log = logWith([1, 2, 3])
    expect(log.findConflict(entriesWithTerms([1, 2, 3]))).toBe(0)
    expect(log.findConflict(entriesWithTerms([2, 3], 2))).toBe(0)
    expect(log.findConflict(entriesWithTerms([2, 3, 4], 2))).toBe(4)
    expect(log.findConflict(entriesWithTerms([4, 4], 2))).toBe(2)
  })

  it("findConflictByTerm returns the largest index whose term is ≤ the given term", () => {
    const log = logWith([1, 2, 2, 4, 4, 5])
    expect(log.findConflictByTerm(6, 3)).toEqual([3, 2])
    expect(log.findConflictByTerm(6, 5)).toEqual([6, 5])
    expect(log.findConflictByTerm(5, 1)).toEqual([1, 1])
    expect(log.findConflictByTerm(3, 0)).toEqual([0, 0])
  })

  it("maybeAppend appends after a matching entry, truncates conflicts, and commits up to the last new entry", () => {
    const log = logWith([1, 1, 2, 2])
    expect(log.maybeAppend(2, 2, 9, entriesWithTerms([3], 3))).toBeUndefined()
    expect(log.maybeAppend(2, 1, 9, entriesWithTerms([3], 3))).toBe(3)
    expect(log.lastIndex()).toBe(3)
    expect(log.term(3)).toBe(3)
    expect(log.committed).toBe(3)
  })

  it("refuses to truncate or commit inconsistently (loud assertions)", () => {
    const log = logWith([1, 1, 2])
    log.commitTo(2)
    expect(() => log.maybeAppend(1, 1, 2, entriesWithTerms([5], 2))).toThrow(/conflicts with committed/)
    expect(() => log.commitTo(7)).toThrow(/beyond the last index/)
    expect(() => log.appliedTo(3)).toThrow()
  })

  it("isUpToDate compares last term first, then length (§5.4.1)", () => {
    const log = logWith([1, 2, 2])
    expect(log.isUpToDate(1, 3)).toBe(true)
    expect(log.isUpToDate(3, 2)).toBe(true)
    expect(log.isUpToDate(2, 2)).toBe(false)
    expect(log.isUpToDate(9, 1)).toBe(false)
  })

  it("stableTo ignores an acknowledgement for entries that were since overwritten", () => {
    const log = logWith([1], [1, 1])
    const stale = log.unstableEntries().slice()
    log.append(entriesWithTerms([2], 3)) // overwrites index 3 in the unstable part
    log.stableTo(3, 1)
    expect(log.unstableEntries().map((e) => [e.index, e.term])).toEqual([
      [2, 1],
      [3, 2]
    ])
    log.stableTo(3, 2)
    expect(log.unstableEntries()).toEqual([])
    expect(stale).toHaveLength(2)
  })

  it("entries below the first index are reported as compacted", () => {
    const st = MemoryStorage.withLog([1], entriesWithTerms([1, 1, 2, 2, 3]))
    st.compact(3)
    const log = new RaftLog(st)
    expect(log.firstIndex()).toBe(4)
    expect(log.term(3)).toBe(2)
    expect(log.term(2)).toBeUndefined()
    expect(log.entries(2, 1e9)).toBeUndefined()
    expect(log.entries(4, 1e9)?.map((e) => e.index)).toEqual([4, 5])
  })

  it("limitSize keeps at least one entry and stops before exceeding the budget", () => {
    const ents = entriesWithTerms([1, 1, 1, 1]) // each entry: data "eXt1" (4) + 24 = 28
    expect(limitSize(ents, 0)).toHaveLength(1)
    expect(limitSize(ents, 56)).toHaveLength(2)
    expect(limitSize(ents, 83)).toHaveLength(2)
    expect(limitSize(ents, 1e9)).toHaveLength(4)
  })
})

describe("MemoryStorage", () => {
  // The driver's mirror: durable storage holds a snapshot's data, the mirror only its metadata and
  // size (a state snapshot is ~42 MB at 100,000 VMs), whether the node took it or installed it.
  it("a mirror keeps a snapshot's metadata and size, not its data", () => {
    const data = "x".repeat(10_000)
    const confState = { voters: [1, 2, 3], learners: [] }
    const taken = MemoryStorage.mirror()
    taken.append(entriesWithTerms([1, 1, 2, 2]))
    taken.createSnapshot({ metadata: { index: 3, term: 2, confState }, data })
    taken.compact(3)
    expect(taken.snapshot()).toEqual({ metadata: { index: 3, term: 2, confState }, size: 10_000, data: undefined })
    expect(() => taken.snapshotData()).toThrow(/keeps no snapshot data/)
    expect([taken.firstIndex(), taken.lastIndex(), taken.term(3)]).toEqual([4, 4, 2])

    const installed = MemoryStorage.mirror()
    installed.applySnapshot({ metadata: { index: 7, term: 3, confState }, data })
    expect(installed.snapshot()).toEqual({ metadata: { index: 7, term: 3, confState }, size: 10_000, data: undefined })
    expect(installed.initialState().confState).toEqual(confState)
    // Nothing the mirror holds references the data.
    expect(JSON.stringify(installed).length).toBeLessThan(1_000)
    expect(JSON.stringify(taken).length).toBeLessThan(1_000)
  })

  it("a core over a mirror sends the snapshot's chunks without data, sized and placed as with it", () => {
    const data = "y".repeat(250)
    const confState = { voters: [1, 2], learners: [] }
    const chunksFrom = (storage: MemoryStorage) =>
      leaderSendingSnapshot(storage, { metadata: { index: 3, term: 1, confState }, data }, 100)
        .ready()
        .messages.filter((m): m is MsgSnap => m.type === "snap")
    const full = chunksFrom(MemoryStorage.withLog([1, 2], []))
    const mirrored = chunksFrom(MemoryStorage.mirror())
    expect(full.map((m) => m.data)).toEqual([data.slice(0, 100), data.slice(100, 200), data.slice(200)])
    expect(mirrored.map((m) => m.data)).toEqual(["", "", ""])
    expect(mirrored.map(({ data: _, ...m }) => m)).toEqual(full.map(({ data: _, ...m }) => m))
    // What the driver fills in (`SnapshotSending`) is what the core would have sent.
    expect(mirrored.map((m) => snapshotChunk(data, m.offset, 100))).toEqual(full.map((m) => m.data))
  })

  it("append truncates a conflicting suffix", () => {
    const st = MemoryStorage.withLog([1], entriesWithTerms([1, 1, 1, 1]))
    st.append(entriesWithTerms([2, 2], 3))
    expect(st.lastIndex()).toBe(4)
    expect([1, 2, 3, 4].map((i) => st.term(i))).toEqual([1, 1, 2, 2])
    st.append(entriesWithTerms([3], 2))
    expect(st.lastIndex()).toBe(2)
    expect(() => st.append(entriesWithTerms([3], 5))).toThrow(/missing/)
  })

  it("compact keeps the term of the compacted index; applySnapshot replaces the log", () => {
    const st = MemoryStorage.withLog([1], entriesWithTerms([1, 2, 3]))
    st.compact(2)
    expect(st.firstIndex()).toBe(3)
    expect(st.term(2)).toBe(2)
    expect(st.term(1)).toBeUndefined()
    expect(() => st.entries(2, 3, 1e9)).toThrow(/compacted/)
    st.applySnapshot({ metadata: { index: 10, term: 4, confState: { voters: [1, 2], learners: [] } }, data: "s" })
    expect(st.firstIndex()).toBe(11)
    expect(st.lastIndex()).toBe(10)
    expect(st.term(10)).toBe(4)
    expect(st.initialState().confState.voters).toEqual([1, 2])
  })

  it("bootstrap starts every initial member from the same snapshot at index 1", () => {
    const st = MemoryStorage.bootstrap({ voters: [1, 2, 3], learners: [] }, "{}")
    expect(st.snapshot()).toEqual({ metadata: { index: 1, term: 1, confState: { voters: [1, 2, 3], learners: [] } }, size: 2, data: "{}" })
    expect([st.firstIndex(), st.lastIndex(), st.term(1)]).toEqual([2, 1, 1])
    expect(st.initialState().hardState).toEqual({ term: 1, vote: 0, commit: 1 })
  })
})
