/**
 * An agent (on node 1 unless told) over a `SimulatedHypervisor`, a `ClusterState` that commands are applied to
 * directly (no Raft), a report function that applies `ReportVmStatus` (and can be made to fail) and
 * a quorum signal the test switches off and on. Time is the `TestClock`.
 */
import { Clock, Context, Effect, Either, Layer, Option, TestClock } from "effect"
import type { Scope } from "effect"
import * as Agent from "../../src/agent/Agent.js"
import { NodeLease } from "../../src/agent/NodeLease.js"
import type { LeaseError } from "../../src/agent/NodeLease.js"
import type { Phase, WatchdogOptions } from "../../src/agent/Watchdog.js"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import * as C from "../../src/domain/Command.js"
import { type BlixardError, Unavailable } from "../../src/domain/Errors.js"
import { HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import type { RestartPolicy } from "../../src/domain/VmSpec.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import type { VmStatus } from "../../src/domain/VmStatus.js"
import { layerSimulated, SimulatedHypervisor } from "../../src/vm/SimulatedHypervisor.js"
import { VmBackend, type VmBackendShape } from "../../src/vm/VmBackend.js"

export const self = NodeId.make(1)
export const other = NodeId.make(2)
export const vm = (name: string) => VmName.make(name)

export const IntervalMs = 1000
export const FencingMs = 3000
export const Backoff = { initialMs: 1000, maxMs: 8000 }

export const nodeInfo = (n: number) =>
  new NodeInfo({
    id: NodeId.make(n),
    address: HostPort.make(`127.0.0.1:${7000 + n}`),
    capacity: new Resources({ vcpus: 8, memoryMiB: 8192 }),
    labels: {},
    state: "active",
    health: "up"
  })

export const spec = (name: string, restartPolicy: RestartPolicy = "on-failure") =>
  new VmSpec({ name: vm(name), source: new RunnerConfig({ path: `/runners/${name}` }), memoryMiB: 512, restartPolicy })

/** The replicated state, with commands applied in order as Raft would. */
export class FakeCluster {
  readonly state = new ClusterState()
  private index = 0
  private now = 1_000

  apply(command: C.Command) {
    this.now += 1
    const result = this.state.apply(++this.index, new C.CommandEnvelope({ command, proposedAt: this.now }))
    if (Either.isLeft(result)) throw new Error(`refused: ${result.left.message}`)
    return result.right
  }

  register(n: number) {
    this.apply(new C.RegisterNode({ info: nodeInfo(n) }))
  }
  create(name: string, policy: RestartPolicy = "on-failure") {
    return this.apply(new C.CreateVm({ spec: spec(name, policy) })).vm!
  }
  start(name: string) {
    this.apply(new C.StartVm({ name: vm(name) }))
  }
  stop(name: string) {
    this.apply(new C.StopVm({ name: vm(name) }))
  }
  delete(name: string) {
    this.apply(new C.DeleteVm({ name: vm(name) }))
  }
  down(n: number) {
    this.apply(new C.SetNodeHealth({ id: NodeId.make(n), health: "down", at: this.now }))
  }
  up(n: number) {
    this.apply(new C.SetNodeHealth({ id: NodeId.make(n), health: "up", at: this.now }))
  }
  drain(n: number) {
    this.apply(new C.SetNodeState({ id: NodeId.make(n), state: "draining" }))
  }
  vm(name: string) {
    return this.state.vms.get(name)
  }
}

/** Quorum contact as the test decides: "now" while up, frozen at the moment it was lost. */
export class Quorum {
  up = true
  private lostAt: number | undefined = undefined

  readonly contact: Effect.Effect<number | undefined> = Effect.map(Clock.currentTimeMillis, (now) => (this.up ? now : this.lostAt))

  readonly lose = Effect.map(Clock.currentTimeMillis, (now) => {
    this.up = false
    this.lostAt = now
  })

  regain(): void {
    this.up = true
  }
}

/**
 * A node's lease and its watchdog's record, kept in memory: the agent's `hostFence` (as
 * node/HostFence.ts keeps them on disk) and the options of `Watchdog.run` over them (as
 * node/WatchdogProcess.ts reads them). The test decides whether the daemon and the watchdog run.
 */
export class MemoryFence {
  lease: Option.Option<NodeLease> = Option.none()
  /** When set, reading the lease fails with it (a damaged file). */
  damaged: LeaseError | undefined = undefined
  phase: Phase = "watching"
  /** Every phase the watchdog published, in order. */
  readonly published: Array<Phase> = []
  /** A watchdog process runs (otherwise starts are blocked and `stillOwner` is false). */
  watchdogRunning = true
  /** The daemon that wrote the lease runs. */
  daemonAlive = true
  /** Runs right after the watchdog published a phase (e.g. to renew the lease at that instant). */
  onPublish: (phase: Phase) => Effect.Effect<void> = () => Effect.void

  constructor(readonly node: NodeId) {}

  get validUntil(): number | undefined {
    return Option.getOrUndefined(Option.map(this.lease, (l) => l.validUntil))
  }

  readonly hostFence: Agent.HostFence = {
    dataDir: "/var/lib/blixard",
    renew: (validUntil) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (validUntil <= (this.validUntil ?? -1)) return
        this.lease = Option.some(
          new NodeLease({ node: this.node, validUntil, writtenAt: now, writer: { pid: 4242, startTime: "1", bootId: "test" } })
        )
      }),
    startBlocked: Effect.sync(() =>
      !this.watchdogRunning ? "no fencing watchdog runs" : this.phase === "fencing" ? "the fencing watchdog is stopping VMs" : undefined
    )
  }

  /** `Watchdog.run`'s options over this fence and the node's hypervisor. */
  watchdog(hv: SimulatedHypervisor, stopTimeoutMs = 100): WatchdogOptions {
    return {
      node: this.node,
      fencingMs: FencingMs,
      stopTimeoutMs,
      lease: Effect.suspend(() => (this.damaged !== undefined ? Effect.fail(this.damaged) : Effect.succeed(this.lease))),
      stillOwner: Effect.sync(() => this.watchdogRunning),
      publish: (phase) =>
        Effect.suspend(() => {
          this.phase = phase
          this.published.push(phase)
          return this.onPublish(phase)
        }),
      backend: layerSimulated(hv),
      writerAlive: () => this.daemonAlive
    }
  }
}

