/**
 * The orchestration layer in the full-service tier. Every simulated node runs what the daemon runs
 * over its Raft node: the replicated `ClusterState` (`ClusterStateHolder`) as the state machine,
 * its `NodeControlPlane` (a follower forwards writes to the leader — here across the simulated
 * network, `NodeNet.request`) and `Orchestration.start` — registration, the leader's failure
 * detector and the agent with its fencing — with the daemon's default timeouts, over one
 * `SimulatedHypervisor` per machine.
 *
 * Machines and daemons. A crash is of the whole machine unless told otherwise: the host's VMs die
 * with it (`powerLoss`), its disk (the prepared runners) survives. A share of the crashes kill only
 * the daemon (kill -9): the runners live on, and the restarted agent must adopt them and never
 * start one a second time. A daemon-only crash is restarted within `DaemonDownMs`, short enough
 * for the fencing argument to cover it: while the daemon is dead nothing fences its runners, and
 * the restarted agent counts its fencing deadline from its own start. A daemon that stays dead
 * longer is the README's open gap (a host-side watchdog is to close it); it is not modelled.
 *
 * Clients create VMs (small, so several fit per node), start, stop and delete them through a
 * random running node's API, retrying with the same request id (so a retry applies once) on
 * `NotLeader`, `Unavailable`, `Timeout` and `ProposalDropped`. They also make the hardware
 * misbehave — a runner exits (code 0, 1 or 137), the next start of a VM fails — so restart
 * policies and backoff run. They move VMs off live nodes (unless `moves: false`): drain a node and
 * make it active again, and update a VM's memory so that it may outgrow its node. They stop when
 * the faults heal.
 *
 * Clients also read — `vm get NAME` and `vm list`, linearizable (a ReadIndex round) — and every
 * VM's desired state (`stopped`, `running`, or `deleted` once gone) is checked as a register: the
 * history of creates, starts, stops, deletes and reads must be linearizable (a read never returns
 * less than a change completed before it began).
 *
 * Invariants, besides Raft's: after every instant, no VM runs on two hypervisors at once. After
 * the faults heal, within the liveness bound: every node is registered and up; every VM whose
 * desired state is running, that is placed and has not `failed` (its restart policy gave up) runs
 * on exactly its node's hypervisor; nothing else runs anywhere; no VM is pending that a node has
 * room for.
 *
 * Known bugs to put back (`bug`, see `Bugs.ts`): besides Raft's, the orchestration layer's own,
 * each a configuration the daemon's schema refuses — `no-fencing` (the agent never fences) and
 * `early-reschedule` (`nodeDownMs` below `fencingMs`) — and `one-step-moves` (the state machine
 * moves a VM off a live node without waiting for that node to stop it; caught through `moves`),
 * and `raise-version-early` (the leader raises the cluster's log version once a majority runs it).
 *
 * Mixed releases (`ExploreOptions.rollingUpgrade`, profile `upgrade`): each node runs a release of
 * log version 1 or 2 (`OrchestrationNode.release`: its state's `release`, its registration's log
 * version), every replica starting from the founder's version. `ReplicaChecks` (`Replicas.ts`)
 * checks, as each replica applies an entry, that all apply it alike (its events and the version
 * after it), that the version is raised only once every member registered it and never goes down,
 * and that an older release never applies past the raise (it must stop, `BLX_RELEASE_TOO_OLD`).
 * Below log version 2 a move off a live node is in one step, the older release's own flaw (the VM
 * may run on two nodes; 2 of seeds 1–3 did when clients drained then): as the README tells
 * operators ("drain after the upgrade"), the clients drain and resize only once some node has
 * applied version 2.
 */
