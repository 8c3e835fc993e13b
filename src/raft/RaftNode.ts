/**
 * `RaftNode`: the Effect service that drives the pure Raft core (`RawNode`).
 *
 * One fiber owns the core. Everything that reaches it — clock ticks, peer messages, proposals,
 * read requests — is an event in one queue; the loop takes every event waiting (so many proposals
 * become one append, one fsync and one message per peer), steps the core, then works off `Ready`
 * (`ReadyHandler.ts`): persist (one `RaftStorage.save`, one fsync), and only then send what vouches
 * for it — a leader's appends and heartbeats leave before its own save —, apply, resolve the
 * requests waiting (`ProposalWaiters.ts`, `ReadIndexReads.ts`, `LeaderTransfers.ts`), `advance`, and
 * compact the log when enough has been applied since the last snapshot: the loop only captures the
 * state; serialising and writing it happen on the side while the loop keeps ticking (`LocalSnapshots.ts`).
 * The core reads an in-memory mirror of the durable log that keeps a snapshot's metadata, not its
 * data, and a bounded tail of the entries: older committed ones are read back from storage when a
 * lagging follower needs them (`MemoryStorage.mirror`); a snapshot sent to a follower gets its data
 * from storage on the way (`SnapshotSending.ts`).
 *
 * A peer the transport finds back as another incarnation (`Transport.PeerRestarted`, in order with
 * the messages received) is reported to the core (`reportRestarted`: a leader probes it from scratch)
 * in the loop's batch, and only then does the transport let messages to it through again (`resume`):
 * everything built for its earlier life is dropped, by the transport before and by the core after.
 *
 * Quorum contact, the signal fencing rests on, is read from what the loop itself steps: a leader's
 * from the answers of its term (`quorumAcks`), a follower's from its leader's heartbeat rounds,
 * whose heartbeats and answers the driver stamps as it sends them and reads as it steps them
 * (`PeerContact.ts`, `ContactProof.ts`: the core never sees those fields; `followerContact`).
 * Storage writes are timed, and one outstanding too long is reported (`StorageFlushes.ts`).
 *
 * Time comes from the `Clock` (ticks), randomness (election jitter) from the `Random` service, so a
 * test clock or the simulator's virtual clock and seed drive it deterministically. Ticks are handed
 * to the core lazily, and the ticker wakes the loop only when a tick would act, a request's deadline
 * passes, or a storage write is outstanding (`Ticks.ts`).
 *
 * `make` composes the parts: `recover` the durable state, build the core (`makeCore`), then run the
 * loop (`runLoop`, stepping each event with `handle`), the ticker (`runTicker`, which also fails
 * requests past their deadline: `expire`) and the receiver (`runReceiver`) as scoped fibers, and
 * answer callers through `makeService`; `shutdown` fails what still waits when the scope closes.
 */
import { Clock, Context, Effect, Fiber, Layer, Random, Ref } from "effect"
import type { BlixardError, Timeout } from "../domain/Errors.js"
import { NotLeader, ProposalDropped } from "../domain/Errors.js"
import { Transport, type TransportShape } from "../net/Transport.js"
import type { StorageError } from "../storage/Database.js"
import { RaftStorage } from "../storage/RaftStorage.js"
import { LeaderTransfers } from "./LeaderTransfers.js"
import { type Event, Mailbox } from "./Mailbox.js"
import type { MemoryStorage } from "./MemoryStorage.js"
import { SnapshotSending } from "./SnapshotSending.js"
import type { Message } from "./Message.js"
import { PeerContact } from "./PeerContact.js"
import { ProposalWaiters } from "./ProposalWaiters.js"
import type { RaftConfig, Status } from "./Raft.js"
import { RawNode } from "./RawNode.js"
import { ReadIndexReads } from "./ReadIndexReads.js"
import { ReadyHandler } from "./ReadyHandler.js"
import { recover } from "./Recovery.js"
import { Deadlines, type ProposeFailure, RequestErrors, type Waiting } from "./Requests.js"
import { StateMachine } from "./StateMachine.js"
import { type StorageFlushes, trackFlushes } from "./StorageFlushes.js"
import { monotonicMillis, Ticks } from "./Ticks.js"
import type { ConfChange, StateRole } from "./Types.js"

