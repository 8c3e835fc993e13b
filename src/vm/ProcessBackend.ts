/**
 * microvm.nix process mode: the daemon runs each VM's runner itself.
 *
 * `start` runs `bin/tap-up`, `bin/macvtap-up`, `bin/pci-setup` (those the runner has), starts `bin/virtiofsd-run` (if present; long-running,
 * supervised like the VM), points `booted` at the runner `current` points to, and spawns
 * `bin/microvm-run` from the VM's state directory with stdout and stderr appended to
 * `${stateDir}/${name}/blixard.log`. The runner gets its own process group and no pipe to the
 * daemon, so the daemon can restart (or die) while the VM keeps running; a pid file
 * (`blixard.pid`: pid, /proc start time, boot id) lets the next incarnation ADOPT it.
 *
 * Which spawning API, and why:
 * - Runners and virtiofsd: `node:child_process.spawn` with `detached: true` and the log file's
 *   descriptor as stdout/stderr. `@effect/platform`'s `Command` cannot do this: it offers only pipes
 *   (a runner writing to a pipe whose reader died gets SIGPIPE) and it kills the process group when
 *   its scope closes, so a runner could not outlive the daemon. Adopted runners (not our children)
 *   are watched through /proc, as no API waits on a non-child.
 * - Short commands (`nix build`, `tap-up`, `tap-down`, `microvm-shutdown`): `@effect/platform`'s
 *   `CommandExecutor`, whose kill-on-interrupt is what a timeout wants.
 *
 * When the daemon runs under systemd, its unit must not kill the runners on restart
 * (`KillMode=process`); otherwise use systemd mode.
 *
 * The stop path (the fencing's) never waits on the state directory's disk before its signal, and
 * never touches it from the JavaScript thread: the VM's log lines go through a `lineWriter`, pid
 * files are removed and `booted` is claimed asynchronously, and listings, ownership markers, pid
 * files and links are read off the event loop (`internal/diskReads.ts`). On a stalled disk (usually
 * the data directory's too) one synchronous call there would hang the whole process — the fencing
 * watchdog stopping one VM would then stop no other. With `readWait` (the watchdog's), a read not
 * answered in time does not hold up a listing or a stop either: the runners are then found in /proc
 * (`findUnrecorded`), a directory whose marker does not answer is taken as Blixard's when a runner
 * marked as its VM runs in it, and a stop goes by signals (SIGTERM, SIGKILL after its timeout). The
 * runner's scripts are looked at off the JavaScript thread too (the Nix store, or wherever the
 * runner is, may be on the stalled disk): a `microvm-shutdown` not told by `readWait` is not run
 * (SIGTERM instead), a `tap-down`/`macvtap-down` not told is not run and `booted` is put back for the
 * next stop, each logged naming the VM and the node. The start, prepare and remove paths (the
 * daemon's) read markers, the runner's programs, its virtiofs shares and the GC roots asynchronously
 * as well, and write the state directory (`booted`, the pid files, the log a runner appends to,
 * `prepare`'s directory, marker and links in `RunnerBuild.ts`) through `fs.promises`, without a
 * deadline: they wait, but never stop the event loop. Left synchronous: /proc (the kernel's, never a
 * disk: `internal/procfs.ts`). Scripts are spawned through a trampoline (`internal/execTrampoline.ts`):
 * libuv waits in the parent for the child's exec, which reads the script, so a disk that stalls
 * between a script's check and its exec holds only the child, never the JavaScript thread. A
 * `microvm-shutdown` hung in the stalled directory never holds up the SIGKILL, nor does its clean-up
 * (claiming `booted`, removing the pid file: bounded by `readWait`, at most two at once) hold up the
 * stop or take more than two of libuv's threads.
 */
import type { CommandExecutor } from "@effect/platform"
import type { Scope } from "effect"
import { Clock, Deferred, Duration, Effect, Exit, Layer, Option, PubSub, Schedule, Schema, Stream } from "effect"
import * as childProcess from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { BackendFailed, type VmDirForeign } from "../domain/Errors.js"
import { VmName } from "../domain/VmName.js"
import { bootId, groupLeadersIn, isAlive, readCmdline, readEnviron, readStat } from "./internal/procfs.js"
import { runCommand, showCommand } from "./internal/runCommand.js"
import { removeGcRoots } from "./internal/gcRoots.js"
import { readOwnership, scanStateDir } from "./internal/ownership.js"
import * as DiskReads from "./internal/diskReads.js"
import { lineWriter } from "./internal/lineWriter.js"
import { viaTrampoline } from "./internal/execTrampoline.js"
import {
  claimLinkBy,
  openAppend,
  type PidRecord,
  readPidRecord,
  removeFile,
  replaceSymlink,
  unclaimLink,
  vmPaths,
  writeFileAtomic
} from "./internal/stateDir.js"
import { executable, foreignDirError, prepareRunner, requireOwnDir, type StateDirSettings } from "./RunnerBuild.js"
import {
  type RunnerExit,
  type RunnerObservation,
  RunnerState,
  VmBackend,
  type VmBackendShape
} from "./VmBackend.js"

