/**
 * The FENCING WATCHDOG: one small process per node, outside the daemon, that stops the node's VMs
 * once the node's lease (`NodeLease.ts`) has expired. It is the agent's fencing for the case the
 * agent cannot handle itself: its daemon was killed (kill -9), crashed, ran out of memory or hangs,
 * while the host and the VMs' runners live on (process mode leaves runners running across a daemon
 * restart so that the next daemon can adopt them; systemd mode's microvm@NAME units do not depend on
 * the daemon at all). Without it the cluster would mark the node down and start its VMs elsewhere
 * while they still run here.
 *
 * The process is `blixard node watchdog` (`node/WatchdogProcess.ts`), started by the daemon
 * (`node/HostFence.ts`) detached in its own process group so that it outlives the daemon; this
 * module is its loop, timed by the `Clock` (so `TestClock` drives it in tests):
 *
 * - DEADLINE: the lease's `validUntil`. Without a valid lease (no file, an unreadable or invalid
 *   one, another node's), the watchdog's own start plus `fencingMs`: the grace a daemon has to
 *   write one (the daemon writes it before it starts the watchdog, so this only matters for a
 *   watchdog started by hand, or a damaged file).
 * - Until the deadline it sleeps, waking just after it (or after `pollMs`) to re-read the lease: a
 *   daemon in contact with the quorum keeps pushing the deadline forward.
 * - DISK READS NEVER HOLD IT UP. The lease and the record live on the data directory's disk, the one
 *   whose stall the watchdog must outlive, and a read there may hang as long as the disk does. So the
 *   deadline is kept in memory (the lease as last read), every read runs off the JavaScript thread,
 *   shared with the read of the same file still under way (`vm/internal/diskReads.ts`: hung reads do
 *   not pile up), and is waited for only so long: before the deadline, until just after it; past it,
 *   `readWaitMs`. A lease read not answered by then is no renewal: the deadline read last stands, and
 *   the node is fenced on time. A record read not answered within `readWaitMs` leaves the watchdog
 *   in charge (and the record is not read before this watchdog's first write of it ended); its
 *   start-up read (`WatchdogProcess.ts`) is waited for a second at most. The backend reads the state directories the same way (`ProcessBackend`'s
 *   `readWait`), and finds the runners in /proc when they do not answer. A fence round re-reads the
 *   lease twice (see below), so on a disk that answers nothing its stops go out about
 *   2 × `readWaitMs` (plus the backend's own waits) after the deadline.
 * - Once it has passed: a FENCE ROUND, repeated at the next poll (`pollMs`) until a round finds
 *   nothing running (a stop that failed, a start that was under way while the round listed), then
 *   every `fencingMs` while the lease stays expired; the lease is re-read every `pollMs`. A renewed
 *   lease means a daemon is back in contact: its agent runs the VMs again.
 * - A fence round builds the node's own `VmBackend` layer and does what the agent's fencing does,
 *   through the same code: `list`, then `stop` (with `stopTimeoutMs`) of every runner still running,
 *   all at once: a stop may hang after its signal (its cleanup writes to the state directory, whose
 *   disk may be the stalled one) and must not hold up another VM's (`list` names only the VM
 *   directories this node marked as Blixard's: microvm.nix's own VMs on the host are never stopped).
 *   Process mode: the runners' pid files in their state directories, checked against /proc (boot
 *   id, start time, the runner's marker) so a reused pid is never signalled, and a runner no pid
 *   file names (its daemon hung or died before writing it) found in /proc by its VM marker and its
 *   working directory; a pid file whose removal hangs holds up no listing; `microvm-shutdown` when
 *   the runner has one, else SIGTERM, then SIGKILL after the timeout; its clean-up writes
 *   (claiming `booted`, removing the pid file) are waited for `readWaitMs` at most and hold at most
 *   two of libuv's threads (`diskReads.ts`'s clean-up lane). Systemd mode: the running `microvm@*`
 *   units as systemd lists them beside the state directory's markers (read as process mode reads,
 *   a unit whose marker does not answer judged as it was when last read under the unit's current
 *   invocation, else by its `Restart`, `SystemdBackend.ts`; to have read them before a disk stalls,
 *   the watchdog lists every `surveyMs` while the lease is valid, in the background, and keeps
 *   them in the runtime directory for a watchdog started after it, `vm/internal/unitVerdicts.ts`), then
 *   `systemctl stop microvm@NAME`. Each stop is logged as `BLX_FENCED`, naming the node, the VM,
 *   why, and what to do next.
 * - It ends when it is no longer the node's watchdog (its record, `${dataDir}/fencing/watchdog.json`,
 *   names another or is gone), or when there is nothing left to guard: the lease has expired, a
 *   round found no runner running, and the daemon that wrote the lease is gone. A daemon that
 *   starts later starts a watchdog again.
 *
 * A live daemon and the watchdog act together only around the deadline (the agent fences at the
 * same instant). Stopping twice is harmless (`stop` is idempotent; process mode's teardown runs
 * once). Starting is not: a daemon back in contact must not start a VM while a fence round is still
 * stopping runners. So both sides write first and read second: the watchdog publishes the phase
 * `fencing` in its record and only then re-reads the lease (and once more before the stops); the
 * agent renews the lease and only then reads the phase, and starts nothing while it is `fencing`.
 * Either the watchdog sees the renewed lease and stops nothing, or the agent sees the round and
 * waits for it. The watchdog waits for its write at most `publishWaitMs`, though: on a stalled disk
 * (the case it exists for) the write may never end, and it stops the VMs without it — the daemon
 * cannot renew the lease on that disk either, as the lease lives in the same directory. A start the agent began just before the deadline (it read `watching` before the
 * round was published) may still be under way while a round lists the runners: the agent's own
 * fencing, due at the same instant, waits for it under its start lock and stops it, and should the
 * daemon be gone, the watchdog's next round, one poll later, does.
 */
