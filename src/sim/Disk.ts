/**
 * The simulated disks of the full-service tier, and the storage fault profile.
 *
 * Each node's `RaftStorage` is `layerMemory` over its `MemoryStore` and a `SimDisk`: a write
 * commits at once and becomes durable when its flush completes (the file layer's
 * `Durability.sync`), which takes `flushMs` — and longer while the disk is slow, never while it is
 * stalled (a hung volume: the process and its network stay alive), or fails with `StorageIo` (an
 * `fdatasync` returning EIO). A crash loses what was not flushed (`MemoryStore.crash`).
 *
 * The faults come from the seed, at times drawn up front; whom they hit is decided when they fire
 * (the leader of the moment, `leaderShare` of the time, since a stalled leader is the case that
 * matters most), so the same seed hits the same nodes.
 */
import { Effect } from "effect"
import { StorageIo } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import type { StorageError } from "../storage/Database.js"
import type { MemoryDisk } from "../storage/RaftStorage.js"
import type { Prng } from "./Prng.js"
import type { Timer, VirtualTime } from "./VirtualClock.js"

export type Range = readonly [number, number]

/** One kind of storage fault and how often it comes, relative to the others (`weight`). */
export type StorageFaultKind =
  /** Flushes do not complete for `ms`; then every waiting flush completes. */
  | { readonly kind: "stall"; readonly weight: number; readonly ms: Range }
  /** The next flush fails (EIO): the node must stop. */
  | { readonly kind: "fail"; readonly weight: number }
  /** For `ms`, every flush takes `flushMs`. */
  | { readonly kind: "slow"; readonly weight: number; readonly ms: Range; readonly flushMs: Range }

export interface StorageFaultOptions {
  /** How long a flush takes on a healthy disk, ms. */
  readonly flushMs: Range
  /** Mean gap between storage faults, ms (exponential gaps). */
  readonly meanGapMs: number
  /** Share of the faults that hit the node leading at that moment (else a running node at random). */
  readonly leaderShare: number
  readonly kinds: ReadonlyArray<StorageFaultKind>
  /**
   * Share of machine crashes that keep a prefix of the unflushed writes (the rest of them lose
   * every unflushed write): what the kernel had written back of the WAL before the power went.
   */
  readonly keepPrefixShare: number
}

/**
 * The `storage` profile's disks: flushes of a few ms; about every 6 s a fault, most often on the
 * leader — a stall shorter than the orchestration layer's `nodeDownMs` (6 s) or one long enough
 * for the cluster to elect a new leader, mark the stalled node down and move its VMs (an election,
 * `nodeDownMs`, an agent's round and a boot: 9 s and more), a failed flush, or a spell of slow
 * flushes. A stall runs its course even into the liveness phase (the run's liveness bound is
 * longer than the longest stall).
 */
export const storageFaults: StorageFaultOptions = {
  flushMs: [1, 8],
  meanGapMs: 6000,
  leaderShare: 0.8,
  kinds: [
    { kind: "stall", weight: 2, ms: [300, 5000] },
    { kind: "stall", weight: 4, ms: [9000, 20_000] },
    { kind: "fail", weight: 1 },
    { kind: "slow", weight: 1, ms: [2000, 8000], flushMs: [50, 400] }
  ],
  keepPrefixShare: 0.5
}

const draw = (prng: Prng, [lo, hi]: Range) => lo + prng.int(hi - lo + 1)

/** One node's disk. */
export class SimDisk {
  private stalledUntil = 0
  private stallTimer: Timer | undefined = undefined
  private slowUntil = 0
  private slowFlushMs: Range = [0, 0]
  private failNext = false
  /** Flushes waiting for a stall to end. */
  private waiting: Array<() => void> = []
  flushes = 0

  constructor(
    private readonly node: number,
    private readonly time: VirtualTime,
    private readonly prng: Prng,
    private readonly options: StorageFaultOptions,
    /** The node's fibers are about to run again (a flush completed). */
    private readonly wake: () => void
  ) {}

