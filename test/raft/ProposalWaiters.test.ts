/** `RaftNode`'s proposal waiters: resolved with their entry's result, or failed when it cannot be theirs. */
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import { ProposalDropped } from "../../src/domain/Errors.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { ProposalWaiters } from "../../src/raft/ProposalWaiters.js"
import { type ProposeFailure, RequestErrors, type Waiting } from "../../src/raft/Requests.js"
import type { Entry } from "../../src/raft/Types.js"

/** A proposal waiting, and what it was answered (`undefined`: nothing yet; the result, or the error's tag). */
const proposal = (deadline = 1_000_000) => {
  const outcome: { value: unknown } = { value: undefined }
  const waiter: Waiting<unknown, ProposeFailure> = {
    deadline,
    what: "the write",
    done: (o) => {
      const e = Effect.runSync(Effect.either(o))
      outcome.value = Either.isRight(e) ? e.right : e.left._tag
    }
  }
  return { waiter, outcome }
}

const entry = (index: number, term: number): Entry => ({ index, term, kind: "normal", data: `e${index}` })

const make = (unsafeOverwrite = false) => new ProposalWaiters(new RequestErrors(1, 1000), unsafeOverwrite)

describe("ProposalWaiters", () => {
  it("a proposal resolves with its entry's result when applied in its term; another term's entry there drops it", () => {
    const waiters = make()
    const [a, b] = [proposal(), proposal()]
    waiters.register({ ok: true, index: 4, term: 2 }, a.waiter)
    waiters.register({ ok: true, index: 5, term: 2 }, b.waiter)
    waiters.settle([entry(4, 2), entry(5, 3)], ["r4", "r5"])
    expect([a.outcome.value, b.outcome.value]).toEqual(["r4", "ProposalDropped"])
  })

  it("a proposal at an index proposed at in an earlier term fails the earlier one at once (unless the unsafe switch is on)", () => {
    for (const unsafe of [false, true]) {
      const waiters = make(unsafe)
      const [a, b] = [proposal(), proposal()]
      waiters.register({ ok: true, index: 4, term: 2 }, a.waiter)
      waiters.register({ ok: true, index: 4, term: 3 }, b.waiter)
      expect(a.outcome.value).toBe(unsafe ? undefined : "ProposalDropped")
      waiters.settle([entry(4, 3)], ["r4"])
      expect(b.outcome.value).toBe("r4")
    }
  })

  it("a refused proposal fails with the reason; a snapshot over a waiter's index, a deadline, or shutdown fail it", () => {
    const waiters = make()
    const [refused, covered, late, open] = [proposal(), proposal(), proposal(50), proposal()]
    waiters.register({ ok: false, reason: "transferInProgress", transferee: 2 }, refused.waiter)
    waiters.register({ ok: true, index: 3, term: 1 }, covered.waiter)
    waiters.register({ ok: true, index: 8, term: 1 }, late.waiter)
    waiters.register({ ok: true, index: 9, term: 1 }, open.waiter)
    expect(refused.outcome.value).toBe("Unavailable")
    waiters.replacedBy(5)
    expect(covered.outcome.value).toBe("ProposalDropped")
    waiters.expire((w) => w.deadline <= 50)
    expect([late.outcome.value, open.outcome.value]).toEqual(["Timeout", undefined])
    waiters.shutdown(new ProposalDropped({ node: NodeId.make(1), message: "node 1 is shutting down" }))
    expect(open.outcome.value).toBe("ProposalDropped")
  })
})