import { Chunk, Clock, Context, Deferred, Effect, Layer, Option, Queue, Schema } from "effect"
import { Fenced, formatError } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import { VmBackend } from "../vm/VmBackend.js"
import { readCmdline } from "../vm/internal/procfs.js"
import { isRunning, ProcessIdentity, readJsonFile } from "./internal/fencingFiles.js"
import type { LeaseError, NodeLease } from "./NodeLease.js"

/** `fencing` while a fence round runs, `watching` otherwise. */
export const Phase = Schema.Literal("watching", "fencing")
export type Phase = typeof Phase.Type

/** `${dataDir}/fencing/watchdog.json`: the node's running watchdog, written by the watchdog itself. */
export class WatchdogRecord extends Schema.Class<WatchdogRecord>("WatchdogRecord")({
  node: NodeId,
  process: ProcessIdentity,
  /** The script it runs (`process.argv[1]`): a daemon of another build replaces it. */
  program: Schema.String,
  startedAt: Schema.Int,
  phase: Phase,
  /** Since when it is in `phase` (epoch ms). */
  since: Schema.Int
}) {}

export const readRecord = (file: string, node: NodeId) =>
  readJsonFile(WatchdogRecord, file, {
    what: "the fencing watchdog's record",
    node,
    remedy: "it is taken as no watchdog running, and the daemon starts one"
  })

/**
 * The record names a running watchdog of the node whose (absolute) data directory is `dataDir`:
 * the process is alive with the recorded start time, and its command line is `… watchdog …
 * --data-dir DATADIR …`, so a pid reused by another program is never taken for it.
 */
export const isLive = (record: WatchdogRecord, dataDir: string): boolean => {
  if (!isRunning(record.process)) return false
  const argv = readCmdline(record.process.pid)
  const at = argv.indexOf("--data-dir")
  return argv.includes("watchdog") && ((at >= 0 && argv[at + 1] === dataDir) || argv.includes(`--data-dir=${dataDir}`))
}