/**
 * The daemon's timing, in ticks (`timeouts.tickMs` each): elections after 10 to 20 ticks, a heartbeat
 * every 2 (with the default 50 ms tick: 500 ms and 100 ms, etcd's heartbeat interval). A heartbeat
 * every tick cost a quiet 3-node cluster about 8 ms of CPU per second per node more (bench/RESULTS.md)
 * and bought nothing: failure detection waits for the election timeout either way.
 */
export const DefaultElectionTick = 10
export const DefaultHeartbeatTick = 2

export interface RaftNodeConfig {
  readonly id: number
  /** Milliseconds per Raft tick. Elections start after `electionTick` to 2×`electionTick` ticks. */
  readonly tickMs: number
  readonly electionTick?: number | undefined
  readonly heartbeatTick?: number | undefined
  /** How long a proposal, read or transfer may take before it fails with `Timeout`. */
  readonly requestTimeoutMs: number
  /** The voters of a NEW cluster this node founds. Absent for a node joining an existing cluster. */
  readonly bootstrap?: ReadonlyArray<number> | undefined
  /**
   * When to take a state-machine snapshot and compact the log: once at least `snapshotEvery` entries
   * (default 10,000) have been applied since the last snapshot AND their bytes add up to at least
   * `snapshotRatio` (default 4) times the last snapshot's size. A snapshot writes the whole state,
   * so taking one every fixed number of entries costs more per write the larger the state grows;
   * the ratio bounds that cost to a fixed share of what the log itself wrote, at the price of a log
   * (on disk and in memory) of up to `snapshotRatio` times the state's size (Ongaro's thesis §5.1.1;
   * LogCabin's `snapshotRatio`). A restart applies that log again entry by entry: at 100,000 VMs up to
   * ~290,000 entries, ~7 s of CPU, more than restoring the snapshot (bench `restart`, bench/RESULTS.md).
   * `snapshotRatio: 0` snapshots by count alone.
   */
  readonly snapshotEvery?: number | undefined
  readonly snapshotRatio?: number | undefined
  /** Entries kept behind a snapshot, so a slightly lagging follower catches up from the log. */
  readonly snapshotRetain?: number | undefined
  /**
   * DELIBERATELY UNSAFE, for the simulator only: a proposal at an index this node proposed at in an
   * earlier term replaces the earlier one's waiter, which then never completes (not even by timing
   * out). Never enable outside tests that check the simulator catches it.
   */
  readonly unsafeOverwriteProposalWaiters?: boolean | undefined
  /**
   * DELIBERATELY UNSAFE, for the simulator only: ReadIndex contexts restart from the same values
   * with every process, so a restarted node's read can be answered with a read point of a read its
   * earlier process asked for (a stale read, and a faked quorum contact). Combine with
   * `raft.unsafeMatchRepeatedReadContexts` to also lift the core's defence. Never enable outside
   * tests that check the simulator catches it.
   */
  readonly unsafeReuseReadContexts?: boolean | undefined
  /**
   * DELIBERATELY UNSAFE, for the simulator only: a peer found back on another data directory
   * (`PeerRestarted`) is let through again without its progress starting over, so a leader goes on
   * with what the peer's earlier life acknowledged (a commit index beyond its empty log). Never
   * enable outside tests that check the simulator catches it.
   */
  readonly unsafeIgnorePeerRestarts?: boolean | undefined
  /** Further core settings (PreVote and CheckQuorum are on unless turned off here). */
  readonly raft?:
    | Partial<Omit<RaftConfig, "id" | "storage" | "random" | "applied" | "electionTick" | "heartbeatTick">>
    | undefined
  /**
   * A storage write (`save`, `saveSnapshot`, `compact`: each ends with a flush) still outstanding
   * after this many milliseconds is logged as `BLX_STORAGE_STALLED` (default 5,000; the daemon uses
   * half its `fencingMs`, so the cause is in the log before the node fences).
   */
  readonly storageStallMs?: number | undefined
  /** Where the storage lives (the data directory), named in `BLX_STORAGE_STALLED`. */
  readonly storageLocation?: string | undefined
  /**
   * DELIBERATELY UNSAFE, for the simulator only: brings back the bug where a leader proved quorum
   * contact from every message received, of any term, stamped by the receiver whether or not the
   * Raft loop ever processed it (`quorumAcks` becomes `lastContact`, and `flushingSince` is always
   * undefined). A leader stuck in a storage write then keeps "proving" contact from the new
   * leader's messages and never fences: its VMs run twice. Never enable outside tests that check
   * the simulator catches it.
   */
  readonly unsafeContactFromAnyMessage?: boolean | undefined
}