import { Cause, Effect, Either, Layer, Logger, LogLevel, Schema } from "effect"
import { checkNoVmRunsTwice } from "../agent/Invariants.js"
import type { ControlPlaneShape } from "../api/ControlPlane.js"
import { ClusterStateHolder } from "../cluster/ClusterStateMachine.js"
import { LogVersion, TwoStepMoves } from "../cluster/ClusterVersion.js"
import { Ledger, place } from "../cluster/Scheduler.js"
import * as C from "../domain/Command.js"
import type { BlixardError } from "../domain/Errors.js"
import { Unavailable } from "../domain/Errors.js"
import { toJson } from "../domain/Json.js"
import { NodeId } from "../domain/NodeId.js"
import { HostPort } from "../domain/NodeInfo.js"
import { Resources } from "../domain/Resources.js"
import type { RestartPolicy } from "../domain/VmSpec.js"
import { RunnerConfig, VmSpec } from "../domain/VmSpec.js"
import { VmName } from "../domain/VmName.js"
import { Timeouts } from "../node/Config.js"
import * as NodeControlPlane from "../node/NodeControlPlane.js"
import * as Orchestration from "../node/Orchestration.js"
import { RaftNode } from "../raft/RaftNode.js"
import { layerSimulated, SimulatedHypervisor } from "../vm/SimulatedHypervisor.js"
import type { BugName } from "./Bugs.js"
import { switchesOf } from "./Bugs.js"
import type { ExploreOptions, ExploreResult } from "./Explorer.js"
import type { ClientEnv, NodeHandle, NodeNet, NodeStack, Workload } from "./FullService.js"
import { runFullService } from "./FullService.js"
import { History } from "./History.js"
import type { RegisterInput, RegisterOutput } from "./Linearizability.js"
import { checkLinearizability, formatResult, registerModel } from "./Linearizability.js"
import { ReplicaChecks } from "./Replicas.js"

export interface OrchestrationOptions extends ExploreOptions {
  /** Receives every log line of the nodes' services (agent, failure detector), with simulated time. */
  readonly log?: ((line: string) => void) | undefined
  /**
   * Clients also move VMs off live nodes: they drain a node (and make it active again later), and
   * update a VM's memory so that it may no longer fit where it runs. On by default; `false` gives
   * the runs of before moves existed (`blixard sim --no-moves`).
   */
  readonly moves?: boolean | undefined
}

/** The daemon's defaults (`Config.ts`): 50 ms ticks, fencing after 3 s, a node down after 6 s. */
const daemonTimeouts = Schema.decodeSync(Timeouts)({})

/**
 * How long a killed daemon stays dead at most before its supervisor restarts it. The fencing
 * argument covers a dead time `d` while `d + fencingMs` (the restarted agent's deadline, if it comes
 * back cut off) plus a stop stays below `nodeDownMs` — with the simulated clocks running up to 20 %
 * fast or slow: 1 s keeps that.
 */
const DaemonDownMs = 1000

/**
 * The mean gap between faults: orchestration's timeouts are seconds, not Raft's ticks, so faults
 * must last long enough for a node to be marked down (6 s) and its VMs moved.
 */
const FaultGapMs = 4000

/** What a node offers: four of the workload's VMs. */
const capacity = new Resources({ vcpus: 4, memoryMiB: 2048 })

/** Hypervisor timing: a runner takes this long to boot, and to shut down. */
const startDelayMs = 200
const stopDelayMs = 100

/** Restart backoff, scaled from the agent's 1 s → 60 s so that a crash-looping VM recovers within the liveness bound. */
const backoff = { initialMs: 500, maxMs: 8000 }

const vmsPerClient = 4

const address = (id: number) => HostPort.make(`node${id}.sim:7001`)

const encodeEnvelope = toJson(C.CommandEnvelope)

/** One incarnation of a node: its replicated state and its API, gone at a crash. */
export interface OrchestrationNode {
  readonly state: ClusterStateHolder
  /** The log version of the release the node runs (`ClusterVersion.ts`): older in a rolling upgrade. */
  readonly release: number
  /** Set once the node's services are built. */
  controlPlane: ControlPlaneShape | undefined
}

