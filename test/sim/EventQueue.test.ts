import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { EventQueue } from "../../src/sim/EventQueue.js"

const drain = <T>(q: EventQueue<T>): Array<T> => {
  const out: Array<T> = []
  for (let e = q.pop(); e !== undefined; e = q.pop()) out.push(e.event)
  return out
}

describe("EventQueue", () => {
  it("pops in time order, equal times in insertion order", () => {
    const q = new EventQueue<string>()
    q.push(30, "c")
    q.push(10, "a1")
    q.push(20, "b1")
    q.push(10, "a2")
    q.push(20, "b2")
    q.push(10, "a3")
    q.push(-5, "neg")
    expect(q.size).toBe(7)
    expect(q.peek()?.event).toBe("neg")
    expect(drain(q)).toEqual(["neg", "a1", "a2", "a3", "b1", "b2", "c"])
    expect(q.size).toBe(0)
    expect(q.pop()).toBeUndefined()
    expect(q.peek()).toBeUndefined()
  })

  it("records carry the time and a queue-wide sequence", () => {
    const q = new EventQueue<number>()
    const a = q.push(5, 1)
    const b = q.push(5, 2)
    expect([a.time, b.time]).toEqual([5, 5])
    expect(b.seq).toBe(a.seq + 1)
    expect(q.pop()).toBe(a)
    q.clear()
    expect(q.size).toBe(0)
    expect(q.push(1, 3).seq).toBe(b.seq + 1)
  })

  it("rejects times that would corrupt the order", () => {
    const q = new EventQueue<number>()
    for (const bad of [NaN, Infinity, -Infinity]) expect(() => q.push(bad, 0)).toThrow(RangeError)
  })

  it("matches a stable sort by time under any interleaving of pushes and pops", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.integer({ min: 0, max: 20 }), fc.constant(-1 as const)), { maxLength: 300 }),
        (script) => {
          const q = new EventQueue<number>()
          // Reference: a list kept sorted by (time, seq).
          let ref: Array<{ time: number; seq: number }> = []
          let seq = 0
          for (const step of script) {
            if (step === -1) {
              const got = q.pop()
              const want = ref.shift()
              expect(got?.seq).toBe(want?.seq)
            } else {
              q.push(step, seq)
              ref.push({ time: step, seq: seq++ })
              ref = ref.sort((a, b) => a.time - b.time || a.seq - b.seq)
            }
            expect(q.size).toBe(ref.length)
          }
          expect(drain(q)).toEqual(ref.map((r) => r.seq))
        }
      ),
      { numRuns: 300 }
    )
  })
})