export type { ProposeFailure } from "./Requests.js"

export interface RaftNodeShape {
  readonly id: number
  /** Replicates `data` and resolves with the state machine's result once it is applied here. */
  readonly propose: (data: string) => Effect.Effect<unknown, ProposeFailure>
  /** A single-server membership change; resolves once applied here. */
  readonly proposeConfChange: (change: ConfChange) => Effect.Effect<void, ProposeFailure>
  /**
   * Resolves when a read from the local state machine is linearizable: the leader confirmed its
   * leadership with a quorum and this node has applied up to the commit index it reported.
   */
  readonly readIndex: Effect.Effect<void, NotLeader | Timeout>
  /** Asks the leader to hand leadership to `to`; resolves when `to` leads (or fails on timeout). */
  readonly transferLeader: (to: number) => Effect.Effect<void, NotLeader | Timeout>
  /** Start an election now (e.g. a single-node cluster at start-up). */
  readonly campaign: Effect.Effect<void>
  readonly status: Effect.Effect<Status>
  /** The leader this node knows of, or 0. */
  readonly leader: Effect.Effect<number>
  readonly role: Effect.Effect<StateRole>
  /**
   * When (Clock milliseconds) a message from each peer last arrived, whatever its term, processed
   * or not: a liveness hint (the failure detector, `cluster status`), never a proof of contact.
   */
  readonly lastContact: Effect.Effect<ReadonlyMap<number, number>>
  /**
   * While this node leads: per peer, when (Clock milliseconds, on arrival) the newest response of
   * this leader's CURRENT term (`appResp`, `heartbeatResp`) arrived that the Raft loop has stepped
   * while leading in that term. Empty otherwise. A loop stuck (say, in a storage write) steps
   * nothing, so these age: what `QuorumContact` fences on.
   */
  readonly quorumAcks: Effect.Effect<ReadonlyMap<number, number>>
  /**
   * While this node follows: when (its own Clock milliseconds, conservatively early) its leader had,
   * by the proof of its own heartbeat rounds, both heard this node and a quorum of voters in its term
   * (`ContactProof.ts`; the argument in `agent/QuorumContact.ts`). The newest such time, kept across
   * leaders; undefined before the first. Only heartbeats its own Raft loop stepped count.
   */
  readonly followerContact: Effect.Effect<number | undefined>
  /** When (Clock milliseconds) the oldest storage write still outstanding started; undefined if none. */
  readonly flushingSince: Effect.Effect<number | undefined>
  /** Fails when the driver stops on a storage error (the node must stop); never succeeds. */
  readonly await: Effect.Effect<never, StorageError>
}

export class RaftNode extends Context.Tag("blixard/RaftNode")<RaftNode, RaftNodeShape>() {}

export { leavesBeforePersist } from "./ReadyHandler.js"

/** A small seeded PRNG (mulberry32) for the core's synchronous election jitter. */
const seededRandom = (seed: number) => {
  let a = seed >>> 0
  return (n: number): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n)
  }
}

/**
 * The Raft core over the recovered log, PreVote, CheckQuorum and lazy commit broadcasts (`RaftConfig.lazyCommit`)
 * on unless `config.raft` turns them off.
 */
