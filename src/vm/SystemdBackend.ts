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
 * The unit runs as microvm.nix's user and group (`microvm:kvm`), in the VM's directory, where it
 * replaces `booted` and creates its sockets: the daemon passes them as `owner` and `prepare` hands
 * the directory to them (`RunnerBuild.ts`). Only Blixard's own directories are acted on
 * (`VmBackend.ts`, OWNERSHIP): a foreign VM's `microvm@NAME` is never started, stopped or queried.
 *
 * microvm.nix declares `microvm@` with `Restart=always`; the NixOS module sets it to `no` for the
 * units Blixard starts, so a crashed VM is restarted by the agent's `restartPolicy`, not behind its
 * back by systemd. An exit event here means "it went down"; `start` on an active unit is a no-op.
 */
import type { CommandExecutor } from "@effect/platform"
import type { Scope } from "effect"
import { Clock, Duration, Effect, Either, Layer, Option, PubSub, Schedule, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { BackendFailed, type VmDirForeign } from "../domain/Errors.js"
import type { VmName } from "../domain/VmName.js"
import { type CommandResult, runCommand, showCommand } from "./internal/runCommand.js"
import { removeGcRoots } from "./internal/gcRoots.js"
import { scanStateDir } from "./internal/ownership.js"
import { isExecutable, vmPaths } from "./internal/stateDir.js"
import { prepareRunner, requireOwnDir, type StateDirSettings } from "./RunnerBuild.js"
import { type RunnerExit, type RunnerObservation, RunnerState, VmBackend, type VmBackendShape } from "./VmBackend.js"

export interface SystemdSettings extends StateDirSettings {
  /** The `systemctl` executable (default `systemctl`; tests point it at a fake). */
  readonly systemctl?: string
  /** How often VMs seen running are checked for having gone down (default 2 s). */
  readonly pollInterval?: Duration.DurationInput
  /** Each `systemctl` call other than `stop` must answer within this (default 30 s). */
  readonly commandTimeout?: Duration.DurationInput
}

export const unitName = (name: VmName): string => `microvm@${name}`

export const make = (
  settings: SystemdSettings
): Effect.Effect<VmBackendShape, never, CommandExecutor.CommandExecutor | Scope.Scope> =>
  Effect.gen(function* () {
    const executor = yield* Effect.context<CommandExecutor.CommandExecutor>()
    const systemctl = settings.systemctl ?? "systemctl"
    const commandTimeout = settings.commandTimeout ?? Duration.seconds(30)
    const events = yield* PubSub.unbounded<RunnerExit>()
    /** VMs seen running by this instance, and since when (epoch ms). */
    const watched = new Map<VmName, number>()
    const exits = new Map<VmName, { readonly at: number; readonly exitCode: number | undefined }>()
    const locks = new Map<VmName, Effect.Semaphore>()
    const onNode = ` on node ${settings.node}`
    const failed = (name: VmName, message: string) => new BackendFailed({ message, subject: name, node: settings.node })

    const withLock = (name: VmName) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.suspend(() => {
        let lock = locks.get(name)
        if (lock === undefined) {
          lock = Effect.unsafeMakeSemaphore(1)
          locks.set(name, lock)
        }
        return lock.withPermits(1)(effect)
      })

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

    const running = (state: string) => state === "active" || state === "activating" || state === "reloading" || state === "deactivating"

    const exitStatus = (name: VmName) =>
      Effect.map(show(name, "ExecMainStatus"), (text) => (/^-?\d+$/.test(text) ? Number(text) : undefined))

    const status = (name: VmName): Effect.Effect<RunnerState, BackendFailed> =>
      Effect.gen(function* () {
        // A foreign VM's unit is not Blixard's to report; nor is a unit without a Blixard directory.
        const own = yield* Effect.either(requireOwnDir(settings, name))
        if (Either.isLeft(own) || !own.right) {
          const exit = exits.get(name)
          return exit !== undefined ? RunnerState.Exited({ at: exit.at, exitCode: exit.exitCode, signal: undefined }) : RunnerState.Absent()
        }
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
        const exit = exits.get(name)
        return exit !== undefined ? RunnerState.Exited({ at: exit.at, exitCode: exit.exitCode, signal: undefined }) : RunnerState.Absent()
      })

    const start = (name: VmName): Effect.Effect<number, BackendFailed | VmDirForeign> =>
      withLock(name)(
        Effect.gen(function* () {
          yield* requireOwnDir(settings, name)
          const p = vmPaths(settings.stateDir, name)
          // The unit's ConditionPathExists would skip an unprepared VM silently: say so instead.
          if (!isExecutable(path.join(p.current, "bin", "microvm-run"))) {
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
          const exists = yield* requireOwnDir(settings, name)
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

    const scan = Effect.tryPromise({
      try: () => scanStateDir(settings.stateDir, settings),
      catch: (e) =>
        new BackendFailed({
          message: `cannot read the VM state directory ${settings.stateDir}${onNode}: ${e instanceof Error ? e.message : String(e)}`,
          subject: settings.stateDir,
          node: settings.node
        })
    })

    const list: Effect.Effect<ReadonlyArray<RunnerObservation>, BackendFailed> = Effect.gen(function* () {
      const { ours } = yield* scan
      return yield* Effect.forEach(ours, (name) => Effect.map(status(name), (state) => ({ name, state })))
    })

    const remove = (name: VmName): Effect.Effect<void, BackendFailed | VmDirForeign> =>
      Effect.zipRight(
        stop(name, Duration.seconds(150)),
        Effect.try({
          try: () => {
            const paths = vmPaths(settings.stateDir, name)
            if (settings.gcRootDir !== undefined) removeGcRoots(settings.gcRootDir, name, paths)
            fs.rmSync(paths.dir, { recursive: true, force: true })
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
