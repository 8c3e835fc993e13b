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
 *
 * A peer the transport finds back as another incarnation (`Transport.PeerRestarted`, in order with
 * the messages received) is reported to the core (`reportRestarted`: a leader probes it from scratch)
 * in the loop's batch, and only then does the transport let messages to it through again (`resume`):
 * everything built for its earlier life is dropped, by the transport before and by the core after.
 *
 * Quorum contact, the signal fencing rests on, is read from what the loop itself steps: a leader's
 * from the answers of its term (`quorumAcks`), a follower's from its leader's heartbeat rounds,
 * whose heartbeats and answers the driver stamps as it sends them and reads as it steps them
 * (`ContactProof.ts`: the core never sees those fields; `followerContact`).
 *
 * Time comes from the `Clock` (ticks), randomness (election jitter) from the `Random` service, so a
 * test clock or the simulator's virtual clock and seed drive it deterministically.
 *
 * Ticks are handed to the core lazily: the loop gives it every tick elapsed since the last one
 * (by the clock) before it steps anything, and the ticker wakes the loop only when a tick would act
 * (`RawNode.ticksUntilAction`: a leader's heartbeat, a follower's election timeout), a request's
 * deadline passes, or, while a storage write is outstanding, every tick (stall reports). So the
 * core's counters are exactly what ticking every `tickMs` would make them whenever it is looked at,
 * while a quiet follower's ticker sleeps through the ticks its leader's heartbeats make moot, and a
 * leader's wakes once per heartbeat (fewer wake-ups of a quiet node: bench/RESULTS.md).
 */
import { Clock, Context, Duration, Effect, Fiber, Layer, type MetricLabel, Queue, Random, Ref } from "effect"
import type { BlixardError } from "../domain/Errors.js"
import { formatError, NotLeader, ProposalDropped, StorageStalled, Timeout } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import * as Metrics from "../metrics/Metrics.js"
import { Transport } from "../net/Transport.js"
import type { StorageError } from "../storage/Database.js"
import { RaftStorage, type RaftStorageShape } from "../storage/RaftStorage.js"
import { ContactProof } from "./ContactProof.js"
import { LeaderTransfers } from "./LeaderTransfers.js"
import type { Message } from "./Message.js"
import { LocalSnapshots } from "./LocalSnapshots.js"
import { type Event, Mailbox } from "./Mailbox.js"
import { MemoryStorage } from "./MemoryStorage.js"
import { ProposalWaiters } from "./ProposalWaiters.js"
import type { RaftConfig, Status } from "./Raft.js"
import { RawNode } from "./RawNode.js"
import { ReadyHandler } from "./ReadyHandler.js"
import { ReadIndexReads } from "./ReadIndexReads.js"
import { Deadlines, type ProposeFailure, RequestErrors, type Waiting } from "./Requests.js"
import { StateMachine } from "./StateMachine.js"
import type { ConfChange, Snapshot, StateRole } from "./Types.js"

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
   * LogCabin's `snapshotRatio`). `snapshotRatio: 0` snapshots by count alone.
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

/**
 * Milliseconds of the `Clock`'s monotonic time (`currentTimeNanos`): ticks are counted on it, so a
 * wall clock set back or forward (NTP) neither stops nor rushes them — as a sleep does not.
 */
const monotonicMillis = Effect.map(Clock.currentTimeNanos, (nanos) => Number(nanos / 1000n) / 1000)

/** The responses a follower sends to its leader's appends and heartbeats: what proves it follows this leader's term. */
const isLeaderAck = (m: Message): boolean => m.type === "appResp" || m.type === "heartbeatResp"

/**
 * The node's `RaftStorage` with every write (each ends with a flush) timed: `since` answers when
 * the oldest write still outstanding started, and `report` (called by the ticker, which runs while
 * the loop is stuck in such a write) logs `BLX_STORAGE_STALLED` once per write outstanding longer
 * than `storageStallMs`, and that it completed when it does. Times are the last reading of the clock
 * by the loop (at each batch, before the writes it begins) or the ticker (every tick while a write
 * is outstanding): a write counts as outstanding a little longer, never shorter, and costs no clock
 * reading of its own. (The flush-latency metric reads `performance.now()`,
 * a plain call; it only measures and decides nothing, so the simulator's virtual clock is unaffected.)
 */
