/**
 * When this node was last in contact with a quorum: the signal the agent fences on.
 *
 * The rule (all times are this node's `Clock`, epoch milliseconds):
 *
 * - Leader: the latest time by which a majority of the voters had been heard from. Each voter's
 *   time is `RaftNode.lastContact` (the last message received from it; this node counts as `now`);
 *   sorted newest first, the majority-th value is the answer. CheckQuorum would also make a leader
 *   step down after losing its majority, but only within two election timeouts; this is exact.
 * - Follower (or candidate) that knows a leader: the last message from that leader, minus
 *   `leaderLagMs`. A leader only stays leader (CheckQuorum) while a majority answers it, but it
 *   notices the loss only at its next CheckQuorum round, up to two election timeouts later; a
 *   follower in a minority with a stale leader would hear it that long after the quorum was gone.
 *   Crediting the leader's message `leaderLagMs` (= 2 election timeouts) early removes that lag.
 * - No leader known: the last value computed (contact is never invented; it only ages).
 *
 * `undefined` means "no contact since this daemon started".
 */
import { Clock, Effect, Ref } from "effect"
import type { RaftNodeShape } from "../raft/RaftNode.js"

export interface QuorumContactInput {
  readonly self: number
  readonly now: number
  readonly role: string
  readonly leader: number
  readonly voters: ReadonlyArray<number>
  readonly lastContact: ReadonlyMap<number, number>
  readonly leaderLagMs: number
}

/** The quorum-contact time the inputs prove, or `undefined` if they prove none. */
export const quorumContactAt = (input: QuorumContactInput): number | undefined => {
  if (input.role === "leader") {
    if (input.voters.length === 0) return input.now
    const times = input.voters
      .map((id) => (id === input.self ? input.now : input.lastContact.get(id)))
      .filter((t): t is number => t !== undefined)
      .sort((a, b) => b - a)
    return times[Math.floor(input.voters.length / 2)]
  }
  if (input.leader === 0 || input.leader === input.self) return undefined
  const heard = input.lastContact.get(input.leader)
  return heard === undefined ? undefined : heard - input.leaderLagMs
}

/**
 * A quorum signal for `Agent.make` over a live `RaftNode`: remembers the newest contact it has
 * proven, so an election in progress (no leader) keeps the last one, which then ages.
 */
export const fromRaft = (raft: RaftNodeShape, options: { readonly leaderLagMs: number }) =>
  Effect.map(Ref.make<number | undefined>(undefined), (last) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const status = yield* raft.status
      const at = quorumContactAt({
        self: raft.id,
        now,
        role: status.role,
        leader: status.lead,
        voters: status.confState.voters,
        lastContact: yield* raft.lastContact,
        leaderLagMs: options.leaderLagMs
      })
      return yield* Ref.updateAndGet(last, (previous) =>
        at === undefined ? previous : previous === undefined ? at : Math.max(previous, at)
      )
    })
  )
