/**
 * The agent of a host that is not a Raft member (a Nomad "client"): the same `Agent` as a member's,
 * fed over the API of the members (the servers) instead of a local Raft node.
 *
 * - state: a mirror of the VMs placed on this host, a linearizable `listVms` filtered by this node,
 *   refreshed every agent interval; `confirmFresh` (run before any start or removal) refreshes it, so
 *   nothing starts on a view older than that read.
 * - quorumContact: the SEND time of the newest heartbeat (`POST /v1/nodes/ID/heartbeat`) a server
 *   answered. The leader answers only after a ReadIndex round and records the heartbeat then, so it
 *   heard this host no earlier than the send time; it marks the host down no earlier than that +
 *   `nodeDownMs`, while the agent (and, should this daemon die, the watchdog through the lease)
 *   stops the host's VMs `fencingMs` after it (`HostContact.ts` makes the argument in full).
 *   Heartbeats go out every min(1 s, fencingMs / 4) without waiting for the one before: a beat
 *   still unanswered at the next tick sends the next beat to the next server, so one hung server
 *   costs one beat, not the host's VMs.
 * - report: `reportVmStatuses` (or `reportVmStatus`, see `Agent.reportMany`) through a server (forwarded to the leader); registration (address,
 *   capacity, labels, foreign VMs) likewise, again whenever it changes or the cluster forgot the host.
 * The servers are tried in turn: a call that finds one unreachable, slow or without a leader moves on.
 */
import type { Scope } from "effect"
import { Clock, Duration, Effect, Schedule } from "effect"
import * as Agent from "../agent/Agent.js"
import type { ControlPlaneShape } from "../api/ControlPlane.js"
import type { BlixardError } from "../domain/Errors.js"
import { formatError, Unavailable } from "../domain/Errors.js"
import type { Labels } from "../domain/Labels.js"
import type { NodeId } from "../domain/NodeId.js"
import type { HostBeat, HostPort } from "../domain/NodeInfo.js"
import type { Resources } from "../domain/Resources.js"
import type { VmRecord } from "../domain/VmStatus.js"
import { VmBackend } from "../vm/VmBackend.js"
import { foreignVmsOf, registration } from "./Orchestration.js"

/** The errors that say "this server cannot answer now", after which the next one is asked. */
const movesOn = (e: BlixardError): boolean => e._tag === "Unavailable" || e._tag === "Timeout" || e._tag === "NotLeader" || e._tag === "ProposalDropped"

export interface Servers {
  /** The server calls go to now. */
  readonly current: () => string
  /** `address` failed: if it is the current server, the next one becomes current. */
  readonly suspect: (address: string) => void
  /** `f` on the current server, then on each other in turn while they cannot answer. */
  readonly call: <A>(f: (plane: ControlPlaneShape) => Effect.Effect<A, BlixardError>) => Effect.Effect<A, BlixardError>
}

export const makeServers = (node: NodeId, addresses: ReadonlyArray<string>, remote: (address: string) => ControlPlaneShape): Servers => {
  let at = 0
  const current = () => addresses[at % addresses.length]!
  const suspect = (address: string) => {
    if (current() === address) at = (at + 1) % addresses.length
  }
  const call = <A>(f: (plane: ControlPlaneShape) => Effect.Effect<A, BlixardError>): Effect.Effect<A, BlixardError> =>
    Effect.gen(function* () {
      let last: BlixardError = new Unavailable({ node, message: `host ${node} has no server to ask (give --server)` })
      for (let tried = 0; tried < addresses.length; tried++) {
        const address = current()
        const result = yield* Effect.either(f(remote(address)))
        if (result._tag === "Right") return result.right
        last = result.left
        if (!movesOn(result.left)) return yield* result.left
        suspect(address)
      }
      return yield* last
    })
  return { current, suspect, call }
}

/**
 * Heartbeats every `periodMs` (see the module comment); `contact` is the send time of the newest
 * answered one. `unknown` runs when a server says the cluster does not know this host.
 */
export const heartbeats = (options: {
  readonly node: NodeId
  readonly servers: Servers
  readonly remote: (address: string) => ControlPlaneShape
  readonly periodMs: number
  /** A beat unanswered after this long is given up (an answer later would prove nothing newer). */
  readonly timeoutMs: number
  /** Sent with every beat (the leader refuses another incarnation's, or a fencing timeout too long). */
  readonly beat: HostBeat
  readonly unknown: () => void
}): Effect.Effect<{ readonly contact: Effect.Effect<number | undefined> }, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { node, servers } = options
    let contact: number | undefined
    let pending = 0
    let failing: string | undefined
    const scope = yield* Effect.scope
    const beat = Effect.gen(function* () {
      if (pending > 0) servers.suspect(servers.current())
      const address = servers.current()
      const sentAt = yield* Clock.currentTimeMillis
      pending++
      yield* options.remote(address).heartbeat(node, options.beat).pipe(
        Effect.timeoutFail({
          duration: Duration.millis(options.timeoutMs),
          onTimeout: () => new Unavailable({ node, subject: address, message: `${address} did not answer host ${node}'s heartbeat within ${options.timeoutMs} ms` })
        }),
        Effect.matchEffect({
          onSuccess: () =>
            Effect.gen(function* () {
              if (contact === undefined || sentAt > contact) contact = sentAt
              if (failing !== undefined) yield* Effect.logInfo(`host ${node}: heartbeats answered again (by ${address})`)
              failing = undefined
            }),
          onFailure: (e) =>
            Effect.gen(function* () {
              if (e._tag === "NodeNotFound") options.unknown()
              servers.suspect(address)
              if (failing !== e.message) {
                yield* Effect.logWarning(`host ${node}: a heartbeat failed (${formatError(e)}); trying the next server. Without an answered heartbeat for fencingMs this host stops its VMs`)
              }
              failing = e.message
            })
        }),
        Effect.ensuring(Effect.sync(() => pending--)),
        Effect.forkIn(scope)
      )
    })
    yield* Effect.forkScoped(Effect.repeat(beat, Schedule.spaced(Duration.millis(options.periodMs))))
    return { contact: Effect.sync(() => contact) }
  })