export interface WatchdogOptions {
  readonly node: NodeId
  readonly fencingMs: number
  /** How long each VM gets to stop before SIGKILL (the agent's `fenceStopTimeoutMs`). */
  readonly stopTimeoutMs: number
  /** How often the lease is re-read at most (default `fencingMs / 4`, between 25 ms and 1 s). */
  readonly pollMs?: number | undefined
  /**
   * Reads the lease now (`NodeLease.read`); none, or an error, counts as no valid lease. It may never
   * answer (a stalled disk): the loop waits for it only until just after the deadline (`readWaitMs`
   * once past it), and must be able to ask again meanwhile without starting a second read.
   */
  readonly lease: Effect.Effect<Option.Option<NodeLease>, LeaseError>
  /** Whether this process is still the node's watchdog (its record names it); waited for `readWaitMs`. */
  readonly stillOwner: Effect.Effect<boolean>
  /**
   * Publishes the phase in the watchdog's record (first `watching`, as the loop starts). It writes to
   * the data directory, whose disk may be the very one that stalled: the loop never waits on it
   * longer than `publishWaitMs`, nor for the first at all.
   */
  readonly publish: (phase: Phase) => Effect.Effect<void>
  /**
   * How long a fence round waits for its `fencing` phase to be written before it stops the runners
   * anyway (default 100 ms, at most `pollMs`). On a healthy disk the write takes far less, so the
   * order of the header holds; on a stalled one the VMs are stopped regardless.
   */
  readonly publishWaitMs?: number | undefined
  /**
   * How long a read of the record, and past the deadline of the lease, is waited for (default 100 ms,
   * at most `pollMs`): unanswered, the lease is taken as not renewed, the record as still naming this
   * watchdog.
   */
  readonly readWaitMs?: number | undefined
  /** The node's runners: one instance is built for each fence round (and each survey). */
  readonly backend: Layer.Layer<VmBackend>
  /**
   * While the lease is valid, list the node's runners this often (none: never), with a backend
   * instance of its own, one listing at a time, never waited for: systemd mode keeps the verdicts of
   * the markers it reads then, by unit invocation, for when they stop answering (`SystemdBackend.ts`).
   */
  readonly surveyMs?: number | undefined
  /** Whether the daemon that wrote `lease` still runs. */
  readonly writerAlive: (lease: NodeLease) => boolean
}

/** Why the watchdog ended: another took its place, or nothing is left to guard. */
export type WatchdogEnd = "replaced" | "idle"

interface Reading {
  readonly lease: Option.Option<NodeLease>
  /** Why there is no valid lease, when there is none. */
  readonly problem: string | undefined
  /** The lease file is there but cannot be used (unreadable, invalid, another node's). */
  readonly damaged: boolean
  /** The read was not answered in time: this is the lease as read last. */
  readonly unanswered: boolean
}

interface RoundResult {
  /** The lease was renewed during the round: the rest was left to the daemon. */
  readonly aborted: boolean
  /** Listing failed, or a stop failed. */
  readonly incomplete: boolean
  /** How many running runners it found (and stopped, unless `incomplete`). */
  readonly found: number
}

const iso = (ms: number): string => new Date(ms).toISOString()

/** The watchdog's deadline: the lease's, or without a valid lease the grace from its own start. */
const deadlineOf = (lease: Option.Option<NodeLease>, startedAt: number, fencingMs: number): number =>
  Option.match(lease, { onNone: () => startedAt + fencingMs, onSome: (l) => l.validUntil })

/**
 * The record's writer: a fiber of its own, so that a write hung on a stalled disk holds up nothing
 * else. It writes the latest phase asked for (coalescing what queued meanwhile), the first
 * (`watching`) at once, not waited for. `setPhase` asks for a phase and answers an effect that waits
 * until it is written (never needed to proceed); `written` says whether a write has ended yet.
 */
const recordWriter = (publish: (phase: Phase) => Effect.Effect<void>) =>
  Effect.gen(function* () {
    const requests = yield* Queue.unbounded<{ readonly phase: Phase; readonly done: Deferred.Deferred<void> }>()
    let phase: Phase = "watching"
    let recorded: Phase | undefined
    yield* Queue.offer(requests, { phase, done: yield* Deferred.make<void>() })
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function* () {
          const batch = yield* Queue.takeBetween(requests, 1, Number.MAX_SAFE_INTEGER)
          const latest = Chunk.unsafeLast(batch).phase
          if (latest !== recorded) {
            yield* publish(latest)
            recorded = latest
          }
          for (const r of batch) yield* Deferred.succeed(r.done, undefined)
        })
      )
    )
    const setPhase = (next: Phase): Effect.Effect<Effect.Effect<void>> =>
      Effect.gen(function* () {
        if (next === phase) return Effect.void
        phase = next
        const done = yield* Deferred.make<void>()
        yield* Queue.offer(requests, { phase: next, done })
        return Deferred.await(done)
      })
    return { setPhase, written: () => recorded !== undefined }
  })

