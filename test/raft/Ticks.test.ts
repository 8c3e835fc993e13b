/**
 * `Ticks`: the ticker hands the loop a tick when one acts, and the loop counts the ticks elapsed
 * (`catchUp`) the same way, on the simulator's virtual time (the clock stands still within an
 * instant, so a disagreement between the two spins without end instead of briefly).
 */
import { Effect, Queue } from "effect"
import { describe, expect, it } from "vitest"
import type { RawNode } from "../../src/raft/RawNode.js"
import { monotonicMillis, Ticks } from "../../src/raft/Ticks.js"
import { VirtualClock, VirtualTime } from "../../src/sim/VirtualClock.js"

describe("Ticks", () => {
  it("a tick due at a time that fractional milliseconds reach a rounding early is handed over once, when catchUp counts it", () => {
    const tickMs = 100
    const time = new VirtualTime({ maxRoundsPerInstant: 1_000 })
    // 32739.026 + 100 - 32739.026 is 99.99999999999636 in floating point: at 32839.026 the tick
    // planned for then is reached, while catchUp still counts no tick elapsed.
    const clock = new VirtualClock(time, { offsetMs: 32_739.026, onWake: () => {} })
    const tickedAt: Array<number> = []
    let handedOver = 0
    const raw = { tick: () => void tickedAt.push(time.now), ticksUntilAction: () => 1 } as unknown as RawNode
    const program = Effect.gen(function* () {
      const ticks = new Ticks(raw, tickMs, yield* monotonicMillis)
      const handed = yield* Queue.unbounded<void>()
      // The loop: takes each tick handed over, gives the core the ticks elapsed, plans the next.
      yield* Effect.fork(
        Effect.forever(
          Effect.gen(function* () {
            yield* Queue.take(handed)
            ticks.catchUp(yield* monotonicMillis)
            ticks.plan()
          })
        )
      )
      yield* Effect.fork(
        ticks.ticker({
          expire: () => Number.POSITIVE_INFINITY,
          reportStalls: () => Effect.void,
          flushingSince: () => undefined,
          unreachable: Effect.succeed([]),
          tick: () => void (handedOver++, Queue.unsafeOffer(handed, undefined))
        })
      )
      return yield* Effect.never
    })
    Effect.runFork(Effect.withClock(program, clock), { scheduler: time.scheduler })
    time.settle()
    while ((time.next() ?? Infinity) < 1_050 && time.advance()) time.settle()
    // A tick every 100 ms, each handed over once: the first, reached a rounding early, a millisecond
    // later (before, it was handed over again and again at 100 ms, the loop counting none elapsed).
    expect(tickedAt.map(Math.round)).toEqual([101, 200, 300, 400, 500, 600, 700, 800, 900, 1_000])
    expect(handedOver).toBe(10)
  })
})
