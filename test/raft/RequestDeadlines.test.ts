/**
 * A request to `RaftNode` is answered by its deadline however the node's fibers interleave: run on
 * the simulator's virtual time (`VirtualClock`: timers of its own, as the default clock's
 * `setTimeout`s are, where `TestClock` races a sleep against every wake-up and so orders fibers
 * differently).
 */
import { Cause, Duration, Effect, Exit, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import type { RaftNodeConfig } from "../../src/raft/RaftNode.js"
import { KvStore } from "../../src/sim/KvStore.js"
import { VirtualClock, VirtualTime } from "../../src/sim/VirtualClock.js"
import { RaftCluster, tickMs, value } from "../support/RaftCluster.js"

const requestTimeoutMs = 500

class Cluster extends RaftCluster<KvStore> {
  constructor(voters: ReadonlyArray<number>, options: Partial<RaftNodeConfig> = {}) {
    super(voters, () => new KvStore(), (kv) => kv.layer(), options)
  }
}

/** Runs `program` on virtual time until it ends (dies after `maxMs` simulated ms); its exit, and the time. */
const runVirtual = <A, E>(program: (time: VirtualTime) => Effect.Effect<A, E>, maxMs = 60_000) => {
  const time = new VirtualTime()
  const clock = new VirtualClock(time, { offsetMs: 0, onWake: () => {} })
  const fiber = Effect.runFork(Effect.withClock(program(time), clock), { scheduler: time.scheduler })
  time.settle()
  while (fiber.unsafePoll() === null && time.now <= maxMs && time.advance()) time.settle()
  const exit = fiber.unsafePoll()
  if (exit === null) throw new Error(`the program did not end within ${maxMs} simulated ms`)
  return exit
}

/** Sleeps a tick at a time until `condition` holds (fails after `maxMs`). */
const until = (what: string, condition: () => Effect.Effect<boolean>, maxMs = 10_000) =>
  Effect.gen(function* () {
    for (let t = 0; t <= maxMs; t += tickMs) {
      if (yield* condition()) return
      yield* Effect.sleep(Duration.millis(tickMs))
    }
    return yield* Effect.fail(new Error(`not within ${maxMs} simulated ms: ${what}`))
  })

/** Runs `request` until it is answered; its exit. */
const answered = <A, E>(request: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(request)
    yield* until("the request is answered", () => Effect.map(fiber.poll, (o) => o._tag === "Some"))
    return yield* Fiber.await(fiber)
  })

const put = (key: string, v: string) => JSON.stringify({ op: "put", key, value: v })

describe("RaftNode request deadlines (virtual time)", () => {
  it("a learner's read that no leader answers times out at its deadline, though its ticker has no tick to wake for", () => {
    const exit = runVirtual((time) =>
      Effect.gen(function* () {
        const c = new Cluster([1], { requestTimeoutMs })
        yield* c.start(1)
        yield* until("node 1 leads", () => Effect.map(c.node(1).role, (r) => r === "leader"))
        yield* c.start(2, false)
        value(yield* answered(c.node(1).proposeConfChange({ type: "addLearner", nodeId: 2 })))
        value(yield* answered(c.node(1).propose(put("k", "1"))))
        yield* until("the learner applied the write", () => Effect.succeed(c.state(2).get("k") === "1"))
        // Its leader hears none of its ReadIndex requests now. A learner never campaigns: its
        // ticker sleeps until a request's deadline wakes it, and the loop, idle, takes the read at once.
        c.net.partition(1, 2)
        const issued = time.now
        const read = yield* Effect.fork(c.node(2).readIndex)
        yield* until("the read is answered", () => Effect.map(read.poll, (o) => o._tag === "Some"), 3 * requestTimeoutMs)
        const waited = time.now - issued
        const result = yield* Fiber.await(read)
        for (const id of [1, 2]) yield* c.crash(id)
        return { waited, result }
      })
    )
    if (Exit.isFailure(exit)) throw new Error(Cause.pretty(exit.cause))
    const { waited, result } = exit.value
    expect(Exit.isFailure(result) ? Cause.squash(result.cause) : undefined).toMatchObject({ code: "BLX_TIMEOUT", node: 2 })
    // By its deadline, give or take the tick `until` looks at it.
    expect(waited).toBeGreaterThanOrEqual(requestTimeoutMs)
    expect(waited).toBeLessThanOrEqual(requestTimeoutMs + tickMs)
  })
})
