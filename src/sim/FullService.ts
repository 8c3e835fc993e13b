/**
 * The full-service simulation tier: N real `RaftNode` services in one process, exactly as the daemon
 * runs them, with only their layers swapped — a `VirtualClock` per machine, a `Transport` that
 * delivers through the seeded faulty `Network`, `RaftStorage.layerMemory` over a `MemoryStore` per
 * node, and the replicated state machine of a `NodeStack` (the KV store here; the daemon's state
 * machine is in memory too, rebuilt from snapshot and log at a restart). The store has the file
 * layer's durability: a write commits at once and is durable once its flush completes — at once,
 * or (`ExploreOptions.storage`) through a `SimDisk` that takes time, stalls and fails; a crash of
 * the machine loses what was not flushed, a crash of the process alone keeps it. Every fiber runs on `VirtualTime`'s scheduler; the driver runs
 * fibers until all are suspended, checks the invariants, then moves time to the next timer.
 *
 * It checks what the explorer checks (the shared `RaftInvariants`), on what the services expose:
 * `RaftNode.status`, the durable store and the entries the state machine is handed. It reaches what
 * the explorer cannot — the driver's batching, persist-before-send, its proposal, read and timeout
 * bookkeeping, the rebuild from storage after a crash — at a few dozen times real time, so it runs
 * fewer, longer seeds.
 *
 * A run has the explorer's phases: safety (the seeded fault schedule — drops, delays, duplicates,
 * reordering, symmetric, one-way and bridge partitions, crashes, clock skew — under a client
 * workload, optionally leaders crashing around their appends — before their save is flushed, the
 * appends gone with them or already sent — and storage faults, membership through a single voter,
 * restarts with a wiped data directory, a rolling upgrade across releases of two log versions,
 * with rollbacks: `rollingUpgrade`; a node stopping with `BLX_RELEASE_TOO_OLD` is upgraded by the
 * operator), then liveness (faults healed; a
 * leader must commit a new entry on every node within a bound), then the clients' history is
 * checked for linearizability. Everything random derives from the seed, and nothing that reaches a
 * decision or the trace comes from fiber ids, `HashMap` order, `Date.now` or `Math.random`.
 *
 * A crash closes the node's scope (its fibers are interrupted, its memory — the state machine, the
 * commit index it had not synced — is gone) and a restart rebuilds it from its `MemoryStore`. A
 * node whose Raft driver stops on a storage error (a failed flush) exits as the daemon does and is
 * restarted by its supervisor. A
 * stack says what else a crash takes down (`NodeStack.crashed`: the machine, or only the node's
 * process) and may make its nodes talk to each other outside Raft (`NodeNet.request`: an API call
 * across the same faulty network).
 */
import { Cause, Context, Duration, Effect, Either, Exit, Fiber, Layer, LogLevel, Logger, Option, Random, Scope } from "effect"
import { Timeout } from "../domain/Errors.js"
import type { Message } from "../raft/Message.js"
import * as RaftNode from "../raft/RaftNode.js"
import type { RaftNodeConfig, RaftNodeShape } from "../raft/RaftNode.js"
import type { Status } from "../raft/Raft.js"
import { StateMachine } from "../raft/StateMachine.js"
import type { StateMachineShape } from "../raft/StateMachine.js"
import type { ConfChange, Entry } from "../raft/Types.js"
import { Transport } from "../net/Transport.js"
import type { Received, TransportShape } from "../net/Transport.js"
import { messageBytes } from "../net/SendQueue.js"
import { isAmnesiac, isWipedLearner } from "../node/NodeControlPlane.js"
import { layerMemory, MemoryStore } from "../storage/RaftStorage.js"
import { LogVersion } from "../cluster/ClusterVersion.js"
import { switchesOf } from "./Bugs.js"
import type { ScheduledStorageFault } from "./Disk.js"
import { applyStorageFault, SimDisk, storageFaultSchedule } from "./Disk.js"
import type { ExploreOptions, ExploreResult } from "./Explorer.js"
import { messageCode } from "./Explorer.js"
import { History } from "./History.js"
import type { LogTerms } from "./Invariants.js"
import { RaftInvariants, Violation } from "./Invariants.js"
import { KvStore } from "./KvStore.js"
import { membership, operator } from "./Membership.js"
import type { RegisterInput, RegisterOutput } from "./Linearizability.js"
import { checkLinearizability, formatResult, registerModel } from "./Linearizability.js"
import type { Delivery, FaultAction, FaultScheduleOptions } from "./Network.js"
import { applyFault, defaultLateAfterCrash, defaultLinkFaults, faultSchedule, Network } from "./Network.js"
import { Prng } from "./Prng.js"
import { TraceHash } from "./Trace.js"
import { VirtualClock, VirtualTime } from "./VirtualClock.js"

// ---------------------------------------------------------------------------------------------------
// What runs on the nodes, and what the clients do: the parts a later phase swaps

/**
 * What runs on each simulated node besides Raft. The KV stack is `kvStack`; the orchestration
 * layer (the cluster state machine, an agent per node over a simulated hypervisor) is
 * `OrchestrationStack.ts`.
 */
export interface NodeStack<Local> {
  /**
   * The in-memory state of one incarnation of node `node`, running a release of log version
   * `release` (`ClusterVersion.ts`; older in a rolling upgrade): fresh at every start, lost at a crash.
   */
  readonly local: (node: number, release: number) => Local
  /** The cluster log version a node's state is at, for stacks that have one (a rolling upgrade's rollbacks wait on it). */
  readonly logVersion?: ((local: Local) => number) | undefined
  /** The replicated state machine over that state. */
  readonly stateMachine: (local: Local) => Layer.Layer<StateMachine>
  /** Further services of the node, built over its `RaftNode` and stopped with it at a crash. */
  readonly services?: ((local: Local, node: number, net: NodeNet<Local>) => Layer.Layer<never, unknown, RaftNode.RaftNode>) | undefined
  /** A command for the liveness phase to propose; distinct for every `n`. */
  readonly probe: (n: number) => string
  /**
   * Node `node` crashed, as its fibers are about to stop: `machine` when the whole host died, else
   * only the node's process (see `daemonCrashes`). What outlives which is the stack's to model.
   */
  readonly crashed?: ((node: number, machine: boolean) => void) | undefined
  /**
   * Without this every crash is of the whole machine. With it, `share` of the crashes kill only
   * the node's process, and it is restarted within `maxDownMs` (a supervisor restarting it).
   */
  readonly daemonCrashes?: { readonly share: number; readonly maxDownMs: number } | undefined
  /** How the fault schedule suits the stack (by default, Raft's time scale: a fault every ~1 s). */
  readonly faults?: Pick<FaultScheduleOptions, "meanGapMs" | "oneWay"> | undefined
  /** A safety check of the stack's own, after every instant (every fiber suspended): the violation, if any. */
  readonly check?: (() => string | undefined) | undefined
  /**
   * Liveness of the stack's own, asked after every instant of the liveness phase once Raft is live
   * again: undefined once reached, else what is still missing (for the failure message).
   */
  readonly settled?: ((running: ReadonlyArray<NodeHandle<Local>>) => string | undefined) | undefined
}

/** A running node, as a client reaches it. */
export interface NodeHandle<Local> {
  readonly raft: RaftNodeShape
  readonly local: Local
  /**
   * Runs a call into the node as its API server does: on the node's clock (a request's deadline
   * is set, and checked, on the clock of the machine that serves it).
   */
  readonly serve: <A, E>(call: Effect.Effect<A, E>) => Effect.Effect<A, E>
}

/** What a node's services may use of the simulated world besides their layers. */
export interface NodeNet<Local> {
  /** Simulated time in ms (the true time, not the node's clock), e.g. for log lines. */
  readonly now: () => number
  /**
   * A request from this node to node `to` across the simulated network, as an API call between
   * daemons (a follower forwarding a write to its leader): it travels with the link's delay, is
   * served by the running incarnation of `to` on `to`'s clock, and its answer travels back. The
   * transport is a connection, so it is not dropped at random; but a partition, or `to` being
   * down, at either crossing leaves the caller waiting until it gives up (`Timeout` after the
   * request timeout) — without knowing, if the answer was lost, whether it was served.
   */
  readonly request: <A, E>(to: number, serve: (target: NodeHandle<Local>) => Effect.Effect<A, E>) => Effect.Effect<A, E | Timeout>
}

/** What a client fiber may use. */
export interface ClientEnv<Local> {
  readonly id: number
  /** This client's own random stream. */
  readonly prng: Prng
  /** Simulated time in ms, as a history records it. */
  readonly now: () => number
  /** Safety (faults, load) until the faults heal; then liveness. */
  readonly phase: () => "safety" | "liveness"
  /** Ids of the nodes running now, ascending. */
  readonly running: () => ReadonlyArray<number>
  /** A running node (undefined if it is down). */
  readonly node: (id: number) => NodeHandle<Local> | undefined
  /** Node `node` acknowledged the write whose entry data is `data`: it must never be lost. */
  readonly acknowledged: (node: number, data: string) => void
  /** Adds a client event to the run's trace. */
  readonly trace: (...fields: ReadonlyArray<number>) => void
}

