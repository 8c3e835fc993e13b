/**
 * `RaftNode`'s clock: ticks handed to the core lazily, and the ticker fiber.
 *
 * The loop gives the core every tick elapsed since the last one (by the clock) before it steps
 * anything (`catchUp`), and the ticker wakes the loop only when a tick would act
 * (`RawNode.ticksUntilAction`: a leader's heartbeat, a follower's election timeout), a request's
 * deadline passes, or, while a storage write is outstanding, every tick (stall reports). So the
 * core's counters are exactly what ticking every `tickMs` would make them whenever it is looked at,
 * while a quiet follower's ticker sleeps through the ticks its leader's heartbeats make moot, and a
 * leader's wakes once per heartbeat (fewer wake-ups of a quiet node: bench/RESULTS.md).
 *
 * Deadlines are checked by the ticker, not the loop, so requests time out even while the loop is
 * stuck (say, in a save the disk does not finish). The ticker sleeps no later than the earliest
 * deadline `expire` finds (in the loop's mailbox and in the request holders), and is woken for an
 * earlier one (`deadlineAt`) twice: by the request's caller as it is made (it waits in the mailbox
 * if the loop is busy), and by the loop once it has taken the request into a holder — in between,
 * in the batch the loop is about to handle, `expire` sees it nowhere, and the caller's wake-up
 * often runs the ticker just then. A node whose ticks never act (a learner, a node outside the
 * configuration) would otherwise sleep on for good, its request unanswered past its deadline.
 */
import { Clock, Effect } from "effect"
import { Wakeup } from "../util/Wakeup.js"
import type { RawNode } from "./RawNode.js"

/**
 * Milliseconds of the `Clock`'s monotonic time (`currentTimeNanos`): ticks are counted on it, so a
 * wall clock set back or forward (NTP) neither stops nor rushes them — as a sleep does not.
 */
export const monotonicMillis = Effect.map(Clock.currentTimeNanos, (nanos) => Number(nanos / 1000n) / 1000)

/** What the ticker does besides ticking. */
export interface TickerDuties {
  /** Fails the requests whose deadline passed by `now` (Clock milliseconds); answers the earliest deadline left (Infinity: none). */
  readonly expire: (now: number) => number
  /** Logs storage writes outstanding too long (`StorageFlushes.report`). */
  readonly reportStalls: (now: number) => Effect.Effect<void>
  /** When the oldest storage write still outstanding started; undefined if none. */
  readonly flushingSince: () => number | undefined
  /** The peers the transport cannot reach now, handed to the core with a tick. */
  readonly unreachable: Effect.Effect<ReadonlyArray<number>>
  /** Hands the loop a tick. */
  readonly tick: (unreachable: ReadonlyArray<number>) => void
}

export class Ticks {
  /**
   * When a tick next acts (the loop's plan after each batch): in ticks after `tickedAt`, and as a
   * time. Whether it is due is asked in ticks, as `catchUp` counts them: the time, a sum of
   * fractional milliseconds, may be reached while `catchUp` still counts one tick fewer (rounding),
   * and a tick handed over then acts on nothing, the loop plans the same time and the ticker hands
   * it over again, without end while the clock stands still.
   */
  private ticksToAct = 1
  private actsAt: number
  /** When the ticker wakes by itself (monotonic, and by the wall clock of the deadlines). */
  private tickerWakesAt: number
  private tickerWakesAtWall = Number.POSITIVE_INFINITY
  /** The ticker handed a Tick over and waits for the loop to take it (the loop nudges it then). */
  private tickHandedOver = false
  /** Wakes the ticker before its sleep ends (a wait with a deadline, no fiber race: `util/Wakeup.ts`). */
  private readonly nudges = new Wakeup()

  constructor(
    private readonly raw: RawNode,
    private readonly tickMs: number,
    /** The time of the last tick given to the core: monotonic (`monotonicMillis`), as a sleep is. */
    private tickedAt: number
  ) {
    this.actsAt = tickedAt + tickMs
    this.tickerWakesAt = this.actsAt
  }

  /** Ticks elapsed by `now` since the last one given to the core. */
  private elapsed(now: number): number {
    return Math.floor((now - this.tickedAt) / this.tickMs)
  }

  /** Gives the core every tick elapsed by `now`: before it steps anything, so its counters are current. */
  catchUp(now: number): void {
    const ticks = this.elapsed(now)
    for (let i = 0; i < ticks; i++) this.raw.tick()
    this.tickedAt += ticks * this.tickMs
  }

  /** The loop's plan after each batch: when a tick next acts; the ticker is woken if it would sleep past it, or waits for the loop. */
  plan(): void {
    this.ticksToAct = this.raw.ticksUntilAction()
    this.actsAt = this.tickedAt + this.ticksToAct * this.tickMs
    if (this.tickHandedOver || this.actsAt < this.tickerWakesAt) {
      this.tickHandedOver = false
      this.nudges.signal()
    }
  }

  /** A request's deadline (Clock milliseconds), as it is made and once the loop took it: a ticker asleep past it wakes for it. */
  deadlineAt(deadline: number): void {
    if (deadline < this.tickerWakesAtWall) this.nudges.signal()
  }

  /** The ticker fiber: expires requests, reports stalled writes, hands the loop a tick when one acts. */
  ticker(duties: TickerDuties): Effect.Effect<never> {
    return Effect.gen(this, function* () {
      for (;;) {
        const now = yield* Clock.currentTimeMillis
        const earliestDeadline = duties.expire(now)
        yield* duties.reportStalls(now)
        const monotonic = yield* monotonicMillis
        let sleep = this.actsAt - monotonic
        if (this.elapsed(monotonic) >= this.ticksToAct) {
          this.tickHandedOver = true
          duties.tick(yield* duties.unreachable)
          // The loop nudges once it has taken the tick and planned the next; a loop stuck in a save
          // is looked at every tick meanwhile, as before.
          sleep = this.tickMs
        }
        if (duties.flushingSince() !== undefined) sleep = Math.min(sleep, this.tickMs)
        sleep = Math.max(1, Math.min(sleep, earliestDeadline - now))
        this.tickerWakesAt = monotonic + sleep
        this.tickerWakesAtWall = now + sleep
        yield* this.nudges.wait(sleep)
      }
    })
  }
}
