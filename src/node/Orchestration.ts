/**
 * A node's part in orchestration, over its Raft node and replicated state: it registers itself
 * (and keeps its registration current, with its release's log version), runs the leader's failure
 * detector and, on the leader, raises the cluster's log version once every member runs a newer one
 * (`cluster/ClusterVersion.ts`), and runs the agent
 * that makes this node's runners follow the desired state and fences them without a quorum.
 *
 * The daemon runs it over the real `VmBackend`; the simulator runs the same function over a
 * simulated hypervisor, so the timing the fencing argument rests on (README, "a VM never runs
 * twice") is wired in one place:
 * - the agent's quorum signal: a leader's majority's last responses of its term that its Raft loop
 *   processed, a follower's newest proof from its leader's heartbeat rounds (or, while those prove
 *   nothing for an election timeout, from a ReadIndex round of its own), either capped by a storage
 *   write still outstanding (`QuorumContact.fromRaft`); it fences after
 *   `fencingMs` without contact (and, in the daemon, so does the host's watchdog, through the lease);
 * - the leader marks a node down (and the state machine moves its VMs) after `nodeDownMs`;
 * - the configuration keeps `nodeDownMs ≥ fencingMs + 2 election timeouts`, and `fencingMs ≥ 3
 *   election timeouts` so a follower of a healthy leader is not fenced (`Config.ts`).
 *
 * Writes — the registration and the agent's status reports — go through `controlPlane`, so a
 * follower forwards them to the leader as any API write is forwarded.
 */
import type { Scope } from "effect"
import { Duration, Effect, Schedule } from "effect"
import * as Agent from "../agent/Agent.js"
import * as QuorumContact from "../agent/QuorumContact.js"
import type { ControlPlaneShape } from "../api/ControlPlane.js"
import type { ClusterStateHolder } from "../cluster/ClusterStateMachine.js"
import { LogVersion, TwoStepMoves, unsafeVersionToRaiseEarly, versionToRaise } from "../cluster/ClusterVersion.js"
import { SetClusterVersion } from "../domain/Command.js"
import type { Labels } from "../domain/Labels.js"
import { NodeId } from "../domain/NodeId.js"
import type { HostPort } from "../domain/NodeInfo.js"
import { MaxForeignVms, NodeInfo, ReleasesMoves } from "../domain/NodeInfo.js"
import type { Resources } from "../domain/Resources.js"
import { DefaultElectionTick, type RaftNodeShape } from "../raft/RaftNode.js"
import { VmBackend, type VmBackendShape } from "../vm/VmBackend.js"
import * as HealthMonitor from "./HealthMonitor.js"
import { proposeCommand } from "./NodeControlPlane.js"
import type { HostContact } from "./HostContact.js"


export interface OrchestrationOptions {
  readonly node: NodeId
  /** The address other nodes and clients reach this node's API at. */
  readonly advertise: HostPort
  readonly capacity: Resources
  readonly labels: Labels
  readonly raft: RaftNodeShape
  readonly state: ClusterStateHolder
  /** This node's API, forwarding writes to the leader. */
  readonly controlPlane: ControlPlaneShape
  readonly timeouts: { readonly tickMs: number; readonly fencingMs: number; readonly nodeDownMs: number }
  /** The agent's reconcile interval (default 1 s: a start or stop waits up to that). */
  readonly agentIntervalMs?: number | undefined
  /** The agent's restart backoff (default: the agent's, 1 s doubling to 60 s). */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined
  /** The node's lease and fencing watchdog (the daemon's; the simulator models none). */
  readonly hostFence?: Agent.AgentOptions["hostFence"]
  /** Answered heartbeats of hosts that are not Raft members, which the failure detector reads too. */
  readonly hostContact?: HostContact | undefined
  /**
   * The log version of the release this node plays (default this one's, `LogVersion`): the
   * simulator runs older releases with it (its state's `release` must say the same).
   */
  readonly logVersion?: number | undefined
  /** UNSAFE, for the simulator only (`--bug raise-version-early`): see `unsafeVersionToRaiseEarly`. */
  readonly unsafeRaiseVersionEarly?: boolean | undefined
}

/**
 * The names of the VM directories here that are not Blixard's (at most `MaxForeignVms`), which a
 * node's registration carries; logged when they change; `fallback()` when the backend cannot list them.
 */
/**
 * What this version's agent does beyond the first release's (see `NodeCapability`): it stops a VM
 * moving off its node and reports it released.
 */
export const capabilities: ReadonlyArray<string> = [ReleasesMoves]

/**
 * What a node (member or host) registers: its address, capacity, labels, capabilities, log version
 * (`ClusterVersion.ts`) and foreign VM directories.
 */
export const registration = (
  node: NodeId,
  offer: {
    readonly advertise: HostPort
    readonly capacity: Resources
    readonly labels: Labels
    readonly incarnation?: string | undefined
    /** The release's log version (default this one's); below `TwoStepMoves` it releases no moves. */
    readonly logVersion?: number | undefined
  },
  foreign: ReadonlyArray<string>
): NodeInfo => {
  const logVersion = offer.logVersion ?? LogVersion
  return new NodeInfo({
    id: node,
    address: offer.advertise,
    capacity: offer.capacity,
    labels: offer.labels,
    state: "active",
    health: "up",
    ...(foreign.length > 0 ? { foreignVms: foreign } : {}),
    capabilities: logVersion >= TwoStepMoves ? capabilities : [],
    logVersion,
    ...(offer.incarnation !== undefined ? { incarnation: offer.incarnation } : {})
  })
}