export interface WorkloadResult {
  readonly linearizability: ExploreResult["linearizability"]
  readonly violation: string | undefined
  readonly operations: number
  readonly unknownOutcomes: number
  /** Further counts, reported in the run's result. */
  readonly counts?: Readonly<Record<string, number>> | undefined
}

/** The clients of one run: a fiber per client, and the verdict on their history at the end. */
export interface Workload<Local> {
  readonly client: (env: ClientEnv<Local>) => Effect.Effect<void>
  /** The history's size, and (if `check`) whether it is linearizable. */
  readonly finish: (check: boolean) => WorkloadResult
  /** A safety check of the clients' own, after every instant (every fiber suspended): the violation, if any. */
  readonly check?: ((now: number) => string | undefined) | undefined
  /** A request made before `time` that has had no answer yet, if any (the run waits for every one). */
  readonly unansweredSince?: ((time: number) => string | undefined) | undefined
}

/**
 * Every request to a `RaftNode` gets an answer — done, refused, dropped or timed out — within two
 * request timeouts (its node's clock may run 20 % slow; the ticker that fails it wakes by its
 * deadline, `Ticks.ts`): a waiter lost by the driver (say, overwritten), or a ticker left asleep
 * past the deadline (a learner's, whose ticks never act), would leave its client hanging.
 */
export const answerBoundMs = (requestTimeoutMs: number, tickMs: number) => 2 * requestTimeoutMs + 2 * tickMs

/** The KV store as each node's state machine. */
export const kvStack: NodeStack<KvStore> = {
  local: () => new KvStore(),
  stateMachine: (kv) => kv.layer(),
  probe: (n) => JSON.stringify({ op: "put", key: "__probe", value: String(n) })
}

const keys = ["a", "b", "c"]

/**
 * Clients reading (ReadIndex, then the node's local store), writing and compare-and-setting keys,
 * wherever they believe the leader is; checked against the register model. With
 * `readsAtNewProcesses`, client 0 only reads: once at each new process, soon after it knows a
 * leader (`ExploreOptions.readsAtNewProcesses`).
 */
