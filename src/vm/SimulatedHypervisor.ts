/**
 * The simulated `VmBackend` for the deterministic simulator: no processes, no files, no real time.
 *
 * A `SimulatedHypervisor` is one simulated host's hypervisor. Its VMs outlive the backend
 * instances built on it, as real runners outlive a daemon restart: build a new backend with
 * `layer(hypervisor)` after a simulated daemon crash and its `list()` reports the VMs still running
 * (adopted). `powerLoss()` is the host losing power: every VM is gone, and nobody is told.
 *
 * Time only passes through Effect's `Clock` (`startDelay`, `stopDelay`, timestamps), so the
 * simulator's virtual clock (or `TestClock`) drives it. Pids come from a counter: runs replay.
 *
 * Faults: `failNextStart(name)`, `failNextPrepare(name)`, `crash(name, exitCode)`, `powerLoss()`.
 * Inspection for invariant checkers: `runningVms()`, `isRunning(name)`, `pidOf(name)`, `startCount(name)`.
 */
import type { Scope } from "effect"
import { Clock, Duration, Effect, Layer, PubSub, Stream } from "effect"
import { BackendFailed } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { VmName } from "../domain/VmName.js"
import type { VmSpec } from "../domain/VmSpec.js"
import { type RunnerExit, RunnerState, VmBackend, type VmBackendShape } from "./VmBackend.js"

export interface SimulatedHypervisorOptions {
  /** Names this host in error messages. */
  readonly node?: NodeId
  /** How long `start` takes (virtual time; default 0). */
  readonly startDelay?: Duration.DurationInput
  /** How long `stop` takes (virtual time; default 0). */
  readonly stopDelay?: Duration.DurationInput
  /** The first pid handed out (default 1000). */
  readonly firstPid?: number
  /** How long `prepare` (the build) takes, printing one progress line per second (virtual time; default 0). */
  readonly prepareDelay?: Duration.DurationInput
}

interface RunningVm {
  readonly pid: number
  readonly since: number
  /** The spec its runner was prepared from. */
  readonly spec: VmSpec | undefined
}

/** One backend instance (one incarnation of the daemon) on the hypervisor. */
interface Incarnation {
  readonly events: PubSub.PubSub<RunnerExit>
  readonly started: Set<VmName>
  readonly exits: Map<VmName, { readonly at: number; readonly exitCode: number | undefined; readonly signal: string | undefined }>
}

export class SimulatedHypervisor {
  private readonly prepared = new Map<VmName, VmSpec>()
  private readonly running = new Map<VmName, RunningVm>()
  private readonly starts = new Map<VmName, number>()
  private readonly startFailures = new Map<VmName, Array<string>>()
  private readonly prepareFailures = new Map<VmName, Array<string>>()
  private readonly incarnations = new Set<Incarnation>()
  private nextPid: number

  constructor(readonly options: SimulatedHypervisorOptions = {}) {
    this.nextPid = options.firstPid ?? 1000
  }

  // ---- faults -------------------------------------------------------------------------------

  /** The next `start(name)` fails (each call queues one failure). */
  failNextStart(name: VmName, message = "injected start failure"): void {
    this.startFailures.set(name, [...(this.startFailures.get(name) ?? []), message])
  }

  /** The next `prepare` of `name` fails, as a broken nix build would. */
  failNextPrepare(name: VmName, message = "injected build failure"): void {
    this.prepareFailures.set(name, [...(this.prepareFailures.get(name) ?? []), message])
  }

  /** The VM's runner exits on its own with `exitCode`; the backends on this host report the exit. */
  crash(name: VmName, exitCode = 1): Effect.Effect<boolean> {
    return Effect.gen(this, function* () {
      if (!this.running.delete(name)) return false
      const at = yield* Clock.currentTimeMillis
      for (const incarnation of this.incarnations) {
        incarnation.exits.set(name, { at, exitCode, signal: undefined })
        yield* PubSub.publish(incarnation.events, { name, process: "vm", exitCode, signal: undefined, at })
      }
      return true
    })
  }

  /** The host lost power: every VM is gone at once, and no backend is told. */
  powerLoss(): void {
    this.running.clear()
  }

  // ---- inspection ---------------------------------------------------------------------------

  /** The VMs running on this host, sorted. */
  runningVms(): ReadonlyArray<VmName> {
    return [...this.running.keys()].sort()
  }

  isRunning(name: VmName): boolean {
    return this.running.has(name)
  }

  pidOf(name: VmName): number | undefined {
    return this.running.get(name)?.pid
  }

  /** How many runners were started for `name` on this host (a second copy would show here). */
  startCount(name: VmName): number {
    return this.starts.get(name) ?? 0
  }

