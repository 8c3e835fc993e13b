/**
 * The `StateMachine` the Raft driver applies Blixard's commands to: committed `normal` entries are
 * `CommandEnvelope` JSON, applied to a `ClusterState`. An entry that does not decode (which a
 * leader never proposes: the API validates first) is refused with `InvalidArgument` rather than
 * applied, identically on every node, so the replicas cannot diverge.
 *
 * The node that proposed an entry already holds its command, validated and built by the API: it
 * registers the envelope under the entry's text (`proposing`) and applies that instead of decoding
 * the text again. Decoding is a pure function of the text, and the text was written from that very
 * envelope, so both give the same state (test/cluster/ClusterStateMachine.test.ts applies every
 * command kind both ways); the leader saves a decode (~12 µs) on every write it proposes.
 *
 * A state whose cluster log version is above this release's (`ClusterVersion.ts`) is not applied
 * on: restoring such a snapshot, or applying the entry that raises the version beyond this
 * release's, fails with `ReleaseTooOld` (naming the data directory), which stops the Raft node and
 * the daemon before any further entry is applied.
 */
import { Effect, Either, Layer, Schema } from "effect"
import type { ClusterEvent } from "../domain/ClusterEvent.js"
import { Command, CommandEnvelope } from "../domain/Command.js"
import { InvalidArgument } from "../domain/Errors.js"
import type { VmRecord } from "../domain/VmStatus.js"
import { caRotationEvents, joinTokenEvents, leaderEvents, membershipEvents, nodeEvents, revocationEvents, subjectsOf, tokenEvents, vmEvents } from "../events/Derive.js"
import { EventLog } from "../events/EventLog.js"
import { decodeConfChange } from "../raft/Raft.js"
import { StateMachine } from "../raft/StateMachine.js"
import type { Entry } from "../raft/Types.js"
import { Wakeup } from "../util/Wakeup.js"
import type { ApplyResult } from "./ClusterState.js"
import { ClusterState } from "./ClusterState.js"
import { releaseTooOld } from "./ClusterVersion.js"

/** `Schema.Struct` of each member's fields, member by member. */
type Plain<Members extends ReadonlyArray<{ readonly fields: Schema.Struct.Fields }>> = {
  readonly [K in keyof Members]: Schema.Struct<Members[K]["fields"]>
}

/**
 * A `normal` entry: `CommandEnvelope` JSON, decoded with the envelope's and every command's own
 * field schemas — all the checks the API made, made again, since entries come from peers — but
 * into plain objects for the envelope and the command, which only carry the change to
 * `ClusterState.apply` (they have the same type). Building those two as class instances was a
 * fifth of the decode (about 3 of 15 µs per CreateVm, measured); what the state keeps (`VmSpec`,
 * `VmStatus`, `NodeInfo`) is still decoded to its class.
 */
const EntryJson = Schema.parseJson(
  Schema.Struct({
    ...CommandEnvelope.fields,
    command: Schema.Union(
      ...(Command.members.map((member) => Schema.Struct(member.fields)) as unknown as Plain<typeof Command.members>)
    )
  })
)

const decodeEnvelope = Schema.decodeEither(EntryJson)

/** Proposals remembered at most; beyond that the memory starts over (they are then decoded as usual). */
const maxProposed = 65_536

/**
 * Holds the live `ClusterState`; `current` is replaced when a snapshot is installed. What each
 * entry changed goes to `events` (`GET /v1/events`).
 */
export class ClusterStateHolder {
  current = new ClusterState()
  /**
   * Signalled whenever the membership may have changed (a membership entry applied, a snapshot
   * installed: the only ways `current.members` changes), for the one loop that follows it (the
   * daemon's peer addresses).
   */
  readonly membershipChanged = new Wakeup()
  private readonly proposed = new Map<string, CommandEnvelope>()
  /** The VMs the entry being applied changed (reused: cleared after each entry). */
  private readonly journal = new Map<string, VmRecord | undefined>()

  constructor(
    readonly events: EventLog = new EventLog(),
    /** Named when the node stops on a log newer than its release: its id and data directory. */
    readonly where: { readonly node?: number | undefined; readonly location?: string | undefined } = {}
  ) {}

  /** This node proposes `data`, the JSON of `envelope`: applying it will take `envelope` as it is. */
  proposing(data: string, envelope: CommandEnvelope): void {
    if (this.proposed.size >= maxProposed) this.proposed.clear()
    this.proposed.set(data, envelope)
  }

