/**
 * How `RaftNode`'s loop works off the core's `Ready`s, in the order Raft's safety rests on:
 *
 *   1. persist snapshot + entries + hard state in ONE `RaftStorage.save` (one transaction, one fsync)
 *      and mirror them into the in-memory `MemoryStorage` the core reads;
 *   2. only then send the messages that vouch for them (persist-before-send: a vote or an
 *      acknowledgement never leaves before what it vouches for is durable). A leader's appends,
 *      snapshots and heartbeats leave BEFORE its own save (`leavesBeforePersist`), and committed
 *      entries already in the local log are applied while the save runs (`persist`). The chunks
 *      of a snapshot leave the core without data (the mirror keeps none) and get it from storage
 *      on the way (`SnapshotSending.ts`);
 *   3. install a received snapshot into the state machine, apply committed entries, and resolve
 *      the proposals, reads and transfers waiting on them;
 *   4. `advance`, and compact the log when enough has been applied since the last snapshot
 *      (`LocalSnapshots.ts`: the loop only captures the state; writing it happens on the side).
 *
 * A Ready whose only change is a higher commit index needs no fsync of its own (etcd's `mustSync`):
 * the commit index can always be learned again from the leader. It is written with the next synced
 * save, or before a snapshot (so a restart never finds the snapshot ahead of the stored commit index),
 * or before a membership change is applied (`RawNode`'s `mustSync`: a node must not count a
 * membership it has left behind).
 */
import { Effect, Fiber, Ref } from "effect"
import type { StorageError } from "../storage/Database.js"
import type { RaftStorageShape } from "../storage/RaftStorage.js"
import * as Metrics from "../metrics/Metrics.js"
import type { LeaderTransfers } from "./LeaderTransfers.js"
import { type LocalSnapshots, snapshotSource } from "./LocalSnapshots.js"
import type { MemoryStorage } from "./MemoryStorage.js"
import type { Message } from "./Message.js"
import type { ProposalWaiters } from "./ProposalWaiters.js"
import type { RawNode, Ready } from "./RawNode.js"
import type { ReadIndexReads } from "./ReadIndexReads.js"
import type { StartupReport } from "./Recovery.js"
import type { SnapshotSending } from "./SnapshotSending.js"
import type { StateMachineShape } from "./StateMachine.js"
import type { ConfState, Entry, HardState, Snapshot, SoftState, StateRole } from "./Types.js"

/**
 * Messages a leader may send before the Ready they come with is persisted: its appends, snapshots
 * and heartbeats claim nothing about its own durable state. Its term was durable before it became
 * leader (the core counts even a sole voter's own vote only after its save), and the commit index
 * they carry counts the leader's own entries only once they are durable (`Raft.msgsAfterAppend`).
 * Everything else — votes, acknowledgements — must wait for the save.
 */
export const leavesBeforePersist = (m: Message): boolean => m.type === "app" || m.type === "heartbeat" || m.type === "snap"

const members = (cs: ConfState): ReadonlySet<number> => new Set([...cs.voters, ...cs.learners])

export interface ReadyHandlerOptions {
  readonly id: number
  readonly raw: RawNode
  /** The node's storage (its writes timed: `StorageFlushes`). */
  readonly storage: RaftStorageShape
  /** The in-memory copy of the durable log the core reads. */
  readonly mirror: MemoryStorage
  readonly sm: StateMachineShape
  readonly snapshots: LocalSnapshots
  /** Fills in the data of the snapshot chunks the core sends. */
  readonly snapshotSending: SnapshotSending
  /** Sends the core's messages (stamped with the contact proofs). */
  readonly send: (messages: ReadonlyArray<Message>) => Effect.Effect<void>
  /** Drops the transport's unsent messages to a peer. */
  readonly discard: (peer: number) => Effect.Effect<void>
  readonly proposals: ProposalWaiters
  readonly reads: ReadIndexReads
  readonly transfers: LeaderTransfers
  /** The leader and role the service reports, as of the last Ready. */
  readonly softState: Ref.Ref<{ lead: number; role: StateRole }>
  /** Where a start's time went, up to the first read (`Recovery.ts`). */
  readonly report: StartupReport
}

/**
 * The steps of `drain` are generators it delegates to with `yield*`, not Effects of their own: the
 * loop runs exactly the effects it would run written as one, so the fiber's operations (and with
 * them the scheduler's yield points the simulator's seeded runs replay) stay what they were.
 */
export class ReadyHandler {
  /** The hard state of a Ready not synced yet (a commit index only), written with the next save. */
  private unsyncedHardState: HardState | undefined = undefined

  constructor(private readonly o: ReadyHandlerOptions) {}

  /** Works off every Ready the core has; `now` is the loop's batch time (monotonic), for the next ReadIndex round. */
  drain(now: number): Effect.Effect<void, StorageError> {
    return Effect.gen(this, function* () {
      const { raw, reads } = this.o
      while (raw.hasReady()) {
        const rd = raw.ready()
        if (rd.hardState !== undefined) this.unsyncedHardState = rd.hardState
        const toApply = yield* this.persist(rd)
        if (rd.snapshot !== undefined) yield* this.installSnapshot(rd.snapshot)
        if (toApply.length > 0) yield* this.apply(toApply)
        if (rd.softState !== undefined) yield* this.softStateChanged(rd.softState)
        reads.answered(rd.readStates)
        const membersBefore = rd.snapshot !== undefined || rd.committedEntries.some((e) => e.kind === "confChange") ? members(raw.confState()) : undefined
        raw.advance(rd)
        if (membersBefore !== undefined) yield* this.discardRemoved(membersBefore)
        this.o.report.applied(raw.appliedIndex)
        if (reads.applied(raw.appliedIndex)) this.o.report.readAnswered()
        if (this.o.report.due) yield* this.o.report.flush
        // The reads that arrived while a round was answered ask the next (sent on the next turn).
        reads.ask(raw, now)
        yield* this.compact
      }
      this.o.snapshotSending.release()
    })
  }