export interface ProcessSettings extends StateDirSettings {
  /** How often an adopted runner (not our child) is checked for having exited (default 1 s). */
  readonly adoptedPollInterval?: Duration.DurationInput
  /** After SIGKILL, how long to wait for the process to go before failing (default 10 s). */
  readonly killWait?: Duration.DurationInput
  /** How long `tap-up`, `tap-down` may run (default 60 s). */
  readonly scriptTimeout?: Duration.DurationInput
  /** `remove`'s stop timeout (default 30 s). */
  readonly removeStopTimeout?: Duration.DurationInput
  /**
   * How long `start` waits for virtiofsd's sockets (the runner's
   * `share/microvm/virtiofs/TAG/socket`) before starting the VM (default 30 s), as microvm.nix's
   * `microvm-virtiofsd@` unit is ready only once every virtiofsd runs.
   */
  readonly virtiofsdTimeout?: Duration.DurationInput
  /**
   * Also look in /proc for a VM's runner that no pid file names (the fencing watchdog's backend):
   * a runner whose daemon hung, or died, between starting it and writing its pid file — as on a
   * disk that stalled just then — is found by its environment's VM marker and its working directory.
   */
  readonly findUnrecorded?: boolean
  /**
   * How long a listing's or a stop's reads of the state directory are waited for before they count
   * as unanswered (the fencing watchdog's, with `findUnrecorded`). Without it they are waited for as
   * long as they take — the daemon must not start a second runner because a pid file was slow.
   */
  readonly readWait?: Duration.DurationInput
}

/** The variable marking a runner's environment as Blixard's VM NAME (checked when adopting). */
export const VmEnvironmentVariable = "BLIXARD_VM"

/**
 * A runner's environment: PATH (and locale/time zone) from the daemon plus the VM marker, not the
 * daemon's whole environment (which may hold secrets), much as a systemd unit starts clean.
 */
const runnerEnvironment = (name: VmName): Record<string, string> => {
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/run/current-system/sw/bin:/usr/bin:/bin" }
  for (const variable of ["LANG", "LC_ALL", "TZ", "TZDIR", "LOCALE_ARCHIVE"]) {
    const value = process.env[variable]
    if (value !== undefined) env[variable] = value
  }
  env[VmEnvironmentVariable] = name
  return env
}

/** Run before `microvm-run` (network interfaces, PCI passthrough), in this order, when present. */
const setupScripts = ["tap-up", "macvtap-up", "pci-setup"] as const
/** Run after the runner stopped, from the runner that was `booted`, when present. */
const teardownScripts = ["tap-down", "macvtap-down"] as const

type ProcessKind = "vm" | "virtiofsd"

interface ExitInfo {
  readonly exitCode: number | undefined
  readonly signal: string | undefined
}

/** A process this incarnation supervises: spawned by it, or adopted from a pid file. */
interface Supervised {
  readonly name: VmName
  readonly kind: ProcessKind
  readonly pid: number
  readonly startTime: string
  readonly since: number
  readonly adopted: boolean
  readonly exited: Deferred.Deferred<ExitInfo>
  /** `stop` asked it to go: its exit is not reported as an event. */
  stopping: boolean
  /** It has exited (`exited` is done). */
  gone: boolean
}