/** Runs the watchdog until it is replaced or idle. */
export const run = (options: WatchdogOptions): Effect.Effect<WatchdogEnd> =>
  Effect.gen(function* () {
    const node = options.node
    const pollMs = options.pollMs ?? Math.min(1000, Math.max(25, Math.floor(options.fencingMs / 4)))
    const startedAt = yield* Clock.currentTimeMillis
    let lastProblem: string | undefined

    const publishWaitMs = Math.min(pollMs, options.publishWaitMs ?? 100)
    const record = yield* recordWriter(options.publish)
    const setPhase = record.setPhase

    const readWaitMs = Math.min(pollMs, options.readWaitMs ?? 100)
    /** The lease as last read: what a read not answered in time leaves in force (no renewal). */
    let known: Reading = { lease: Option.none(), problem: undefined, damaged: false, unanswered: false }
    let unansweredSince: number | undefined

    /** The time a read may take: until just after the deadline, or `readWaitMs` once it has passed. */
    const waitFor = Effect.map(Clock.currentTimeMillis, (now) =>
      Math.max(readWaitMs, deadlineOf(known.lease, startedAt, options.fencingMs) + 1 - now)
    )

    const readLease: Effect.Effect<Reading> = Effect.gen(function* () {
      const waitMs = yield* waitFor
      const answer = yield* options.lease.pipe(
        Effect.map((lease): Reading => ({
          lease,
          problem: Option.isNone(lease) ? `node ${node} has no lease file` : undefined,
          damaged: false,
          unanswered: false
        })),
        Effect.catchAll((e) =>
          Effect.succeed<Reading>({ lease: Option.none(), problem: formatError(e), damaged: true, unanswered: false })
        ),
        Effect.timeoutOption(`${waitMs} millis`)
      )
      const now = yield* Clock.currentTimeMillis
      if (Option.isNone(answer)) {
        if (unansweredSince === undefined) {
          unansweredSince = now
          yield* Effect.logWarning(
            `node ${node}: the lease file was not read within ${waitMs} ms (is the data directory's disk stalled?); ` +
              `the lease as read last stands (${Option.match(known.lease, { onNone: () => "none", onSome: (l) => `valid until ${iso(l.validUntil)}` })}), and no renewal counts until a read answers`
          )
        }
        return { ...known, unanswered: true }
      }
      if (unansweredSince !== undefined) {
        yield* Effect.logInfo(`node ${node}: the lease file is read again (it was not answered for ${now - unansweredSince} ms)`)
        unansweredSince = undefined
      }
      known = answer.value
      if (known.problem !== lastProblem) {
        lastProblem = known.problem
        if (known.damaged) yield* Effect.logError(`node ${node}: ${known.problem}`)
      }
      return known
    })

    /**
     * Whether the record still names this watchdog; not answered within `readWaitMs`, it is taken to
     * (the watchdog stays in charge). Not asked before its first write ended: it cannot name it yet.
     */
    const stillOwner = Effect.suspend(() =>
      !record.written()
        ? Effect.succeed(true)
        : Effect.map(Effect.timeoutOption(options.stillOwner, `${readWaitMs} millis`), Option.getOrElse(() => true))
    )

    /** The lease is valid now: a daemon in contact with the quorum renewed it (and the read answered in time). */
    const renewed = Effect.gen(function* () {
      const reading = yield* readLease
      const now = yield* Clock.currentTimeMillis
      return now <= deadlineOf(reading.lease, startedAt, options.fencingMs)
    })

    /** Why the node is fenced, for the log: whose lease, since when, and what became of its daemon. */
    const why = (reading: Reading, now: number): string =>
      Option.match(reading.lease, {
        onNone: () =>
          `${reading.problem ?? `node ${node} has no valid lease`} ${now - startedAt} ms after the watchdog started (the grace is ${options.fencingMs} ms)`,
        onSome: (lease) => {
          const daemon = `its daemon (pid ${lease.writer.pid}) ${options.writerAlive(lease) ? "runs but cannot prove contact with the quorum (cut off, or hung)" : "is gone (killed, crashed or stopped)"}`
          const stale = reading.unanswered
            ? ` (its lease file has not answered a read since ${iso(unansweredSince ?? now)}: is the data directory's disk stalled?)`
            : ""
          return `node ${node}'s lease expired at ${iso(lease.validUntil)} (${now - lease.validUntil} ms ago)${stale}; ${daemon}`
        }
      })

    const fenceRound = (reading: Reading) =>
      Effect.gen(function* () {
        const published = yield* setPhase("fencing")
        // Published first, read second (see the header): a daemon renewing from now on waits. But
        // never waiting on a stalled disk: stopping the runners must not depend on it.
        if (Option.isNone(yield* Effect.timeoutOption(published, `${publishWaitMs} millis`))) {
          yield* Effect.logWarning(
            `node ${node}: FENCING — the watchdog's record (phase "fencing") was not written within ${publishWaitMs} ms (is the data directory's disk stalled?); stopping the VMs anyway`
          )
        }
        if (yield* renewed) return { aborted: true, incomplete: false, found: 0 } satisfies RoundResult
        const backend = Context.get(yield* Layer.build(options.backend), VmBackend)
        const listed = yield* Effect.either(backend.list)
        if (listed._tag === "Left") {
          yield* Effect.logError(`node ${node}: FENCING — listing the runners failed (${listed.left.message}); retrying in ${pollMs} ms`)
          return { aborted: false, incomplete: true, found: 0 } satisfies RoundResult
        }
        const running = listed.right.filter((r) => r.state._tag === "Running")
        if (running.length > 0 && (yield* renewed)) {
          yield* Effect.logInfo(`node ${node}: the lease was renewed (its daemon is back in contact); leaving the VMs to it`)
          return { aborted: true, incomplete: false, found: 0 } satisfies RoundResult
        }
        const cause = why(reading, yield* Clock.currentTimeMillis)
        // Every stop at once: a stop may hang after its signal (its cleanup writes to the VMs' state
        // directory, on a disk that may be the stalled one), and must not hold up the next VM's.
        const failures = yield* Effect.forEach(
          running,
          ({ name, state }) =>
            Effect.gen(function* () {
              const fenced = new Fenced({
                node,
                subject: name,
                message:
                  `VM "${name}" (pid ${state._tag === "Running" ? state.pid : "?"}) stopped by node ${node}'s fencing watchdog: ${cause}. ` +
                  `The cluster starts it on another node once it marks node ${node} down. To run VMs on node ${node} again, get its daemon ` +
                  `back in contact with the quorum (see its log, e.g. \`journalctl -u blixard\`; start it if it is not running): it renews the lease and runs what the cluster places here`
              })
              yield* Effect.logWarning(formatError(fenced))
              const stopped = yield* Effect.either(backend.stop(name, `${options.stopTimeoutMs} millis`))
              if (stopped._tag === "Right") return 0
              yield* Effect.logError(`node ${node}: FENCING — ${formatError(stopped.left)}; retrying in ${pollMs} ms`)
              return 1
            }),
          { concurrency: "unbounded" }
        )
        const incomplete = failures.some((f) => f > 0)
        const found = running.length
        return { aborted: false, incomplete, found } satisfies RoundResult
      }).pipe(Effect.scoped, Effect.ensuring(setPhase("watching")))

    yield* Effect.logInfo(
      `node ${node}: fencing watchdog watching the lease (fencing after ${options.fencingMs} ms without quorum contact; without a lease file, ${options.fencingMs} ms after this start)`
    )
    /** When the last fence round ran (undefined: none since the lease was last valid, or retry at once). */
    let lastRound: number | undefined
    /** When the last survey began, and whether one is under way. */
    let lastSurvey: number | undefined
    let surveying = false
    const survey = Effect.scoped(Effect.flatMap(Layer.build(options.backend), (built) => Context.get(built, VmBackend).list)).pipe(
      Effect.ignore,
      Effect.ensuring(Effect.sync(() => (surveying = false)))
    )
    for (;;) {
      const [owner, reading] = yield* Effect.all([stillOwner, readLease], { concurrency: 2 })
      if (!owner) return "replaced"
      const now = yield* Clock.currentTimeMillis
      const deadline = deadlineOf(reading.lease, startedAt, options.fencingMs)
      if (now <= deadline) {
        lastRound = undefined
        if (options.surveyMs !== undefined && !surveying && (lastSurvey === undefined || now - lastSurvey >= options.surveyMs)) {
          surveying = true
          lastSurvey = now
          yield* Effect.forkScoped(survey)
        }
        yield* Effect.sleep(`${Math.max(1, Math.min(pollMs, deadline - now + 1))} millis`)
        continue
      }
      if (lastRound === undefined || now - lastRound >= options.fencingMs) {
        const result = yield* fenceRound(reading)
        // Until a round finds nothing running, the next one comes at the next poll (a start that
        // was under way when this round listed, a stop that failed); then every fencingMs.
        const clean = !result.aborted && !result.incomplete && result.found === 0
        lastRound = clean ? now : undefined
        const daemonAlive = Option.match(reading.lease, { onNone: () => false, onSome: options.writerAlive })
        if (clean && !daemonAlive) {
          yield* Effect.logInfo(
            `node ${node}: the lease has expired, no VM runs and no daemon holds the lease: the fencing watchdog exits (a daemon started on this data directory starts another)`
          )
          return "idle"
        }
      }
      yield* Effect.sleep(`${pollMs} millis`)
    }
  }).pipe(Effect.scoped, Effect.annotateLogs("node", options.node))
