import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import { Wakeup } from "../../src/util/Wakeup.js"

describe("Wakeup", () => {
  it.live("times out after its wait on the real clock, without a signal", () =>
    Effect.gen(function* () {
      const w = new Wakeup()
      const started = Date.now()
      expect(yield* w.wait(30)).toBe(false)
      expect(Date.now() - started).toBeGreaterThanOrEqual(25)
    })
  )

  it("a wait on the real clock never ends before its time on the monotonic clock", async () => {
    // A JavaScript timer counts from the event loop's time in whole milliseconds: one set late in a
    // millisecond can fire up to that fraction early (about one in five of these, without the re-arm).
    const w = new Wakeup()
    const nowMs = () => Number(process.hrtime.bigint()) / 1e6
    let early = 0
    for (let i = 0; i < 60; i++) {
      await new Promise((resolve) => setImmediate(resolve))
      while (process.hrtime.bigint() % 1_000_000n < 900_000n) {
        // wait for the last tenth of a millisecond
      }
      const began = nowMs()
      expect(await Effect.runPromise(w.wait(3))).toBe(false)
      if (nowMs() - began < 3) early++
    }
    expect(early).toBe(0)
  })

  it.live("a signal during the wait ends it at once; a signal before the wait is kept, once", () =>
    Effect.gen(function* () {
      const w = new Wakeup()
      const fiber = yield* Effect.fork(w.wait(60_000))
      yield* Effect.sleep(5)
      w.signal()
      expect(yield* Fiber.join(fiber)).toBe(true)
      w.signal()
      w.signal()
      expect(yield* w.wait(60_000)).toBe(true)
      expect(yield* w.wait(1)).toBe(false)
    })
  )

  it.live("an interrupted wait leaves no timer and no waiter behind", () =>
    Effect.gen(function* () {
      const w = new Wakeup()
      const fiber = yield* Effect.fork(w.wait(60_000))
      yield* Effect.sleep(5)
      yield* Fiber.interrupt(fiber)
      // The signal is kept for the next waiter, not swallowed by the interrupted one.
      w.signal()
      expect(yield* w.wait(60_000)).toBe(true)
    })
  )

  it.effect("a clock without timers of its own (TestClock): the wait follows its time", () =>
    Effect.gen(function* () {
      const w = new Wakeup()
      const fiber = yield* Effect.fork(w.wait(1000))
      yield* Effect.yieldNow()
      yield* TestClock.adjust(999)
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust(1)
      expect(yield* Fiber.join(fiber)).toBe(false)
      const second = yield* Effect.fork(w.wait(1000))
      yield* Effect.yieldNow()
      w.signal()
      expect(yield* Fiber.join(second)).toBe(true)
    })
  )
})