export const kvWorkload = (
  bound: {
    readonly requestTimeoutMs: number
    readonly tickMs: number
    readonly readsAnywhere?: boolean | undefined
    readonly readsAtNewProcesses?: boolean | undefined
  } = { requestTimeoutMs: 1000, tickMs: 100 }
): Workload<KvStore> => {
  const history = new History<RegisterInput, RegisterOutput>()
  const seqs: Array<number> = []
  /** client → its request to a node still unanswered: what, where, since when. */
  const outstanding = new Map<number, { readonly what: string; readonly node: number; readonly since: number }>()
  const answerWithin = answerBoundMs(bound.requestTimeoutMs, bound.tickMs)
  /** The first read that served a state older than an entry committed before it began. */
  let staleRead: string | undefined
  /** Runs `request` to `node`, noting it as outstanding until it is answered. */
  const asking = <A, E>(c: number, what: string, node: number, now: number, request: Effect.Effect<A, E>) =>
    Effect.ensuring(
      Effect.zipRight(
        Effect.sync(() => outstanding.set(c, { what, node, since: now })),
        request
      ),
      Effect.sync(() => outstanding.delete(c))
    )
  /** The highest index a running node has applied. */
  const appliedAnywhere = (env: ClientEnv<KvStore>) => env.running().reduce((max, id) => Math.max(max, env.node(id)!.local.applied), 0)
  /** A read of `key` at node `target` (running): ReadIndex, then the node's store. Its failure, if it failed. */
  const read = (env: ClientEnv<KvStore>, target: number, key: string) =>
    Effect.gen(function* () {
      const c = env.id
      const node = env.node(target)!
      // What any node has applied is committed: a linearizable read begun after it serves a
      // state that includes it. (Sharper than the register check, which sees a stale state
      // only if the key read was written in between.)
      const floor = appliedAnywhere(env)
      const op = history.invoke(c, { _tag: "read", key }, env.now())
      const result = yield* Effect.either(asking(c, "read", target, env.now(), node.serve(node.raft.readIndex)))
      if (Either.isRight(result) && node.local.applied < floor) {
        staleRead ??= `stale read: client ${c}'s read at node ${target} was served at applied index ${node.local.applied}, below index ${floor}, which a node had applied (so committed) before the read began`
      }
      if (Either.isLeft(result)) {
        // A read that did not complete had no effect: it is left out.
        history.fail(op)
        env.trace(op, 0)
        return result.left
      }
      history.ok(op, node.local.get(key), env.now())
      env.trace(op, 1)
      return undefined
    })
  /**
   * Reads once at each new process of a node (at the start, and after each restart): once it knows
   * a leader and then, as a client that has just seen a write acknowledged elsewhere, once a node
   * applies an entry none had applied then (or 40 ms later).
   */
  const newProcessReader = (env: ClientEnv<KvStore>) =>
    Effect.gen(function* () {
      const readAt = new Map<number, NodeHandle<KvStore>>()
      for (;;) {
        const fresh = env.running().filter((id) => readAt.get(id) !== env.node(id))
        // Finely while a new process waits for its leader (its read should leave soon after).
        yield* Effect.sleep(Duration.millis(fresh.length > 0 ? 1 : 10))
        for (const id of fresh) {
          const handle = env.node(id)
          if (handle === undefined || (yield* handle.raft.leader) === 0) continue
          readAt.set(id, handle)
          const until = env.now() + 40
          const seen = appliedAnywhere(env)
          while (env.now() < until && appliedAnywhere(env) <= seen) yield* Effect.sleep(Duration.millis(1))
          if (env.node(id) === handle) yield* read(env, id, env.prng.pick(keys))
        }
      }
    })
  return {
    check: (now) => {
      if (staleRead !== undefined) return staleRead
      for (const [c, o] of outstanding) {
        if (now - o.since > answerWithin) {
          return `request without an answer: client ${c}'s ${o.what} to node ${o.node}, made at ${o.since} ms, has had no answer for ${now - o.since} ms (every request is answered — done, refused, dropped or timed out — within ${answerWithin} ms)`
        }
      }
      return undefined
    },
    unansweredSince: (time) => {
      for (const [c, o] of outstanding) if (o.since < time) return `client ${c}'s ${o.what} to node ${o.node}, made at ${o.since} ms, has had no answer yet`
      return undefined
    },
    client: (env) => {
      if (bound.readsAtNewProcesses === true && env.id === 0) return newProcessReader(env)
      const c = env.id
      const prng = env.prng
      seqs[c] = 0
      let guess = 0
      const pause = (ms: number) => Effect.sleep(Duration.millis(ms))
      return Effect.gen(function* () {
        for (;;) {
          yield* pause(1 + prng.int(20))
          const running = env.running()
          if (running.length === 0) {
            yield* pause(50)
            continue
          }
          const guessed = guess !== 0 && running.includes(guess) ? guess : prng.pick(running)
          const key = prng.pick(keys)
          const roll = prng.float()
          if (roll < 0.4) {
            const failure = yield* read(env, bound.readsAnywhere === true ? prng.pick(running) : guessed, key)
            if (failure !== undefined) {
              guess = failure._tag === "NotLeader" ? (failure.leader ?? 0) : 0
              yield* pause(5 + prng.int(20))
            }
            continue
          }
          const target = guessed
          const node = env.node(target)!
          const value = `${c}.${++seqs[c]!}`
          const cas = roll >= 0.8
          const expected = cas ? prng.pick([null, ...seqs.map((s, i) => `${i}.${Math.max(1, s - prng.int(2))}`)]) : null
          const input: RegisterInput = cas ? { _tag: "cas", key, expected, value } : { _tag: "write", key, value }
          const data = JSON.stringify(cas ? { op: "cas", key, expected, value } : { op: "put", key, value })
          const op = history.invoke(c, input, env.now())
          const result = yield* Effect.either(asking(c, "write", target, env.now(), node.serve(node.raft.propose(data))))
          if (Either.isRight(result)) {
            history.ok(op, result.right as RegisterOutput, env.now())
            env.acknowledged(target, data)
            guess = target
            env.trace(op, 2)
            continue
          }
          const e = result.left
          switch (e._tag) {
            case "NotLeader":
            case "Unavailable":
            case "InvalidArgument":
              // Refused before it was appended: it never applies.
              history.fail(op)
              guess = e._tag === "NotLeader" ? (e.leader ?? 0) : 0
              break
            case "Timeout":
            case "ProposalDropped":
              history.unknown(op)
              guess = 0
              break
          }
          env.trace(op, 3)
          yield* pause(5 + prng.int(20))
        }
      })
    },
    finish: (check) => {
      const ops = history.operations()
      const counts = { operations: ops.length, unknownOutcomes: ops.filter((o) => o.ret === Infinity).length }
      if (!check) return { linearizability: "not checked", violation: undefined, ...counts }
      const result = checkLinearizability(registerModel, ops, { maxSteps: 5_000_000 })
      return {
        linearizability: result._tag === "Ok" ? "ok" : result._tag === "Illegal" ? "illegal" : "unknown",
        violation: result._tag === "Illegal" ? `linearizability: ${formatResult(registerModel, result)}` : undefined,
        ...counts
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The simulated transport

/**
 * A node's incoming messages. One fiber (the node's receiver) takes from it, so a single waiter
 * slot does: no `Deferred` per take, which `Queue.take` allocates whenever it has to wait.
 */
class Inbox {
  private items: Array<Received> = []
  private waiter: ((effect: Effect.Effect<Received>) => void) | undefined = undefined

  offer(message: Received): void {
    const waiter = this.waiter
    if (waiter === undefined) this.items.push(message)
    else {
      this.waiter = undefined
      waiter(Effect.succeed(message))
    }
  }

  readonly take: Effect.Effect<Received> = Effect.suspend(() =>
    this.items.length > 0
      ? Effect.succeed(this.items.shift()!)
      : Effect.async<Received>((resume) => {
          this.waiter = resume
          return Effect.sync(() => {
            if (this.waiter === resume) this.waiter = undefined
          })
        })
  )
}

// ---------------------------------------------------------------------------------------------------
// The run

interface SimNode<Local> {
  readonly id: number
  /** What the node made durable; it survives crashes. */
  readonly store: MemoryStore
  /** The machine's clock: it keeps its offset and skew across restarts of the node. */
  readonly clock: VirtualClock
  /** Network incarnation of the current (or last) run of the node. */
  incarnation: number
  /** Set from the start of an incarnation until its crash. */
  inbox: Inbox | undefined
  scope: Scope.CloseableScope | undefined
  /** Set once the incarnation's services are built. */
  running: NodeHandle<Local> | undefined
  /** The state machine's applied index (this incarnation). */
  applied: number
  /** Entries up to here were recorded as committed from the durable log. */
  recorded: number
  /** A crash point decided this crash (of the machine, or of the process only); its teardown is due. */
  dying: { readonly machine: boolean } | undefined
  /** The node's disk, when the run simulates disks (`ExploreOptions.storage`). */
  readonly disk: SimDisk | undefined
  /** The store's epoch when the current incarnation started: another one means its writes are settled. */
  storeEpoch: number
  /** Starts without founding a cluster (it joins one, or came back with an empty data directory). */
  joins: boolean
  /**
   * Back without its Raft state while a peer listed it as a voter: its daemon refuses to start
   * (`Daemon.refuseAmnesia`) until the operator has removed it and starts it again.
   */
  refused: boolean
  /** The log version of the release the node runs, and starts on next (`ExploreOptions.rollingUpgrade`). */
  release: number
}

/** The explorer's options apply to this tier too (same profiles, same meaning). */
export const simulate = (options: ExploreOptions): ExploreResult =>
  runFullService(
    options,
    kvStack,
    kvWorkload({
      requestTimeoutMs: options.requestTimeoutMs ?? 1000,
      tickMs: options.tickMs ?? 100,
      readsAnywhere: options.readsAnywhere,
      readsAtNewProcesses: options.readsAtNewProcesses
    })
  )

export const runFullService = <Local>(options: ExploreOptions, stack: NodeStack<Local>, workload: Workload<Local>): ExploreResult => {
  const seed = options.seed
  const n = options.nodes ?? 5
  const safetyMs = options.safetyMs ?? 10_000
  const livenessMs = options.livenessMs ?? 10_000
  const tickMs = options.tickMs ?? 100
  const crashPoints = options.crashPoints ?? 0
  const root = Prng.fromSeed(seed)
  const crashPrng = root.fork("crashpoints")
  const ids = Array.from({ length: n }, (_, i) => i + 1)
  const time = new VirtualTime()
  const trace = new TraceHash()
  let crashes = 0
  let messages = 0
  let snapshotsInstalled = 0
  /** Daemons that exited on a storage error. */
  let storageExits = 0
  let instants = 0
  /** Failures noticed inside fibers, reported by the driver at the next check. */
  const problems: Array<string> = []
  /** Entries handed to a state machine since the last check. */
  const appliedBatches: Array<{ readonly node: number; readonly entries: ReadonlyArray<Entry> }> = []
  /** Entry of the first application of each normal entry's data (to find acknowledged writes). */
  const appliedData = new Map<string, Entry>()
  const acks: Array<{ readonly node: number; readonly data: string }> = []
  /** Votes granted (`voteResp` sent without `reject`) since the last check. */
  const votesGranted: Array<{ readonly node: number; readonly term: number; readonly candidate: number }> = []
  /** Nodes that had a delivery, a timer or a client request since the last check. */
  const touched = new Set<number>()

  const fail = (message: string): never => {
    throw new Violation(`at ${time.now} ms: ${message}`)
  }
  const invariants = new RaftInvariants(fail)

  const network = new Network<Message>({
    nodes: ids,
    prng: root.fork("network"),
    links: defaultLinkFaults,
    queue: { sizeOf: messageBytes },
    lateAfterCrash: options.lateAfterCrash ?? defaultLateAfterCrash,
    schedule: (at, d) => {
      time.at(at, () => deliver(d))
    },
    restarted: (observer, subject, at) => {
      const process = network.incarnation(observer)
      const incarnation = String(network.dataIncarnation(subject))
      time.at(at, () => {
        const node = nodeOf(observer)
        // A new process of the observer knows nothing of the earlier one's peers (the network forgot).
        if (network.incarnation(observer) !== process) return
        // Up, but its daemon not running (refused at start-up): nothing was built for the peer.
        if (node.inbox === undefined) return network.resume(observer, subject)
        touched.add(observer)
        trace.record(time.now, (17 << 24) | (observer << 8) | subject)
        node.inbox.offer({ type: "peerRestarted", peer: subject, incarnation })
      })
    }
  })

  const nodes: Array<SimNode<Local>> = ids.map((id) => ({
    id,
    store: new MemoryStore(),
    clock: new VirtualClock(time, {
      offsetMs: root.fork(`clock:${id}`).int(60_000),
      onWake: () => {
        touched.add(id)
        trace.record(time.now, (1 << 24) | id)
      }
    }),
    incarnation: 0,
    inbox: undefined,
    scope: undefined,
    running: undefined,
    applied: 0,
    recorded: 0,
    dying: undefined,
    disk: options.storage === undefined ? undefined : new SimDisk(id, time, root.fork(`disk:${id}`), options.storage, () => touched.add(id)),
    storeEpoch: 0,
    joins: options.membership === "join" && id !== 1,
    refused: false,
    release: options.rollingUpgrade?.from ?? LogVersion
  }))
  const nodeOf = (id: number) => nodes[id - 1]!
  /** Clients and the liveness probe: simulated time itself, no skew. */
  const trueClock = new VirtualClock(time, { offsetMs: 0, onWake: () => trace.record(time.now, 1 << 24) })

  /** Delays of requests between nodes (`NodeNet.request`); drawn only by stacks that make them. */
  const requestPrng = root.fork("requests")
  const requestTimeoutMs = options.requestTimeoutMs ?? 1000

  const linkDelay = (from: number, to: number) => {
    const link = network.profile(from, to)
    return Duration.millis(link.minDelay + requestPrng.int(link.maxDelay - link.minDelay + 1))
  }

  const net = (from: number): NodeNet<Local> => ({
    now: () => time.now,
    request: <A, E>(to: number, serve: (target: NodeHandle<Local>) => Effect.Effect<A, E>) =>
      Effect.gen(function* () {
        const target = nodeOf(to)
        const startedAt = time.now
        const noAnswer = Effect.gen(function* () {
          yield* Effect.sleep(Duration.millis(Math.max(0, startedAt + requestTimeoutMs - time.now)))
          return yield* new Timeout({ message: `node ${to} did not answer node ${from} within ${requestTimeoutMs} ms` })
        })
        trace.record(time.now, (9 << 24) | (from << 8) | to)
        if (!network.canSend(from, to)) return yield* noAnswer
        const incarnation = network.incarnation(to)
        yield* Effect.sleep(linkDelay(from, to))
        const handle = target.running
        if (handle === undefined || network.incarnation(to) !== incarnation || !network.canSend(from, to)) return yield* noAnswer
        touched.add(to)
        const answer = yield* Effect.withClock(serve(handle), target.clock)
        if (!network.canSend(to, from)) return yield* noAnswer
        yield* Effect.sleep(linkDelay(to, from))
        if (!network.canSend(to, from)) return yield* noAnswer
        return answer
      })
  })

  /** The unsafe switches of the bug put back, if any (`Bugs.ts`). */
  const unsafe = switchesOf(options.bug).node

  const raftConfig = (node: SimNode<Local>): RaftNodeConfig => ({
    id: node.id,
    tickMs,
    // The daemon's timing, so the simulator sees production's message pattern.
    electionTick: RaftNode.DefaultElectionTick,
    heartbeatTick: RaftNode.DefaultHeartbeatTick,
    requestTimeoutMs,
    // A node that joins starts empty, as a daemon started with --peer does.
    ...(node.joins ? {} : { bootstrap: options.membership === "join" ? [1] : ids }),
    snapshotEvery: options.compactEvery ?? 64,
    snapshotRatio: 0,
    snapshotRetain: 8,
    ...unsafe,
    raft: {
      maxSizePerMsg: options.maxSizePerMsg ?? 4096,
      maxInflightMsgs: options.maxInflightMsgs ?? 64,
      ...unsafe?.raft
    }
  })

  let phase = "safety" as "safety" | "liveness"

  // --- Nodes ------------------------------------------------------------------------------------

  const deliver = (d: Delivery<Message>) => {
    if (!network.accept(d)) return
    const node = nodeOf(d.to)
    if (node.inbox === undefined) return
    touched.add(d.to)
    trace.record(time.now, (3 << 24) | (d.from << 16) | (d.to << 8) | messageCode[d.msg.type], d.msg.term)
    node.inbox.offer(d.msg)
  }

  /** Crash points never take down a majority (the schedule's own crashes are bounded the same way). */
  const crashable = () => ids.filter((id) => !network.isUp(id)).length < Math.floor((n - 1) / 2)

  /** Whether a crash point lets the batch go first (see `send`). */
  const afterSendPrng = root.fork("crashpoint-after-send")

  /**
   * Runs in the node's driver fiber. A leader's appends leave before the save of their Ready
   * (RaftNode's order); everything else after it.
   */
  const send = (node: SimNode<Local>, incarnation: number, batch: ReadonlyArray<Message>) => {
    if (node.incarnation !== incarnation || !network.isUp(node.id)) return
    if (
      crashPoints > 0 &&
      phase === "safety" &&
      batch.some((m) => m.type === "app" && m.entries.length > 0) &&
      crashable() &&
      crashPrng.chance(crashPoints)
    ) {
      // Crash point: the appends' entries are not yet durable, and the appends are either lost
      // with the node or (half the time) already on their way. The network forgets the node at
      // once and its unflushed writes are gone; its fibers stop when the driver gets control
      // back, in this same instant.
      if (afterSendPrng.chance(0.5)) transmit(node, batch)
      trace.record(time.now, (5 << 24) | node.id)
      node.dying = { machine: crashKind(node) }
      network.crash(node.id, time.now)
      loseUnflushed(node, node.dying.machine)
      time.at(time.now, () => {
        if (node.incarnation === incarnation) stop(node)
      })
      const restartAt = time.now + 100 + crashPrng.int(1900)
      time.at(restartAt, () => fault({ _tag: "Restart", node: node.id }))
      return
    }
    transmit(node, batch)
  }

  const transmit = (node: SimNode<Local>, batch: ReadonlyArray<Message>) => {
    trace.record(time.now, (2 << 24) | (node.id << 16) | Math.min(batch.length, 0xffff))
    for (const m of batch) {
      messages++
      // Checked at the next check: this runs in the node's driver fiber, which must not throw.
      if (m.type === "voteResp" && !m.reject) votesGranted.push({ node: m.from, term: m.term, candidate: m.to })
      network.send(m.from, m.to, m, time.now)
    }
    if (wipeVoters > 0 && batch.some((m) => m.type === "voteResp" && !m.reject)) wipeAfterVote(node)
    if (restartOnFirstRead > 0) restartAsFirstReadLeaves(node, batch)
  }

  /** Committed writes that crashes lost before they were flushed. */
  let unflushedLost = 0
  /** What a machine crash keeps of the unflushed writes (`StorageFaultOptions.keepPrefixShare`). */
  const keepPrng = root.fork("disk-crash")

  /**
   * The node's process is gone: its unflushed writes survive if only the process died (the kernel
   * holds them), else none of them, or a prefix. Once per incarnation.
   */
  const loseUnflushed = (node: SimNode<Local>, machine: boolean) => {
    const store = node.store
    if (store.epoch !== node.storeEpoch) return
    const pending = store.unflushedWrites
    const keep = !machine
      ? Infinity
      : options.storage !== undefined && pending > 0 && keepPrng.chance(options.storage.keepPrefixShare)
        ? keepPrng.int(pending + 1)
        : 0
    if (pending > 0) {
      unflushedLost += pending - Math.min(keep, pending)
      trace.record(time.now, (12 << 24) | node.id, pending, Math.min(keep, pending))
    }
    store.crash(keep)
  }

  /** The state machine as the node sees it, reporting what it is handed. */
  const observed = (node: SimNode<Local>, incarnation: number, sm: Layer.Layer<StateMachine>): Layer.Layer<StateMachine> =>
    Layer.effect(
      StateMachine,
      Effect.map(StateMachine, (inner): StateMachineShape => ({
        applied: inner.applied,
        snapshot: inner.snapshot,
        apply: (entries) =>
          Effect.map(inner.apply(entries), (results) => {
            if (entries.length > 0) {
              appliedBatches.push({ node: node.id, entries })
              if (node.incarnation === incarnation) node.applied = entries[entries.length - 1]!.index
            }
            return results
          }),
        restore: (snapshot) =>
          Effect.map(inner.restore(snapshot), () => {
            if (node.incarnation !== incarnation) return
            node.applied = snapshot.metadata.index
            // At start-up the node restores its own snapshot; later, a snapshot came from the leader.
            if (node.running !== undefined) snapshotsInstalled++
          })
      }))
    ).pipe(Layer.provide(sm))

  const unreachable = Effect.succeed([])

  const start = (node: SimNode<Local>) => {
    // A restart in the very instant of a crash point comes before that crash's teardown.
    if (node.scope !== undefined) stop(node)
    const incarnation = network.incarnation(node.id)
    node.incarnation = incarnation
    node.applied = 0
    const inbox = new Inbox()
    node.inbox = inbox
    const local = stack.local(node.id, node.release)
    const transport: TransportShape = {
      send: (batch) => Effect.sync(() => send(node, incarnation, batch)),
      receive: inbox.take,
      unreachable,
      discard: (peer) => Effect.sync(() => network.discard(node.id, peer, time.now)),
      resume: (peer) =>
        Effect.sync(() => {
          if (node.incarnation === incarnation) network.resume(node.id, peer)
        })
    }
    node.storeEpoch = node.store.epoch
    const storage = layerMemory(node.store, node.disk?.memoryDisk)
    const raft = RaftNode.layer(raftConfig(node)).pipe(
      Layer.provide(Layer.mergeAll(storage, Layer.succeed(Transport, transport), observed(node, incarnation, stack.stateMachine(local))))
    )
    const layer: Layer.Layer<RaftNode.RaftNode, unknown> =
      stack.services === undefined ? raft : stack.services(local, node.id, net(node.id)).pipe(Layer.provideMerge(raft))
    const scope = Effect.runSync(Scope.make())
    node.scope = scope
    const random = Random.make(root.fork(`raft:${node.id}:${incarnation}`).next32())
    // The node's own information lines (its recovery, its first read) would crowd the run's output,
    // `--json` included: warnings and errors only, as before those lines existed.
    const build = Effect.runFork(
      Layer.buildWithScope(layer, scope).pipe(Effect.withClock(node.clock), Effect.withRandom(random), Logger.withMinimumLogLevel(LogLevel.Warning)),
      { scheduler: time.scheduler }
    )
    build.addObserver((exit) => {
      if (node.scope !== scope) return
      if (Exit.isFailure(exit)) {
        if (tooOld(exit.cause)) return releaseStop(node, incarnation)
        if (!Cause.isInterruptedOnly(exit.cause)) problems.push(`node ${node.id} failed to start: ${Cause.pretty(exit.cause)}`)
        return
      }
      const handle: NodeHandle<Local> = {
        raft: Context.get(exit.value, RaftNode.RaftNode),
        local,
        serve: (call) => Effect.withClock(call, node.clock)
      }
      node.running = handle
      // The driver fiber ends only by interruption (a crash) or on a defect: a Raft core assertion.
      Effect.runFork(handle.raft.await, { scheduler: time.scheduler }).addObserver((end) => {
        if (node.running !== handle || Exit.isSuccess(end) || Cause.isInterruptedOnly(end.cause)) return
        if (tooOld(end.cause)) return releaseStop(node, incarnation)
        if (Option.isSome(Cause.failureOption(end.cause))) return storageExit(node, incarnation)
        const error = Cause.squash(end.cause)
        problems.push(`a node stopped on an internal assertion: node ${node.id}: ${error instanceof Error ? error.message : String(error)}`)
      })
    })
  }

  const exitPrng = root.fork("storage-exit")

  /** Whether the node stopped because the cluster's log is above its release (`BLX_RELEASE_TOO_OLD`). */
  const tooOld = (cause: Cause.Cause<unknown>) =>
    Option.match(Cause.failureOption(cause), { onNone: () => false, onSome: (e) => (e as { readonly _tag?: unknown })._tag === "ReleaseTooOld" })

  /** Daemons that stopped on a log above their release, and were upgraded by the operator. */
  let releaseStops = 0
  const upgradePrng = root.fork("upgrade")

  /**
   * The node stopped, at start-up or at the entry that raised the cluster's log version beyond its
   * release (`BLX_RELEASE_TOO_OLD`), as the daemon exits: the operator installs this release on it
   * and starts it again, 0.5–1.5 s later, on the same data directory.
   */
  const releaseStop = (node: SimNode<Local>, incarnation: number) => {
    releaseStops++
    trace.record(time.now, (21 << 24) | node.id)
    network.crash(node.id, time.now)
    node.dying = { machine: false }
    node.release = LogVersion
    time.at(time.now, () => {
      if (node.incarnation === incarnation) stop(node)
    })
    time.at(time.now + 500 + upgradePrng.int(1000), () => fault({ _tag: "Restart", node: node.id }))
  }

  /**
   * The node's Raft driver stopped on a storage error (a failed flush): its daemon exits with it,
   * as `Daemon.ts` does, and its supervisor starts it again — within the stack's bound for a dead
   * daemon. What the failed flush was to make durable may be gone (the kernel can drop the pages
   * of a failed write-back), so its unflushed writes are lost as in a power cut.
   */
  const storageExit = (node: SimNode<Local>, incarnation: number) => {
    storageExits++
    trace.record(time.now, (13 << 24) | node.id)
    network.crash(node.id, time.now)
    loseUnflushed(node, true)
    node.dying = { machine: false }
    time.at(time.now, () => {
      if (node.incarnation === incarnation) stop(node)
    })
    const downMs = stack.daemonCrashes?.maxDownMs ?? 2000
    time.at(time.now + 100 + exitPrng.int(Math.max(1, downMs - 100)), () => fault({ _tag: "Restart", node: node.id }))
  }

  /** The crash itself: every fiber of the node is interrupted and its memory dropped. */
  const stop = (node: SimNode<Local>) => {
    const machine = node.dying?.machine ?? true
    node.dying = undefined
    if (node.scope === undefined) return
    loseUnflushed(node, machine)
    crashes++
    stack.crashed?.(node.id, machine)
    teardown(node)
  }

  /** Draws whether a crash is of the node's process only (the stack's `daemonCrashes`). */
  const crashKinds = root.fork("crash-kinds")

  /**
   * What a crash of `node` takes down: true for the machine. A crash of the process only also
   * schedules its restart within the stack's bound — unless the node has been restarted by then.
   */
  const crashKind = (node: SimNode<Local>): boolean => {
    const d = stack.daemonCrashes
    if (d === undefined || !crashKinds.chance(d.share)) return true
    trace.record(time.now, (8 << 24) | node.id)
    const incarnation = network.incarnation(node.id)
    time.at(time.now + 100 + crashKinds.int(Math.max(1, d.maxDownMs - 100)), () => {
      if (network.incarnation(node.id) === incarnation && !network.isUp(node.id)) fault({ _tag: "Restart", node: node.id })
    })
    return false
  }

  const teardown = (node: SimNode<Local>) => {
    const scope = node.scope!
    node.scope = undefined
    node.inbox = undefined
    node.running = undefined
    touched.delete(node.id)
    Effect.runFork(Scope.close(scope, Exit.void), { scheduler: time.scheduler })
  }

  const amnesia = options.amnesia ?? 0
  const amnesiaPrng = root.fork("amnesia")
  let wiped = 0

  /** Re-injects the amnesia bug: a node back without its data starts at once under its old id. */
  const admitAmnesiacVoters = switchesOf(options.bug).controlPlane?.unsafeAdmitAmnesiacVoters === true
  /** Re-injects the wiped-learner bug: a learner back empty starts as it is, the leader's progress unchanged. */
  const admitWipedLearners = switchesOf(options.bug).controlPlane?.unsafeAdmitWipedLearners === true
  /** Nodes whose daemon refused to start, until the operator has removed them and made them voters again. */
  const rejoining = new Set<number>()
  let refusals = 0
  const wipeLearners = options.wipeLearners ?? 0
  const learnerPrng = root.fork("learner-wipe")
  /** Nodes whose next restart comes back wiped, whatever the amnesia chance says. */
  const forcedWipes = new Set<number>()
  let learnersWiped = 0

  /** Nodes the targeted fault below has wiped (once per node and run, so the run can converge). */
  const learnerWiped = new Set<number>()

  /**
   * A targeted fault (`wipeLearners`), during the safety phase: with that chance, once the leader
   * lists node `id` as a learner that has acknowledged entries (and before it is promoted), its
   * process dies and comes back 200 ms later on an empty data directory. Random faults rarely hit
   * that window.
   */
  const wipeWhileLearner = (id: number) =>
    Effect.gen(function* () {
      if (learnerWiped.has(id) || !learnerPrng.chance(wipeLearners)) return
      // Started once its removal was answered; the leader's configuration may list it as a voter
      // until it has synced and applied that removal: a voter counts as promoted only after that.
      let removed = false
      while (phase === "safety") {
        const leader = leaderNode()?.running
        if (leader !== undefined) {
          const st = yield* leader.raft.status
          if (!st.confState.voters.includes(id)) removed = true
          else if (removed) return
          const match = st.progress.find((p) => p.id === id)?.match ?? 0
          if (st.confState.learners.includes(id) && match > 0 && nodeOf(id).running !== undefined) {
            learnersWiped++
            learnerWiped.add(id)
            forcedWipes.add(id)
            fault({ _tag: "Crash", node: id })
            time.at(time.now + 200, () => fault({ _tag: "Restart", node: id }))
            return
          }
        }
        yield* Effect.sleep(Duration.millis(1))
      }
    })

  /**
   * Another node than `id` has lost its data directory and is not back yet: due to come back
   * wiped, or back empty and waiting for a peer to answer before its daemon decides to start.
   */
  const lostElsewhere = (id: number) =>
    [...forcedWipes].some((x) => x !== id) ||
    nodes.some((x) => x.id !== id && x.joins && x.scope === undefined && network.isUp(x.id) && fresh(x.store))

  const wipeVoters = options.wipeVoters ?? 0
  const voterPrng = root.fork("voter-wipe")
  let votersWiped = 0

  /**
   * A targeted fault (`wipeVoters`), during the safety phase: with that chance, a node that has
   * just granted its vote dies as the grant leaves, and comes back 100–400 ms later on an empty
   * data directory — while the election it voted in may still be going on. One lost data
   * directory at a time, and never a majority down.
   */
  const wipeAfterVote = (node: SimNode<Local>) => {
    if (phase !== "safety" || rejoining.size > 0 || removing.size > 0 || lostElsewhere(node.id) || !crashable()) return
    if (!voterPrng.chance(wipeVoters)) return
    votersWiped++
    forcedWipes.add(node.id)
    const incarnation = node.incarnation
    trace.record(time.now, (20 << 24) | node.id)
    node.dying = { machine: true }
    network.crash(node.id, time.now)
    loseUnflushed(node, true)
    time.at(time.now, () => {
      if (node.incarnation === incarnation) stop(node)
    })
    time.at(time.now + 100 + voterPrng.int(300), () => fault({ _tag: "Restart", node: node.id }))
  }

  const restartOnFirstRead = options.restartOnFirstRead ?? 0
  const firstReadPrng = root.fork("first-read-restart")
  /** Processes (node * 2^20 + incarnation) whose first read request has left. */
  const readsSent = new Set<number>()
  /** A restart of `restartOnFirstRead` is under way (its cut not healed yet). */
  let readRestarting = false
  let readRestarts = 0

  /**
   * A targeted fault (`restartOnFirstRead`), during the safety phase: with that chance, a follower
   * whose process sends its first read request dies as it leaves, its other peers but a quorum's
   * worth less two are cut off from the leader, and it is started again 100–400 ms later; the cut
   * heals 0.5–1.5 s after that.
   */
  const restartAsFirstReadLeaves = (node: SimNode<Local>, batch: ReadonlyArray<Message>) => {
    const request = batch.find((m) => m.type === "readIndex")
    const key = node.id * 2 ** 20 + node.incarnation
    if (request === undefined || readsSent.has(key)) return
    readsSent.add(key)
    // The process's first ReadIndex round: RaftNode numbers them from 1 at the end of the context
    // (an earlier round refused for want of a leader took a number too).
    if (!request.context.endsWith(":1")) return
    if (phase !== "safety" || readRestarting || !crashable() || !firstReadPrng.chance(restartOnFirstRead)) return
    readRestarting = true
    readRestarts++
    const cut = ids.filter((x) => x !== node.id && x !== request.to).slice(Math.floor(n / 2) - 1)
    trace.record(time.now, (21 << 24) | (node.id << 8) | request.to)
    fault({ _tag: "Partition", groups: [cut, ids.filter((x) => !cut.includes(x))] })
    const incarnation = node.incarnation
    node.dying = { machine: false }
    network.crash(node.id, time.now)
    time.at(time.now, () => {
      if (node.incarnation === incarnation) stop(node)
    })
    const restartAt = time.now + 100 + firstReadPrng.int(300)
    time.at(restartAt, () => fault({ _tag: "Restart", node: node.id }))
    time.at(restartAt + 500 + firstReadPrng.int(1000), () => {
      readRestarting = false
      if (phase === "safety") fault({ _tag: "Heal" })
    })
  }

  /** Learners back empty after acknowledging entries, until their daemon has had them removed. */
  const removing = new Set<number>()
  let learnerRemovals = 0

  /** The node comes back with an empty data directory, under its old id, and starts as a joining node. */
  const wipe = (node: SimNode<Local>) => {
    wiped++
    trace.record(time.now, (14 << 24) | node.id)
    node.store.wipe()
    node.joins = true
    invariants.wiped(node.id)
  }

  const fresh = (s: MemoryStore) => s.hardState.term === 0 && s.lastIndex === 0 && s.snapshot === undefined

  /**
   * The configuration as the first peer that answers (ascending ids) sees it — its leader's view
   * when it knows one, as `clusterStatus` is forwarded — or undefined while no peer answers: the
   * voters, and how it lists `node` (`role`, and `match` from the leader's progress; `fromLeader`
   * when the leader answered).
   */
  const seenBy = (node: SimNode<Local>) => {
    const reachable = (a: number, b: number) => network.canSend(a, b) && network.canSend(b, a)
    const view = (st: Status, fromLeader: boolean) => {
      const learner = st.confState.learners.includes(node.id)
      const match = st.progress.find((p) => p.id === node.id)?.match ?? 0
      return {
        voters: st.confState.voters,
        fromLeader,
        listed: learner || st.confState.voters.includes(node.id) ? { id: node.id, role: learner ? "learner" : "voter", match } : undefined
      }
    }
    for (const peer of nodes) {
      if (peer === node || peer.running === undefined || !reachable(node.id, peer.id)) continue
      const st = Effect.runSync(peer.running.raft.status)
      if (st.role === "leader" || st.lead === 0) return view(st, st.role === "leader")
      const leader = nodeOf(st.lead).running
      if (leader !== undefined && reachable(peer.id, st.lead)) return view(Effect.runSync(leader.raft.status), true)
    }
    return undefined
  }

  /**
   * The node's daemon starts. One that joins and has no Raft state first asks a peer whether its id
   * is still a member (`Daemon.refuseAmnesia`, deciding with `isAmnesiac` and `isWipedLearner`): a
   * voter exits refused — the operator removes it and adds it back (`rejoin`) —; a learner the
   * leader lists with acknowledged entries has itself removed (its join then adds it again) and
   * waits for that; either way its supervisor starts it again a second later; so it does while no
   * peer (for a learner: no leader) answers.
   */
  const boot = (node: SimNode<Local>) => {
    if (admitAmnesiacVoters || !node.joins || !fresh(node.store)) return start(node)
    const seen = seenBy(node)
    if (seen !== undefined && !isAmnesiac(node.id, seen.voters)) {
      if (seen.listed === undefined) return start(node)
      if (seen.fromLeader && (admitWipedLearners || !isWipedLearner(node.id, seen.listed))) return start(node)
      if (seen.fromLeader && !removing.has(node.id)) {
        learnerRemovals++
        trace.record(time.now, (17 << 24) | node.id)
        removing.add(node.id)
        // Then its daemon's `joinLoop` adds it again (as a new learner), as in the daemon: a join
        // the operator started may have finished meanwhile (the promotion committed as the node came
        // back empty), and nothing else would.
        runFiber(
          `node ${node.id}'s daemon having itself removed as a learner, then joining again`,
          Effect.zipRight(
            Effect.ensuring(operatorCommands.change({ type: "remove", nodeId: node.id }), Effect.sync(() => removing.delete(node.id))),
            operatorCommands.join(node.id)
          )
        )
      }
    } else if (seen !== undefined && !rejoining.has(node.id)) {
      refusals++
      trace.record(time.now, (16 << 24) | node.id)
      rejoining.add(node.id)
      runFiber(`the operator re-adding node ${node.id}`, rejoin(node.id))
    }
    const incarnation = network.incarnation(node.id)
    time.at(time.now + 1000, () => {
      if (network.incarnation(node.id) === incarnation && network.isUp(node.id) && node.scope === undefined) boot(node)
    })
  }

  let membershipChanges = 0
  const membershipChanged = (cc: ConfChange) => {
    membershipChanges++
    trace.record(time.now, (15 << 24) | cc.nodeId, cc.type === "addLearner" ? 1 : cc.type === "promote" ? 2 : 3)
  }
  const operatorCommands = operator({ leader: () => leaderNode()?.running?.raft, tickMs, changed: membershipChanged })

  /** What the daemon's refusal tells the operator to do: `cluster leave --id N`, then `cluster join` once N starts. */
  const rejoin = (id: number) =>
    Effect.gen(function* () {
      yield* operatorCommands.change({ type: "remove", nodeId: id })
      if (wipeLearners > 0) runFiber(`wiping node ${id} while a learner`, wipeWhileLearner(id))
      yield* operatorCommands.join(id)
      rejoining.delete(id)
    })

  /** The running node leading the highest term, if any. */
  const leaderNode = (): SimNode<Local> | undefined => {
    let term = -1
    let leader: SimNode<Local> | undefined
    for (const x of nodes) {
      if (x.running === undefined) continue
      const st = Effect.runSync(x.running.raft.status)
      if (st.role === "leader" && st.term > term) {
        term = st.term
        leader = x
      }
    }
    return leader
  }

  /** A storage fault fires: on the leader of the moment, or on a running node, unless another node's disk is faulty. */
  const storageFault = (f: ScheduledStorageFault) => {
    const running = nodes.filter((x) => x.running !== undefined)
    let target = f.toLeader ? leaderNode() : undefined
    target ??= running.length > 0 ? running[f.pick % running.length] : undefined
    // One node's disk misbehaves at a time: the others' keep the cluster able to take over.
    if (target?.disk === undefined || nodes.some((x) => x !== target && x.disk?.faulty === true)) return
    diskFaults++
    trace.record(time.now, (11 << 24) | target.id, f.ms)
    applyStorageFault(target.disk, f)
  }
  let diskFaults = 0

  const fault = (a: FaultAction) => {
    // Crash points add crashes of their own: skip schedule actions they made moot.
    if (a._tag === "Crash" && !network.isUp(a.node)) return
    if (a._tag === "Restart" && network.isUp(a.node)) return
    trace.record(time.now, 4, a._tag)
    // One data directory lost at a time: two at once in three nodes is a lost quorum, which no
    // removal can repair. Decided before the network restarts the node, so that its peers'
    // reconnections meet its new data incarnation.
    // (`wipeLearners` wipes the node being re-added again: a learner that acknowledged entries.)
    const wipes =
      a._tag === "Restart" &&
      (forcedWipes.delete(a.node) || (amnesia > 0 && amnesiaPrng.chance(amnesia) && rejoining.size === 0 && removing.size === 0 && !lostElsewhere(a.node)))
    if (wipes) network.empty(a.node)
    applyFault(network, a, time.now)
    if (a._tag === "Crash") {
      const node = nodeOf(a.node)
      node.dying = { machine: crashKind(node) }
      stop(node)
    } else if (a._tag === "Restart") {
      const node = nodeOf(a.node)
      invariants.restarted(a.node)
      if (wipes) wipe(node)
      boot(node)
    } else if (a._tag === "ClockSkew") nodeOf(a.node).clock.setSkew(a.skewMs)
  }

  // --- Checks -----------------------------------------------------------------------------------

  const storeLog = (s: MemoryStore): LogTerms => ({
    firstIndex: s.firstIndex,
    lastIndex: s.lastIndex,
    term: (i) => (i === s.firstIndex - 1 ? s.prevTerm : i >= s.firstIndex && i <= s.lastIndex ? s.log[i - s.firstIndex]!.term : undefined),
    entry: (i) => (i >= s.firstIndex && i <= s.lastIndex ? s.log[i - s.firstIndex] : undefined)
  })

  const checkLogMatching = () =>
    invariants.logMatching(nodes.filter((x) => x.running !== undefined).map((x) => ({ node: x.id, log: storeLog(x.store) })))

  /** After every instant, when every fiber is suspended: the nodes' state is consistent to read. */
  const check = () => {
    if (problems.length > 0) fail(problems[0]!)
    const broken = stack.check?.() ?? workload.check?.(time.now)
    if (broken !== undefined) fail(broken)
    if (options.rollingUpgrade !== undefined && raisedAtMs === undefined && (clusterLogVersion() ?? 0) >= LogVersion) raisedAtMs = time.now
    for (const batch of appliedBatches) {
      for (const e of batch.entries) {
        invariants.committedEntry(batch.node, e)
        if (e.kind === "normal" && !appliedData.has(e.data)) appliedData.set(e.data, e)
      }
    }
    appliedBatches.length = 0
    for (const v of votesGranted) invariants.vote(v.node, v.term, v.candidate)
    votesGranted.length = 0
    for (const a of acks) {
      const e = appliedData.get(a.data)
      if (e === undefined) fail(`a write was acknowledged by node ${a.node} that no state machine applied: ${a.data}`)
      invariants.acknowledged(a.node, e!)
    }
    acks.length = 0
    for (const id of touched) {
      const node = nodeOf(id)
      const running = node.running
      if (running === undefined) continue
      const st = Effect.runSync(running.raft.status)
      const store = node.store
      invariants.commitIndex(id, st.commit)
      // Votes the network does not carry (a candidate's own) are in its durable HardState.
      const hs = store.durable.hardState
      if (hs.vote !== 0) invariants.vote(id, hs.term, hs.vote)
      invariants.durableCommit(id, store.durable.hardState.commit)
      if (st.role === "leader") invariants.leader(id, st.term, () => storeLog(store), node.incarnation)
      // An entry is committed as soon as any node knows it is, before anyone applies it.
      const upTo = Math.min(st.commit, store.lastIndex)
      for (let i = Math.max(node.recorded + 1, store.firstIndex); i <= upTo; i++) {
        invariants.committedEntry(id, store.log[i - store.firstIndex]!)
      }
      node.recorded = Math.max(node.recorded, upTo)
      trace.record(time.now, (6 << 24) | id, st.term, st.commit)
    }
    touched.clear()
    if (++instants % 512 === 0) checkLogMatching()
  }

  const describeNodes = () =>
    nodes
      .map((x) => {
        if (x.running === undefined) return `${x.id}: down`
        const st = Effect.runSync(x.running.raft.status)
        const progress = st.progress
          .filter((p) => p.id !== x.id)
          .map((p) => ` ${p.id}:${p.state} match ${p.match} next ${p.next} inflight ${p.inflight} snap ${p.pendingSnapshot}`)
          .join(",")
        return `${x.id}: ${st.role} term ${st.term} lead ${st.lead} commit ${st.commit} applied ${x.applied} first ${st.firstIndex} last ${st.lastIndex}${progress !== "" ? ` progress${progress}` : ""}`
      })
      .join("; ")

  // --- Clients and the liveness probe -------------------------------------------------------------

  /** Client and probe fibers, interrupted at the end of the run. */
  const fibers: Array<Fiber.RuntimeFiber<void>> = []

  const runFiber = (what: string, effect: Effect.Effect<void>) => {
    const fiber = Effect.runFork(Effect.withClock(effect, trueClock), { scheduler: time.scheduler })
    fiber.addObserver((exit) => {
      if (Exit.isFailure(exit) && !(ending && Cause.isInterruptedOnly(exit.cause))) problems.push(`${what} stopped: ${Cause.pretty(exit.cause)}`)
    })
    fibers.push(fiber)
  }

  const env = (id: number): ClientEnv<Local> => ({
    id,
    prng: root.fork(`client:${id}`),
    now: () => time.now,
    phase: () => phase,
    running: () => ids.filter((x) => nodeOf(x).running !== undefined),
    node: (x) => {
      touched.add(x)
      return nodeOf(x).running
    },
    acknowledged: (node, data) => {
      acks.push({ node, data })
    },
    trace: (...fields) => {
      trace.record(time.now, (7 << 24) | id, ...fields)
    }
  })

  /** When the faults healed (the liveness phase began). */
  let healedAt = Infinity
  /** The data of the probe a leader acknowledged, once one has. */
  let probeDone: string | undefined
  let livenessDeadline = Infinity

  const probe = Effect.gen(function* () {
    for (let k = 0; ; k++) {
      for (const node of nodes) {
        const r = node.running
        if (r === undefined || (yield* r.raft.role) !== "leader") continue
        touched.add(node.id)
        const data = stack.probe(k)
        if (Exit.isSuccess(yield* Effect.exit(r.raft.propose(data)))) {
          probeDone = data
          return
        }
        break
      }
      yield* Effect.sleep(Duration.millis(tickMs))
    }
  })

  const liveness = () => {
    phase = "liveness"
    // The operator finishes the rolling upgrade: a node still on the old release is restarted (or,
    // down, starts) on this one.
    if (options.rollingUpgrade !== undefined) {
      for (const node of nodes) {
        if (node.release >= LogVersion) continue
        upgrades++
        node.release = LogVersion
        if (!network.isUp(node.id)) continue
        network.crash(node.id, time.now)
        node.dying = { machine: false }
        stop(node)
      }
    }
    for (const node of nodes) {
      if (!network.isUp(node.id)) {
        network.restart(node.id, time.now)
        invariants.restarted(node.id)
        boot(node)
      }
      node.clock.setSkew(0)
      node.disk?.heal()
    }
    network.heal()
    network.healAll()
    livenessDeadline = time.now + livenessMs
    healedAt = time.now
    runFiber("the liveness probe", probe)
  }

  /**
   * An operator asking a random running node, about every `everyMs`, to hand leadership to a random
   * voter it knows (`cluster transfer`); it does not wait for the answer. Until the faults heal.
   */
  const transfers = (everyMs: number) =>
    Effect.gen(function* () {
      const prng = root.fork("transfer")
      while (phase === "safety") {
        yield* Effect.sleep(Duration.millis(Math.ceil(everyMs / 2) + prng.int(everyMs)))
        const running = nodes.filter((x) => x.running !== undefined)
        if (running.length === 0 || phase !== "safety") continue
        const at = prng.pick(running)
        const handle = at.running!
        const to = prng.pick(Effect.runSync(handle.raft.status).confState.voters)
        touched.add(at.id)
        trace.record(time.now, (17 << 24) | (at.id << 8) | to)
        yield* Effect.fork(Effect.ignore(handle.serve(handle.raft.transferLeader(to))))
      }
    })

  /**
   * About every `everyMs`, the leader of the moment is cut off from every other node for 1.5–3
   * election timeouts, then the cut heals and an operator hands leadership back to it
   * (`ExploreOptions.isolateLeaderEveryMs`). Until the faults heal.
   */
  const isolations = (everyMs: number) =>
    Effect.gen(function* () {
      const prng = root.fork("isolate-leader")
      const electionMs = RaftNode.DefaultElectionTick * tickMs
      while (phase === "safety") {
        yield* Effect.sleep(Duration.millis(Math.ceil(everyMs / 2) + prng.int(everyMs)))
        const leader = leaderNode()
        if (leader === undefined || phase !== "safety") continue
        trace.record(time.now, (18 << 24) | leader.id)
        isolatedLeaders++
        fault({ _tag: "Partition", groups: [[leader.id], ids.filter((x) => x !== leader.id)] })
        yield* Effect.sleep(Duration.millis(Math.round(electionMs * 1.5) + prng.int(Math.round(electionMs * 1.5))))
        if (phase !== "safety") continue
        fault({ _tag: "Heal" })
        // The operator moves leadership back to the node it was on, once that node has caught up.
        yield* Effect.sleep(Duration.millis(tickMs + prng.int(3 * tickMs)))
        const now = leaderNode()
        if (now === undefined || now === leader || leader.running === undefined || phase !== "safety") continue
        trace.record(time.now, (17 << 24) | (now.id << 8) | leader.id)
        touched.add(now.id)
        const handle = now.running!
        yield* Effect.fork(Effect.ignore(handle.serve(handle.raft.transferLeader(leader.id))))
      }
    })
  let isolatedLeaders = 0

  /**
   * About every `everyMs`, a follower's process is killed and its supervisor starts it again
   * 100–400 ms later (`ExploreOptions.restartFollowerEveryMs`). Until the faults heal.
   */
  const followerRestarts = (everyMs: number) =>
    Effect.gen(function* () {
      const prng = root.fork("restart-follower")
      while (phase === "safety") {
        yield* Effect.sleep(Duration.millis(Math.ceil(everyMs / 2) + prng.int(everyMs)))
        const leader = leaderNode()
        const followers = nodes.filter((x) => x.running !== undefined && x !== leader)
        if (followers.length === 0 || phase !== "safety" || !crashable() || readRestarting) continue
        // Half the time the follower restarted last dies again (a daemon in a crash loop): its
        // short-lived processes number their requests from the same start.
        const last = lastRestarted === undefined ? undefined : nodeOf(lastRestarted)
        const node = last !== undefined && followers.includes(last) && prng.chance(0.5) ? last : prng.pick(followers)
        lastRestarted = node.id
        trace.record(time.now, (19 << 24) | node.id)
        restartedFollowers++
        network.crash(node.id, time.now)
        node.dying = { machine: false }
        stop(node)
        time.at(time.now + 100 + prng.int(300), () => fault({ _tag: "Restart", node: node.id }))
      }
    })
  let restartedFollowers = 0
  let lastRestarted: number | undefined

  /** The node's process is killed and started again 100–400 ms later, on a release of log version `release`. */
  const restartOn = (node: SimNode<Local>, release: number, prng: Prng) => {
    node.release = release
    if (!network.isUp(node.id)) return
    trace.record(time.now, (22 << 24) | (node.id << 8) | release)
    network.crash(node.id, time.now)
    node.dying = { machine: false }
    stop(node)
    time.at(time.now + 100 + prng.int(300), () => fault({ _tag: "Restart", node: node.id }))
  }

  /** The cluster log version the running nodes' states are at: the highest (undefined for a stack without one). */
  const clusterLogVersion = (): number | undefined => {
    const of = stack.logVersion
    if (of === undefined) return undefined
    return Math.max(0, ...nodes.filter((x) => x.running !== undefined).map((x) => of(x.running!.local)))
  }

  /**
   * The rolling upgrade (`ExploreOptions.rollingUpgrade`): during the safety phase, the nodes still
   * on the old release are restarted on this one, one at a time in a seeded order, each at a seeded
   * moment (a node down then starts new when it restarts); after an upgrade, with chance
   * `rollback`, an upgraded node goes back to the old release while the cluster's version is the
   * old one, and joins the queue again. Never more than a minority down.
   */
  const rollingUpgrade = (plan: NonNullable<ExploreOptions["rollingUpgrade"]>) =>
    Effect.gen(function* () {
      const prng = upgradePrng.fork("plan")
      const old = prng.shuffle(ids.filter((id) => nodeOf(id).release < LogVersion))
      // Spread over the first 40 % of the phase: most of the rest runs at the new version (two-step moves).
      const gapMs = Math.max(1, Math.floor((safetyMs * 0.4) / (old.length + 1)))
      while (phase === "safety" && old.length > 0) {
        yield* Effect.sleep(Duration.millis(Math.ceil(gapMs / 2) + prng.int(gapMs)))
        if (phase !== "safety") return
        const node = nodeOf(old[0]!)
        if (network.isUp(node.id) && !crashable()) continue
        old.shift()
        upgrades++
        restartOn(node, LogVersion, prng)
        const version = clusterLogVersion()
        if (!prng.chance(plan.rollback) || (version !== undefined && version > plan.from)) continue
        const upgraded = nodes.filter((x) => x.release >= LogVersion && network.isUp(x.id) && x !== node)
        if (upgraded.length === 0 || !crashable()) continue
        yield* Effect.sleep(Duration.millis(prng.int(gapMs)))
        const back = prng.pick(upgraded)
        const now = clusterLogVersion()
        if (phase !== "safety" || !network.isUp(back.id) || !crashable() || (now !== undefined && now > plan.from)) continue
        rollbacks++
        restartOn(back, plan.from, prng)
        old.push(back.id)
      }
      // An operator's mistake once the version is raised (chance `lateRollback`): a node is started
      // on the old release again. It must stop (`BLX_RELEASE_TOO_OLD`) at start-up or at the entry
      // that raised the version, never apply past it, and is upgraded again (`releaseStop`).
      if (stack.logVersion === undefined || !prng.chance(plan.lateRollback)) return
      while (phase === "safety") {
        yield* Effect.sleep(Duration.millis(Math.ceil(gapMs / 2) + prng.int(gapMs)))
        const upgraded = nodes.filter((x) => x.release >= LogVersion && network.isUp(x.id))
        if (phase !== "safety" || (clusterLogVersion() ?? 0) < LogVersion || upgraded.length === 0 || !crashable()) continue
        lateRollbacks++
        restartOn(prng.pick(upgraded), plan.from, prng)
        return
      }
    })
  let upgrades = 0
  let rollbacks = 0
  let lateRollbacks = 0
  /** When a node first applied this release's log version (the rolling upgrade's raise). */
  let raisedAtMs: number | undefined

  /** What the stack's own liveness still waits for, once Raft's is reached. */
  let unsettled: string | undefined

  const members =
    options.membership === undefined
      ? undefined
      : membership({
          mode: options.membership,
          ids,
          leader: () => leaderNode()?.running?.raft,
          phase: () => phase,
          safetyMs,
          tickMs,
          prng: root.fork("membership"),
          changed: membershipChanged
        })

  const livenessReached = () => {
    if (members !== undefined && !members.done()) {
      unsettled = "the membership changes have not made every node a voter again"
      return false
    }
    if (rejoining.size > 0) {
      unsettled = `the operator has not made node ${[...rejoining].join(", ")} a voter again since its daemon refused to start without its data`
      return false
    }
    unsettled = undefined
    if (probeDone === undefined) return false
    const unanswered = workload.unansweredSince?.(healedAt)
    if (unanswered !== undefined) {
      unsettled = `a request made before the faults healed is still unanswered: ${unanswered}`
      return false
    }
    const e = appliedData.get(probeDone)
    if (e === undefined || !nodes.every((x) => x.running !== undefined && x.applied >= e.index)) return false
    if (options.rollingUpgrade !== undefined && stack.logVersion !== undefined) {
      const behind = nodes.find((x) => stack.logVersion!(x.running!.local) < LogVersion)
      if (behind !== undefined) {
        unsettled = `every node runs log version ${LogVersion} since the upgrade finished, but node ${behind.id}'s state is still at cluster log version ${stack.logVersion(behind.running!.local)} (the leader raises it once every member registered it)`
        return false
      }
    }
    unsettled = stack.settled?.(nodes.map((x) => x.running!))
    return unsettled === undefined
  }

  // --- The loop ---------------------------------------------------------------------------------

  let violation: string | undefined
  let linearizability: ExploreResult["linearizability"] = "not checked"
  let ending = false
  try {
    for (const node of nodes) start(node)
    for (let c = 0; c < (options.clients ?? 3); c++) runFiber(`client ${c}`, workload.client(env(c)))
    if (members !== undefined) runFiber("the membership changes", members.run)
    if ((options.transferEveryMs ?? 0) > 0) runFiber("the operator's leadership transfers", transfers(options.transferEveryMs!))
    if ((options.isolateLeaderEveryMs ?? 0) > 0) runFiber("the leader isolations", isolations(options.isolateLeaderEveryMs!))
    if ((options.restartFollowerEveryMs ?? 0) > 0) runFiber("the follower restarts", followerRestarts(options.restartFollowerEveryMs!))
    if (options.rollingUpgrade !== undefined) runFiber("the rolling upgrade", rollingUpgrade(options.rollingUpgrade))
    const schedule = faultSchedule(root.fork("faults"), {
      nodes: ids,
      duration: safetyMs,
      intensity: options.intensity ?? 0.5,
      maxSkewMs: 200,
      healAtEnd: true,
      ...stack.faults,
    })
    if (options.scheduledFaults ?? true) for (const f of schedule) time.at(f.at, () => fault(f.action))
    if (options.storage !== undefined) {
      for (const f of storageFaultSchedule(root.fork("storage"), options.storage, safetyMs)) time.at(f.at, () => storageFault(f))
    }
    time.at(safetyMs, liveness)
    for (;;) {
      time.settle()
      check()
      if (phase === "liveness" && livenessReached()) break
      const next = time.next()
      if (next === undefined) fail("every fiber is suspended and no timer is set")
      if (next! > livenessDeadline) {
        fail(
          unsettled !== undefined
            ? `liveness: ${livenessMs} ms after the faults healed, ${unsettled}`
            : `liveness: no leader committed a new entry on every node within ${livenessMs} ms after the faults healed (${describeNodes()})`
        )
      }
      time.advance()
    }
    checkLogMatching()
    invariants.checkAcknowledged()
    const verdict = workload.finish(true)
    linearizability = verdict.linearizability
    violation = verdict.violation
  } catch (e) {
    violation = e instanceof Violation ? e.message : `at ${time.now} ms: ${e instanceof Error ? e.message : String(e)}`
  }
  const traceHash = trace.digest()
  // Stop every fiber: a fiber still suspended is held by Effect's global fiber scope, and a process
  // runs many seeds.
  ending = true
  for (const node of nodes) if (node.scope !== undefined) teardown(node)
  Effect.runFork(Fiber.interruptAll(fibers), { scheduler: time.scheduler })
  try {
    time.settle()
  } catch (e) {
    violation ??= `at ${time.now} ms: while stopping: ${e instanceof Error ? e.message : String(e)}`
  }
  const { operations, unknownOutcomes, counts } = workload.finish(false)

  return {
    seed,
    ok: violation === undefined,
    violation,
    traceHash,
    stats: {
      events: time.fired,
      simulatedMs: time.now,
      elections: invariants.elections,
      maxTerm: invariants.maxTerm,
      committed: invariants.committed.size,
      snapshotsInstalled,
      crashes,
      operations,
      unknownOutcomes,
      messages,
      dropped: network.stats.dropped,
      queued: network.stats.queued,
      late: network.stats.late,
      membershipChanges
    },
    linearizability,
    ...(counts !== undefined || options.storage !== undefined || amnesia > 0 || wipeVoters > 0 || isolatedLeaders > 0 || restartedFollowers > 0 || upgrades > 0 || readRestarts > 0
      ? {
          counts: {
            ...counts,
            ...(options.storage !== undefined
              ? { diskFaults, flushes: nodes.reduce((sum, x) => sum + (x.disk?.flushes ?? 0), 0), storageExits, unflushedLost }
              : {}),
            ...(amnesia > 0 || wipeVoters > 0 ? { wiped, refusals, learnersWiped, learnerRemovals, votersWiped } : {}),
            ...(isolatedLeaders > 0 ? { isolatedLeaders } : {}),
            ...(restartedFollowers > 0 ? { restartedFollowers } : {}),
            ...(upgrades > 0 ? { upgrades, rollbacks, lateRollbacks, releaseStops, ...(raisedAtMs !== undefined ? { raisedAtMs } : {}) } : {}),
            ...(readRestarts > 0 ? { readRestarts } : {})
          }
        }
      : {})
  }
}