const makeCore = (config: RaftNodeConfig, mirror: MemoryStorage, applied: number, seed: number): RawNode =>
  new RawNode({
    preVote: true,
    checkQuorum: true,
    lazyCommit: true,
    ...config.raft,
    id: config.id,
    storage: mirror,
    random: seededRandom(seed),
    applied,
    electionTick: config.electionTick ?? DefaultElectionTick,
    heartbeatTick: config.heartbeatTick ?? DefaultHeartbeatTick
  })

/** The parts of a running node, as `make` composes them. */
interface Parts {
  readonly config: RaftNodeConfig
  readonly raw: RawNode
  readonly transport: TransportShape
  readonly flushes: StorageFlushes
  readonly events: Mailbox<Event>
  readonly contact: PeerContact
  readonly errors: RequestErrors
  readonly proposals: ProposalWaiters
  readonly reads: ReadIndexReads
  readonly transfers: LeaderTransfers
  readonly softState: Ref.Ref<{ lead: number; role: StateRole }>
  readonly ready: ReadyHandler
  readonly ticks: Ticks
}

/**
 * Steps one event of the loop's batch into the core, or hands a request to its holder. Peers found
 * back as another incarnation join `restarted`, resumed with the transport before the batch sends.
 */
const handle = (p: Parts, restarted: Array<number>, ev: Event): void => {
  const raw = p.raw
  switch (ev._tag) {
    case "Tick":
      // The ticks themselves were given at the start of the batch (`Ticks.catchUp`).
      for (const peer of ev.unreachable) raw.reportUnreachable(peer)
      return
    case "PeerRestarted":
      // Its progress starts over and what the core had not handed out for it is dropped; the
      // transport lets messages to it through again before this batch's are sent.
      if (p.config.unsafeIgnorePeerRestarts !== true) raw.reportRestarted(ev.peer)
      p.contact.restarted(ev.peer)
      restarted.push(ev.peer)
      return
    case "Message":
      raw.step(ev.message)
      p.contact.stepped(ev.message, ev.at)
      return
    case "Propose":
      p.proposals.register(raw.propose(ev.data), ev)
      return
    case "ConfChange":
      p.proposals.register(raw.proposeConfChange(ev.change), ev)
      return
    case "ReadIndex":
      p.reads.add(ev)
      return
    case "Transfer": {
      const result = raw.transferLeader(ev.to)
      if (result.ok) p.transfers.add(ev)
      else ev.done(Effect.fail(p.errors.notLeader(raw.status().lead)))
      return
    }
    case "Campaign":
      raw.campaign()
      return
  }
}

/**
 * The fiber that owns the core: takes every event waiting, gives the core the ticks elapsed, steps
 * the batch, lets restarted peers through, asks a ReadIndex round for the reads taken, works off the
 * Readys (`ReadyHandler`), and plans the next tick. Fails only on a storage error.
 */
const runLoop = (p: Parts): Effect.Effect<never, StorageError> =>
  Effect.gen(function* () {
    /** Peers whose `PeerRestarted` the current batch handled: resumed with the transport before it sends. */
    const restarted: Array<number> = []
    for (;;) {
      const batch = yield* p.events.takeAll
      p.contact.batchWall = Math.floor(yield* Clock.currentTimeMillis)
      p.flushes.observe(p.contact.batchWall)
      /** When the loop took its current batch (monotonic milliseconds, `monotonicMillis`). */
      const loopNow = yield* monotonicMillis
      p.ticks.catchUp(loopNow)
      let deadline = Number.POSITIVE_INFINITY
      for (const ev of batch) {
        handle(p, restarted, ev)
        if ("deadline" in ev && ev.deadline < deadline) deadline = ev.deadline
      }
      // Where the ticker's `expire` looks for the requests taken now, as it may not have while they were in the batch.
      p.ticks.deadlineAt(deadline)
      if (restarted.length > 0) yield* Effect.forEach(restarted.splice(0), p.transport.resume, { discard: true })
      p.reads.ask(p.raw, loopNow)
      p.proposals.countBatch()
      yield* p.ready.drain(loopNow)
      // Also here, not only after a Ready: a snapshot written on the side is taken up at the loop's
      // next wake-up (a tick that acts, at the latest) even on a node with nothing else to do.
      yield* p.ready.compact
      p.ticks.plan()
    }
  })

