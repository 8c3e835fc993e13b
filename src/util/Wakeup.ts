/**
 * A wake-up signal one fiber waits on for at most so long: "run again when something changed, or
 * after `ms` anyway" — the shape of every periodic loop that can also be nudged (the agent's
 * reconcile and report rounds, the Raft ticker).
 *
 * Why not `Queue.take(q).pipe(Effect.timeout(ms))`: a timeout races two fibers (the take and a
 * sleep), interrupts the loser and builds its cause, about 120 µs of CPU a wait more than a plain
 * sleep on this project's benchmark machine (`bench/RESULTS.md`, "a quiet node's timers"); a quiet
 * node waits that way a few dozen times a second. Here a wait is one `Effect.async`: a timer and a
 * callback, no fiber.
 *
 * The timer comes from the fiber's `Clock`, so the simulator's virtual time drives it as it drives
 * `Effect.sleep`: a clock with an `unsafeSchedule(task, ms)` method (the simulator's `VirtualClock`,
 * Effect's default clock through its scheduler) sets it directly; any other clock (Effect's
 * `TestClock`) falls back to racing its `sleep`, as before.
 *
 * A signal given while nobody waits is kept (one, as a sliding queue of one): the next wait returns
 * at once.
 */
import { Clock, Duration, Effect } from "effect"

/** Sets `task` to run after `ms`; the returned function cancels it. */
type Schedule = (task: () => void, ms: number) => () => void

/** Longest delay a JavaScript timer takes; longer waits are as good as forever. */
const MaxTimerMs = 2 ** 31 - 1

/**
 * A JavaScript timer counts its delay from the event loop's cached time, which lags the clock by
 * what the current turn has run (and Linux's coarse clock, a few ms): it can fire before `ms` have
 * passed on the clock the waiter reads. The waiter (the Raft ticker) then found its tick a fraction
 * of a millisecond short and slept 1 ms more — a second wake-up of its loop for one tick, several a
 * second on a quiet leader. So a timer that fires early is set again for the rest, here, before the
 * task runs.
 */
const realTimers: Schedule = (task, ms) => {
  if (ms > MaxTimerMs) return () => {}
  const due = performance.now() + ms
  const fire = () => {
    const left = due - performance.now()
    if (left > 0) handle = setTimeout(fire, Math.ceil(left))
    else task()
  }
  let handle = setTimeout(fire, Math.max(0, ms))
  return () => clearTimeout(handle)
}

/** Effect's default clock (`Clock.make()`): its sleeps are real `setTimeout`s. */
const DefaultClock = Clock.make().constructor

const scheduleOf = (clock: Clock.Clock): Schedule | undefined => {
  const own = (clock as { readonly unsafeSchedule?: Schedule }).unsafeSchedule
  if (typeof own === "function") return own.bind(clock)
  return clock.constructor === DefaultClock ? realTimers : undefined
}

export class Wakeup {
  private pending = false
  private waiter: (() => void) | undefined = undefined

  /** Wakes the waiting fiber, or the next one to wait. */
  signal(): void {
    const wake = this.waiter
    if (wake === undefined) this.pending = true
    else wake()
  }

  /** Until signalled (`true`) or `ms` have passed (`false`). A signal kept from before ends it at once. */
  wait(ms: number): Effect.Effect<boolean> {
    return Effect.clockWith((clock) => {
      const schedule = scheduleOf(clock)
      if (schedule === undefined) return this.raced(clock, ms)
      return Effect.async<boolean>((resume) => {
        // Taken here, where the waiter is set, so no signal falls in between.
        if (this.takePending()) return resume(Effect.succeed(true))
        let done = false
        let cancel = () => {}
        const finish = (signalled: boolean) => {
          if (done) return
          done = true
          this.waiter = undefined
          cancel()
          resume(Effect.succeed(signalled))
        }
        cancel = schedule(() => finish(false), ms)
        this.waiter = () => finish(true)
        return Effect.sync(() => {
          done = true
          cancel()
          this.waiter = undefined
        })
      })
    })
  }

  private takePending(): boolean {
    const pending = this.pending
    this.pending = false
    return pending
  }

  /** The fallback for a clock without timers of its own: its `sleep` raced against the signal. */
  private raced(clock: Clock.Clock, ms: number): Effect.Effect<boolean> {
    const signalled = Effect.async<boolean>((resume) => {
      if (this.takePending()) return resume(Effect.succeed(true))
      this.waiter = () => {
        this.waiter = undefined
        resume(Effect.succeed(true))
      }
      return Effect.sync(() => {
        this.waiter = undefined
      })
    })
    return Effect.raceFirst(signalled, Effect.as(clock.sleep(Duration.millis(ms)), false))
  }
}
