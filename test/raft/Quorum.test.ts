import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { committedIndex, majority, voteResult } from "../../src/raft/Quorum.js"

describe("Quorum", () => {
  it("a majority of n voters is floor(n/2)+1", () => {
    expect([1, 2, 3, 4, 5].map(majority)).toEqual([1, 2, 2, 3, 3])
  })

  it("the committed index is the largest index a majority has acknowledged", () => {
    const acked = new Map([[1, 5], [2, 3], [3, 9], [4, 1], [5, 3]])
    expect(committedIndex([1, 2, 3, 4, 5], (id) => acked.get(id) ?? 0)).toBe(3)
    expect(committedIndex([1, 3], (id) => acked.get(id) ?? 0)).toBe(5)
    expect(committedIndex([1], (id) => acked.get(id) ?? 0)).toBe(5)
    expect(committedIndex([1, 2, 6], (id) => acked.get(id) ?? 0)).toBe(3)
    expect(committedIndex([], () => 7)).toBe(0)
  })

  it("an election is won with a majority of grants, lost when a majority is out of reach, else pending", () => {
    const voters = [1, 2, 3, 4, 5]
    expect(voteResult(voters, new Map([[1, true], [2, true]]))).toBe("pending")
    expect(voteResult(voters, new Map([[1, true], [2, true], [3, true]]))).toBe("won")
    expect(voteResult(voters, new Map([[1, false], [2, false], [3, false]]))).toBe("lost")
    expect(voteResult(voters, new Map([[1, true], [2, false], [3, false], [4, true]]))).toBe("pending")
    // votes from non-voters do not count
    expect(voteResult([1, 2, 3], new Map([[1, true], [7, true], [8, true]]))).toBe("pending")
  })
})

describe("Quorum properties", () => {
  it("committedIndex is the largest index acknowledged by at least a majority (model check)", () => {
    fc.assert(
      fc.property(fc.array(fc.nat(50), { minLength: 1, maxLength: 7 }), (acks) => {
        const voters = acks.map((_, i) => i + 1)
        const ci = committedIndex(voters, (id) => acks[id - 1]!)
        const holders = (i: number) => acks.filter((a) => a >= i).length
        expect(holders(ci)).toBeGreaterThanOrEqual(majority(voters.length))
        expect(holders(ci + 1)).toBeLessThan(majority(voters.length))
      })
    )
  })

  it("any two majorities of configurations differing by one voter intersect (why single-server changes are safe)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 7 }), fc.boolean(), fc.nat(), fc.nat(), (n, grow, s1, s2) => {
        const oldConf = Array.from({ length: n }, (_, i) => i + 1)
        const newConf = grow ? [...oldConf, n + 1] : oldConf.slice(0, Math.max(1, n - 1))
        const pick = (conf: Array<number>, seed: number) => {
          // a pseudo-random majority of conf
          const shuffled = [...conf].sort((a, b) => ((a * 7919 + seed) % 101) - ((b * 7919 + seed) % 101))
          return new Set(shuffled.slice(0, majority(conf.length)))
        }
        const q1 = pick(oldConf, s1)
        const q2 = pick(newConf, s2)
        expect([...q1].some((id) => q2.has(id))).toBe(true)
      })
    )
  })
})
