/**
 * microvm.nix systemd mode: the VMs run as microvm.nix's `microvm@NAME` template units (from
 * microvm.nix's NixOS host module, `microvm.host.enable`), which start
 * `${stateDir}/NAME/current/bin/microvm-run` in the state directory, manage `booted`, and run
 * `tap-up`/`tap-down`, `virtiofsd-run` and `microvm-shutdown` through companion units.
 *
 * `prepare` makes the same state layout as process mode (the unit reads `current`); `start`,
 * `stop`, `status` are `systemctl start|stop|is-active microvm@NAME` (plus `systemctl show` for the
 * pid and exit status). The units survive daemon restarts by construction, so `list()` simply
 * asks systemd. Exits are noticed by polling `is-active` for the VMs this instance saw running.
 *
 * The fencing watchdog stops these units on a disk that may be stalled (the state directory's is
 * usually the data directory's), so the listing and the stop path never read the state directory on
 * the JavaScript thread: markers and the listing are read off it (`internal/diskReads.ts`), and with
 * `readWait` (the watchdog's) waited for only so long. The running `microvm@*` units are then also
 * asked of systemd (`systemctl list-units`, which answers from memory), so a listing whose reads do
 * not answer still names every running VM. A unit whose marker does not answer in time is judged
 * as its marker said when last read under the unit's current invocation: systemd gives every
 * activation of a unit a new `InvocationID`, which `systemctl show` answers from memory, so a verdict
 * read while the disk answered holds for as long as that run of the unit lasts (the watchdog lists
 * between its rounds to read them, `agent/Watchdog.ts`). Only a unit whose current invocation's
 * marker was never read is judged by its unit: Blixard's when systemd says it is one Blixard starts
 * (`Restart=no`: the NixOS module gives the host's declarative VMs `Restart=always`, every other
 * `microvm@` unit `no`), and stopped; otherwise left alone as foreign.
 *
 * The window that remains: a VM made by hand (`microvm -c`, which runs as a `microvm@NAME` unit with
 * `Restart=no` too) started, or restarted, after the watchdog last listed (at most its survey
 * interval before) and whose marker then does not answer, is taken for Blixard's and stopped; as is
 * every such unit when the watchdog started after the disk stalled. A Blixard VM started in that
 * window is stopped, as it should be. The memory outlives the watchdog process when it is given a
 * file in the runtime directory (`verdictFile`, `internal/unitVerdicts.ts`: tmpfs, the daemon's
 * `RuntimeDirectory=`): a watchdog started again reads it back. Without one (no runtime directory)
 * a new watchdog starts without it, and says so.
 *
 * The unit runs as microvm.nix's user and group (`microvm:kvm`), in the VM's directory, where it
 * replaces `booted` and creates its sockets: the daemon passes them as `owner` and `prepare` hands
 * the directory to them (`RunnerBuild.ts`). Only Blixard's own directories are acted on
 * (`VmBackend.ts`, OWNERSHIP): a foreign VM's `microvm@NAME` is never started, stopped or queried,
 * but for the fencing watchdog's listing (`list-units`) and its `InvocationID` (see above).
 *
 * microvm.nix declares `microvm@` with `Restart=always`; the NixOS module sets it to `no` for the
 * units Blixard starts, so a crashed VM is restarted by the agent's `restartPolicy`, not behind its
 * back by systemd. An exit event here means "it went down"; `start` on an active unit is a no-op.
 */