/**
 * Fails every request whose deadline has passed (the ticker calls it), and answers the earliest
 * deadline still waiting (Infinity: none). A proposal that times out may still commit later; its
 * outcome is then unknown to the caller, as the error says.
 */
const expire = (p: Parts, now: number): number => {
  const deadlines = new Deadlines(now)
  p.proposals.expire(deadlines.due)
  p.reads.expire(deadlines.due)
  p.transfers.expire(deadlines.due)
  // Requests the loop has not taken yet (it may be stuck in a save).
  for (const ev of p.events.removeWhere((e) => "deadline" in e && deadlines.due(e))) {
    if ("done" in ev) ev.done(Effect.fail(p.errors.timedOut(ev.what)))
  }
  return deadlines.earliest
}

/** The ticker fiber (`Ticks.ticker`) with the node's duties. */
const runTicker = (p: Parts): Effect.Effect<never> =>
  p.ticks.ticker({
    expire: (now) => expire(p, now),
    reportStalls: p.flushes.report,
    flushingSince: p.flushes.since,
    unreachable: p.transport.unreachable,
    tick: (unreachable) => p.events.offer({ _tag: "Tick", unreachable })
  })

/** The fiber that takes what the transport receives: peer messages (stamped on arrival) and peer restarts, in order. */
const runReceiver = (p: Parts): Effect.Effect<never> =>
  Effect.forever(
    Effect.flatMap(p.transport.receive, (message) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (message.type === "peerRestarted") {
          p.events.offer({ _tag: "PeerRestarted", peer: message.peer })
          return Effect.void
        }
        p.contact.arrived(message.from, now)
        p.events.offer({ _tag: "Message", message, at: now })
        return Effect.void
      })
    )
  )

/** The node stops: every request still waiting fails (writes: outcome unknown; reads and transfers: retry elsewhere). */
const shutdown = (p: Parts): void => {
  const id = p.config.id
  const stopping = new ProposalDropped({ node: p.errors.node, message: `node ${id} is shutting down; the write may or may not have applied` })
  p.proposals.shutdown(stopping)
  const gone = new NotLeader({ node: p.errors.node, message: `node ${id} is shutting down; retry on another node` })
  p.reads.shutdown(gone)
  p.transfers.shutdown(gone)
  for (const ev of p.events.removeWhere((e) => "done" in e)) {
    if (ev._tag === "Propose" || ev._tag === "ConfChange") ev.done(Effect.fail(stopping))
    else if ("done" in ev) ev.done(Effect.fail(gone))
  }
}

/**
 * The service callers see. Requests go to the loop as events and wait for their outcome; their
 * deadlines are read on `nodeClock`, the node's clock its ticker expires them by, whatever clock the
 * caller's fiber runs with (the simulator's clients and probes run on another).
 */
const makeService = (p: Parts, driver: Fiber.RuntimeFiber<never, StorageError>, nodeClock: Clock.Clock): RaftNodeShape => {
  const { config, raw, events, softState, contact } = p
  /** Hands a request to the loop and waits for its outcome; the ticker fails it at its deadline. */
  const request = <A, E extends BlixardError>(what: string, make: (waiting: Waiting<A, E>) => Event) =>
    Effect.flatMap(nodeClock.currentTimeMillis, (now) => {
      const deadline = now + config.requestTimeoutMs
      p.ticks.deadlineAt(deadline)
      return Effect.async<A, E>((resume) => events.offer(make({ done: resume, deadline, what })))
    })
  return {
    id: config.id,
    propose: (data) => request<unknown, ProposeFailure>("the write", (w) => ({ _tag: "Propose", data, ...w })),
    proposeConfChange: (change) =>
      Effect.asVoid(request<unknown, ProposeFailure>("the membership change", (w) => ({ _tag: "ConfChange", change, ...w }))),
    readIndex: request<void, NotLeader | Timeout>("the linearizable read", (w) => ({ _tag: "ReadIndex", ...w })),
    transferLeader: (to) => request<void, NotLeader | Timeout>(`the leadership transfer to node ${to}`, (w) => ({ _tag: "Transfer", to, ...w })),
    campaign: Effect.sync(() => events.offer({ _tag: "Campaign" })),
    status: Effect.sync(() => raw.status()),
    leader: Effect.map(Ref.get(softState), (s) => s.lead),
    role: Effect.map(Ref.get(softState), (s) => s.role),
    lastContact: Effect.sync(() => contact.lastContact()),
    quorumAcks: Effect.sync(() => contact.quorumAcks()),
    followerContact: Effect.sync(() => contact.followerContact()),
    flushingSince: Effect.sync(() => (config.unsafeContactFromAnyMessage === true ? undefined : p.flushes.since())),
    await: Effect.flatMap(Fiber.join(driver), () => Effect.never)
  }
}

