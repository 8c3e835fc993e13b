/**
 * The daemon's side of the fence outside the daemon (`agent/Watchdog.ts` explains why it exists):
 * it keeps the node's lease (`agent/NodeLease.ts`) and makes sure the node's watchdog process runs.
 * It is the agent's `hostFence`.
 *
 * - Start-up: it takes the lease over — rewrites it with this daemon as its writer and the same
 *   `validUntil`: a restart never extends the deadline its predecessor earned. Without a valid lease
 *   (a new node, a damaged file) the deadline is fencingMs from now: the grace the agent gives
 *   itself at start-up, and the watchdog to a missing lease. A lease file it cannot write stops the
 *   daemon: it could not run VMs safely.
 * - `renew(validUntil)`, from the agent at each quorum contact: writes the lease when the deadline
 *   moves forward by at least `renewStepMs` (default fencingMs / 10). Contact is measured at every
 *   replicated entry under load, and a write per entry (mkdir, write, rename on libuv's threads)
 *   cost a follower ~0.4 ms of CPU per write (`bench/RESULTS.md`). The lease written thus lags the
 *   agent's deadline by less than a step: the watchdog may fence up to a step earlier than the
 *   agent, never later. If the write fails, it says so and `startBlocked` keeps runners from
 *   starting (the watchdog would stop them at the old deadline). The agent calls it from a fiber of
 *   its own, one call at a time, and its fencing never waits for it (a write on a stalled disk may
 *   hang).
 * - Now and every `checkMs` (default fencingMs / 4, at most 1 s), it makes sure a watchdog runs: the
 *   one the node's record names, if it is live, is reused (a daemon restarted while its watchdog ran
 *   does not start a second); else it starts `blixard node watchdog` with this daemon's settings,
 *   detached in its own process group and session, so that signals to the daemon's group and the
 *   daemon's death leave it running, with its output appended to `${dataDir}/fencing/watchdog.log`.
 *   A watchdog of another build (after an upgrade) is stopped and replaced, so the lease's writer
 *   and reader always agree on its format.
 * - `startBlocked`: no runner starts while no watchdog runs, or while one is in a fence round, or
 *   once the lease written has run out (the agent's contact may still be a step younger: the
 *   watchdog's round may be due, and the agent, which renews before it reads this, starts nothing
 *   the watchdog has not been told to spare).
 *
 * Shutting the daemon down leaves the watchdog and the lease as they are: the runners keep running
 * for the next daemon to adopt, guarded by the watchdog until then.
 */
import type { Scope } from "effect"
import { Clock, Effect, Option, Schedule } from "effect"
import * as childProcess from "node:child_process"
import * as fs from "node:fs"
import type { HostFence } from "../agent/Agent.js"
import { fencingPaths, isRunning, type ProcessIdentity, selfIdentity } from "../agent/internal/fencingFiles.js"
import * as NodeLease from "../agent/NodeLease.js"
import * as Watchdog from "../agent/Watchdog.js"
import { formatError, StorageIo } from "../domain/Errors.js"
import { readStat } from "../vm/internal/procfs.js"
import type { WatchdogConfig } from "./Config.js"
import { thisProgram } from "./WatchdogProcess.js"

/**
 * V8 settings for the watchdog, a process that sleeps, reads one small file and now and then signals
 * a few processes: a young generation of 1 MiB instead of up to 16, and no optimising compilers. Its
 * resident memory drops from about 73 to 63 MB (`bench/RESULTS.md`); its work is too small for
 * either to cost time. (`--lite-mode` saves 2 MB more but makes Node.js 20 print a warning;
 * `--optimize-for-size` saves ~4 MB for ~1.5 ms/s more idle CPU.)
 */
const WatchdogNodeFlags = ["--max-semi-space-size=1", "--no-opt", "--no-sparkplug"]

/**
 * glibc's malloc hands blocks of 32 KiB and more back to the kernel when they are freed. Node.js 24
 * parsing the watchdog's code without a compile cache (the unit's PrivateTmp starts with none)
 * leaves ~18 MB of such freed blocks resident for the process's life otherwise (88 -> 70 MB).
 */
const WatchdogEnv = { MALLOC_MMAP_THRESHOLD_: "32768" }

export interface HostFenceOptions {
  /** The watchdog's settings: this daemon's (absolute paths). */
  readonly config: WatchdogConfig
  /** How often the watchdog is checked (default fencingMs / 4, between 25 ms and 1 s). */
  readonly checkMs?: number | undefined
  /** How far the deadline must move before the lease is written again (default fencingMs / 10). */
  readonly renewStepMs?: number | undefined
  /**
   * How to run `blixard`: `executable program …` (default: this process's Node.js and script, the
   * `blixard` of this build). A running watchdog whose record names another program is replaced.
   */
  readonly command?: { readonly executable: string; readonly program: string } | undefined
}