  /** The proposal of `data` failed (it may still commit, and is then decoded). */
  forget(data: string): void {
    this.proposed.delete(data)
  }

  applyEntry(entry: Entry): ApplyResult | undefined {
    if (entry.kind === "confChange") {
      const change = decodeConfChange(entry.data)
      const revoked = this.current.applyMembership(entry.index, change)
      this.membershipChanged.signal()
      const events = membershipEvents(change)
      revocationEvents(revoked, events)
      this.events.publish(entry.index, entry.term, undefined, events)
      return undefined
    }
    if (entry.kind !== "normal") {
      this.current.appliedIndex = entry.index
      this.events.publish(entry.index, entry.term, undefined, entry.index > 1 || entry.data !== "" ? leaderEvents(entry.term, entry.data) : [])
      return undefined
    }
    const own = this.proposed.get(entry.data)
    if (own !== undefined) {
      this.proposed.delete(entry.data)
      return this.applyCommand(entry, own)
    }
    const envelope = decodeEnvelope(entry.data)
    if (Either.isLeft(envelope)) {
      this.current.appliedIndex = entry.index
      this.events.publish(entry.index, entry.term, undefined, [])
      return Either.left(new InvalidArgument({ message: `entry ${entry.index} is not a valid command; it was skipped` }))
    }
    return this.applyCommand(entry, envelope.right)
  }

  /** Applies a command, and publishes what it changed: its node, API token or join token, revocations, the CA rotation, then its VMs as changed. */
  private applyCommand(entry: Entry, envelope: CommandEnvelope): ApplyResult {
    const state = this.current
    const { node, token, joinToken } = subjectsOf(envelope.command)
    const nodeBefore = node === undefined ? undefined : state.nodes.get(node)
    const tokenBefore = token === undefined ? undefined : state.tokens.get(token)
    const joinTokenBefore = joinToken === undefined ? undefined : state.joinTokens.get(joinToken)
    const rotationBefore = state.caRotation
    state.journal = this.journal
    try {
      const result = state.apply(entry.index, envelope)
      const events: Array<ClusterEvent> = []
      if (node !== undefined) nodeEvents(nodeBefore, state.nodes.get(node), events)
      if (token !== undefined) tokenEvents(tokenBefore, state.tokens.get(token), events)
      if (joinToken !== undefined) joinTokenEvents(joinTokenBefore, state.joinTokens.get(joinToken), events)
      if (Either.isRight(result) && result.right.revoked !== undefined) revocationEvents(result.right.revoked, events)
      caRotationEvents(rotationBefore, state.caRotation, state.caInForce, events)
      for (const [name, before] of this.journal) vmEvents(before, state.vms.get(name), events)
      this.events.publish(entry.index, entry.term, envelope.proposedAt, events)
      return result
    } finally {
      state.journal = undefined
      this.journal.clear()
    }
  }

  /** An in-memory `StateMachine` layer (the state is rebuilt from snapshot + log after a restart). */
  layer(): Layer.Layer<StateMachine> {
    return Layer.succeed(StateMachine, {
      applied: Effect.sync(() => this.current.appliedIndex),
      apply: (entries) =>
        Effect.suspend(() => {
          const results: Array<ApplyResult | undefined> = []
          for (const entry of entries) {
            results.push(this.applyEntry(entry))
            const tooOld = releaseTooOld(this.current.clusterVersion, this.where, this.current.release)
            if (tooOld !== undefined) return Effect.fail(tooOld)
          }
          return Effect.succeed(results)
        }),
      snapshot: Effect.sync(() => this.current.snapshot()),
      snapshotView: Effect.sync(() => this.current.snapshotView()),
      restore: (snapshot) =>
        Effect.sync(() => {
          const state = snapshot.data === "" ? new ClusterState() : ClusterState.restore(snapshot.data)
          state.appliedIndex = snapshot.metadata.index
          state.unsafeOneStepMoves = this.current.unsafeOneStepMoves
          state.release = this.current.release
          this.current = state
          this.membershipChanged.signal()
          this.events.reset(snapshot.metadata.index)
          const tooOld = releaseTooOld(state.clusterVersion, this.where, state.release)
          return tooOld === undefined ? Effect.void : Effect.fail(tooOld)
        }).pipe(Effect.flatten)
    })
  }
}
