/**
 * Virtual time for the full-service simulation tier: Effect fibers run on a scheduler the simulator
 * steps by hand, and every `Effect.sleep` is a timer in one heap, so a run never waits on the real
 * clock and never depends on the order in which the host hands out macrotasks (SIMULATION.md).
 *
 * - `VirtualTime` owns simulated time (`now`, in ms), the timer heap (an `EventQueue`: equal
 *   deadlines fire in the order they were set) and a `Scheduler.ControlledScheduler`. Every
 *   simulated fiber is forked with `{ scheduler: time.scheduler }`; its children inherit it.
 *   The driver alternates `settle()` — run fibers until every one of them is suspended — and
 *   `advance()` — move to the next deadline and fire what is due then.
 * - `VirtualClock` is the `Clock` service of one simulated machine. Its `sleep` sets a timer; its
 *   reading is the machine's own wall clock: an offset from simulated time, running fast or slow
 *   when skewed (then its sleeps end early or late by the same factor).
 *
 * Neither touches `Date.now`, real timers or `Math.random`.
 */
import type { Clock } from "effect"
import { Duration, Effect, Scheduler } from "effect"
import { ClockTypeId } from "effect/Clock"
import { EventQueue } from "./EventQueue.js"

/** A timer set with `VirtualTime.at`; `cancelled` ones are skipped when their time comes. */
export interface Timer {
  readonly fire: () => void
  cancelled: boolean
}

export interface VirtualTimeOptions {
  /**
   * Scheduler rounds (each runs every task queued before it) allowed in one instant before the
   * driver gives up on a fiber that never suspends. A fiber yields every 2,048 operations, so a
   * runaway loop shows up as an endless series of rounds.
   */
  readonly maxRoundsPerInstant?: number
  /** Timer batches allowed at one instant (fibers that keep sleeping 0 ms would never let time move). */
  readonly maxBatchesPerInstant?: number
}

export class VirtualTime {
  /** Simulated milliseconds since the start of the run. */
  now = 0
  /** Timers fired so far. */
  fired = 0
  readonly scheduler = new Scheduler.ControlledScheduler()
  private readonly timers = new EventQueue<Timer>()
  private readonly maxRounds: number
  private readonly maxBatches: number
  private batchesNow = 0

  constructor(options: VirtualTimeOptions = {}) {
    this.maxRounds = options.maxRoundsPerInstant ?? 10_000
    this.maxBatches = options.maxBatchesPerInstant ?? 10_000
  }

  /** Calls `fire` at simulated time `time` (not before `now`). */
  at(time: number, fire: () => void): Timer {
    const timer: Timer = { fire, cancelled: false }
    this.timers.push(Math.max(time, this.now), timer)
    return timer
  }

  /** Runs fibers until every one is suspended (on a timer, a message, a deferred). */
  settle(): void {
    const buckets = this.scheduler.tasks
    let rounds = 0
    while (buckets.buckets.length > 0) {
      if (++rounds > this.maxRounds) {
        throw new Error(`a fiber never suspends: still runnable after ${this.maxRounds} scheduler rounds at ${this.now} ms`)
      }
      this.scheduler.step()
    }
  }

  /** The deadline of the next live timer, or undefined when none is set. */
  next(): number | undefined {
    for (;;) {
      const top = this.timers.peek()
      if (top === undefined || !top.event.cancelled) return top?.time
      this.timers.pop()
    }
  }

  /** Moves `now` to the next deadline and fires every timer due then; false if no timer is set. */
  advance(): boolean {
    const time = this.next()
    if (time === undefined) return false
    if (time > this.now) {
      this.now = time
      this.batchesNow = 0
    } else if (++this.batchesNow > this.maxBatches) {
      throw new Error(`time cannot move: timers kept firing at ${this.now} ms for ${this.maxBatches} rounds`)
    }
    for (;;) {
      const top = this.timers.peek()
      if (top === undefined || top.time !== time) break
      this.timers.pop()
      if (top.event.cancelled) continue
      this.fired++
      top.event.fire()
    }
    return true
  }
}

const wake = Effect.void

/** The `Clock` of one simulated machine, on `VirtualTime`. */
export class VirtualClock implements Clock.Clock {
  readonly [ClockTypeId]: typeof ClockTypeId = ClockTypeId
  /** Local rate relative to simulated time (1 + skew/1000). */
  private rate = 1
  /** Simulated time and local reading at the last rate change. */
  private anchor = 0
  private base: number
  private readonly onWake: () => void

  constructor(
    private readonly time: VirtualTime,
    options: {
      /** The machine's wall-clock reading at simulated time 0. */
      readonly offsetMs: number
      /** Called as one of this clock's sleeps ends, before the sleeping fiber resumes. */
      readonly onWake: () => void
    }
  ) {
    this.base = options.offsetMs
    this.onWake = options.onWake
  }

  /** From now on the machine's clock gains `skewMs` per simulated second (loses, if negative). */
  setSkew(skewMs: number): void {
    this.base = this.reading()
    this.anchor = this.time.now
    this.rate = 1 + skewMs / 1000
  }

  /** The exact local reading; a skewed clock's falls between whole milliseconds. */
  private reading(): number {
    return this.base + (this.time.now - this.anchor) * this.rate
  }

  /** Whole milliseconds, as a real wall clock (`Date.now`) reads: code may store them as integers. */
  unsafeCurrentTimeMillis(): number {
    return Math.floor(this.reading())
  }

  unsafeCurrentTimeNanos(): bigint {
    return BigInt(Math.round(this.reading() * 1e6))
  }

  readonly currentTimeMillis: Effect.Effect<number> = Effect.sync(() => this.unsafeCurrentTimeMillis())

  readonly currentTimeNanos: Effect.Effect<bigint> = Effect.sync(() => this.unsafeCurrentTimeNanos())

  /**
   * Runs `task` after `ms` of this machine's time (as `sleep` ends, skew included); the returned
   * function cancels it. What `util/Wakeup.ts` sets its timers with.
   */
  unsafeSchedule(task: () => void, ms: number): () => void {
    if (ms === Infinity) return () => {}
    const delay = this.rate === 1 ? ms : Math.round(ms / this.rate)
    const timer = this.time.at(this.time.now + delay, () => {
      this.onWake()
      task()
    })
    return () => {
      timer.cancelled = true
    }
  }

  sleep(duration: Duration.Duration): Effect.Effect<void> {
    const ms = Duration.toMillis(duration)
    // Not `Effect.never`: that keeps a real interval timer alive.
    if (ms === Infinity) return Effect.async<void>(() => {})
    // One-argument register: Effect allocates no AbortController for it.
    return Effect.async<void>((resume) => {
      const cancel = this.unsafeSchedule(() => resume(wake), ms)
      return Effect.sync(cancel)
    })
  }
}