  /** The spec the running runner of `name` was prepared from. */
  runningSpec(name: VmName): VmSpec | undefined {
    return this.running.get(name)?.spec
  }

  isPrepared(name: VmName): boolean {
    return this.prepared.has(name)
  }

  // ---- the backend --------------------------------------------------------------------------

  private failed(name: VmName, message: string): BackendFailed {
    return new BackendFailed({
      message,
      subject: name,
      ...(this.options.node !== undefined ? { node: this.options.node } : {})
    })
  }

  private takeFailure(queue: Map<VmName, Array<string>>, name: VmName): string | undefined {
    const pending = queue.get(name)
    const message = pending?.shift()
    if (pending !== undefined && pending.length === 0) queue.delete(name)
    return message
  }

  /** A backend instance on this host, for as long as the scope lasts (one daemon incarnation). */
  readonly makeBackend: Effect.Effect<VmBackendShape, never, Scope.Scope> = Effect.gen(this, function* () {
    const self = this
    const onNode = self.options.node !== undefined ? ` on node ${self.options.node}` : ""
    const incarnation: Incarnation = { events: yield* PubSub.unbounded<RunnerExit>(), started: new Set(), exits: new Map() }
    yield* Effect.acquireRelease(
      Effect.sync(() => self.incarnations.add(incarnation)),
      () => Effect.sync(() => self.incarnations.delete(incarnation))
    )

    const status = (name: VmName) =>
      Effect.sync((): RunnerState => {
        const vm = self.running.get(name)
        if (vm !== undefined) return RunnerState.Running({ pid: vm.pid, since: vm.since, adopted: !incarnation.started.has(name) })
        const exit = incarnation.exits.get(name)
        return exit !== undefined ? RunnerState.Exited(exit) : RunnerState.Absent()
      })

    const stop = (name: VmName) =>
      Effect.gen(function* () {
        if (!self.running.has(name)) {
          incarnation.exits.delete(name)
          return
        }
        yield* Effect.sleep(self.options.stopDelay ?? Duration.zero)
        self.running.delete(name)
        incarnation.exits.delete(name)
      })

    const backend: VmBackendShape = {
      prepare: (spec, onProgress) =>
        Effect.gen(function* () {
          const seconds = Math.floor(Duration.toMillis(self.options.prepareDelay ?? Duration.zero) / 1000)
          for (let second = 1; second <= seconds; second++) {
            yield* Effect.sleep("1 second")
            if (onProgress !== undefined) yield* onProgress(`building ${spec.name}: step ${second} of ${seconds}`)
          }
          const failure = self.takeFailure(self.prepareFailures, spec.name)
          if (failure !== undefined) {
            return yield* self.failed(spec.name, `VM "${spec.name}": building the runner${onNode} failed: ${failure}`)
          }
          self.prepared.set(spec.name, spec)
        }),
      start: (name) =>
        Effect.gen(function* () {
          const vm = self.running.get(name)
          if (vm !== undefined) return vm.pid
          if (!self.prepared.has(name)) {
            return yield* self.failed(name, `VM "${name}" is not prepared${onNode}. Prepare it (build its runner) before starting it.`)
          }
          const failure = self.takeFailure(self.startFailures, name)
          if (failure !== undefined) {
            return yield* self.failed(name, `VM "${name}": the runner exited at once${onNode}: ${failure}`)
          }
          yield* Effect.sleep(self.options.startDelay ?? Duration.zero)
          const again = self.running.get(name) // started meanwhile by a concurrent call
          if (again !== undefined) return again.pid
          const pid = self.nextPid++
          self.running.set(name, { pid, since: yield* Clock.currentTimeMillis, spec: self.prepared.get(name) })
          self.starts.set(name, self.startCount(name) + 1)
          incarnation.started.add(name)
          incarnation.exits.delete(name)
          return pid
        }),
      stop: (name) => stop(name),
      status,
      list: Effect.suspend(() => {
        const names = new Set<VmName>([...self.prepared.keys(), ...self.running.keys(), ...incarnation.exits.keys()])
        return Effect.forEach([...names].sort(), (name) => Effect.map(status(name), (state) => ({ name, state })))
      }),
      // A simulated node shares its hypervisor with no other tool.
      foreign: Effect.succeed([]),
      subscribe: Effect.map(PubSub.subscribe(incarnation.events), (queue) => Stream.fromQueue(queue)),
      remove: (name) =>
        Effect.zipRight(
          stop(name),
          Effect.sync(() => {
            self.prepared.delete(name)
          })
        )
    }
    return backend
  })
}

/** A `VmBackend` on the simulated host (build it again after a simulated daemon restart). */
export const layerSimulated = (hypervisor: SimulatedHypervisor): Layer.Layer<VmBackend> =>
  Layer.scoped(VmBackend, hypervisor.makeBackend)
