/** Per-follower progress tracking and the in-flight window (etcd's tracker). */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { Inflights, Progress } from "../../src/raft/Progress.js"
import { ReadOnly } from "../../src/raft/ReadOnly.js"

describe("Inflights", () => {
  it("is a bounded FIFO window freed by acknowledgements, across wrap-around", () => {
    const w = new Inflights(3)
    w.add(5)
    w.add(7)
    w.add(9)
    expect(w.full()).toBe(true)
    expect(() => w.add(10)).toThrow()
    w.freeLE(6)
    expect(w.count).toBe(2)
    w.add(11) // wraps around the ring
    w.freeLE(9)
    expect(w.count).toBe(1)
    w.freeLE(100)
    expect(w.count).toBe(0)
    w.add(12)
    expect(w.count).toBe(1)
  })
})

describe("Progress", () => {
  it("probe: one message at a time; replicate: optimistic until the window is full; snapshot: paused", () => {
    const pr = new Progress(5, 2, false)
    expect(pr.isPaused()).toBe(false)
    pr.sentEntries(3, 7)
    expect(pr.isPaused()).toBe(true)
    expect(pr.next).toBe(5)
    pr.maybeUpdate(7)
    pr.becomeReplicate()
    expect([pr.match, pr.next]).toEqual([7, 8])
    pr.sentEntries(2, 9)
    expect(pr.next).toBe(10)
    pr.sentEntries(1, 10)
    expect(pr.isPaused()).toBe(true)
    pr.maybeUpdate(9)
    pr.inflights.freeLE(9)
    expect(pr.isPaused()).toBe(false)
    pr.becomeSnapshot(20)
    expect(pr.isPaused()).toBe(true)
    expect(pr.next).toBe(21)
    pr.becomeProbe()
    expect(pr.next).toBe(21)
  })

  it("maybeDecrTo: in replicate state goes back to match+1; in probe only the answer to the outstanding probe counts", () => {
    const r = new Progress(11, 8, false)
    r.match = 5
    r.becomeReplicate()
    r.sentEntries(3, 8)
    expect(r.maybeDecrTo(4, 4)).toBe(false) // ≤ match: stale
    expect(r.maybeDecrTo(7, 3)).toBe(true)
    expect(r.next).toBe(6)

    const p = new Progress(11, 8, false)
    p.match = 2
    expect(p.maybeDecrTo(5, 1)).toBe(false) // answers an older probe
    expect(p.maybeDecrTo(10, 6)).toBe(true)
    expect(p.next).toBe(7) // the hint, not one step back
    expect(p.maybeDecrTo(6, 0)).toBe(true)
    expect(p.next).toBe(3) // never below match+1
  })

  it("maybeUpdate ignores stale acknowledgements", () => {
    const pr = new Progress(1, 4, false)
    expect(pr.maybeUpdate(3)).toBe(true)
    expect(pr.maybeUpdate(2)).toBe(false)
    expect([pr.match, pr.next]).toEqual([3, 4])
  })
})

describe("ReadOnly", () => {
  it("queues requests and releases every request up to the confirmed one, in order", () => {
    const ro = new ReadOnly()
    ro.addRequest(5, "a", 0)
    ro.addRequest(6, "b", 2)
    ro.addRequest(7, "c", 0)
    expect(ro.lastPendingContext()).toBe("c")
    expect([...ro.recvAck(3, "b")!.keys()]).toEqual([3])
    expect(ro.recvAck(3, "zzz")).toBeUndefined()
    expect(ro.advance("b").map((r) => [r.context, r.index, r.from])).toEqual([
      ["a", 5, 0],
      ["b", 6, 2]
    ])
    expect(ro.size).toBe(1)
    expect(ro.advance("b")).toEqual([])
  })

  it("a context repeated while pending is withdrawn and refused for the term: neither request is answered", () => {
    const ro = new ReadOnly()
    ro.addRequest(5, "a", 0)
    ro.addRequest(6, "b", 0)
    ro.addRequest(9, "a", 0)
    expect(ro.isPending("a")).toBe(false)
    ro.addRequest(10, "a", 0)
    expect(ro.isPending("a")).toBe(false)
    expect(ro.advance("b").map((r) => [r.context, r.index])).toEqual([["b", 6]])
  })
})

describe("Inflights properties", () => {
  it("behaves like a bounded FIFO of increasing indexes (model check)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.oneof(fc.constant<"add">("add"), fc.nat(40)), { maxLength: 60 }),
        (cap, ops) => {
          const w = new Inflights(cap)
          const model: Array<number> = []
          let next = 1
          for (const op of ops) {
            if (op === "add") {
              if (model.length < cap) {
                w.add(next)
                model.push(next)
              }
              next++
            } else {
              w.freeLE(op)
              while (model.length > 0 && model[0]! <= op) model.shift()
            }
            expect(w.count).toBe(model.length)
            expect(w.full()).toBe(model.length >= cap)
          }
        }
      )
    )
  })
})