import type { CommandExecutor } from "@effect/platform"
import type { Context, Scope } from "effect"
import { Clock, Duration, Effect, Layer, Option, PubSub, Schedule, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { BackendFailed, type VmDirForeign } from "../domain/Errors.js"
import { VmName } from "../domain/VmName.js"
import * as DiskReads from "./internal/diskReads.js"
import { type CommandResult, runCommand, showCommand } from "./internal/runCommand.js"
import { removeGcRoots } from "./internal/gcRoots.js"
import { readOwnership, scanStateDir } from "./internal/ownership.js"
import { vmPaths } from "./internal/stateDir.js"
import { unitVerdicts, type Whose } from "./internal/unitVerdicts.js"
import { executable, foreignDirError, prepareRunner, requireOwnDir, type StateDirSettings } from "./RunnerBuild.js"
import { type RunnerExit, type RunnerObservation, RunnerState, VmBackend, type VmBackendShape } from "./VmBackend.js"

export interface SystemdSettings extends StateDirSettings {
  /** The `systemctl` executable (default `systemctl`; tests point it at a fake). */
  readonly systemctl?: string
  /** How often VMs seen running are checked for having gone down (default 2 s). */
  readonly pollInterval?: Duration.DurationInput
  /** Each `systemctl` call other than `stop` must answer within this (default 30 s). */
  readonly commandTimeout?: Duration.DurationInput
  /**
   * How long a listing's or a stop's reads of the state directory are waited for before they count
   * as unanswered (the fencing watchdog's); the running units are then also listed by systemd.
   * Without it they are waited for as long as they take.
   */
  readonly readWait?: Duration.DurationInput
  /**
   * Where the markers' verdicts are kept across processes (`internal/unitVerdicts.ts`): a file in the
   * runtime directory (tmpfs), never on the state directory's disk. Absent: in this process only.
   */
  readonly verdictFile?: string | undefined
}

export const unitName = (name: VmName): string => `microvm@${name}`

/** A unit in one of these states still runs its VM (or is about to). */
const running = (state: string) => state === "active" || state === "activating" || state === "reloading" || state === "deactivating"

/** The VMs of `systemctl list-units --plain --no-legend --full 'microvm@*'`'s lines (UNIT LOAD ACTIVE SUB DESCRIPTION) that run. */
export const runningUnits = (lines: ReadonlyArray<string>): ReadonlyArray<VmName> =>
  lines.flatMap((line) => {
    const [unit, , active] = line.trim().split(/\s+/)
    const name = /^microvm@(.+)\.service$/.exec(unit ?? "")?.[1]
    if (name === undefined || active === undefined || !running(active)) return []
    return Option.toArray(Schema.validateOption(VmName)(name))
  })


/** The `systemctl` calls for the VMs' units: each answers within `commandTimeout`, but `runUnbounded`'s. */
const systemctlOf = (settings: SystemdSettings, executor: Context.Context<CommandExecutor.CommandExecutor>) => {
  const systemctl = settings.systemctl ?? "systemctl"
  const commandTimeout = settings.commandTimeout ?? Duration.seconds(30)
  const onNode = ` on node ${settings.node}`
  const failed = (name: VmName, message: string) => new BackendFailed({ message, subject: name, node: settings.node })

  /** Runs `systemctl ARGS…`; answers the exit code and output lines. */
  const runUnbounded = (name: VmName, args: ReadonlyArray<string>) =>
    runCommand({ command: systemctl, args }).pipe(
      Effect.provide(executor),
      Effect.mapError((e) =>
        failed(name, `VM "${name}": could not run ${systemctl}${onNode} (${e.message}). Is this a systemd host? Otherwise use the process backend.`)
      )
    )

  const run = (name: VmName, args: ReadonlyArray<string>) =>
    runUnbounded(name, args).pipe(
      Effect.timeoutFail({
        duration: commandTimeout,
        onTimeout: () =>
          failed(name, `VM "${name}": ${showCommand(systemctl, args)} did not answer within ${Duration.format(commandTimeout)}${onNode}`)
      })
    )

  const succeeded = (name: VmName, args: ReadonlyArray<string>) => (result: CommandResult) =>
    result.exitCode === 0
      ? Effect.succeed(result)
      : Effect.fail(
            failed(
              name,
              `VM "${name}": ${showCommand(systemctl, args)} failed${onNode} (exit code ${result.exitCode}): ${result.tail.join("\n")}\n` +
                `See \`journalctl -u ${unitName(name)}\` and \`systemctl status ${unitName(name)}\` on the node.`
            )
          )

  const expectOk = (name: VmName, args: ReadonlyArray<string>) => Effect.flatMap(run(name, args), succeeded(name, args))

  const show = (name: VmName, property: string) =>
    Effect.map(expectOk(name, ["show", `--property=${property}`, "--value", unitName(name)]), (r) => (r.tail[0] ?? "").trim())

  const isActive = (name: VmName) =>
    Effect.map(run(name, ["is-active", unitName(name)]), (r) => (r.tail[0] ?? "unknown").trim())

  const exitStatus = (name: VmName) =>
    Effect.map(show(name, "ExecMainStatus"), (text) => (/^-?\d+$/.test(text) ? Number(text) : undefined))

  /** The VMs whose `microvm@` units run, as systemd lists them (no disk read). */
  const unitsRunning: Effect.Effect<ReadonlyArray<VmName>, BackendFailed> = Effect.suspend(() => {
    const args = ["list-units", "--plain", "--no-legend", "--full", "microvm@*"]
    const fail = (why: string) =>
      new BackendFailed({
        message: `${showCommand(systemctl, args)} ${why}${onNode}, so the running VMs cannot be listed; is systemd answering (\`systemctl status\`)?`,
        subject: settings.stateDir,
        node: settings.node
      })
    return runCommand({ command: systemctl, args, tailLines: 100_000 }).pipe(
      Effect.provide(executor),
      Effect.mapError((e) => fail(`could not run (${e.message})`)),
      Effect.timeoutFail({ duration: commandTimeout, onTimeout: () => fail(`did not answer within ${Duration.format(commandTimeout)}`) }),
      Effect.flatMap((r) =>
        r.exitCode === 0 ? Effect.succeed(runningUnits(r.tail)) : Effect.fail(fail(`failed (exit code ${r.exitCode}): ${r.tail.join("\n")}`))
      )
    )
  })

  return { commandTimeout, runUnbounded, succeeded, expectOk, show, isActive, exitStatus, unitsRunning }
}

/** The instant by which this step's reads must answer (none without `readWait`: they wait). */
const readsByOf = (settings: SystemdSettings): Effect.Effect<number | undefined> =>
  Effect.map(Clock.currentTimeMillis, (now) => (settings.readWait === undefined ? undefined : now + Duration.toMillis(settings.readWait)))

/**
 * Whose the VM's directory is, its marker read off the JavaScript thread within `readWait`. Not
 * answered (a stalled disk): as read last for the unit's current invocation, when it was; otherwise
 * Blixard's when systemd says its unit is one Blixard starts (`Restart=no`). Without `readWait`
 * there is no memory: the marker is waited for.
 */
const whoseOf = (settings: SystemdSettings, show: (name: VmName, property: string) => Effect.Effect<string, BackendFailed>) =>
  (name: VmName): Effect.Effect<Whose> =>
    Effect.gen(function* () {
      const verdicts = unitVerdicts(settings.verdictFile)
      // Asked before the marker is read: a verdict is never filed under an invocation begun after its read.
      const invocation = settings.readWait === undefined ? "" : yield* show(name, "InvocationID").pipe(Effect.orElseSucceed(() => ""))
      const by = yield* readsByOf(settings)
      const read = yield* DiskReads.answerBy(() => readOwnership(vmPaths(settings.stateDir, name).dir, name, settings), by).pipe(Effect.orDie)
      if (Option.isSome(read)) {
        if (invocation !== "") yield* verdicts.set(settings.stateDir, name, { invocation, whose: read.value })
        return read.value
      }
      const known = yield* verdicts.get(settings.stateDir, name)
      if (known !== undefined && invocation !== "" && known.invocation === invocation) return known.whose
      const restart = yield* show(name, "Restart").pipe(Effect.orElseSucceed(() => "unknown"))
      if (restart === "no") return { _tag: "Ours" } as const
      return {
        _tag: "Foreign",
        reason: `its marker did not answer in time, was never read while this run of its unit lasts, and its unit is not one Blixard starts (Restart=${restart})`
      } as const
    })

export const make = (
  settings: SystemdSettings
): Effect.Effect<VmBackendShape, never, CommandExecutor.CommandExecutor | Scope.Scope> =>
  Effect.gen(function* () {
    const executor = yield* Effect.context<CommandExecutor.CommandExecutor>()
    const { commandTimeout, runUnbounded, succeeded, expectOk, show, isActive, exitStatus, unitsRunning } = systemctlOf(settings, executor)
    const events = yield* PubSub.unbounded<RunnerExit>()
    /** VMs seen running by this instance, and since when (epoch ms). */
    const watched = new Map<VmName, number>()
    const exits = new Map<VmName, { readonly at: number; readonly exitCode: number | undefined }>()
    const locks = new Map<VmName, Effect.Semaphore>()
    const onNode = ` on node ${settings.node}`
    const failed = (name: VmName, message: string) => new BackendFailed({ message, subject: name, node: settings.node })
    const readsBy = readsByOf(settings)
    const whose = whoseOf(settings, show)

    const withLock = (name: VmName) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.suspend(() => {
        let lock = locks.get(name)
        if (lock === undefined) {
          lock = Effect.unsafeMakeSemaphore(1)
          locks.set(name, lock)
        }
        return lock.withPermits(1)(effect)
      })

    /** The directory is Blixard's (true), or there is none (false); fails when it is foreign. */
    const requireOwn = (name: VmName): Effect.Effect<boolean, VmDirForeign> =>
      Effect.flatMap(whose(name), (w) =>
        w._tag === "Foreign" ? Effect.fail(foreignDirError(settings, name, w.reason)) : Effect.succeed(w._tag === "Ours")
      )

    const exited = (name: VmName): RunnerState => {
      const exit = exits.get(name)
      return exit !== undefined ? RunnerState.Exited({ at: exit.at, exitCode: exit.exitCode, signal: undefined }) : RunnerState.Absent()
    }

    /** The state of the unit of a VM whose directory is Blixard's. */
    const unitState = (name: VmName): Effect.Effect<RunnerState, BackendFailed> =>
      Effect.gen(function* () {
        const state = yield* isActive(name)
        if (running(state)) {
          const pid = Number(yield* show(name, "MainPID"))
          let since = watched.get(name)
          if (since === undefined) {
            since = yield* Clock.currentTimeMillis
            watched.set(name, since)
          }
          return RunnerState.Running({ pid, since, adopted: false })
        }
        if (state === "failed") {
          const exit = exits.get(name)
          return RunnerState.Exited({
            at: exit?.at ?? (yield* Clock.currentTimeMillis),
            exitCode: exit?.exitCode ?? (yield* exitStatus(name)),
            signal: undefined
          })
        }
        return exited(name)
      })

    /** A foreign VM's unit is not Blixard's to report; nor is a unit without a Blixard directory. */
    const status = (name: VmName): Effect.Effect<RunnerState, BackendFailed> =>
      Effect.flatMap(whose(name), (w) => (w._tag === "Ours" ? unitState(name) : Effect.succeed(exited(name))))

    const start = (name: VmName): Effect.Effect<number, BackendFailed | VmDirForeign> =>
      withLock(name)(
        Effect.gen(function* () {
          yield* requireOwnDir(settings, name)
          const p = vmPaths(settings.stateDir, name)
          // The unit's ConditionPathExists would skip an unprepared VM silently: say so instead.
          if (!(yield* executable(path.join(p.current, "bin", "microvm-run")))) {
            return yield* failed(
              name,
              `VM "${name}" is not prepared${onNode}: ${p.current}/bin/microvm-run does not exist. Prepare it (build its runner) before starting it.`
            )
          }
          yield* expectOk(name, ["start", unitName(name)])
          const pid = Number(yield* show(name, "MainPID"))
          if (!(pid > 0)) {
            return yield* failed(
              name,
              `VM "${name}": ${unitName(name)} started but has no main process${onNode} (it exited at once). See \`journalctl -u ${unitName(name)}\`.`
            )
          }
          if (!watched.has(name)) watched.set(name, yield* Clock.currentTimeMillis)
          exits.delete(name)
          return pid
        })
      )

    const stop = (name: VmName, timeout: Duration.DurationInput): Effect.Effect<void, BackendFailed | VmDirForeign> =>
      withLock(name)(
        Effect.gen(function* () {
          // No Blixard directory: no unit of Blixard's to stop (and a foreign one is refused).
          const exists = yield* requireOwn(name)
          watched.delete(name)
          exits.delete(name)
          if (!exists) return
          // systemd runs microvm-shutdown (ExecStop) and then signals; after our timeout, SIGKILL.
          const args = ["stop", unitName(name)]
          const stopped = yield* runUnbounded(name, args).pipe(Effect.timeoutOption(timeout))
          if (Option.isSome(stopped)) return yield* Effect.asVoid(succeeded(name, args)(stopped.value))
          yield* expectOk(name, ["kill", "--signal=SIGKILL", unitName(name)])
          yield* isActive(name).pipe(
            Effect.repeat({ schedule: Schedule.spaced("200 millis"), while: running }),
            Effect.timeoutFail({
              duration: commandTimeout,
              onTimeout: () => failed(name, `VM "${name}": ${unitName(name)} is still active after SIGKILL${onNode}; check \`systemctl status ${unitName(name)}\`.`)
            })
          )
        })
      )

    const scanFailed = (e: unknown) =>
      new BackendFailed({
        message: `cannot read the VM state directory ${settings.stateDir}${onNode}: ${e instanceof Error ? e.message : String(e)}`,
        subject: settings.stateDir,
        node: settings.node
      })
    const scan = Effect.tryPromise({ try: () => scanStateDir(settings.stateDir, settings), catch: scanFailed })

    /**
     * The VMs of Blixard's directories and those that exited, each with its unit's state. With
     * `readWait`, the directory's reads answer by one deadline, and each running unit systemd lists
     * is judged by `whose` (its marker read again, within a deadline of its own, its verdict kept for
     * its invocation), so a listing whose reads do not answer still names every running VM of
     * Blixard's, and one whose reads answer fills the memory used when they stop answering.
     */
    const list: Effect.Effect<ReadonlyArray<RunnerObservation>, BackendFailed> = Effect.gen(function* () {
      const by = yield* readsBy
      const scanned = yield* DiskReads.answerBy(() => scanStateDir(settings.stateDir, settings), by).pipe(
        // With `readWait`, an unreadable directory is as one that does not answer: systemd still lists.
        Effect.catchAll((e) => (settings.readWait !== undefined ? Effect.succeedNone : Effect.fail(scanFailed(e))))
      )
      const ours: ReadonlyArray<VmName> = Option.match(scanned, { onNone: () => [], onSome: (found) => found.ours })
      const units = settings.readWait === undefined ? [] : yield* unitsRunning
      const judged = yield* Effect.forEach(units, (name) => Effect.map(whose(name), (w) => (w._tag === "Ours" ? [name] : [])), {
        concurrency: "unbounded"
      })
      const names = [...new Set([...ours, ...judged.flat()])].sort()
      return yield* Effect.forEach(names, (name) => Effect.map(unitState(name), (state) => ({ name, state })), { concurrency: "unbounded" })
    })

    const remove = (name: VmName): Effect.Effect<void, BackendFailed | VmDirForeign> =>
      Effect.zipRight(
        stop(name, Duration.seconds(150)),
        Effect.tryPromise({
          try: async () => {
            const paths = vmPaths(settings.stateDir, name)
            if (settings.gcRootDir !== undefined) await removeGcRoots(settings.gcRootDir, name, paths)
            await fs.promises.rm(paths.dir, { recursive: true, force: true })
          },
          catch: (e) => failed(name, `VM "${name}": could not delete its state directory${onNode}: ${String(e)}`)
        })
      )

    /** Notices VMs seen running that went down without `stop`. */
    const poll = () => Effect.forEach(
      [...watched.keys()],
      (name) =>
        Effect.gen(function* () {
          const state = yield* isActive(name)
          if (running(state) || !watched.has(name)) return
          watched.delete(name)
          const at = yield* Clock.currentTimeMillis
          const exitCode = state === "failed" ? yield* exitStatus(name) : undefined
          exits.set(name, { at, exitCode })
          yield* PubSub.publish(events, { name, process: "vm", exitCode, signal: undefined, at })
        }).pipe(withLock(name), Effect.ignore),
      { discard: true }
    )
    yield* Effect.suspend(poll).pipe(
      Effect.repeat(Schedule.spaced(settings.pollInterval ?? Duration.seconds(2))),
      Effect.forkScoped
    )

    const prepare: VmBackendShape["prepare"] = (spec, onProgress) => Effect.provide(prepareRunner(settings, spec, onProgress), executor)

    return {
      prepare,
      start,
      stop,
      status,
      list,
      foreign: Effect.map(scan, (found) => found.foreign),
      subscribe: Effect.map(PubSub.subscribe(events), (queue) => Stream.fromQueue(queue)),
      remove
    } satisfies VmBackendShape
  })

/** Systemd mode. Needs a `CommandExecutor` (`NodeContext.layer`). */
export const layerSystemd = (settings: SystemdSettings): Layer.Layer<VmBackend, never, CommandExecutor.CommandExecutor> =>
  Layer.scoped(VmBackend, make(settings))
