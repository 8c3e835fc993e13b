/**
 * Virtual time: fibers on the simulator's scheduler, sleeps as timers in one heap, a machine clock
 * with offset and skew, and a loud failure when a fiber never suspends.
 */
import { Clock, Duration, Effect, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import { VirtualClock, VirtualTime } from "../../src/sim/VirtualClock.js"

const fork = (time: VirtualTime, clock: VirtualClock, effect: Effect.Effect<void>) =>
  Effect.runFork(Effect.withClock(effect, clock), { scheduler: time.scheduler })

/** Settles and fires timers until none is left. */
const runAll = (time: VirtualTime) => {
  time.settle()
  while (time.advance()) time.settle()
}

describe("VirtualTime and VirtualClock", () => {
  it("sleeps end in deadline order, equal deadlines in the order they were set, without real time passing", () => {
    const time = new VirtualTime()
    const clock = new VirtualClock(time, { offsetMs: 0, onWake: () => {} })
    const log: Array<string> = []
    const sleeper = (name: string, ms: number) =>
      fork(time, clock, Effect.zipRight(Effect.sleep(Duration.millis(ms)), Effect.sync(() => void log.push(`${name}@${time.now}`))))
    sleeper("a", 30)
    sleeper("b", 10)
    sleeper("c", 30)
    sleeper("d", 10)
    const wall = performance.now()
    runAll(time)
    expect(log).toEqual(["b@10", "d@10", "a@30", "c@30"])
    expect(performance.now() - wall).toBeLessThan(1_000)
  })

  it("an interrupted sleep never fires; a fiber waiting on nothing leaves no timer", () => {
    const time = new VirtualTime()
    let woke = 0
    const clock = new VirtualClock(time, { offsetMs: 0, onWake: () => void woke++ })
    const fiber = fork(time, clock, Effect.sleep(Duration.millis(50)))
    fork(time, clock, Effect.sleep(Duration.infinity))
    time.settle()
    Effect.runFork(Fiber.interrupt(fiber), { scheduler: time.scheduler })
    runAll(time)
    expect(woke).toBe(0)
    expect(time.next()).toBeUndefined()
  })

  it("a machine clock reads its offset plus simulated time; skewed, it runs fast and its sleeps end early", () => {
    const time = new VirtualTime()
    const clock = new VirtualClock(time, { offsetMs: 5_000, onWake: () => {} })
    const readings: Array<[number, number]> = []
    fork(
      time,
      clock,
      Effect.gen(function* () {
        readings.push([time.now, yield* Clock.currentTimeMillis])
        yield* Effect.sleep(Duration.millis(100))
        readings.push([time.now, yield* Clock.currentTimeMillis])
        clock.setSkew(250) // gains 250 ms per simulated second
        yield* Effect.sleep(Duration.millis(100))
        readings.push([time.now, yield* Clock.currentTimeMillis])
      })
    )
    runAll(time)
    expect(readings).toEqual([
      [0, 5_000],
      [100, 5_100],
      [180, 5_200]
    ])
  })

  it("fails loudly when a fiber never suspends, instead of hanging the driver", () => {
    const time = new VirtualTime({ maxRoundsPerInstant: 100 })
    const clock = new VirtualClock(time, { offsetMs: 0, onWake: () => {} })
    fork(time, clock, Effect.forever(Effect.sync(() => {})))
    expect(() => time.settle()).toThrow(/a fiber never suspends: still runnable after 100 scheduler rounds at 0 ms/)
  })

  it("fails loudly when fibers keep time from moving (sleeping 0 ms forever)", () => {
    const time = new VirtualTime({ maxBatchesPerInstant: 100 })
    const clock = new VirtualClock(time, { offsetMs: 0, onWake: () => {} })
    fork(time, clock, Effect.forever(Effect.sleep(Duration.zero)))
    expect(() => runAll(time)).toThrow(/time cannot move: timers kept firing at 0 ms/)
  })
})