const trackFlushes = (inner: RaftStorageShape, config: RaftNodeConfig) =>
  Effect.map(Clock.currentTimeMillis, (startedAt) => {
    const stallMs = config.storageStallMs ?? 5000
    const where = config.storageLocation !== undefined ? `data directory ${config.storageLocation}` : "storage"
    let now = startedAt
    const outstanding = new Map<number, number>()
    let next = 0
    /** The write reported stalled, while it is outstanding. */
    let reported: { readonly id: number; readonly start: number } | undefined
    let completed: Effect.Effect<void> = Effect.void
    const done = (id: number, op: ReadonlyArray<MetricLabel.MetricLabel>, began: number) => {
      Metrics.raftFlushSeconds.unsafeUpdate((performance.now() - began) / 1000, op)
      outstanding.delete(id)
      if (reported?.id !== id) return
      const took = now - reported.start
      reported = undefined
      completed = Effect.logWarning(
        `node ${config.id}: the storage write reported stalled (BLX_STORAGE_STALLED) completed after about ${took} ms; the node can prove quorum contact again`
      )
    }
    const timed = <A, E, R>(op: ReadonlyArray<MetricLabel.MetricLabel>, write: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.suspend(() => {
        const id = next++
        outstanding.set(id, now)
        const began = performance.now()
        return Effect.ensuring(write, Effect.sync(() => done(id, op, began)))
      })
    const since = (): number | undefined => {
      let oldest: number | undefined
      for (const start of outstanding.values()) if (oldest === undefined || start < oldest) oldest = start
      return oldest
    }
    /** A fresher reading of the clock (the loop's, at each batch): the start of the writes it begins. */
    const observe = (at: number): void => {
      now = at
    }
    const report = (at: number): Effect.Effect<void> =>
      Effect.suspend(() => {
        now = at
        if (reported === undefined) {
          for (const [id, start] of outstanding) {
            if (at - start < stallMs) continue
            reported = { id, start }
            const stalled = new StorageStalled({
              node: NodeId.make(config.id),
              ...(config.storageLocation !== undefined ? { subject: config.storageLocation } : {}),
              message:
                `node ${config.id}'s ${where} has not completed a write (flush to disk) for ${at - start} ms, since ${new Date(start).toISOString()}. ` +
                `The node proves no quorum contact while it waits, so it fences: its VMs are stopped within fencingMs of its last proven contact and the cluster starts them elsewhere. ` +
                `Check the disk behind its ${where} (dmesg, iostat -x, the volume's health); the node carries on by itself once the write completes. ` +
                `If the disk does not recover, stop the daemon and repair or replace the volume, then start it again on the same data directory (do not delete it)`
            })
            return Effect.logError(formatError(stalled))
          }
        }
        const log = completed
        completed = Effect.void
        return log
      })
    const storage: RaftStorageShape = {
      ...inner,
      save: (batch) => timed(flushOps.save, inner.save(batch)),
      saveSnapshot: (snapshot) => timed(flushOps.snapshot, inner.saveSnapshot(snapshot)),
      compact: (index) => timed(flushOps.compact, inner.compact(index))
    }
    return { storage, since, observe, report }
  })

const flushOps = {
  save: Metrics.tags(["op", "save"]),
  snapshot: Metrics.tags(["op", "snapshot"]),
  compact: Metrics.tags(["op", "compact"])
}

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

export const make = (config: RaftNodeConfig) =>
  Effect.gen(function* () {
    const flushes = yield* trackFlushes(yield* RaftStorage, config)
    const storage = flushes.storage
    const transport = yield* Transport
    const sm = yield* StateMachine
    const id = config.id
    const nodeId = NodeId.make(id)

    // --- Recover (or found) the durable state.
    let init = yield* storage.initialState
    if (init.hardState.term === 0 && init.lastIndex === 0 && init.snapshot._tag === "None" && config.bootstrap !== undefined) {
      const bootstrap: Snapshot = {
        metadata: { index: 1, term: 1, confState: { voters: [...config.bootstrap].sort((a, b) => a - b), learners: [] } },
        data: yield* sm.snapshot
      }
      yield* storage.save({ snapshot: bootstrap, hardState: { term: 1, vote: 0, commit: 1 } })
      init = yield* storage.initialState
    }
    const mirror = new MemoryStorage()
    const snapshots = new LocalSnapshots({
      storage,
      mirror,
      sm,
      every: config.snapshotEvery ?? 10_000,
      ratio: config.snapshotRatio ?? 4,
      retain: config.snapshotRetain ?? 1_000
    })
    const stored = yield* storage.snapshot
    if (stored._tag === "Some") {
      mirror.applySnapshot(stored.value)
      snapshots.snapshotted(stored.value)
    }
    if (init.lastIndex >= init.firstIndex) mirror.append(yield* storage.entries(init.firstIndex, init.lastIndex + 1))
    mirror.setHardState(init.hardState)
    let applied = yield* sm.applied
    if (stored._tag === "Some" && stored.value.metadata.index > applied) {
      yield* sm.restore(stored.value)
      applied = stored.value.metadata.index
    }

    const seed = yield* Random.nextInt
    const raw = new RawNode({
      preVote: true,
      checkQuorum: true,
      ...config.raft,
      id,
      storage: mirror,
      random: seededRandom(seed),
      applied,
      electionTick: config.electionTick ?? DefaultElectionTick,
      heartbeatTick: config.heartbeatTick ?? DefaultHeartbeatTick
    })

    const events = new Mailbox<Event>()
    /** Per peer: the newest response of a term this node led in, as the loop stepped it (`quorumAcks`). */
    const acks = new Map<number, { readonly term: number; readonly at: number }>()
    /** Quorum contact for followers, from the leader's heartbeat rounds (`ContactProof.ts`). */
    const proofs = new ContactProof()
    /** The clock (`Clock.currentTimeMillis`, whole milliseconds) when the loop took its current batch: a follower's stamp. */
    let batchWall = 0
    /** Stamps what the core sends with the heartbeat-round proofs (`ContactProof.outgoing`). */
    const send = (messages: ReadonlyArray<Message>) =>
      transport.send(proofs.outgoing(messages, raw.term, raw.role, () => raw.confState().voters, id, batchWall))
    const errors = new RequestErrors(id, config.requestTimeoutMs)
    const proposals = new ProposalWaiters(errors, config.unsafeOverwriteProposalWaiters === true)
    const transfers = new LeaderTransfers(errors)
    /** Five heartbeats: etcd's `readIndexRetryTime` (500 ms) with the daemon's 100 ms heartbeat. */
    const readRetryMs = 5 * (config.heartbeatTick ?? DefaultHeartbeatTick) * config.tickMs
    // (The process's random seed and start time: drawing more randomness would shift every seeded run.)
    const readNonce = config.unsafeReuseReadContexts === true ? "" : `${(seed >>> 0).toString(36)}.${(yield* Clock.currentTimeMillis).toString(36)}:`
    const reads = new ReadIndexReads(`${id}:${readNonce}`, readRetryMs, errors)
    const softState = yield* Ref.make<{ lead: number; role: StateRole }>({ lead: 0, role: "follower" })

    /**
     * Fails every request whose deadline has passed (the ticker calls it), and answers the earliest
     * deadline still waiting (Infinity: none). A proposal that times out may still commit later; its
     * outcome is then unknown to the caller, as the error says.
     */
    const expire = (now: number): number => {
      const deadlines = new Deadlines(now)
      proposals.expire(deadlines.due)
      reads.expire(deadlines.due)
      transfers.expire(deadlines.due)
      // Requests the loop has not taken yet (it may be stuck in a save).
      for (const ev of events.removeWhere((e) => "deadline" in e && deadlines.due(e))) {
        if ("done" in ev) ev.done(Effect.fail(errors.timedOut(ev.what)))
      }
      return deadlines.earliest
    }

    /** Peers whose `PeerRestarted` the current batch handled: resumed with the transport before it sends. */
    const restarted: Array<number> = []

    const handle = (ev: Event): void => {
      switch (ev._tag) {
        case "Tick":
          // The ticks themselves were given at the start of the batch (`catchUp`).
          for (const peer of ev.unreachable) raw.reportUnreachable(peer)
          return
        case "PeerRestarted":
          // Its progress starts over and what the core had not handed out for it is dropped; the
          // transport lets messages to it through again before this batch's are sent.
          if (config.unsafeIgnorePeerRestarts !== true) raw.reportRestarted(ev.peer)
          proofs.restarted(ev.peer)
          restarted.push(ev.peer)
          return
        case "Message":
          raw.step(ev.message)
          if (isLeaderAck(ev.message) && raw.role === "leader" && raw.term === ev.message.term) {
            acks.set(ev.message.from, { term: ev.message.term, at: ev.at })
          }
          if (ev.message.type === "heartbeat" || ev.message.type === "heartbeatResp") proofs.stepped(ev.message, raw.term, raw.role, raw.lead)
          return
        case "Propose":
          proposals.register(raw.propose(ev.data), ev)
          return
        case "ConfChange":
          proposals.register(raw.proposeConfChange(ev.change), ev)
          return
        case "ReadIndex":
          reads.add(ev)
          return
        case "Transfer": {
          const result = raw.transferLeader(ev.to)
          if (result.ok) transfers.add(ev)
          else ev.done(Effect.fail(errors.notLeader(raw.status().lead)))
          return
        }
        case "Campaign":
          raw.campaign()
          return
      }
    }

    /** When the loop took its current batch (monotonic milliseconds, `monotonicMillis`). */
    let loopNow = 0

    const ready = new ReadyHandler({
      id,
      raw,
      storage,
      mirror,
      sm,
      snapshots,
      send,
      discard: transport.discard,
      proposals,
      reads,
      transfers,
      softState
    })

    /** The time of the last tick given to the core: monotonic (`monotonicMillis`), as a sleep is. */
    let tickedAt = yield* monotonicMillis
    /** Gives the core every tick elapsed by `now`: before it steps anything, so its counters are current. */
    const catchUp = (now: number): void => {
      const ticks = Math.floor((now - tickedAt) / config.tickMs)
      for (let i = 0; i < ticks; i++) raw.tick()
      tickedAt += ticks * config.tickMs
    }
    /** When a tick next acts (the loop's plan after each batch), and when the ticker wakes by itself (monotonic, and by the wall clock of the deadlines). */
    let actsAt = tickedAt + config.tickMs
    let tickerWakesAt = actsAt
    let tickerWakesAtWall = Number.POSITIVE_INFINITY
    /** The ticker handed a Tick over and waits for the loop to take it (the loop nudges it then). */
    let tickHandedOver = false
    const nudges = yield* Queue.sliding<void>(1)
    const planTicks = (): void => {
      actsAt = tickedAt + raw.ticksUntilAction() * config.tickMs
      if (tickHandedOver || actsAt < tickerWakesAt) {
        tickHandedOver = false
        Queue.unsafeOffer(nudges, undefined)
      }
    }

    const loop = Effect.gen(function* () {
      for (;;) {
        const batch = yield* events.takeAll
        batchWall = Math.floor(yield* Clock.currentTimeMillis)
        flushes.observe(batchWall)
        loopNow = yield* monotonicMillis
        catchUp(loopNow)
        for (const ev of batch) handle(ev)
        if (restarted.length > 0) yield* Effect.forEach(restarted.splice(0), transport.resume, { discard: true })
        reads.ask(raw, loopNow)
        proposals.countBatch()
        yield* ready.drain(loopNow)
        // Also here, not only after a Ready: a snapshot written on the side is taken up at the loop's
        // next wake-up (a tick that acts, at the latest) even on a node with nothing else to do.
        yield* ready.compact
        planTicks()
      }
    })

    const ticker = Effect.gen(function* () {
      for (;;) {
        // Deadlines are checked here, not in the loop, so requests time out even while the loop
        // is stuck (say, in a save the disk does not finish).
        const now = yield* Clock.currentTimeMillis
        const earliestDeadline = expire(now)
        yield* flushes.report(now)
        const monotonic = yield* monotonicMillis
        let sleep = actsAt - monotonic
        if (sleep <= 0) {
          tickHandedOver = true
          events.offer({ _tag: "Tick", unreachable: yield* transport.unreachable })
          // The loop nudges once it has taken the tick and planned the next; a loop stuck in a save
          // is looked at every tick meanwhile, as before.
          sleep = config.tickMs
        }
        if (flushes.since() !== undefined) sleep = Math.min(sleep, config.tickMs)
        sleep = Math.max(1, Math.min(sleep, earliestDeadline - now))
        tickerWakesAt = monotonic + sleep
        tickerWakesAtWall = now + sleep
        yield* Effect.timeoutOption(Queue.take(nudges), Duration.millis(sleep))
      }
    })
    const lastContact = new Map<number, number>()
    const receiver = Effect.forever(
      Effect.flatMap(transport.receive, (message) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          if (message.type === "peerRestarted") {
            events.offer({ _tag: "PeerRestarted", peer: message.peer })
            return Effect.void
          }
          lastContact.set(message.from, now)
          events.offer({ _tag: "Message", message, at: now })
          return Effect.void
        })
      )
    )

    // Campaign at once when founding a one-node cluster: nobody else could win.
    if (config.bootstrap !== undefined && config.bootstrap.length === 1 && config.bootstrap[0] === id) {
      events.offer({ _tag: "Campaign" })
    }
    const driver = yield* Effect.forkScoped(loop)
    yield* Effect.forkScoped(ticker)
    yield* Effect.forkScoped(receiver)
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        const stopping = new ProposalDropped({ node: nodeId, message: `node ${id} is shutting down; the write may or may not have applied` })
        proposals.shutdown(stopping)
        const gone = new NotLeader({ node: nodeId, message: `node ${id} is shutting down; retry on another node` })
        reads.shutdown(gone)
        transfers.shutdown(gone)
        for (const ev of events.removeWhere((e) => "done" in e)) {
          if (ev._tag === "Propose" || ev._tag === "ConfChange") ev.done(Effect.fail(stopping))
          else if ("done" in ev) ev.done(Effect.fail(gone))
        }
      })
    )

    // Deadlines are read on this node's clock, the one its ticker expires them by, whatever clock
    // the caller's fiber runs with (the simulator's clients and probes run on another).
    const nodeClock = yield* Effect.clock
    /** Hands a request to the loop and waits for its outcome; the ticker fails it at its deadline. */
    const request = <A, E extends BlixardError>(what: string, make: (waiting: Waiting<A, E>) => Event) =>
      Effect.flatMap(nodeClock.currentTimeMillis, (now) => {
        const deadline = now + config.requestTimeoutMs
        // A ticker asleep past the deadline (a request timeout shorter than its sleep) wakes for it.
        if (deadline < tickerWakesAtWall) Queue.unsafeOffer(nudges, undefined)
        return Effect.async<A, E>((resume) => events.offer(make({ done: resume, deadline, what })))
      })

    const service: RaftNodeShape = {
      id,
      propose: (data) => request<unknown, ProposeFailure>("the write", (w) => ({ _tag: "Propose", data, ...w })),
      proposeConfChange: (change) =>
        Effect.asVoid(request<unknown, ProposeFailure>("the membership change", (w) => ({ _tag: "ConfChange", change, ...w }))),
      readIndex: request<void, NotLeader | Timeout>("the linearizable read", (w) => ({ _tag: "ReadIndex", ...w })),
      transferLeader: (to) => request<void, NotLeader | Timeout>(`the leadership transfer to node ${to}`, (w) => ({ _tag: "Transfer", to, ...w })),
      campaign: Effect.sync(() => events.offer({ _tag: "Campaign" })),
      status: Effect.sync(() => raw.status()),
      leader: Effect.map(Ref.get(softState), (s) => s.lead),
      role: Effect.map(Ref.get(softState), (s) => s.role),
      lastContact: Effect.sync(() => new Map(lastContact)),
      quorumAcks: Effect.sync(() => {
        if (config.unsafeContactFromAnyMessage === true) return new Map(lastContact)
        const proven = new Map<number, number>()
        if (raw.role !== "leader") return proven
        const term = raw.term
        for (const [peer, ack] of acks) if (ack.term === term) proven.set(peer, ack.at)
        return proven
      }),
      followerContact: Effect.sync(() => proofs.proven),
      flushingSince: Effect.sync(() => (config.unsafeContactFromAnyMessage === true ? undefined : flushes.since())),
      await: Effect.flatMap(Fiber.join(driver), () => Effect.never)
    }
    return service
  })

/** The Raft node, over whatever `RaftStorage`, `Transport` and `StateMachine` layers are provided. */
export const layer = (config: RaftNodeConfig): Layer.Layer<RaftNode, StorageError, RaftStorage | Transport | StateMachine> =>
  Layer.scoped(RaftNode, make(config))
