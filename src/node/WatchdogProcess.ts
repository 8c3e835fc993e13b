/**
 * `blixard node watchdog`: the process of a node's fencing watchdog (`agent/Watchdog.ts` is its
 * loop, and says what it does and why). The daemon starts it with its own settings
 * (`HostFence.ts`); it can also be started by hand with the same flags.
 *
 * There is one per node. At start-up, if the node's record (`${dataDir}/fencing/watchdog.json`)
 * names another live watchdog of the same data directory, this one says so and exits 0. Otherwise
 * (or if the record does not answer within `StartupReadWaitMs`) it watches, its loop writing its record
 * (pid, /proc start time, boot id, program, phase) without waiting for the write, and removes the
 * record when it ends. When the daemon started it, its output — the `BLX_FENCED` lines naming each
 * VM it stopped, why, and what to do next — is appended to `${dataDir}/fencing/watchdog.log`.
 *
 * Nor do its reads: the lease, its record, the VMs' state directories and the runners' pid files are
 * read off the event loop, each waited for only so long (`agent/Watchdog.ts`, `ProcessBackend`'s
 * `readWait`). Its libuv thread pool is larger than Node.js's default (`WatchdogMain.ts`), so that
 * the reads and writes hung on one stalled disk leave threads for the files on another.
 *
 * Its output never holds it up: the log is a file in the data directory, on the very disk whose stall
 * the watchdog must outlive, so lines are written off the event loop (`lineWriter`), never with the
 * synchronous write `console.log` makes to a file — one such write, hung, would stop the fencing. The
 * backend writes the VMs' logs (in their state directories, usually on the same disk) the same way.
 *
 * It loads neither the database nor the daemon's Raft and HTTP stack, only the backend layer of the
 * node's kind (and of the platform only what that needs); about 65 MB resident, most of it Node.js
 * and the CLI. The runners it stops are adopted from their pid files for one round only, and
 * watched every 50 ms while they stop.
 */
import * as NodeCommandExecutor from "@effect/platform-node/NodeCommandExecutor"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Clock, Duration, Effect, Layer, Logger, Option, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fencingPaths, isRunning, selfIdentity, writeJsonFile } from "../agent/internal/fencingFiles.js"
import * as NodeLease from "../agent/NodeLease.js"
import * as Watchdog from "../agent/Watchdog.js"
import { formatError } from "../domain/Errors.js"
import { lineWriter } from "../vm/internal/lineWriter.js"
import { verdictFileIn } from "../vm/internal/unitVerdicts.js"
import { layerProcess } from "../vm/ProcessBackend.js"
import { layerSystemd } from "../vm/SystemdBackend.js"
import type { VmBackend } from "../vm/VmBackend.js"
import type { WatchdogConfig } from "./Config.js"

/** The script this process runs (`bin/blixard.js` of its build). */
export const thisProgram = (): string => path.resolve(process.argv[1] ?? "")

/**
 * How long a read of the lease, the record or the state directory is waited for once the lease has
 * expired: a disk that does not answer within it is taken as stalled (no renewal; the runners found
 * in /proc). Far below a fence round's budget (fencingMs is seconds), far above a healthy read.
 */
const ReadWaitMs = 100

/**
 * How long the start-up read of the record is waited for: longer than `ReadWaitMs` (a process just
 * started on a busy host reads slowly, and a watchdog that misses its live predecessor runs beside
 * it), far below the fencing's budget; unanswered, this one watches regardless.
 */
const StartupReadWaitMs = 1000

/** Systemd mode lists the VMs while the lease is valid every `fencingMs`, but not more often than this. */
const SurveyMinMs = 2000

/**
 * The node's runners, as the daemon reaches them, with reads of the state directory waited for
 * `ReadWaitMs`: in process mode adopted runners polled every 50 ms (a fence round waits on their
 * exits) and also those no pid file names (found in /proc); in systemd mode also the running units
 * systemd lists, each `systemctl` call answered within 5 s.
 */
const backendLayer = (config: WatchdogConfig, verdictFile: string | undefined): Layer.Layer<VmBackend> => {
  const settings = { stateDir: config.microvmStateDir, node: config.id }
  return (
    config.vmBackend === "systemd"
      ? layerSystemd({ ...settings, readWait: Duration.millis(ReadWaitMs), commandTimeout: Duration.seconds(5), verdictFile })
      : layerProcess({ ...settings, adoptedPollInterval: Duration.millis(50), findUnrecorded: true, readWait: Duration.millis(ReadWaitMs) })
  ).pipe(Layer.provide(NodeCommandExecutor.layer), Layer.provide(NodeFileSystem.layer))
}

const encodeRecord = Schema.encodeSync(Watchdog.WatchdogRecord)

/**
 * The runtime directory systemd gives the daemon's unit (`RuntimeDirectory=blixard`: `/run/blixard`,
 * tmpfs) as `$RUNTIME_DIRECTORY` (the first, when it names several), inherited by the watchdog the
 * daemon starts; undefined when there is none or it is not an absolute path.
 */
const runtimeDirectory = (): string | undefined => {
  const first = process.env.RUNTIME_DIRECTORY?.split(":")[0]
  return first !== undefined && path.isAbsolute(first) ? first : undefined
}

