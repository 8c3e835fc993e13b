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