/**
 * Whether the cluster's record of a node, `mine`, already says what it would register now, `wanted`
 * (the state and health are the cluster's, not the node's). A record written by the node's previous
 * version lacks its capabilities or log version: the node registers again.
 */
export const registrationCurrent = (mine: NodeInfo | undefined, wanted: NodeInfo): boolean =>
  mine !== undefined &&
  mine.address === wanted.address &&
  mine.capacity.vcpus === wanted.capacity.vcpus &&
  mine.capacity.memoryMiB === wanted.capacity.memoryMiB &&
  JSON.stringify(mine.labels) === JSON.stringify(wanted.labels) &&
  JSON.stringify(mine.foreignVms ?? []) === JSON.stringify(wanted.foreignVms ?? []) &&
  JSON.stringify(mine.capabilities ?? []) === JSON.stringify(wanted.capabilities ?? []) &&
  mine.logVersion === wanted.logVersion

/**
 * The leader raises the cluster's log version once every Raft member (voter or learner: every
 * replica that applies the log; hosts do not) has registered a newer one (`ClusterVersion.ts`).
 */
export const raiseClusterVersion = (raft: RaftNodeShape, state: ClusterStateHolder, options: { readonly unsafeRaiseVersionEarly?: boolean | undefined } = {}) =>
  Effect.gen(function* () {
    const st = yield* raft.status
    if (st.role !== "leader") return
    const all = [...st.confState.voters, ...st.confState.learners].sort((a, b) => a - b)
    const version = versionToRaise(state.current, all)
    const raise =
      options.unsafeRaiseVersionEarly === true ? unsafeVersionToRaiseEarly(state.current, all) : version === undefined ? undefined : { version, members: all }
    if (raise === undefined) return
    const { members } = raise
    yield* proposeCommand(raft, new SetClusterVersion({ version: raise.version, members: members.map((id) => NodeId.make(id)) }), undefined, state).pipe(
      Effect.tap(() => Effect.logInfo(`node ${raft.id}: the cluster's log version is now ${raise.version}: every member (${members.join(", ")}) runs it`)),
      Effect.catchAll((e) => Effect.logWarning(`node ${raft.id}: raising the cluster's log version to ${raise.version} failed (${e.code}: ${e.message}); it is tried again`))
    )
  })

export const foreignVmsOf = (node: NodeId, backend: VmBackendShape, fallback: () => ReadonlyArray<string>): Effect.Effect<ReadonlyArray<string>> => {
  let seen = ""
  return Effect.gen(function* () {
    const found = yield* Effect.either(backend.foreign)
    if (found._tag === "Left") return fallback()
    const text = found.right.map((f) => `${f.name} (${f.reason})`).join("; ")
    if (text !== seen && text !== "") {
      yield* Effect.logInfo(`node ${node}: VM directories that are not Blixard's, left alone: ${text}`)
    }
    seen = text
    return found.right.slice(0, MaxForeignVms).map((f) => f.name)
  })
}

/** Starts registration, the failure detector and the agent in the current scope; they end with it. */
export const start = (options: OrchestrationOptions): Effect.Effect<void, never, VmBackend | Scope.Scope> =>
  Effect.gen(function* () {
    const { node, raft, state, controlPlane, timeouts } = options
    const backend = yield* VmBackend

    const foreignVms = foreignVmsOf(node, backend, () => state.current.nodes.get(node)?.foreignVms ?? [])

    // Register (and keep registered) this node's capacity, labels and foreign VMs once it is a
    // member and a leader is known. A follower's registration is forwarded to the leader.
    const register = Effect.gen(function* () {
      const st = yield* raft.status
      const member = st.confState.voters.includes(node) || st.confState.learners.includes(node)
      const wanted = registration(node, options, yield* foreignVms)
      if (!member || registrationCurrent(state.current.nodes.get(node), wanted) || st.lead === 0) return
      yield* Effect.ignore(controlPlane.registerNode(wanted))
    })
    // One loop, one wake-up a second, for both: a quiet node's wake-ups are its idle cost.
    const raise = raiseClusterVersion(raft, state, { unsafeRaiseVersionEarly: options.unsafeRaiseVersionEarly })
    yield* Effect.forkScoped(Effect.repeat(Effect.zipRight(register, raise), Schedule.spaced(Duration.seconds(1))))

    yield* Effect.forkScoped(
      HealthMonitor.run({
        raft,
        nodes: () => state.current.nodes.values(),
        nodeDownMs: timeouts.nodeDownMs,
        hostContact: options.hostContact,
        intervalMs: Math.max(timeouts.tickMs * 2, 100)
      })
    )

    // The agent: this node's runners follow the desired state; it fences itself without quorum.
    const quorumContact = yield* QuorumContact.fromRaft(raft, { probeEveryMs: timeouts.tickMs * DefaultElectionTick })
    yield* Agent.make({
      node,
      state: () => state.current,
      report: (name, status) => controlPlane.reportVmStatus(name, node, status),
      reportMany: (reports) => controlPlane.reportVmStatuses(node, reports),
      quorumContact,
      confirmFresh: raft.readIndex,
      intervalMs: options.agentIntervalMs ?? 1000,
      fencingMs: timeouts.fencingMs,
      fenceStopTimeoutMs: Agent.DefaultFenceStopTimeoutMs,
      ...(options.hostFence !== undefined ? { hostFence: options.hostFence } : {}),
      ...(options.backoff !== undefined ? { backoff: options.backoff } : {})
    })
  })
