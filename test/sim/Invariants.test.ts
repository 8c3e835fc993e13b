/**
 * The shared Raft invariants, fed by hand: here the vote check (one vote per server and term,
 * across restarts and wiped data directories).
 */
import { describe, expect, it } from "vitest"
import { encodeConfChange } from "../../src/raft/Raft.js"
import { RaftInvariants, Violation } from "../../src/sim/Invariants.js"

const invariants = () =>
  new RaftInvariants((message) => {
    throw new Violation(message)
  })

describe("RaftInvariants.vote", () => {
  it("a second grant in a term, to another candidate, is a violation; the same grant again is not", () => {
    const inv = invariants()
    inv.vote(2, 5, 1)
    inv.vote(2, 5, 1)
    inv.vote(2, 6, 3)
    inv.vote(3, 5, 3)
    expect(() => inv.vote(2, 5, 3)).toThrow(/node 2 voted twice in term 5: for 1, then for 3 \(after a restart on a wiped data directory\?\)/)
  })

  it("a wipe does not forget a vote; the node's committed removal does", () => {
    const inv = invariants()
    inv.vote(2, 5, 1)
    inv.wiped(2)
    expect(() => inv.vote(2, 5, 3)).toThrow(Violation)
    const removal = { kind: "confChange" as const, index: 7, term: 6, data: encodeConfChange({ type: "remove", nodeId: 2 }) }
    inv.committedEntry(1, removal)
    inv.vote(2, 5, 3)
  })
})
