/** `RaftNode`'s read path: ReadIndex rounds shared by the reads waiting, retried, re-asked of a new leader. */
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import type { RawNode } from "../../src/raft/RawNode.js"
import { ReadIndexReads } from "../../src/raft/ReadIndexReads.js"
import { type LeaderWaiter, RequestErrors } from "../../src/raft/Requests.js"

/** A core that records the contexts it is asked, and accepts them while `leading`. */
const core = () => {
  const asked: Array<string> = []
  const state = { leading: true }
  const raw = {
    readIndex: (context: string) => {
      asked.push(context)
      return state.leading ? { ok: true as const } : { ok: false as const, reason: "noLeader" as const }
    },
    status: () => ({ lead: 3 })
  } as unknown as RawNode
  return { asked, state, raw }
}

/** A read waiting, and what it was answered (`undefined`: nothing yet; otherwise "ok" or the error's tag). */
const read = (deadline = 1_000_000) => {
  const outcome: { value: string | undefined } = { value: undefined }
  const waiter: LeaderWaiter = {
    deadline,
    what: "the read",
    done: (o) => {
      const e = Effect.runSync(Effect.either(o))
      outcome.value = Either.isRight(e) ? "ok" : e.left._tag
    }
  }
  return { waiter, outcome }
}

const make = () => new ReadIndexReads("1:nonce:", 500, new RequestErrors(1, 1000))

describe("ReadIndexReads", () => {
  it("reads taken together share one round; those arriving meanwhile wait for the next, asked once it is answered", () => {
    const { asked, raw } = core()
    const reads = make()
    const [a, b, c] = [read(), read(), read()]
    reads.add(a.waiter)
    reads.add(b.waiter)
    reads.ask(raw, 0)
    reads.add(c.waiter)
    reads.ask(raw, 10)
    expect(asked).toEqual(["1:nonce:1"])
    reads.answered([{ context: "1:nonce:1", index: 7 }])
    reads.applied(6)
    expect([a.outcome.value, b.outcome.value]).toEqual([undefined, undefined])
    reads.applied(7)
    expect([a.outcome.value, b.outcome.value, c.outcome.value]).toEqual(["ok", "ok", undefined])
    reads.ask(raw, 20)
    expect(asked).toEqual(["1:nonce:1", "1:nonce:2"])
  })

  it("a round unanswered after retryMs, or asked of a leader since replaced, is asked again with a new context", () => {
    const { asked, raw } = core()
    const reads = make()
    const a = read()
    reads.add(a.waiter)
    reads.ask(raw, 0)
    reads.ask(raw, 499)
    expect(asked).toEqual(["1:nonce:1"])
    reads.ask(raw, 500)
    expect(asked).toEqual(["1:nonce:1", "1:nonce:2"])
    // A late answer to the first round no longer matches.
    reads.answered([{ context: "1:nonce:1", index: 1 }])
    reads.applied(100)
    expect(a.outcome.value).toBeUndefined()
    reads.leaderChanged()
    reads.ask(raw, 501)
    expect(asked).toEqual(["1:nonce:1", "1:nonce:2", "1:nonce:3"])
    reads.answered([{ context: "1:nonce:3", index: 1 }])
    reads.applied(1)
    expect(a.outcome.value).toBe("ok")
  })

  it("a round the core refuses fails its reads with NotLeader", () => {
    const { raw, state } = core()
    state.leading = false
    const reads = make()
    const a = read()
    reads.add(a.waiter)
    reads.ask(raw, 0)
    expect(a.outcome.value).toBe("NotLeader")
  })

  it("reads past their deadline time out; a round nobody waits on any more does not hold up the next", () => {
    const { asked, raw } = core()
    const reads = make()
    const a = read(100)
    reads.add(a.waiter)
    reads.ask(raw, 0)
    reads.expire((w) => w.deadline <= 100)
    expect(a.outcome.value).toBe("Timeout")
    const b = read()
    reads.add(b.waiter)
    reads.ask(raw, 1)
    expect(asked).toEqual(["1:nonce:1", "1:nonce:2"])
  })
})