/** The API of node `to`, reached from another node across the simulated network. */
const remotePlane = (net: NodeNet<OrchestrationNode>, to: number): ControlPlaneShape => {
  const at = <A>(use: (plane: ControlPlaneShape) => Effect.Effect<A, BlixardError>): Effect.Effect<A, BlixardError> =>
    net.request(to, (target) =>
      target.local.controlPlane !== undefined
        ? use(target.local.controlPlane)
        : Effect.fail(new Unavailable({ message: `node ${to} is starting; its API is not up yet` }))
    )
  return {
    listVms: (mode) => at((p) => p.listVms(mode)),
    getVm: (name, mode) => at((p) => p.getVm(name, mode)),
    createVm: (spec, o) => at((p) => p.createVm(spec, o)),
    startVm: (name, o) => at((p) => p.startVm(name, o)),
    stopVm: (name, o) => at((p) => p.stopVm(name, o)),
    deleteVm: (name, o) => at((p) => p.deleteVm(name, o)),
    setVmLabels: (name, labels, o) => at((p) => p.setVmLabels(name, labels, o)),
    updateVm: (name, changes, o) => at((p) => p.updateVm(name, changes, o)),
    listNodes: (mode) => at((p) => p.listNodes(mode)),
    setNodeState: (id, state, o) => at((p) => p.setNodeState(id, state, o)),
    reportVmStatus: (name, node, status) => at((p) => p.reportVmStatus(name, node, status)),
    reportVmStatuses: (node, reports) => at((p) => p.reportVmStatuses(node, reports)),
    registerNode: (info) => at((p) => p.registerNode(info)),
    heartbeat: (id, beat) => at((p) => p.heartbeat(id, beat)),
    clusterStatus: at((p) => p.clusterStatus),
    join: (id, addr) => at((p) => p.join(id, addr)),
    leave: (id) => at((p) => p.leave(id)),
    transferLeader: (id) => at((p) => p.transferLeader(id)),
    createToken: (role, name) => at((p) => p.createToken(role, name)),
    listTokens: (mode) => at((p) => p.listTokens(mode)),
    revokeToken: (id) => at((p) => p.revokeToken(id)),
    createJoinToken: (ttlMs) => at((p) => p.createJoinToken(ttlMs)),
    listJoinTokens: (mode) => at((p) => p.listJoinTokens(mode)),
    revokeJoinToken: (id) => at((p) => p.revokeJoinToken(id)),
    consumeJoinToken: (id, hash, node, key) => at((p) => p.consumeJoinToken(id, hash, node, key)),
    listCertificates: (mode) => at((p) => p.listCertificates(mode)),
    revokeCertificate: (revoke) => at((p) => p.revokeCertificate(revoke)),
    recordCertificate: (record) => at((p) => p.recordCertificate(record)),
    caStatus: (mode) => at((p) => p.caStatus(mode)),
    rotateCa: at((p) => p.rotateCa),
    finishCaRotation: at((p) => p.finishCaRotation),
    caRotationMoved: (node, fingerprint) => at((p) => p.caRotationMoved(node, fingerprint)),
    health: at((p) => p.health)
  }
}

/** Log lines of a node's services: to `log` with simulated time and the node, or nowhere. */
const logging = (node: number, net: NodeNet<OrchestrationNode>, log: ((line: string) => void) | undefined) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    log === undefined
      ? Logger.withMinimumLogLevel(effect, LogLevel.None)
      : Effect.provide(
          // Information lines too (the node's Raft layer itself logs warnings and errors only).
          Logger.withMinimumLogLevel(effect, LogLevel.Info),
          Logger.replace(
            Logger.defaultLogger,
            Logger.make(({ logLevel, message, cause }) => {
              const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
              const detail = Cause.isEmpty(cause) ? "" : `: ${String(Cause.squash(cause))}`
              log(`${String(net.now()).padStart(7)} ms  node ${node}  ${logLevel.label.padEnd(7)} ${text}${detail}`)
            })
          )
        )

