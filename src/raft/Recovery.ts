/**
 * A Raft node's start from its storage, and the report of where a restart's time goes.
 *
 * `recover` (for `RaftNode.make`): a NEW cluster's founding snapshot when the storage is empty and
 * `bootstrap` names the voters; then the in-memory mirror of the stored snapshot, entries and hard
 * state the core reads, the local snapshot policy, and the state machine restored from the snapshot
 * when it is behind it. It answers the applied index the core starts from, and a `StartupReport`.
 * The stored snapshot and the log are each read (and verified) once: `RaftStorage.initialState`
 * reads neither, and the mirror spills the log's committed entries beyond its tail as they are read.
 *
 * `StartupReport` logs, at info level, the parts of a restart up to the first linearizable read this
 * node serves, each once: what recovery read from storage and how long each part took (the stored
 * snapshot: size, read and restored; the log: entries, read), when the committed entries of its own
 * log were applied again, a snapshot installed from the leader (size, time), and the first read
 * answered with what came from the leader until then (entries and their bytes). The loop calls it
 * with what it does anyway; it runs an effect only to write one of those lines.
 */
import { Effect } from "effect"
import type { RaftStorageShape } from "../storage/RaftStorage.js"
import { LocalSnapshots } from "./LocalSnapshots.js"
import { MemoryStorage } from "./MemoryStorage.js"
import type { StateMachineShape } from "./StateMachine.js"
import type { Entry, Snapshot } from "./Types.js"

export interface RecoverConfig {
  readonly id: number
  readonly bootstrap?: ReadonlyArray<number> | undefined
  readonly snapshotEvery?: number | undefined
  readonly snapshotRatio?: number | undefined
  readonly snapshotRetain?: number | undefined
}

const mb = (chars: number) => (chars / 1e6).toFixed(1)
const ms = (from: number, to: number = performance.now()) => Math.round(to - from)

/** What a node's start found in its storage, and how long reading it took (milliseconds). */
export interface Recovered {
  /** Opening the storage: the hard state, the snapshot's metadata and the log's bounds (`RaftStorage.initialState`). */
  readonly openMs: number
  readonly snapshotIndex: number
  readonly snapshotChars: number
  readonly snapshotReadMs: number
  readonly restoreMs: number
  readonly logFirst: number
  readonly logLast: number
  readonly logReadMs: number
  /** The stored commit index: the entries after `applied` up to it are applied again from the log. */
  readonly commit: number
  readonly applied: number
  readonly totalMs: number
}

/**
 * The parts of a start up to the first linearizable read, each logged once (see the module's
 * comment). Timed with `performance.now()`: the wall time of this process, whatever clock drives
 * the node (the lines are diagnostics; nothing depends on them).
 */
export class StartupReport {
  private replayed = false
  private firstRead = false
  private fromLeader = { entries: 0, chars: 0, snapshots: 0 }
  private readonly pending: Array<string> = []

  constructor(
    private readonly id: number,
    readonly recovered: Recovered,
    /** When recovery began (`performance.now()`): the Raft node's start. */
    private readonly started: number
  ) {
    this.replayed = recovered.commit <= recovered.applied
  }

  /** What recovery found and how long it took (written at once, before the loop starts). */
  get recoveredLine(): string {
    const r = this.recovered
    const id = this.id
    return (
      `node ${id} recovered its Raft state in ${r.totalMs} ms: storage opened in ${r.openMs} ms, ` +
        (r.snapshotIndex > 0 ? `snapshot at index ${r.snapshotIndex} (${mb(r.snapshotChars)} MB, read in ${r.snapshotReadMs} ms, state restored in ${r.restoreMs} ms)` : "no snapshot") +
        `, log ${r.logLast >= r.logFirst ? `[${r.logFirst}, ${r.logLast}] (${r.logLast - r.logFirst + 1} entries, read and verified in ${r.logReadMs} ms)` : "empty"}` +
        `; ${Math.max(0, r.commit - r.applied)} committed entries to apply again (to index ${r.commit})`
    )
  }

  /** Entries the leader sent were appended (after recovery: the catch-up). */
  appended(entries: ReadonlyArray<Entry>): void {
    if (this.firstRead) return
    this.fromLeader.entries += entries.length
    for (const e of entries) this.fromLeader.chars += e.data.length
  }

