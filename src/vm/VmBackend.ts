/**
 * `VmBackend`: what a node's agent calls to make the hypervisor processes on this node match the
 * desired state. Three layers implement it:
 *
 * - `ProcessBackend.layerProcess`: microvm.nix runners spawned and supervised by the daemon itself,
 * - `SystemdBackend.layerSystemd`: microvm.nix's `microvm@NAME` systemd units,
 * - `SimulatedHypervisor.layerSimulated`: no processes, driven by the simulator's clock, with injectable faults.
 *
 * Both real layers share microvm.nix's state layout (`internal/stateDir.ts`) and `prepare`
 * (`RunnerBuild.ts`): `${stateDir}/${name}/current` is the runner to start, `booted` the runner
 * that is running.
 *
 * OWNERSHIP. The state directory is shared with microvm.nix's own VMs (declarative, `microvm -c`).
 * The real layers treat as theirs only the directories holding Blixard's marker
 * (`internal/ownership.ts`): `list` shows only those, `foreign` lists the others, and `prepare`,
 * `start`, `stop` and `remove` of a name whose directory is foreign fail with `VmDirForeign`
 * before touching anything (no unit, no script, no signal, no file).
 *
 * How the agent uses it:
 * 1. At start-up, `subscribe` to exits first, then `list()`: every runner reported `Running` is
 *    ADOPTED (the daemon restarted, the VM did not; never `start` it a second time). Runners the
 *    desired state does not place here are orphans: `stop` them.
 * 2. Desired running, observed absent/exited: `prepare(spec)` (idempotent; builds the runner) then
 *    `start(name)` (idempotent: a running VM is not started twice; answers its pid).
 * 3. Desired stopped: `stop(name, timeout)` (idempotent). Deleted: `remove(name)`.
 * 4. Each `RunnerExit` from the subscription is a VM (or its virtiofsd) that went away without
 *    `stop`: apply the VM's restart policy.
 */
import type { Duration, Effect, Scope, Stream } from "effect"
import { Context, Data } from "effect"
import type { BackendFailed, FlakeNotAllowed, InvalidArgument, RunnerNotAllowed, VmDirForeign } from "../domain/Errors.js"
import type { VmName } from "../domain/VmName.js"
import type { VmSpec } from "../domain/VmSpec.js"

/** What the node observes of one VM's runner. `since`/`at` are epoch milliseconds. */
export type RunnerState = Data.TaggedEnum<{
  /** `adopted`: found from its pid file (started by an earlier incarnation of the daemon). */
  Running: { readonly pid: number; readonly since: number; readonly adopted: boolean }
  /** Exited without `stop`; the code and signal are known only if this process saw the exit. */
  Exited: { readonly at: number; readonly exitCode: number | undefined; readonly signal: string | undefined }
  /** Not running (never started, stopped, or its exit was not observed by this process). */
  Absent: {}
}>
export const RunnerState = Data.taggedEnum<RunnerState>()

export interface RunnerObservation {
  readonly name: VmName
  readonly state: RunnerState
}

/** A supervised process went away without `stop` asking it to. */
export interface RunnerExit {
  readonly name: VmName
  /** `vm`: the runner (`microvm-run`) itself; `virtiofsd`: the VM's file-system daemon. */
  readonly process: "vm" | "virtiofsd"
  readonly exitCode: number | undefined
  readonly signal: string | undefined
  /** Epoch milliseconds (the backend's `Clock`). */
  readonly at: number
}

/** A directory in the state directory that is not Blixard's: a VM of microvm.nix's, or of another node or cluster. */
export interface ForeignVm {
  /** The directory's name (any name: not necessarily a valid `VmName`). */
  readonly name: string
  readonly reason: string
}

/** One line of progress while a runner is being built (nix's build log). */
export type OnProgress = (line: string) => Effect.Effect<void>

export interface VmBackendShape {
  /**
   * Makes the VM's state directory and its `current` runner link: links a `Runner` path, or builds
   * a `Flake`'s or an `Inline` module's runner with `nix build`. Progress lines go to `onProgress`
   * and to the VM's log file. Safe to repeat; does not touch a running VM (it keeps `booted`).
   */
  readonly prepare: (
    spec: VmSpec,
    onProgress?: OnProgress
  ) => Effect.Effect<void, BackendFailed | InvalidArgument | RunnerNotAllowed | FlakeNotAllowed | VmDirForeign>
  /** Starts the prepared runner; answers its pid. A running VM is not started again (same pid). */
  readonly start: (name: VmName) => Effect.Effect<number, BackendFailed | VmDirForeign>
  /**
   * Stops the VM: `microvm-shutdown` when the runner has it, else SIGTERM; SIGKILL once `timeout`
   * has passed. Then `tap-down`. Stopping a VM that is not running succeeds.
   */
  readonly stop: (name: VmName, timeout: Duration.DurationInput) => Effect.Effect<void, BackendFailed | VmDirForeign>
  /** What is observed of the VM's runner; a foreign directory's VM is `Absent` (it is not Blixard's). */
  readonly status: (name: VmName) => Effect.Effect<RunnerState, BackendFailed>
  /** Every VM with a state directory of Blixard's on this node, and what is observed of its runner. */
  readonly list: Effect.Effect<ReadonlyArray<RunnerObservation>, BackendFailed>
  /** The directories in the state directory that are not Blixard's, by name (sorted), and why. */
  readonly foreign: Effect.Effect<ReadonlyArray<ForeignVm>, BackendFailed>
  /**
   * Subscribes to unexpected exits from now on (subscribe before `list()` so no exit falls in
   * between). The subscription lasts as long as the scope.
   */
  readonly subscribe: Effect.Effect<Stream.Stream<RunnerExit>, never, Scope.Scope>
  /** Stops the VM if it runs, then deletes its state directory (and GC roots). Removing an absent VM succeeds. */
  readonly remove: (name: VmName) => Effect.Effect<void, BackendFailed | VmDirForeign>
}

export class VmBackend extends Context.Tag("blixard/VmBackend")<VmBackend, VmBackendShape>() {}