export interface Harness {
  readonly cluster: FakeCluster
  readonly hv: SimulatedHypervisor
  readonly quorum: Quorum
  readonly agent: Agent.Agent
  /** Every report that reached the (fake) leader, in order. */
  readonly reports: Array<{ readonly name: string; readonly status: VmStatus }>
  /** Reports attempted while `reachable` was false. */
  readonly refused: Array<{ readonly name: string; readonly status: VmStatus }>
  /** When false, reports fail with `Unavailable` (the leader cannot be reached). */
  leaderReachable: boolean
  /** How each delivery went: a batch's size (`ReportVmStatuses`), or 0 for one VM's `ReportVmStatus`. */
  readonly deliveries: Array<number>
  /** When set, a batch is refused with this (a member of an older release), as the API refuses it. */
  batchRefusal: BlixardError | undefined
}

/** Lets every fiber run until it is suspended again, with no time passing. */
export const settle = TestClock.adjust(0)

/** Moves the TestClock forward in steps of at most `step` ms, letting fibers run in between. */
export const advance = (ms: number, step = 100) =>
  Effect.gen(function* () {
    let left = ms
    while (left > 0) {
      const now = Math.min(step, left)
      yield* TestClock.adjust(now)
      left -= now
    }
    yield* settle
  })

export const phases = (h: Harness, name: string) => h.reports.filter((r) => r.name === name).map((r) => r.status.phase)

/**
 * Starts an agent for node 1 in the current scope. `prepare` runs first (e.g. to fill the state
 * or start runners of an "earlier daemon"), before the agent's first round.
 */
export const makeHarness = (options: {
  /** The agent's node (default 1). */
  readonly node?: NodeId
  readonly cluster?: FakeCluster
  readonly hv?: SimulatedHypervisor
  readonly quorum?: Quorum
  readonly confirmFresh?: Agent.AgentOptions["confirmFresh"]
  /** Changes the simulated backend (e.g. slower builds) before the agent gets it. */
  readonly wrap?: (backend: VmBackendShape) => VmBackendShape
  /** The lease and watchdog outside the daemon (none by default). */
  readonly hostFence?: Agent.HostFence
  /** Batches of reports are refused with this from the start (`Harness.batchRefusal`). */
  readonly batchRefusal?: BlixardError
} = {}): Effect.Effect<Harness, never, Scope.Scope> =>
  Effect.gen(function* () {
    const node = options.node ?? self
    const cluster = options.cluster ?? new FakeCluster()
    const hv = options.hv ?? new SimulatedHypervisor({ node, firstPid: node * 1000 })
    const quorum = options.quorum ?? new Quorum()
    const reports: Array<{ name: string; status: VmStatus }> = []
    const refused: Array<{ name: string; status: VmStatus }> = []
    const harness: { -readonly [K in keyof Harness]: Harness[K] } = {
      cluster,
      hv,
      quorum,
      agent: undefined as unknown as Agent.Agent,
      reports,
      refused,
      leaderReachable: true,
      deliveries: [],
      batchRefusal: options.batchRefusal
    }
    const context = yield* Layer.build(layerSimulated(hv))
    const wrap = options.wrap
    const layerContext = wrap === undefined ? context : Context.add(context, VmBackend, wrap(Context.get(context, VmBackend)))
    harness.agent = yield* Agent.make({
      node,
      state: () => cluster.state,
      report: (name, status) =>
        Effect.suspend(() => {
          if (!harness.leaderReachable) {
            refused.push({ name, status })
            return Effect.fail(new Unavailable({ message: "the leader cannot be reached" }))
          }
          reports.push({ name, status })
          harness.deliveries.push(0)
          cluster.apply(new C.ReportVmStatus({ name, node, status }))
          return Effect.void
        }),
      reportMany: (batch) =>
        Effect.suspend(() => {
          if (harness.batchRefusal !== undefined) return Effect.fail(harness.batchRefusal)
          if (!harness.leaderReachable) {
            refused.push(...batch)
            return Effect.fail(new Unavailable({ message: "the leader cannot be reached" }))
          }
          reports.push(...batch)
          harness.deliveries.push(batch.length)
          cluster.apply(new C.ReportVmStatuses({ node, reports: batch }))
          return Effect.void
        }),
      quorumContact: quorum.contact,
      ...(options.confirmFresh !== undefined ? { confirmFresh: options.confirmFresh } : {}),
      intervalMs: IntervalMs,
      fencingMs: FencingMs,
      backoff: Backoff,
      stopTimeoutMs: 1000,
      fenceStopTimeoutMs: 100,
      hostFence: options.hostFence
    }).pipe(Effect.provide(layerContext))
    yield* settle
    return harness
  })