/**
 * The VMs placed on `node`, as read (linearizably) through the servers by the read started last of
 * those that finished. An answer to an earlier read that arrives later is dropped: it may be older
 * than the view a `confirmFresh` just installed, and would show a VM here that has moved away.
 */
export const mirror = (node: NodeId, servers: Servers) => {
  let vms: ReadonlyMap<string, VmRecord> = new Map()
  let started = 0
  let installed = 0
  const refresh: Effect.Effect<void, BlixardError> = Effect.suspend(() => {
    const read = ++started
    return Effect.map(servers.call((plane) => plane.listVms("linearizable", { node })), (records) => {
      if (read < installed) return
      installed = read
      vms = new Map(records.map((vm) => [vm.spec.name, vm]))
    })
  })
  return { state: () => ({ vms }), refresh }
}

export interface HostAgentOptions {
  readonly node: NodeId
  /** The members' API addresses, tried in turn. */
  readonly servers: ReadonlyArray<string>
  readonly remote: (address: string) => ControlPlaneShape
  /** What this host registers: the address it is reached at, its capacity and labels. */
  readonly advertise: HostPort
  readonly capacity: Resources
  readonly labels: Labels
  /** This host's data directory's identity (`HostIncarnation`), sent with its registration and heartbeats. */
  readonly incarnation?: string | undefined
  readonly fencingMs: number
  /** The agent's reconcile interval, and how often the mirror is refreshed (default 1 s). */
  readonly intervalMs?: number | undefined
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined
  readonly hostFence?: Agent.HostFence | undefined
}

/** Starts registration, heartbeats, the mirror and the agent in the current scope; they end with it. */
export const start = (options: HostAgentOptions): Effect.Effect<Agent.Agent, never, VmBackend | Scope.Scope> =>
  Effect.gen(function* () {
    const { node } = options
    const backend = yield* VmBackend
    const servers = makeServers(node, options.servers, options.remote)
    const intervalMs = options.intervalMs ?? 1000

    // Registration: again when what it says changes, or when a server no longer knows this host.
    let registered: string | undefined
    let lastForeign: ReadonlyArray<string> = []
    const foreignVms = foreignVmsOf(node, backend, () => lastForeign)
    const register = Effect.gen(function* () {
      lastForeign = yield* foreignVms
      const info = registration(node, options, lastForeign)
      const key = JSON.stringify(info)
      if (key === registered) return
      const done = yield* Effect.either(servers.call((plane) => plane.registerNode(info)))
      if (done._tag === "Left") {
        return yield* Effect.logWarning(`host ${node}: registering with the cluster failed (${formatError(done.left)}); retrying in 1 s`)
      }
      if (registered === undefined) yield* Effect.logInfo(`host ${node} registered with the cluster through ${servers.current()} (capacity ${options.capacity.vcpus} vCPUs, ${options.capacity.memoryMiB} MiB)`)
      registered = key
    })
    yield* Effect.forkScoped(Effect.repeat(register, Schedule.spaced(Duration.seconds(1))))

    const contact = yield* heartbeats({
      node,
      servers,
      remote: options.remote,
      periodMs: Math.min(1000, Math.max(25, Math.floor(options.fencingMs / 4))),
      timeoutMs: options.fencingMs,
      beat: { fencingMs: options.fencingMs, ...(options.incarnation !== undefined ? { incarnation: options.incarnation } : {}) },
      unknown: () => {
        registered = undefined
      }
    })

    const vms = mirror(node, servers)
    yield* Effect.forkScoped(
      vms.refresh.pipe(
        Effect.catchAll((e) => Effect.logWarning(`host ${node}: reading its VMs from the cluster failed (${formatError(e)}); retrying in ${intervalMs} ms`)),
        Effect.repeat(Schedule.spaced(Duration.millis(intervalMs)))
      )
    )

    return yield* Agent.make({
      node,
      state: vms.state,
      report: (name, status) => servers.call((plane) => plane.reportVmStatus(name, node, status)),
      reportMany: (reports) => servers.call((plane) => plane.reportVmStatuses(node, reports)),
      quorumContact: contact.contact,
      confirmFresh: vms.refresh,
      intervalMs,
      fencingMs: options.fencingMs,
      fenceStopTimeoutMs: Agent.DefaultFenceStopTimeoutMs,
      ...(options.hostFence !== undefined ? { hostFence: options.hostFence } : {}),
      ...(options.backoff !== undefined ? { backoff: options.backoff } : {})
    })
  })
