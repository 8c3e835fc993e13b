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