export const make = (
  settings: ProcessSettings
): Effect.Effect<VmBackendShape, never, CommandExecutor.CommandExecutor | Scope.Scope> =>
  Effect.gen(function* () {
    const executor = yield* Effect.context<CommandExecutor.CommandExecutor>()
    const scope = yield* Effect.scope
    const events = yield* PubSub.unbounded<RunnerExit>()
    const supervised = new Map<string, Supervised>() // key: `${kind}/${name}`
    const exits = new Map<VmName, ExitInfo & { readonly at: number }>()
    /** Pid files being removed (key as `supervised`): a new pid file is written once they are, lest a removal take it. */
    const removing = new Map<string, Promise<void>>()
    const writer = lineWriter()
    // What is still queued for the logs gets up to a second when the backend is released.
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => writer.drained(() => resume(Effect.void))).pipe(Effect.timeout("1 second"), Effect.ignore)
    )
    const locks = new Map<VmName, Effect.Semaphore>()
    const adoptedPoll = settings.adoptedPollInterval ?? Duration.seconds(1)
    const killWait = settings.killWait ?? Duration.seconds(10)
    const scriptTimeout = settings.scriptTimeout ?? Duration.seconds(60)
    const onNode = ` on node ${settings.node}`
    const key = (kind: ProcessKind, name: VmName) => `${kind}/${name}`
    const paths = (name: VmName) => vmPaths(settings.stateDir, name)
    const failed = (name: VmName, message: string) => new BackendFailed({ message, subject: name, node: settings.node })
    const describe = (e: unknown) => (e instanceof Error ? e.message : String(e))

    const withLock = (name: VmName) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.suspend(() => {
        let lock = locks.get(name)
        if (lock === undefined) {
          lock = Effect.unsafeMakeSemaphore(1)
          locks.set(name, lock)
        }
        return lock.withPermits(1)(effect)
      })

    /** Queues a line for the VM's log; never waits for it to be written. */
    const log = (name: VmName, text: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => writer.line(paths(name).log, `# blixard ${new Date(now).toISOString()}: ${text}`))
      )

    /**
     * Queues the removal of the pid file of `kind` for `name`, done if `remove`, given its record when
     * its turn comes, says so; answers when it is done. A new pid file waits for it (`removed`).
     */
    const queueRemoval = (name: VmName, kind: ProcessKind, remove: (record: PidRecord | undefined) => boolean): Promise<void> => {
      const k = key(kind, name)
      const pidFile = paths(name).pidFile(kind)
      const done = (removing.get(k) ?? Promise.resolve())
        .then(() => readPidRecord(pidFile))
        .then((record) => (remove(record) ? removeFile(pidFile) : undefined))
      const settled = done.finally(() => {
        if (removing.get(k) === settled) removing.delete(k)
      })
      removing.set(k, settled)
      return settled
    }

    /** Removes the pid file of `kind` for `name` as `queueRemoval` does, and waits for it. */
    const removePidFile = (name: VmName, kind: ProcessKind, remove: (record: PidRecord | undefined) => boolean) =>
      Effect.promise(() => queueRemoval(name, kind, remove))

    /** Waits until the pid file of `kind` for `name` is not being removed. */
    const removed = (name: VmName, kind: ProcessKind) => Effect.promise(() => removing.get(key(kind, name)) ?? Promise.resolve())

    /** The instant by which this step's reads must answer (none without `readWait`: they wait). */
    const readsBy: Effect.Effect<number | undefined> = Effect.map(Clock.currentTimeMillis, (now) =>
      settings.readWait === undefined ? undefined : now + Duration.toMillis(settings.readWait)
    )

    /** Waits for a clean-up write as long as it takes, or with `readWait` that long only (it goes on). */
    const cleanedBy = (write: () => Promise<void>) =>
      Effect.flatMap(readsBy, (by) => Effect.ignore(DiskReads.answerBy(write, by)))

    /** Whose the VM's directory is; none when its reads did not answer by `by`. */
    const ownershipBy = (name: VmName, by: number | undefined) =>
      DiskReads.answerBy(() => readOwnership(paths(name).dir, name, settings), by).pipe(Effect.orDie)

    /** Where `link` points (resolved), undefined when it is not there or did not answer by `by`. */
    const linkBy = (link: string, by: number | undefined) =>
      DiskReads.answerBy(() => DiskReads.readLink(link, "low"), by).pipe(
        Effect.map((target) => Option.getOrUndefined(target)),
        Effect.map((target) => (target === undefined ? undefined : path.resolve(path.dirname(link), target))),
        Effect.orElseSucceed(() => undefined)
      )

    /** The state directory with its links resolved, when that answers by `by`; else as configured. */
    const realStateDir = (by: number | undefined) =>
      DiskReads.answerBy(() => DiskReads.realPath(settings.stateDir, "low"), by).pipe(
        Effect.map((real) => Option.getOrUndefined(real) ?? path.resolve(settings.stateDir)),
        Effect.orElseSucceed(() => path.resolve(settings.stateDir))
      )

    /** With `findUnrecorded`: the VMs whose runners /proc shows in the state directory (no disk read). */
    const namesInProc = (by: number | undefined): Effect.Effect<ReadonlyArray<VmName>> =>
      settings.findUnrecorded !== true
        ? Effect.succeed([])
        : Effect.map(realStateDir(by), (dir) =>
            groupLeadersIn(dir, VmEnvironmentVariable).flatMap((p) => Option.toArray(Schema.validateOption(VmName)(p.name)))
          )

    /** Called once per supervised process when it is gone. */
    const onExit = (s: Supervised, info: ExitInfo) =>
      Effect.gen(function* () {
        const k = key(s.kind, s.name)
        if (supervised.get(k) === s) supervised.delete(k)
        yield* removePidFile(s.name, s.kind, (record) => record !== undefined && record.pid === s.pid && record.startTime === s.startTime)
        if (s.stopping) return
        const at = yield* Clock.currentTimeMillis
        if (s.kind === "vm") exits.set(s.name, { ...info, at })
        const how = info.exitCode !== undefined ? `exit code ${info.exitCode}` : info.signal !== undefined ? `signal ${info.signal}` : "exit not observed (adopted)"
        yield* log(s.name, `${s.kind === "vm" ? "runner" : "virtiofsd"} (pid ${s.pid}) exited: ${how}`)
        yield* PubSub.publish(events, { name: s.name, process: s.kind, exitCode: info.exitCode, signal: info.signal, at })
      })

    const watch = (s: Supervised) =>
      Deferred.await(s.exited).pipe(Effect.flatMap((info) => onExit(s, info)), Effect.forkIn(scope))

    /** An adopted process is not our child: poll /proc until it is gone. */
    const pollUntilGone = (s: Supervised) =>
      Effect.sync(() => isAlive(s.pid, s.startTime)).pipe(
        Effect.repeat({ schedule: Schedule.spaced(adoptedPoll), while: (alive) => alive }),
        Effect.zipRight(Effect.sync(() => (s.gone = true))),
        Effect.zipRight(Deferred.succeed(s.exited, { exitCode: undefined, signal: undefined })),
        Effect.forkIn(scope)
      )

    /**
     * The pid file names a live process that is this VM's (boot, start time, and its environment or
     * command line). A process in the middle of an exec — every runner passes through two, the
     * trampoline's and the script's (`execTrampoline.ts`) — shows an empty environment and command
     * line for a moment while the kernel replaces its image (measured: 923 of 921,836 reads in a
     * spawn-and-exec loop): then the boot and start time, which no other process can share, decide.
     * Calling it stale there would drop the pid file of a live runner, and the next round would start
     * a second one.
     */
    const validRecord = (name: VmName, kind: ProcessKind, record: PidRecord): boolean => {
      if (record.vm !== name || record.process !== kind || record.bootId !== bootId()) return false
      if (!isAlive(record.pid, record.startTime)) return false
      const environ = readEnviron(record.pid)
      if (environ.includes(`${VmEnvironmentVariable}=${name}`)) return true
      const cmdline = readCmdline(record.pid)
      if (environ.length === 0 && cmdline.length === 0) return isAlive(record.pid, record.startTime)
      const joined = cmdline.join(" ")
      return joined.includes(paths(name).dir) || joined.includes(`microvm@${name}`)
    }

    /** With `findUnrecorded`: the VM's runner found in /proc, as its pid file would name it (virtiofsd is not looked for). */
    const unrecorded = (name: VmName, kind: ProcessKind, by: number | undefined): Effect.Effect<PidRecord | undefined> =>
      settings.findUnrecorded !== true || kind !== "vm"
        ? Effect.succeed(undefined)
        : Effect.map(realStateDir(by), (dir) => {
            const pid = groupLeadersIn(dir, VmEnvironmentVariable).find(
              (p) => p.name === name && !readCmdline(p.pid).join(" ").includes("virtiofsd")
            )?.pid
            const startTime = pid === undefined ? undefined : readStat(pid)?.startTime
            if (pid === undefined || startTime === undefined) return undefined
            return { vm: name, process: kind, pid, startTime, bootId: bootId(), startedAt: Date.now() }
          })

    /** The process of `kind` for `name` if it runs: supervised already, or adopted now from its pid file. */
    const observe = (name: VmName, kind: ProcessKind, by: number | undefined): Effect.Effect<Supervised | undefined> =>
      Effect.gen(function* () {
        const exited = yield* Deferred.make<ExitInfo>()
        const known = supervised.get(key(kind, name))
        // Exited, its watcher not yet run: gone (the watcher still reports the exit).
        if (known !== undefined) return known.gone ? undefined : known
        // Its pid file (read off the event loop; not answered by `by`, as none), else /proc.
        const read = yield* DiskReads.answerBy(() => readPidRecord(paths(name).pidFile(kind)), by).pipe(Effect.orDie)
        const record = Option.getOrUndefined(read) ?? (yield* unrecorded(name, kind, by))
        // Check again and register in one synchronous step, so two observers cannot both adopt.
        const found = yield* Effect.sync((): { readonly s: Supervised; readonly adoptedNow: boolean } | "stale" | undefined => {
          const known = supervised.get(key(kind, name))
          if (known !== undefined && known.gone) return undefined
          if (known !== undefined) return { s: known, adoptedNow: false }
          if (record === undefined) return undefined
          if (!validRecord(name, kind, record)) return "stale"
          const s: Supervised = {
            name,
            kind,
            pid: record.pid,
            startTime: record.startTime,
            since: record.startedAt,
            adopted: true,
            exited,
            stopping: false,
            gone: false
          }
          supervised.set(key(kind, name), s)
          return { s, adoptedNow: true }
        })
        if (found === "stale") {
          // Removed unless it names a live runner of this VM by then (a start raced this read), but
          // not waited for: on a stalled disk the removal hangs, and a listing waiting for it would
          // stop no other VM (the fencing watchdog lists first; the daemon that stopped this runner
          // may have hung removing its pid file).
          yield* Effect.sync(() => void queueRemoval(name, kind, (record) => record === undefined || !validRecord(name, kind, record)))
          return undefined
        }
        if (found === undefined) return undefined
        if (found.adoptedNow) {
          yield* watch(found.s)
          yield* pollUntilGone(found.s)
        }
        return found.s
      })

    /** Spawns a runner program detached, appending to the VM's log; writes its pid file. */
    const spawnSupervised = (name: VmName, kind: ProcessKind, program: string) =>
      Effect.gen(function* () {
        const p = paths(name)
        const log = yield* Effect.tryPromise({
          try: () => openAppend(p.log),
          catch: (e) => failed(name, `VM "${name}": cannot open its log ${p.log}${onNode}: ${describe(e)}`)
        })
        const child = yield* Effect.async<childProcess.ChildProcess, BackendFailed>((resume) => {
          const trampoline = viaTrampoline(program)
          const child = childProcess.spawn(trampoline.command, trampoline.args, {
            cwd: p.dir,
            detached: true,
            stdio: ["ignore", log.fd, log.fd],
            env: runnerEnvironment(name)
          })
          // The child has its own copy; ours is closed off the JavaScript thread.
          void log.close().catch(() => undefined)
          child.once("spawn", () => resume(Effect.succeed(child)))
          child.once("error", (e) =>
            resume(
              Effect.fail(
                failed(name, `VM "${name}": could not start ${program}${onNode}: ${e.message}. Prepare the VM again (its runner may be missing or not executable).`)
              )
            )
          )
        })
        const pid = child.pid!
        const exited = yield* Deferred.make<ExitInfo>()
        const since = yield* Clock.currentTimeMillis
        const startTime = readStat(pid)?.startTime ?? ""
        const s: Supervised = { name, kind, pid, startTime, since, adopted: false, exited, stopping: false, gone: false }
        const onChildExit = (code: number | null, signal: NodeJS.Signals | null) => {
          s.gone = true
          Deferred.unsafeDone(exited, Exit.succeed({ exitCode: code ?? undefined, signal: signal ?? undefined }))
        }
        if (child.exitCode !== null || child.signalCode !== null) onChildExit(child.exitCode, child.signalCode)
        else child.once("exit", onChildExit)
        // The runner must not keep the daemon's event loop alive, nor die with it.
        child.unref()
        supervised.set(key(kind, name), s)
        const record: PidRecord = { vm: name, process: kind, pid, startTime, bootId: bootId(), startedAt: since }
        yield* removed(name, kind)
        yield* Effect.tryPromise({
          try: () => writeFileAtomic(p.pidFile(kind), `${JSON.stringify(record)}\n`),
          catch: (e) => failed(name, `VM "${name}": started pid ${pid} but could not write ${p.pidFile(kind)}${onNode}: ${describe(e)}`)
        }).pipe(Effect.tapError(() => Effect.sync(() => signalGroup(s, "SIGKILL"))))
        yield* watch(s)
        return s
      })

    /** Signals the process group the runner leads (its children too), or the process alone. */
    const signalGroup = (s: Supervised, signal: NodeJS.Signals): void => {
      const stat = readStat(s.pid)
      if (stat === undefined || stat.startTime !== s.startTime) return // gone; the pid may be someone else's now
      try {
        process.kill(stat.pgrp === s.pid ? -s.pid : s.pid, signal)
      } catch {
        // Exited meanwhile.
      }
    }

    const awaitExit = (s: Supervised, timeout: Duration.DurationInput) =>
      Deferred.await(s.exited).pipe(Effect.timeout(timeout), Effect.option, Effect.map(Option.isSome))

    /** A runner script (tap-up, tap-down, microvm-shutdown) from the state directory, bounded in time. */
    const runScript = (name: VmName, script: string, timeout: Duration.DurationInput) =>
      runCommand({
        ...viaTrampoline(script),
        cwd: paths(name).dir,
        env: { [VmEnvironmentVariable]: name },
        onLine: (line) => Effect.sync(() => writer.line(paths(name).log, line))
      }).pipe(
        Effect.provide(executor),
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => failed(name, `VM "${name}": ${script} did not finish within ${Duration.format(timeout)}${onNode}`)
        }),
        Effect.mapError((e) =>
          e._tag === "BackendFailed" ? e : failed(name, `VM "${name}": could not run ${script}${onNode}: ${e.message}`)
        ),
        Effect.flatMap((result) =>
          result.exitCode === 0
            ? Effect.void
            : Effect.fail(
                failed(
                  name,
                  `VM "${name}": ${showCommand(script, [])} failed${onNode} (exit code ${result.exitCode}); last output:\n${result.tail.join("\n")}\nSee ${paths(name).log}.`
                )
              )
        )
      )

    /** Stops one supervised process: `gentle` first (or SIGTERM), SIGKILL after `timeout`. */
    const terminate = (s: Supervised, timeout: Duration.DurationInput, gentle: Option.Option<string>) =>
      Effect.gen(function* () {
        s.stopping = true
        const what = s.kind === "vm" ? "runner" : "virtiofsd"
        const gracefully = Option.match(gentle, {
          // Signalled first, logged second: the log may be on a stalled disk (it is written off the
          // event loop anyway, but nothing on the way to the signal touches that disk).
          onNone: () =>
            Effect.zipRight(Effect.sync(() => signalGroup(s, "SIGTERM")), log(s.name, `stopping the ${what} (pid ${s.pid}): SIGTERM`)),
          onSome: (script) =>
            log(s.name, `stopping the ${what} (pid ${s.pid}): ${script}`).pipe(
              Effect.zipRight(runScript(s.name, script, timeout)),
              Effect.catchAll((e) =>
                Effect.zipRight(
                  log(s.name, `${e.message}; sending SIGTERM instead`),
                  Effect.sync(() => signalGroup(s, "SIGTERM"))
                )
              )
            )
        })
        // Disconnected: a `microvm-shutdown` hung in a stalled state directory, even one that does not
        // die of its interruption, must not hold up the SIGKILL that is due at the timeout.
        const exited = yield* gracefully.pipe(Effect.zipRight(Deferred.await(s.exited)), Effect.disconnect, Effect.timeout(timeout), Effect.option)
        if (Option.isSome(exited)) return
        yield* log(s.name, `${what} (pid ${s.pid}) still running after ${Duration.format(timeout)}: SIGKILL`)
        signalGroup(s, "SIGKILL")
        if (!(yield* awaitExit(s, killWait))) {
          return yield* failed(
            s.name,
            `VM "${s.name}": the ${what} (pid ${s.pid}) did not exit after SIGKILL${onNode}; it is probably stuck in the kernel (state ${readStat(s.pid)?.state ?? "?"}). Check the host.`
          )
        }
      })

    /**
     * The runner's script `file` when it is there to run, undefined when it is not, null when that was
     * not told by `by` (a stalled disk under the runner: the Nix store or the runner's directory),
     * which is logged, naming the VM, the node and what is done instead (`instead`).
     */
    const scriptBy = (name: VmName, file: string | undefined, by: number | undefined, instead: string): Effect.Effect<string | undefined | null> =>
      file === undefined
        ? Effect.succeed(undefined)
        : DiskReads.answerBy(() => DiskReads.isExecutable(file, "low"), by).pipe(
            Effect.orElseSucceed(() => Option.some(false)),
            Effect.flatMap(
              Option.match({
                onSome: (is) => Effect.succeed(is ? file : undefined),
                onNone: () => {
                  const text = `VM "${name}"${onNode}: whether ${file} exists was not told within ${Duration.format(settings.readWait ?? 0)} (is the disk under the runner stalled?): it is not run; ${instead}`
                  return Effect.zipRight(Effect.logWarning(text), Effect.as(log(name, text), null))
                }
              })
            )
          )

    /** The VM's runner, its reads answered by `by` (or not: its directory is then taken as Blixard's, its runner looked for in /proc). */
    const statusBy = (name: VmName, by: number | undefined): Effect.Effect<RunnerState> =>
      Effect.gen(function* () {
        // A foreign directory's VM is not Blixard's: not even its pid file is read.
        const ownership = yield* ownershipBy(name, by)
        if (Option.isSome(ownership) && ownership.value._tag === "Foreign") return RunnerState.Absent()
        const s = yield* observe(name, "vm", by)
        if (s !== undefined) return RunnerState.Running({ pid: s.pid, since: s.since, adopted: s.adopted })
        const exit = exits.get(name)
        return exit !== undefined
          ? RunnerState.Exited({ at: exit.at, exitCode: exit.exitCode, signal: exit.signal })
          : RunnerState.Absent()
      })

    const status = (name: VmName): Effect.Effect<RunnerState> => Effect.flatMap(readsBy, (by) => statusBy(name, by))

    /** The sockets the runner's virtiofsd instances create (`share/microvm/virtiofs/TAG/socket`), resolved in the VM's directory. */
    const virtiofsSockets = (name: VmName, runner: string): Effect.Effect<ReadonlyArray<string>> =>
      Effect.promise(async () => {
        const shares = path.join(runner, "share", "microvm", "virtiofs")
        const tags = await DiskReads.readDir(shares, "low").catch(() => undefined)
        const sockets = await Promise.all(
          (tags ?? []).map((tag) =>
            DiskReads.readText(path.join(shares, tag.name, "socket"), "low").then(
              (text) => (text === undefined || text.trim() === "" ? [] : [path.resolve(paths(name).dir, text.trim())]),
              () => []
            )
          )
        )
        return sockets.flat()
      })

    const isSocket = (file: string): Promise<boolean> => DiskReads.stat(file, "low").then((stat) => stat?.isSocket() === true, () => false)

    /**
     * Starts `virtiofsd-run` unless it runs, then waits until every virtiofs socket exists, as the
     * VM's unit waits for `microvm-virtiofsd@NAME` to be ready: a hypervisor started earlier fails
     * to connect its shares. A virtiofsd that exits meanwhile, or sockets missing at the deadline,
     * fail the start (virtiofsd is stopped again; the next start retries).
     */
    const startVirtiofsd = (name: VmName, runner: string) =>
      Effect.gen(function* () {
        const program = path.join(runner, "bin", "virtiofsd-run")
        const s = (yield* observe(name, "virtiofsd", yield* readsBy)) ??
          (yield* log(name, `starting ${program}`).pipe(Effect.zipRight(spawnSupervised(name, "virtiofsd", program))))
        const sockets = yield* virtiofsSockets(name, runner)
        const timeout = settings.virtiofsdTimeout ?? Duration.seconds(30)
        const missing = () =>
          Effect.promise(() => Promise.all(sockets.map(isSocket))).pipe(Effect.map((there) => sockets.filter((_, i) => !there[i])))
        const ready = yield* Effect.suspend(() => (s.gone ? Effect.succeed(true) : Effect.map(missing(), (left) => s.gone || left.length === 0))).pipe(
          Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (done) => done }),
          Effect.timeout(timeout),
          Effect.option
        )
        if (Option.isSome(ready) && !s.gone) return
        const why = s.gone
          ? `virtiofsd (pid ${s.pid}) exited before it created its sockets`
          : `virtiofsd (pid ${s.pid}) did not create ${(yield* missing()).join(", ")} within ${Duration.format(timeout)}`
        if (!s.gone) yield* terminate(s, Duration.seconds(5), Option.none())
        return yield* failed(name, `VM "${name}": ${why}${onNode}; the VM was not started. See ${paths(name).log}.`)
      })

    const start = (name: VmName): Effect.Effect<number, BackendFailed | VmDirForeign> =>
      withLock(name)(
        Effect.gen(function* () {
          yield* requireOwnDir(settings, name)
          const running = yield* observe(name, "vm", yield* readsBy)
          if (running !== undefined) return running.pid
          const p = paths(name)
          const runner = yield* linkBy(p.current, undefined)
          if (runner === undefined || !(yield* executable(path.join(runner, "bin", "microvm-run")))) {
            return yield* failed(
              name,
              `VM "${name}" is not prepared${onNode}: ${p.current}/bin/microvm-run does not exist. Prepare it (build its runner) before starting it.`
            )
          }
          const bin = (program: string) => path.join(runner, "bin", program)
          // What microvm.nix's companion units of microvm@NAME run first, when the runner has them.
          for (const setup of setupScripts) {
            if (yield* executable(bin(setup))) yield* runScript(name, bin(setup), scriptTimeout)
          }
          if (yield* executable(bin("virtiofsd-run"))) yield* startVirtiofsd(name, runner)
          yield* Effect.tryPromise({
            try: () => replaceSymlink(runner, p.booted),
            catch: (e) => failed(name, `VM "${name}": could not link ${p.booted}${onNode}: ${describe(e)}`)
          })
          yield* log(name, `starting ${bin("microvm-run")}`)
          const s = yield* spawnSupervised(name, "vm", bin("microvm-run"))
          exits.delete(name)
          return s.pid
        })
      )

    const stop = (name: VmName, timeout: Duration.DurationInput): Effect.Effect<void, BackendFailed | VmDirForeign> =>
      withLock(name)(
        Effect.gen(function* () {
          const by = yield* readsBy
          const ownership = yield* ownershipBy(name, by)
          if (Option.isSome(ownership) && ownership.value._tag === "Foreign") return yield* foreignDirError(settings, name, ownership.value.reason)
          const p = paths(name)
          // Not answered by `by` (a stalled disk): no `microvm-shutdown`, SIGTERM; the teardown reads its runner later.
          let runner = (yield* linkBy(p.booted, by)) ?? (yield* linkBy(p.current, by))
          const bin = (program: string) => (runner === undefined ? undefined : path.join(runner, "bin", program))
          const vm = yield* observe(name, "vm", by)
          if (vm !== undefined) {
            // Not told by `by` (a stalled disk under the runner): SIGTERM, never waiting on that disk before the signal.
            const shutdown = yield* scriptBy(name, bin("microvm-shutdown"), by, "stopping the runner with SIGTERM instead")
            yield* terminate(vm, timeout, Option.fromNullable(shutdown))
          }
          const virtiofsd = yield* observe(name, "virtiofsd", by)
          if (virtiofsd !== undefined) yield* terminate(virtiofsd, timeout, Option.none())
          // Tear down what `start` set up, once: `booted` is claimed first, so when two processes
          // stop this VM at the same time (the agent fencing and the node's fencing watchdog, see
          // agent/Watchdog.ts) only one runs tap-down. A failed teardown puts the link back, so the
          // next stop retries it.
          // With `readWait`, each clean-up step is waited for that long only (a stalled disk): a claim
          // not answered in time is no claim (put back should it land later), the rest goes on unwaited.
          // A teardown script not told in time is not run, and the link is put back for the next stop.
          const claimed = yield* claimLinkBy(p.booted, yield* readsBy)
          if (claimed !== undefined) {
            runner ??= yield* linkBy(claimed, yield* readsBy)
            const unclaim = Effect.promise(() => unclaimLink(claimed, p.booted))
            // Each check waited for `readWait` from its own start (a teardown script run before it takes its time).
            const tornDown = yield* Effect.forEach(teardownScripts, (teardown) =>
              Effect.flatMap(Effect.flatMap(readsBy, (by) => scriptBy(name, bin(teardown), by, "the next stop runs it")), (script) =>
                script === null ? Effect.succeed(false) : script === undefined ? Effect.succeed(true) : Effect.as(runScript(name, script, scriptTimeout), true)
              )
            ).pipe(Effect.tapError(() => unclaim))
            if (tornDown.every((done) => done)) yield* cleanedBy(() => removeFile(claimed))
            else yield* cleanedBy(() => unclaimLink(claimed, p.booted))
          }
          // Its pid file is gone once stop returns (the exit's watcher may not have run yet), unless with `readWait` it did not answer.
          if (vm !== undefined) yield* cleanedBy(() => queueRemoval(name, "vm", (record) => record?.pid === vm.pid && record.startTime === vm.startTime))
          exits.delete(name)
        })
      )

    const scanFailed = (e: unknown) =>
      new BackendFailed({ message: `cannot read the VM state directory ${settings.stateDir}${onNode}: ${describe(e)}`, subject: settings.stateDir, node: settings.node })
    const scan = Effect.tryPromise({ try: () => scanStateDir(settings.stateDir, settings), catch: scanFailed })

    /**
     * The VMs of Blixard's directories and those that exited, each with its runner's state. Its reads
     * answer by one deadline (`readWait`); with `findUnrecorded`, the VMs whose runners /proc shows
     * are listed too, so a listing whose reads do not answer still names every running runner.
     */
    const list: Effect.Effect<ReadonlyArray<RunnerObservation>, BackendFailed> = Effect.gen(function* () {
      const by = yield* readsBy
      const scanned = yield* DiskReads.answerBy(() => scanStateDir(settings.stateDir, settings), by).pipe(
        // With `findUnrecorded`, an unreadable directory is as one that does not answer: /proc still lists.
        Effect.catchAll((e) => (settings.findUnrecorded === true ? Effect.succeedNone : Effect.fail(scanFailed(e))))
      )
      const names = new Set<VmName>(Option.match(scanned, { onNone: () => [], onSome: (found) => found.ours }))
      for (const name of yield* namesInProc(by)) names.add(name)
      for (const name of exits.keys()) names.add(name)
      const sorted = [...names].sort()
      return yield* Effect.forEach(sorted, (name) => Effect.map(statusBy(name, by), (state) => ({ name, state })), { concurrency: "unbounded" })
    })

    const remove = (name: VmName): Effect.Effect<void, BackendFailed | VmDirForeign> =>
      Effect.zipRight(
        stop(name, settings.removeStopTimeout ?? Duration.seconds(30)),
        withLock(name)(
          Effect.tryPromise({
            try: async () => {
              if (settings.gcRootDir !== undefined) await removeGcRoots(settings.gcRootDir, name, paths(name))
              await fs.promises.rm(paths(name).dir, { recursive: true, force: true })
              exits.delete(name)
            },
            catch: (e) => failed(name, `VM "${name}": could not delete ${paths(name).dir}${onNode}: ${describe(e)}`)
          })
        )
      )

    // Adopt what an earlier incarnation left running, so its exits are reported from now on.
    yield* Effect.ignore(list)

    return {
      prepare: (spec, onProgress) => Effect.provide(prepareRunner(settings, spec, onProgress), executor),
      start,
      stop,
      status,
      list,
      foreign: Effect.map(scan, (found) => found.foreign),
      subscribe: Effect.map(PubSub.subscribe(events), (queue) => Stream.fromQueue(queue)),
      remove
    } satisfies VmBackendShape
  })

/** Process mode. Needs a `CommandExecutor` (`NodeContext.layer`). */
export const layerProcess = (settings: ProcessSettings): Layer.Layer<VmBackend, never, CommandExecutor.CommandExecutor> =>
  Layer.scoped(VmBackend, make(settings))