  get stalled(): boolean {
    return this.time.now < this.stalledUntil
  }

  /** Stalled or slow now, or about to fail a flush. */
  get faulty(): boolean {
    return this.stalled || this.time.now < this.slowUntil || this.failNext
  }

  private latency(): number {
    return draw(this.prng, this.time.now < this.slowUntil ? this.slowFlushMs : this.options.flushMs)
  }

  readonly flush: Effect.Effect<void, StorageError> = Effect.async<void, StorageError>((resume) => {
    this.flushes++
    let timer: Timer | undefined
    const complete = () => {
      timer = this.time.at(this.time.now + this.latency(), () => {
        this.wake()
        if (this.failNext) {
          this.failNext = false
          resume(
            Effect.fail(
              new StorageIo({
                node: NodeId.make(this.node),
                subject: `node ${this.node}'s data directory`,
                message: `cannot flush node ${this.node}'s write-ahead log to disk: EIO (simulated); the write may be lost on power failure — check the disk and the data directory`
              })
            )
          )
        } else resume(Effect.void)
      })
    }
    if (this.stalled) this.waiting.push(complete)
    else complete()
    return Effect.sync(() => {
      if (timer !== undefined) timer.cancelled = true
    })
  })

  /** The disk stops completing flushes for `ms` (longer if it already was stalled longer). */
  stall(ms: number): void {
    const until = this.time.now + ms
    if (until <= this.stalledUntil) return
    this.stalledUntil = until
    if (this.stallTimer !== undefined) this.stallTimer.cancelled = true
    this.stallTimer = this.time.at(until, () => this.release())
  }

  slow(ms: number, flushMs: Range): void {
    this.slowUntil = this.time.now + ms
    this.slowFlushMs = flushMs
  }

  failNextFlush(): void {
    this.failNext = true
  }

  /** No more failures or slow flushes; a stall runs its course. */
  heal(): void {
    this.failNext = false
    this.slowUntil = 0
  }

  private release(): void {
    this.stallTimer = undefined
    this.stalledUntil = 0
    const waiting = this.waiting
    this.waiting = []
    for (const complete of waiting) complete()
  }

  /** The disk as a `RaftStorage.layerMemory` flushes through it. */
  get memoryDisk(): MemoryDisk {
    return { flush: this.flush }
  }
}

export interface ScheduledStorageFault {
  readonly at: number
  readonly fault: StorageFaultKind
  /** Drawn up front: the fault's duration, and whether it goes to the leader. */
  readonly ms: number
  readonly toLeader: boolean
  /** Picks the node when it is not the leader (an index into the running nodes). */
  readonly pick: number
}

/** The storage faults of a run's safety phase. */
export const storageFaultSchedule = (prng: Prng, options: StorageFaultOptions, durationMs: number): Array<ScheduledStorageFault> => {
  const out: Array<ScheduledStorageFault> = []
  const total = options.kinds.reduce((sum, k) => sum + k.weight, 0)
  if (total <= 0) return out
  let at = 0
  for (;;) {
    at += Math.max(1, Math.round(-Math.log(1 - prng.float()) * options.meanGapMs))
    if (at >= durationMs) return out
    let roll = prng.float() * total
    let fault = options.kinds[0]!
    for (const k of options.kinds) {
      fault = k
      roll -= k.weight
      if (roll < 0) break
    }
    const ms = fault.kind === "fail" ? 0 : draw(prng, fault.ms)
    out.push({ at, fault, ms, toLeader: prng.chance(options.leaderShare), pick: prng.int(1 << 30) })
  }
}

/** Applies a fault to a disk. */
export const applyStorageFault = (disk: SimDisk, f: ScheduledStorageFault): void => {
  switch (f.fault.kind) {
    case "stall":
      return disk.stall(f.ms)
    case "fail":
      return disk.failNextFlush()
    case "slow":
      return disk.slow(f.ms, f.fault.flushMs)
  }
}