  /**
   * Steps 1 and 2: saves what the Ready must make durable and sends its messages in the
   * persistence order; answers the committed entries still to apply (those applied during the save
   * are not).
   */
  private *persist(rd: Ready) {
    const { storage, mirror } = this.o
    let toApply = rd.committedEntries
    if (rd.snapshot !== undefined || rd.entries.length > 0 || rd.mustSync) {
      // While this Ready's writes flush to disk (off the event loop), the leader's appends and
      // heartbeats already travel (thesis §10.2.1: a leader may write its log in parallel with
      // replicating it; it counts itself towards a commit only in a later round, after this
      // save) and committed entries already in the local log are applied. Everything that
      // vouches for this Ready's writes (votes, acknowledgements) waits for the save.
      const early = rd.messages.filter(leavesBeforePersist)
      if (early.length > 0) yield* this.send(early)
      const saving = yield* Effect.fork(storage.save({ snapshot: rd.snapshot, entries: rd.entries, hardState: this.unsyncedHardState }))
      if (rd.snapshot === undefined && toApply.length > 0) {
        // Not from a membership change on: it takes effect in the core at `advance`, after the
        // save (`RawNode` syncs its commit index first), and whoever waited for it must find the
        // core's configuration changed when it is answered.
        const firstNew = rd.entries[0]?.index ?? Number.POSITIVE_INFINITY
        const cut = toApply.findIndex((e) => e.index >= firstNew || e.kind === "confChange")
        const stable = cut < 0 ? toApply : toApply.slice(0, cut)
        if (stable.length > 0) {
          yield* this.apply(stable)
          toApply = toApply.slice(stable.length)
        }
      }
      yield* Fiber.join(saving)
      this.unsyncedHardState = undefined
      if (rd.snapshot !== undefined) mirror.applySnapshot(rd.snapshot)
      mirror.append(rd.entries)
      this.o.report.appended(rd.entries)
      if (rd.hardState !== undefined) mirror.setHardState(rd.hardState)
      const late = early.length > 0 ? rd.messages.filter((m) => !leavesBeforePersist(m)) : rd.messages
      if (late.length > 0) yield* this.send(late)
    } else {
      if (rd.hardState !== undefined) mirror.setHardState(rd.hardState)
      if (rd.messages.length > 0) yield* this.send(rd.messages)
    }
    return toApply
  }

  /** Sends the core's messages, the snapshot chunks among them filled in. */
  private *send(messages: ReadonlyArray<Message>) {
    yield* this.o.send(messages.some((m) => m.type === "snap") ? yield* this.o.snapshotSending.fill(messages) : messages)
  }

  /** Step 3 for a snapshot from the leader: the state machine takes it, and the proposals it replaced learn nothing more. */
  private *installSnapshot(snapshot: Snapshot) {
    const began = performance.now()
    yield* this.o.sm.restore(snapshot)
    this.o.report.installed(snapshot, Math.round(performance.now() - began))
    this.o.snapshots.snapshotted(snapshot)
    Metrics.raftSnapshots.unsafeUpdate(1, snapshotSource.leader)
    this.o.proposals.replacedBy(snapshot.metadata.index)
  }

  /** Applies committed entries and resolves the proposals waiting on them. */
  private apply(entries: ReadonlyArray<Entry>) {
    return Effect.map(this.o.sm.apply(entries), (results) => {
      this.o.snapshots.applied(entries)
      this.o.proposals.settle(entries, results)
    })
  }

  /** A new leader or role: reported by the service; the ReadIndex round and transfers waiting on the leader learn of it. */
  private *softStateChanged(ss: SoftState) {
    const { softState } = this.o
    if ((yield* Ref.get(softState)).lead !== ss.lead) {
      Metrics.raftLeaderChanges.unsafeUpdate(1, Metrics.noTags)
      // The round was asked of a leader that is gone: ask the next one (in `drain`) at once.
      this.o.reads.leaderChanged()
    }
    yield* Ref.set(softState, { lead: ss.lead, role: ss.role })
    this.o.transfers.leaderIs(ss.lead)
  }

  /**
   * A peer that left the configuration (a change applied, or a snapshot installed) has its unsent
   * messages dropped: they were written for its old log (a leader's heartbeat carries a commit
   * index up to what that log acknowledged), and the next process under its id may be back empty
   * and re-added as a learner, which would stop on a commit index beyond its log.
   */
  private discardRemoved(before: ReadonlySet<number>) {
    return Effect.gen(this, function* () {
      const after = members(this.o.raw.confState())
      for (const peer of before) if (peer !== this.o.id && !after.has(peer)) yield* this.o.discard(peer)
    })
  }

  /** Saves the hard state not saved yet (a snapshot must not be stored ahead of the stored commit index). */
  private readonly flushHardState: Effect.Effect<void, StorageError> = Effect.suspend(() =>
    this.unsyncedHardState === undefined
      ? Effect.void
      : Effect.tap(this.o.storage.save({ hardState: this.unsyncedHardState }), () => {
          this.unsyncedHardState = undefined
        })
  )

  /**
   * Step 4: takes or takes up a local snapshot and compacts the log, when due (`LocalSnapshots.step`).
   * Also run by the loop after each batch: a snapshot written on the side is taken up at the loop's
   * next wake-up even on a node with nothing else to do.
   */
  readonly compact: Effect.Effect<void, StorageError> = Effect.suspend(() => this.o.snapshots.step(this.o.raw, this.flushHardState))
}