/** What a run did, reported in its result (`ExploreResult.counts`). */
type Counts = Record<
  | "vmsCreated"
  | "starts"
  | "stops"
  | "deletes"
  | "updates"
  | "retries"
  | "vmCrashesInjected"
  | "startFailuresInjected"
  | "runnerStarts"
  | "moves"
  | "machineCrashes"
  | "vmsKilledWithMachine"
  | "daemonCrashes"
  | "runnersOutlivingDaemon"
  | "reads"
  | "drains"
  | "resizes",
  number
>

/**
 * A node stack and a workload for one run, sharing the simulated machines (hypervisors) and the
 * counts. `nodes` must be the run's cluster size.
 */
export const orchestration = (options: {
  readonly nodes: number
  /** Raft's tick, as the run's: the agents' election-timeout arithmetic must agree with it. */
  readonly tickMs: number
  readonly bug?: BugName | undefined
  readonly log?: ((line: string) => void) | undefined
  readonly moves?: boolean | undefined
  /** The log version the cluster was founded at (default this release's): a rolling upgrade's `from`. */
  readonly founded?: number | undefined
}): { readonly stack: NodeStack<OrchestrationNode>; readonly workload: Workload<OrchestrationNode> } => {
  const ids = Array.from({ length: options.nodes }, (_, i) => i + 1)
  const unsafe = switchesOf(options.bug).orchestration
  const oneStepMoves = switchesOf(options.bug).stateMachine?.unsafeOneStepMoves === true
  const moves = options.moves ?? true
  const founded = options.founded ?? LogVersion
  const raiseEarly = switchesOf(options.bug).clusterVersion?.unsafeRaiseVersionEarly === true
  /** What the replicas made of each entry, and the cluster's log version on each. */
  const replicas = new ReplicaChecks()
  const timeouts = {
    tickMs: options.tickMs,
    fencingMs: unsafe?.fencingMs ?? daemonTimeouts.fencingMs,
    nodeDownMs: unsafe?.nodeDownMs ?? daemonTimeouts.nodeDownMs
  }
  /** One hypervisor per machine, for the whole run: it outlives the daemons (and a power loss, empty). */
  const hypervisors = ids.map(
    (id) =>
      new SimulatedHypervisor({ node: NodeId.make(id), firstPid: id * 100_000, startDelay: `${startDelayMs} millis`, stopDelay: `${stopDelayMs} millis` })
  )
  const hosts = hypervisors.map((hv, i) => [i + 1, hv] as const)
  const counts: Counts = {
    vmsCreated: 0,
    starts: 0,
    stops: 0,
    deletes: 0,
    updates: 0,
    retries: 0,
    vmCrashesInjected: 0,
    startFailuresInjected: 0,
    runnerStarts: 0,
    moves: 0,
    machineCrashes: 0,
    vmsKilledWithMachine: 0,
    daemonCrashes: 0,
    runnersOutlivingDaemon: 0,
    reads: 0,
    drains: 0,
    resizes: 0
  }
  /** Each VM's desired state as a register: `stopped`, `running`, `deleted`. */
  const history = new History<RegisterInput, RegisterOutput>()
  /** The node each VM last ran on, to count moves. */
  const lastHost = new Map<string, number>()
  /** Every VM a client created. */
  const everCreated: Array<VmName> = []
  let operations = 0
  let unknownOutcomes = 0

  const stack: NodeStack<OrchestrationNode> = {
    local: (node, release) => {
      // The founding members' addresses and the founding log version are in the bootstrap
      // snapshot, as the daemon's founder puts them there: a follower finds its leader's API
      // through them, and every replica, whatever its release, starts at the founder's version.
      const state: ClusterStateHolder = new ClusterStateHolder(
        replicas.events(node, release, founded, () => state.current),
        { node }
      )
      state.current.unsafeOneStepMoves = oneStepMoves
      state.current.release = release
      state.current.clusterVersion = founded
      for (const id of ids) state.current.members.set(id, address(id))
      return { state, controlPlane: undefined, release }
    },
    logVersion: (local) => local.state.current.clusterVersion,
    stateMachine: (local) => local.state.layer(),
    services: (local, node, net) =>
      Layer.scopedDiscard(
        Effect.gen(function* () {
          const raft = yield* RaftNode
          const controlPlane = NodeControlPlane.make({ raft, state: local.state, remote: (addr) => remotePlane(net, idOf(addr)) })
          local.controlPlane = controlPlane
          const backend = yield* Layer.build(layerSimulated(hypervisors[node - 1]!))
          yield* Orchestration.start({
            node: NodeId.make(node),
            advertise: address(node),
            capacity,
            labels: {},
            raft,
            state: local.state,
            controlPlane,
            timeouts,
            backoff,
            logVersion: local.release,
            unsafeRaiseVersionEarly: raiseEarly
          }).pipe(Effect.provide(backend))
        }).pipe(logging(node, net, options.log))
      ),
    probe: (n) => encodeEnvelope(new C.CommandEnvelope({ command: new C.StopVm({ name: VmName.make("probe") }), proposedAt: n })),
    crashed: (node, machine) => {
      const hv = hypervisors[node - 1]!
      if (machine) {
        counts.machineCrashes++
        counts.vmsKilledWithMachine += hv.runningVms().length
        hv.powerLoss()
      } else {
        counts.daemonCrashes++
        counts.runnersOutlivingDaemon += hv.runningVms().length
      }
    },
    daemonCrashes: { share: 0.3, maxDownMs: DaemonDownMs },
    faults: { meanGapMs: FaultGapMs },
    check: () => {
      const diverged = replicas.check()
      if (diverged !== undefined) return diverged
      const twice = Effect.runSync(Effect.either(checkNoVmRunsTwice(hosts)))
      if (Either.isLeft(twice)) return twice.left.message
      for (const [node, hv] of hosts) {
        for (const name of hv.runningVms()) {
          const last = lastHost.get(name)
          if (last !== node) {
            if (last !== undefined) counts.moves++
            lastHost.set(name, node)
          }
        }
      }
      return undefined
    },
    settled: (running) => {
      const leader = running.find((h) => Effect.runSync(h.raft.role) === "leader")
      if (leader === undefined) return "no node leads"
      return unconverged(leader)
    }
  }

  const idOf = (addr: string): number => {
    const id = ids.find((x) => address(x) === addr)
    if (id === undefined) throw new Error(`no simulated node has the address ${addr}`)
    return id
  }

  /** What still differs from the converged cluster, as the leader's state says it should be. */
  const unconverged = (leader: NodeHandle<OrchestrationNode>): string | undefined => {
    const state = leader.local.state.current
    for (const id of ids) {
      const info = state.nodes.get(id)
      if (info === undefined) return `node ${id} has not registered`
      if (info.health !== "up") return `node ${id} is still marked ${info.health}`
    }
    const where = (name: string) => hosts.filter(([, hv]) => hv.isRunning(name as VmName)).map(([id]) => id)
    for (const name of [...state.vms.keys()].sort()) {
      const vm = state.vms.get(name)!
      const on = where(name)
      const should = vm.desired === "running" && vm.node !== undefined && vm.status.phase !== "failed"
      if (should && !(on.length === 1 && on[0] === vm.node)) {
        return `VM "${name}" should run on node ${vm.node} but runs on ${on.length === 0 ? "no node" : `node(s) ${on.join(", ")}`} (status ${vm.status.phase})`
      }
      if (!should && on.length > 0) {
        const placed = vm.node === undefined ? `pending (${vm.pendingReason ?? ""})` : `placed on node ${vm.node}`
        return `VM "${name}" (desired ${vm.desired}, ${placed}, status ${vm.status.phase}) runs on node(s) ${on.join(", ")}`
      }
    }
    for (const [id, hv] of hosts) {
      for (const name of hv.runningVms()) {
        if (!state.vms.has(name)) return `VM "${name}" is deleted but runs on node ${id}`
      }
    }
    // Nothing stays pending that a node has room for (the scheduler's own answer, now).
    const ledger = new Ledger()
    for (const vm of state.vms.values()) ledger.add(vm)
    for (const name of [...state.vms.keys()].sort()) {
      const vm = state.vms.get(name)!
      if (vm.node !== undefined) continue
      const placement = place(vm.spec, state.nodes.values(), ledger)
      if (placement._tag === "Placed") return `VM "${name}" is pending although node ${placement.node} has room for it`
    }
    return undefined
  }

  // ---- the clients ----------------------------------------------------------------------------

  const policies: ReadonlyArray<RestartPolicy> = ["always", "always", "on-failure", "on-failure", "never"]

  const client = (env: ClientEnv<OrchestrationNode>) => {
    const prng = env.prng
    /** VMs this client created and has not deleted. */
    const mine: Array<VmName> = []
    let names = 0
    /** The VM this client has just created, if any: it starts it next. */
    let created: VmName | undefined
    let seq = 0
    let guess = 0
    const pause = (ms: number) => Effect.sleep(`${ms} millis`)

    /** One request, retried with the same request id until it is answered (or 8 tries). */
    const request = <A>(use: (plane: ControlPlaneShape, requestId: string) => Effect.Effect<A, BlixardError>) =>
      Effect.gen(function* () {
        const requestId = `c${env.id}-${++seq}`
        operations++
        for (let attempt = 0; attempt < 8; attempt++) {
          if (attempt > 0) {
            counts.retries++
            yield* pause(50 + prng.int(200))
          }
          const running = env.running()
          if (running.length === 0) continue
          const target = guess !== 0 && running.includes(guess) ? guess : prng.pick(running)
          const handle = env.node(target)
          const plane = handle?.local.controlPlane
          if (handle === undefined || plane === undefined) continue
          // Served as the node's API serves it: on the node's own clock (its deadlines too).
          const result = yield* Effect.either(handle.serve(use(plane, requestId)))
          if (Either.isRight(result)) {
            guess = target
            return Either.right(result.right)
          }
          const e = result.left
          guess = 0
          if (e._tag === "NotLeader" || e._tag === "Unavailable" || e._tag === "Timeout" || e._tag === "ProposalDropped") continue
          return Either.left(e._tag)
        }
        unknownOutcomes++
        return Either.left("no answer")
      })

    /**
     * A change's outcome in the history: done; refused (no effect — the VM was gone, or existed);
     * or unknown (no answer, or a create answered "exists", which an earlier try may have done).
     */
    const settle = (op: number, r: Either.Either<unknown, string>) => {
      if (Either.isRight(r)) history.ok(op, true, env.now())
      else if (r.left === "no answer" || r.left === "VmExists") history.unknown(op)
      else history.fail(op)
    }

    /** Whether to read: its own stream, so that reading leaves the client's other draws as they were. */
    const reading = prng.fork("reads")
    /** Moves (drains, resizes): their own stream too. */
    const moving = prng.fork("moves")
    /**
     * Whether VMs leave live nodes in two steps: some node has applied a cluster log version from
     * `TwoStepMoves` on (so a move proposed now is applied in two steps on every replica). Below it,
     * in a rolling upgrade from an older release, a move is in one step — the older release's own
     * flaw (`--bug one-step-moves`: the VM may run on two nodes) — so the clients make none then.
     */
    const twoStep = () => founded >= TwoStepMoves || env.running().some((id) => (env.node(id)?.local.state.current.clusterVersion ?? 0) >= TwoStepMoves)
    /** The node this client drained and has not made active again. */
    let drained: NodeId | undefined

    /** Drains a node, or makes the one it drained active again; at most one drained node per client. */
    const drain = Effect.gen(function* () {
      const id = drained ?? NodeId.make(moving.pick(ids))
      const state = drained === undefined ? "draining" : "active"
      const r = yield* request((plane, requestId) => plane.setNodeState(id, state, { requestId }))
      if (Either.isRight(r)) {
        drained = state === "draining" ? id : undefined
        if (state === "draining") counts.drains++
      }
      env.trace(13, id, Either.isRight(r) ? 1 : 0)
    })

    /**
     * A linearizable `vm get` of one of its VMs, or `vm list` (a read of each of its VMs, over the
     * same interval). A read that got no answer had no effect: it is left out.
     */
    const read = Effect.gen(function* () {
      const list = reading.chance(0.3)
      const names = list ? [...mine] : [reading.pick(mine)]
      const at = env.now()
      const ops = names.map((name) => history.invoke(env.id, { _tag: "read", key: name }, at))
      const r = yield* request((plane) =>
        list
          ? Effect.map(plane.listVms("linearizable"), (vms) => new Map(vms.map((vm) => [vm.spec.name as string, vm.desired as string])))
          : Effect.catchTag(
              Effect.map(plane.getVm(names[0]!, "linearizable"), (vm) => new Map([[names[0]! as string, vm.desired as string]])),
              "VmNotFound",
              () => Effect.succeed(new Map<string, string>())
            )
      )
      const now = env.now()
      names.forEach((name, i) => {
        if (Either.isRight(r)) history.ok(ops[i]!, r.right.get(name) ?? "deleted", now)
        else history.fail(ops[i]!)
      })
      counts.reads++
      env.trace(5, Either.isRight(r) ? 1 : 0)
    })

    /** The hardware misbehaves: a runner exits on its own, or a VM's next start on a node fails. */
    const misbehave = Effect.gen(function* () {
      const id = prng.pick(ids)
      const hv = hypervisors[id - 1]!
      if (prng.chance(0.6)) {
        const running = hv.runningVms()
        if (running.length === 0) return
        const name = prng.pick(running)
        const code = prng.pick([0, 1, 137])
        if (yield* hv.crash(name, code)) {
          counts.vmCrashesInjected++
          env.trace(10, id, code)
        }
      } else if (mine.length > 0) {
        hv.failNextStart(prng.pick(mine))
        counts.startFailuresInjected++
        env.trace(11, id)
      }
    })

    return Effect.gen(function* () {
      for (;;) {
        yield* pause(100 + prng.int(900))
        if (env.phase() === "liveness") {
          // A drained node is made active again, so that the cluster can converge on every node.
          for (let i = 0; i < 8 && drained !== undefined; i++) yield* drain
          return
        }
        if (moves && moving.chance(drained === undefined ? 0.04 : 0.15) && (drained !== undefined || twoStep())) {
          yield* drain
          continue
        }
        if (prng.chance(0.1)) {
          yield* misbehave
          continue
        }
        if (mine.length > 0 && reading.chance(0.3)) {
          yield* read
          continue
        }
        if (created === undefined && mine.length < vmsPerClient && (mine.length === 0 || prng.chance(0.5))) {
          const name = VmName.make(`c${env.id}-${names++}`)
          const spec = new VmSpec({
            name,
            source: new RunnerConfig({ path: `/nix/store/sim-${name}-microvm-run` }),
            vcpus: 1,
            memoryMiB: 512,
            restartPolicy: prng.pick(policies)
          })
          const op = history.invoke(env.id, { _tag: "write", key: name, value: "stopped" }, env.now())
          const r = yield* request((plane, requestId) => plane.createVm(spec, { requestId, start: false }))
          settle(op, r)
          // Created, or an earlier try of this request was: either way the VM exists.
          if (Either.isRight(r) || r.left === "VmExists") {
            mine.push(name)
            everCreated.push(name)
            counts.vmsCreated++
            created = name
          }
          env.trace(1, Either.isRight(r) ? 1 : 0)
          continue
        }
        // A VM just created is started next, as `vm create` then `vm start`.
        const name = created ?? prng.pick(mine)
        const roll = prng.float()
        // An update (`vm update --runner`) restarts a running VM onto a new runner on its node.
        const kind = created !== undefined || roll < 0.45 ? "start" : roll < 0.55 ? "update" : roll < 0.85 ? "stop" : "delete"
        created = undefined
        // An update leaves the desired state as it was: not a write of the register the history checks.
        const op =
          kind === "update"
            ? undefined
            : history.invoke(env.id, { _tag: "write", key: name, value: kind === "start" ? "running" : kind === "stop" ? "stopped" : "deleted" }, env.now())
        // With moves, half the updates change the memory: a VM that no longer fits on its node moves.
        const resize = kind === "update" && moves && moving.chance(0.5) && twoStep()
        if (resize) counts.resizes++
        const r = yield* request((plane, requestId) =>
          kind === "start"
            ? plane.startVm(name, { requestId })
            : kind === "update"
              ? plane.updateVm(
                  name,
                  resize ? { memoryMiB: moving.pick([512, 1024]) } : { source: new RunnerConfig({ path: `/nix/store/sim-${name}-${names++}-microvm-run` }) },
                  { requestId }
                )
              : kind === "stop"
                ? plane.stopVm(name, { requestId })
                : plane.deleteVm(name, { requestId })
        )
        if (op !== undefined) settle(op, r)
        if (Either.isRight(r)) counts[kind === "start" ? "starts" : kind === "update" ? "updates" : kind === "stop" ? "stops" : "deletes"]++
        // Deleted now, or gone already (an earlier delete whose answer was lost).
        if ((kind === "delete" && Either.isRight(r)) || (Either.isLeft(r) && r.left === "VmNotFound")) mine.splice(mine.indexOf(name), 1)
        env.trace(kind === "start" ? 2 : kind === "stop" ? 3 : kind === "delete" ? 4 : 12, Either.isRight(r) ? 1 : 0)
      }
    })
  }

  const workload: Workload<OrchestrationNode> = {
    client,
    finish: (check) => {
      counts.runnerStarts = 0
      for (const hv of hypervisors) for (const name of everCreated) counts.runnerStarts += hv.startCount(name)
      const base = { operations, unknownOutcomes, counts: { ...counts } }
      if (!check) return { linearizability: "not checked", violation: undefined, ...base }
      const result = checkLinearizability(registerModel, history.operations(), { maxSteps: 5_000_000 })
      return {
        linearizability: result._tag === "Ok" ? "ok" : result._tag === "Illegal" ? "illegal" : "unknown",
        violation: result._tag === "Illegal" ? `linearizability of the VMs' desired states: ${formatResult(registerModel, result)}` : undefined,
        ...base
      }
    }
  }
  return { stack, workload }
}

/**
 * One run of the orchestration workload: the daemon's timeouts (50 ms ticks), 30 s of faults and
 * load, then up to 30 s for the cluster to converge.
 */
export const simulateOrchestration = (options: OrchestrationOptions): ExploreResult => {
  const nodes = options.nodes ?? 5
  const tickMs = options.tickMs ?? daemonTimeouts.tickMs
  const { log, moves, ...rest } = options
  const { stack, workload } = orchestration({ nodes, tickMs, bug: options.bug, log, moves, founded: options.rollingUpgrade?.from })
  return runFullService({ safetyMs: 30_000, livenessMs: 30_000, clients: 4, ...rest, nodes, tickMs }, stack, workload)
}