/** The default logger's lines (logfmt), written to stdout by a `lineWriter`; what is still queued at the end gets up to a second. */
const nonBlockingLog = Layer.unwrapScoped(
  Effect.gen(function* () {
    const writer = lineWriter()
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => writer.drained(() => resume(Effect.void))).pipe(Effect.timeout("1 second"), Effect.ignore)
    )
    return Logger.replace(Logger.defaultLogger, Logger.map(Logger.logfmtLogger, (line) => writer.line(1, line)))
  })
)

export const run = (config: WatchdogConfig) =>
  Effect.scoped(
    Effect.gen(function* () {
      const node = config.id
      const files = fencingPaths(config.dataDir)
      const self = selfIdentity()
      const program = thisProgram()
      const readRecord = Watchdog.readRecord(files.watchdog, node)

      // Waited for `StartupReadWaitMs` only, as every read here is: unanswered (a stalled disk), no
      // other watchdog is taken to run; should one run, the record's last writer stays, the other ends.
      const existing = yield* readRecord.pipe(
        Effect.catchAll((e) => Effect.as(Effect.logWarning(`node ${node}: ${formatError(e)}`), Option.none())),
        Effect.timeoutOption(`${StartupReadWaitMs} millis`),
        Effect.flatMap(
          Option.match({
            onSome: Effect.succeed,
            onNone: () =>
              Effect.as(
                Effect.logWarning(
                  `node ${node}: ${files.watchdog} was not read within ${StartupReadWaitMs} ms (is the data directory's disk stalled?); this watchdog starts watching regardless`
                ),
                Option.none()
              )
          })
        )
      )
      if (Option.isSome(existing) && existing.value.process.pid !== self.pid && Watchdog.isLive(existing.value, config.dataDir)) {
        yield* Effect.logInfo(
          `node ${node}: a fencing watchdog already runs for ${config.dataDir} (pid ${existing.value.process.pid}, since ${new Date(existing.value.startedAt).toISOString()}); this one exits`
        )
        return
      }

      const startedAt = yield* Clock.currentTimeMillis
      const write = (phase: Watchdog.Phase) =>
        Effect.flatMap(Clock.currentTimeMillis, (since) =>
          writeJsonFile(
            files.watchdog,
            encodeRecord(new Watchdog.WatchdogRecord({ node, process: self, program, startedAt, phase, since })),
            { what: "the fencing watchdog's record", node }
          )
        )
      /** The record still names this process (not replaced by another watchdog, not removed). */
      const owned = readRecord.pipe(
        Effect.map(Option.exists((r) => r.process.pid === self.pid && r.process.startTime === self.startTime)),
        Effect.orElseSucceed(() => false)
      )
      // The record is first written by the loop's writer (`Watchdog.run`), never waited for. The
      // removal at the end is off the JavaScript thread and bounded, as every step here: the disk may still be stalled.
      yield* Effect.addFinalizer(() =>
        owned.pipe(
          Effect.flatMap((mine) => (mine ? Effect.promise(() => fs.promises.rm(files.watchdog, { force: true }).catch(() => undefined)) : Effect.void)),
          Effect.timeout("1 second"),
          Effect.ignore
        )
      )
      yield* Effect.logInfo(
        `node ${node}: fencing watchdog started (pid ${self.pid}; lease ${files.lease}; ${config.vmBackend} backend, VMs in ${config.microvmStateDir})`
      )
      const runtimeDir = runtimeDirectory()
      const verdictFile = config.vmBackend === "systemd" && runtimeDir !== undefined ? verdictFileIn(runtimeDir, node) : undefined
      if (config.vmBackend === "systemd") {
        yield* Effect.logInfo(
          verdictFile !== undefined
            ? `node ${node}: the units' marker verdicts are kept in ${verdictFile} (the runtime directory) for the next watchdog`
            : `node ${node}: no runtime directory ($RUNTIME_DIRECTORY, the unit's RuntimeDirectory=): the units' marker verdicts are kept in this process only; a watchdog started again judges a unit whose marker does not answer by its Restart= until it reads the marker`
        )
      }
      const end = yield* Watchdog.run({
        node,
        fencingMs: config.fencingMs,
        stopTimeoutMs: config.stopTimeoutMs,
        lease: NodeLease.read(files.lease, node),
        stillOwner: owned,
        publish: (phase) => write(phase).pipe(Effect.catchAll((e) => Effect.logError(`node ${node}: ${formatError(e)}`))),
        readWaitMs: ReadWaitMs,
        backend: backendLayer(config, verdictFile),
        // Systemd mode remembers the markers' verdicts it reads (`SystemdBackend.ts`): read them while the disk answers.
        surveyMs: config.vmBackend === "systemd" ? Math.max(config.fencingMs, SurveyMinMs) : undefined,
        writerAlive: (lease) => isRunning(lease.writer)
      })
      if (end === "replaced") yield* Effect.logInfo(`node ${node}: ${files.watchdog} names another watchdog or is gone; this one exits`)
    })
  ).pipe(Effect.annotateLogs("node", config.id), Effect.provide(nonBlockingLog))