  /** A snapshot from the leader was installed: its save and restore took `tookMs`. */
  installed(snapshot: Snapshot, tookMs: number): void {
    this.fromLeader.snapshots++
    this.pending.push(
      `node ${this.id} installed a snapshot from the leader at index ${snapshot.metadata.index} (${mb(snapshot.data.length)} MB) in ${tookMs} ms, ${ms(this.started)} ms after its Raft node started`
    )
  }

  /** The state machine applied up to `index`. */
  applied(index: number): void {
    if (this.replayed || index < this.recovered.commit) return
    this.replayed = true
    this.pending.push(
      `node ${this.id} applied the ${this.recovered.commit - this.recovered.applied} committed entries of its own log again, ${ms(this.started)} ms after its Raft node started`
    )
  }

  /** A linearizable read was answered here. */
  readAnswered(): void {
    if (this.firstRead) return
    this.firstRead = true
    const f = this.fromLeader
    this.pending.push(
      `node ${this.id} answered its first linearizable read ${ms(this.started)} ms after its Raft node started; from the leader until then: ${f.entries} entries (${mb(f.chars)} MB), ${f.snapshots} snapshot${f.snapshots === 1 ? "" : "s"}`
    )
  }

  /** Whether lines are due: `flush` writes them (the loop runs it only then, so its operations stay the same otherwise). */
  get due(): boolean {
    return this.pending.length > 0
  }

  /** Writes the lines due. */
  readonly flush: Effect.Effect<void> = Effect.suspend(() =>
    Effect.forEach(this.pending.splice(0), (line) => Effect.logInfo(line), { discard: true })
  )
}

/**
 * Recovers (or founds) the node's durable state; see the module's comment.
 * (A generator `RaftNode.make` delegates to with `yield*`: its effects run as if written there.)
 */
export function* recover(config: RecoverConfig, storage: RaftStorageShape, sm: StateMachineShape) {
  const began = performance.now()
  let init = yield* storage.initialState
  const openedAt = performance.now()
  if (init.hardState.term === 0 && init.lastIndex === 0 && init.snapshot._tag === "None" && config.bootstrap !== undefined) {
    const bootstrap: Snapshot = {
      metadata: { index: 1, term: 1, confState: { voters: [...config.bootstrap].sort((a, b) => a - b), learners: [] } },
      data: yield* sm.snapshot
    }
    yield* storage.save({ snapshot: bootstrap, hardState: { term: 1, vote: 0, commit: 1 } })
    init = yield* storage.initialState
  }
  const mirror = MemoryStorage.mirror()
  const snapshots = new LocalSnapshots({
    storage,
    mirror,
    sm,
    every: config.snapshotEvery ?? 10_000,
    ratio: config.snapshotRatio ?? 4,
    retain: config.snapshotRetain ?? 1_000
  })
  const snapshotAt = performance.now()
  const stored = yield* storage.snapshot
  const logAt = performance.now()
  if (stored._tag === "Some") {
    mirror.applySnapshot(stored.value)
    snapshots.snapshotted(stored.value)
  }
  // The hard state first: with its commit index known, the mirror spills the committed entries
  // beyond its tail as they come (it never holds the whole log), read and verified once.
  mirror.setHardState(init.hardState)
  yield* storage.verifiedLog((entries) => mirror.append(entries))
  const restoreAt = performance.now()
  let applied = yield* sm.applied
  if (stored._tag === "Some" && stored.value.metadata.index > applied) {
    yield* sm.restore(stored.value)
    applied = stored.value.metadata.index
  }
  const end = performance.now()
  const report = new StartupReport(config.id, {
    openMs: ms(began, openedAt),
    snapshotIndex: stored._tag === "Some" ? stored.value.metadata.index : 0,
    snapshotChars: stored._tag === "Some" ? stored.value.data.length : 0,
    snapshotReadMs: ms(snapshotAt, logAt),
    restoreMs: ms(restoreAt, end),
    logFirst: init.firstIndex,
    logLast: init.lastIndex,
    logReadMs: ms(logAt, restoreAt),
    commit: init.hardState.commit,
    applied,
    totalMs: ms(began, end)
  }, began)
  yield* Effect.logInfo(report.recoveredLine)
  return { mirror, snapshots, applied, report }
}