/**
 * The node: recovers its state, builds the core and the driver's parts, and runs the loop, the
 * ticker and the receiver as scoped fibers (requests still waiting fail when the scope closes).
 */
export const make = (config: RaftNodeConfig) =>
  Effect.gen(function* () {
    const flushes = yield* trackFlushes(yield* RaftStorage, config)
    const storage = flushes.storage
    const transport = yield* Transport
    const sm = yield* StateMachine
    const id = config.id
    const { mirror, snapshots, applied, report } = yield* recover(config, storage, sm)
    const seed = yield* Random.nextInt
    const raw = makeCore(config, mirror, applied, seed)
    const events = new Mailbox<Event>()
    const contact = new PeerContact(id, raw, config.unsafeContactFromAnyMessage === true)
    const errors = new RequestErrors(id, config.requestTimeoutMs)
    const proposals = new ProposalWaiters(errors, config.unsafeOverwriteProposalWaiters === true)
    const transfers = new LeaderTransfers(errors)
    /** Five heartbeats: etcd's `readIndexRetryTime` (500 ms) with the daemon's 100 ms heartbeat. */
    const readRetryMs = 5 * (config.heartbeatTick ?? DefaultHeartbeatTick) * config.tickMs
    // ReadIndex contexts unique across restarts: the process's random seed and start time (drawing
    // more randomness would shift every seeded run).
    const readNonce = config.unsafeReuseReadContexts === true ? "" : `${(seed >>> 0).toString(36)}.${(yield* Clock.currentTimeMillis).toString(36)}:`
    const reads = new ReadIndexReads(`${id}:${readNonce}`, readRetryMs, errors)
    const softState = yield* Ref.make<{ lead: number; role: StateRole }>({ lead: 0, role: "follower" })
    const send = (messages: ReadonlyArray<Message>) => transport.send(contact.outgoing(messages))
    const snapshotSending = new SnapshotSending(storage, raw)
    const ready = new ReadyHandler({ id, raw, storage, mirror, sm, snapshots, snapshotSending, send, discard: transport.discard, proposals, reads, transfers, softState, report })
    const ticks = new Ticks(raw, config.tickMs, yield* monotonicMillis)
    const parts: Parts = { config, raw, transport, flushes, events, contact, errors, proposals, reads, transfers, softState, ready, ticks }

    // Campaign at once when founding a one-node cluster: nobody else could win.
    if (config.bootstrap !== undefined && config.bootstrap.length === 1 && config.bootstrap[0] === id) {
      events.offer({ _tag: "Campaign" })
    }
    const driver = yield* Effect.forkScoped(runLoop(parts))
    yield* Effect.forkScoped(runTicker(parts))
    yield* Effect.forkScoped(runReceiver(parts))
    yield* Effect.addFinalizer(() => Effect.sync(() => shutdown(parts)))
    return makeService(parts, driver, yield* Effect.clock)
  })

/** The Raft node, over whatever `RaftStorage`, `Transport` and `StateMachine` layers are provided. */
export const layer = (config: RaftNodeConfig): Layer.Layer<RaftNode, StorageError, RaftStorage | Transport | StateMachine> =>
  Layer.scoped(RaftNode, make(config))