/** `node watchdog …` for these settings (the flags of `blixard node watchdog`). */
export const watchdogArgs = (config: WatchdogConfig): ReadonlyArray<string> => [
  "node",
  "watchdog",
  "--id",
  String(config.id),
  "--data-dir",
  config.dataDir,
  "--vm-backend",
  config.vmBackend,
  "--microvm-state-dir",
  config.microvmStateDir,
  "--fencing-ms",
  String(config.fencingMs),
  "--stop-timeout-ms",
  String(config.stopTimeoutMs)
]

/** A watchdog this daemon started: who it is, and how it ended if it did. */
interface Spawned {
  readonly identity: ProcessIdentity
  exit: string | undefined
}

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e))

export const make = (options: HostFenceOptions): Effect.Effect<HostFence, StorageIo, Scope.Scope> =>
  Effect.gen(function* () {
    const { config } = options
    const node = config.id
    const files = fencingPaths(config.dataDir)
    const command = options.command ?? { executable: process.execPath, program: thisProgram() }
    const program = command.program
    const checkMs = options.checkMs ?? Math.min(1000, Math.max(25, Math.floor(config.fencingMs / 4)))
    const renewStepMs = Math.max(0, options.renewStepMs ?? Math.floor(config.fencingMs / 10))
    const self = selfIdentity()

    // ---- the lease ----------------------------------------------------------------------------

    const previous = yield* NodeLease.read(files.lease, node).pipe(
      Effect.catchAll((e) =>
        Effect.as(Effect.logWarning(`node ${node}: ${formatError(e)}; it is replaced by a lease of fencingMs from now`), Option.none())
      )
    )
    const startedAt = yield* Clock.currentTimeMillis
    let lease = new NodeLease.NodeLease({
      node,
      validUntil: Option.match(previous, { onNone: () => startedAt + config.fencingMs, onSome: (l) => l.validUntil }),
      writtenAt: startedAt,
      writer: self
    })
    yield* NodeLease.write(files.lease, lease)
    /** Why the last lease write failed, while it does. */
    let leaseProblem: string | undefined

    const renew = (validUntil: number): Effect.Effect<void> =>
      Effect.gen(function* () {
        if (validUntil <= lease.validUntil) return
        // A failed write is retried at the next contact, however small its step.
        if (validUntil - lease.validUntil < renewStepMs && leaseProblem === undefined) return
        const next = new NodeLease.NodeLease({ node, validUntil, writtenAt: yield* Clock.currentTimeMillis, writer: self })
        const written = yield* Effect.either(NodeLease.write(files.lease, next))
        if (written._tag === "Left") {
          if (leaseProblem === undefined) {
            yield* Effect.logError(
              `node ${node}: ${formatError(written.left)}. The fencing watchdog stops this node's VMs when the lease written last runs out (${new Date(lease.validUntil).toISOString()}); nothing starts until the lease can be written`
            )
          }
          leaseProblem = `the lease file cannot be written: ${written.left.message}`
          return
        }
        if (leaseProblem !== undefined) yield* Effect.logInfo(`node ${node}: the lease file ${files.lease} is written again`)
        leaseProblem = undefined
        lease = next
      })

    // ---- the watchdog process -----------------------------------------------------------------

    let spawned: Spawned | undefined
    /** The pid of the watchdog last seen running (to log changes only). */
    let seen: number | undefined

    const spawn = Effect.async<Spawned, StorageIo>((resume) => {
      let fd: number
      try {
        fs.mkdirSync(files.dir, { recursive: true, mode: 0o700 })
        fd = fs.openSync(files.log, "a", 0o600)
      } catch (e) {
        resume(Effect.fail(new StorageIo({ node, subject: files.log, message: `cannot open the fencing watchdog's log ${files.log}: ${describe(e)}; check the data directory's permissions` })))
        return
      }
      // Its own process group and session: a signal to the daemon's group (Ctrl-C in a terminal)
      // and the daemon's death leave it running; no pipe to the daemon, which may be gone.
      const flags = command.executable === process.execPath ? WatchdogNodeFlags : []
      const child = childProcess.spawn(command.executable, [...flags, program, ...watchdogArgs(config)], {
        cwd: files.dir,
        env: { ...process.env, ...WatchdogEnv },
        detached: true,
        stdio: ["ignore", fd, fd]
      })
      fs.closeSync(fd)
      child.once("spawn", () => {
        const pid = child.pid!
        const started: Spawned = { identity: { pid, startTime: readStat(pid)?.startTime ?? "0", bootId: self.bootId }, exit: undefined }
        child.once("exit", (code, signal) => {
          started.exit = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`
        })
        // It must not keep the daemon's event loop alive.
        child.unref()
        resume(Effect.succeed(started))
      })
      child.once("error", (e) =>
        resume(Effect.fail(new StorageIo({ node, subject: command.executable, message: `cannot start the fencing watchdog (${command.executable} ${program}): ${e.message}` })))
      )
    })

    /** Stops a live watchdog of another build and waits (up to 5 s, then SIGKILL) for it to go. */
    const retire = (record: Watchdog.WatchdogRecord) =>
      Effect.gen(function* () {
        const pid = record.process.pid
        yield* Effect.logInfo(`node ${node}: replacing the fencing watchdog (pid ${pid}) of ${record.program} with this build's (${program})`)
        const signal = (name: NodeJS.Signals) =>
          Effect.sync(() => {
            if (!isRunning(record.process)) return
            try {
              process.kill(pid, name)
            } catch {
              // gone meanwhile
            }
          })
        const gone = Effect.sync(() => !isRunning(record.process)).pipe(
          Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (done) => done }),
          Effect.timeout("5 seconds"),
          Effect.option
        )
        yield* signal("SIGTERM")
        if (Option.isNone(yield* gone)) {
          yield* signal("SIGKILL")
          yield* gone
        }
      })

    /**
     * The watchdog last found live and of this build: while it runs, a check is one read of /proc
     * (its stat), not the record, its schema and its command line (a quiet daemon's check every
     * `checkMs` was a few ms of CPU per second). It can only be replaced by a daemon of this data
     * directory, which is this one.
     */
    let verified: ProcessIdentity | undefined

    const ensure = Effect.gen(function* () {
      if (verified !== undefined && isRunning(verified)) return
      verified = undefined
      if (spawned?.exit !== undefined) {
        yield* Effect.logWarning(
          `node ${node}: the fencing watchdog this daemon started (pid ${spawned.identity.pid}) ${spawned.exit}; starting another (see ${files.log})`
        )
        if (seen === spawned.identity.pid) seen = undefined
        spawned = undefined
      }
      const record = yield* Watchdog.readRecord(files.watchdog, node).pipe(Effect.orElseSucceed(() => Option.none()))
      if (Option.isSome(record) && Watchdog.isLive(record.value, config.dataDir)) {
        if (record.value.program === program) {
          if (seen !== record.value.process.pid) {
            seen = record.value.process.pid
            yield* Effect.logInfo(`node ${node}: fencing watchdog running (pid ${seen}; its log: ${files.log})`)
          }
          verified = record.value.process
          return
        }
        yield* retire(record.value)
      } else if (spawned !== undefined && isRunning(spawned.identity)) {
        return // started, its record not written yet
      }
      if (seen !== undefined) yield* Effect.logWarning(`node ${node}: the fencing watchdog (pid ${seen}) is gone; starting another`)
      seen = undefined
      spawned = yield* spawn
    })

    yield* ensure
    yield* ensure.pipe(
      Effect.catchAllCause((cause) => Effect.logError(`node ${node}: checking the fencing watchdog failed; retrying in ${checkMs} ms`, cause)),
      Effect.repeat(Schedule.spaced(`${checkMs} millis`)),
      Effect.forkScoped
    )

    const startBlocked: Effect.Effect<string | undefined> = Effect.gen(function* () {
      if (leaseProblem !== undefined) return leaseProblem
      const now = yield* Clock.currentTimeMillis
      if (lease.validUntil <= now) {
        return `node ${node}'s lease ran out at ${new Date(lease.validUntil).toISOString()} (no quorum contact since ${new Date(lease.validUntil - config.fencingMs).toISOString()} was written); waiting for the next contact to renew it`
      }
      const record = yield* Watchdog.readRecord(files.watchdog, node).pipe(Effect.orElseSucceed(() => Option.none()))
      if (Option.isNone(record) || !Watchdog.isLive(record.value, config.dataDir)) {
        return `no fencing watchdog runs for node ${node} yet (it is being started; see ${files.log})`
      }
      if (record.value.phase === "fencing") {
        return `node ${node}'s fencing watchdog (pid ${record.value.process.pid}) is stopping its VMs (the lease had run out); waiting for it to finish`
      }
      return undefined
    })

    return { dataDir: config.dataDir, renew, startBlocked } satisfies HostFence
  })
