import { describe, expect, it } from "vitest"
import * as HeapRelease from "../../src/node/HeapRelease.js"

const options = HeapRelease.defaultHeapRelease
const MiB = 2 ** 20

describe("HeapRelease", () => {
  it("collects once a quiet interval follows growth of the heap, not while busy or without growth", () => {
    const quiet = { cpuMicros: 50_000, elapsedMs: 2_000 }
    const busy = { cpuMicros: 1_500_000, elapsedMs: 2_000 }
    expect(HeapRelease.shouldRelease(options, 40 * MiB, { ...quiet, heapBytes: 100 * MiB })).toBe(true)
    expect(HeapRelease.shouldRelease(options, 40 * MiB, { ...busy, heapBytes: 100 * MiB })).toBe(false)
    expect(HeapRelease.shouldRelease(options, 40 * MiB, { ...quiet, heapBytes: 50 * MiB })).toBe(false)
    expect(HeapRelease.shouldRelease(options, 0, { ...quiet, heapBytes: 30 * MiB })).toBe(true)
    expect(HeapRelease.shouldRelease(options, 0, { ...quiet, elapsedMs: 0, heapBytes: 30 * MiB })).toBe(false)
  })

  it("a collection returns the young generation and the old generation's garbage, and the process goes on", async () => {
    // Grow the young generation and fill the old one with garbage, as a burst of writes does.
    let keep: Array<unknown> = []
    for (let i = 0; i < 2_000_000; i++) {
      keep.push({ i, s: `x${i}` })
      if (keep.length > 300_000) keep = []
    }
    keep = []
    const before = HeapRelease.heapBytes()
    await new Promise<void>((resolve) => HeapRelease.collect(resolve))
    const after = HeapRelease.heapBytes()
    expect(after).toBeLessThan(before - 16 * MiB)
    // A second collection right after (the session was released, not left holding a lock).
    await new Promise<void>((resolve) => HeapRelease.collect(resolve))
    expect(keep).toEqual([])
  })
})
