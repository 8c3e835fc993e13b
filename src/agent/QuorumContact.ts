/**
 * When this node was last in contact with a quorum: the signal the agent fences on.
 *
 * The rule (all times are this node's `Clock`, epoch milliseconds):
 *
 * - Leader: the latest time by which a majority of the voters had answered THIS leader. Each
 *   voter's time is `RaftNode.quorumAcks`: the arrival of its newest response of the leader's
 *   current term (`appResp`, `heartbeatResp`) that the leader's own Raft loop has stepped while
 *   leading (this node counts as `now`); sorted newest first, the majority-th value is the answer.
 *   Such a response proves the voter was still in this leader's term when it sent it, so no other
 *   leader had its vote. Any other message proves nothing: a leader whose loop is stuck (in a
 *   storage write that does not complete) keeps receiving the NEW leader's messages, of a higher
 *   term, which its loop never processes — counting those, it would run its VMs on while the new
 *   leader moves them. CheckQuorum would also make a leader step down after losing its majority,
 *   but only within two election timeouts and only from a loop that runs; this is exact.
 * - Either role, a storage write outstanding since `s` (`RaftNode.flushingSince`) caps the
 *   contact at `s`: a node whose disk does not complete a write proves nothing after it started,
 *   so it fences at the latest `fencingMs` after the write began, however its loop is built.
 * - Any other node: the send time of its newest ReadIndex round that succeeded. This node's
 *   request travelled to the leader, which answered only after confirming its leadership with a
 *   heartbeat round to a majority, and this node had applied up to the index it was given; so by
 *   then the leader had heard this node, after the send time, and had a quorum. Hearing the leader
 *   is NOT enough: in a one-way partition a follower keeps hearing a leader that no longer hears
 *   it — the leader marks it down and moves its VMs while it would keep running them. The probe
 *   fails there (its request never arrives), contact ages, and the node fences in time.
 *
 * The newest proof is kept: an election in progress proves nothing new, so contact ages.
 * `undefined` means "no contact since this daemon started".
 */
import type { Scope } from "effect"
import { Clock, Duration, Effect, Either } from "effect"
import type { RaftNodeShape } from "../raft/RaftNode.js"

export interface LeaderContactInput {
  readonly self: number
  readonly now: number
  readonly voters: ReadonlyArray<number>
  /** Per voter, when its newest response of this leader's term arrived (`RaftNode.quorumAcks`). */
  readonly acks: ReadonlyMap<number, number>
}

/** For a leader: when a majority of the voters (itself included, as `now`) had last answered it. */
export const leaderContactAt = (input: LeaderContactInput): number | undefined => {
  if (input.voters.length === 0) return input.now
  const times = input.voters
    .map((id) => (id === input.self ? input.now : input.acks.get(id)))
    .filter((t): t is number => t !== undefined)
    .sort((a, b) => b - a)
  return times[Math.floor(input.voters.length / 2)]
}

export interface QuorumContactOptions {
  /** How often a node that is not the leader proves its contact with a ReadIndex round (e.g. one election timeout). */
  readonly probeEveryMs: number
}

/**
 * A quorum signal for `Agent.make` over a live `RaftNode`. Starts (in the caller's scope) the fiber
 * that probes with ReadIndex while this node is not the leader; the returned effect answers the
 * newest contact proven by either rule.
 */
export const fromRaft = (
  raft: RaftNodeShape,
  options: QuorumContactOptions
): Effect.Effect<Effect.Effect<number | undefined>, never, Scope.Scope> =>
  Effect.gen(function* () {
    let proven: number | undefined
    const prove = (at: number | undefined) => {
      if (at !== undefined && (proven === undefined || at > proven)) proven = at
    }
    const probe = Effect.gen(function* () {
      const status = yield* raft.status
      if (status.role === "leader" || status.lead === 0) return
      const sent = yield* Clock.currentTimeMillis
      // `readIndex` fails (NotLeader, Timeout) when the round cannot complete: nothing is proven.
      if (Either.isRight(yield* Effect.either(raft.readIndex))) prove(sent)
    }).pipe(Effect.timeout(Duration.millis(2 * options.probeEveryMs)), Effect.ignore)
    // A probe starts every interval, whether or not the last one has answered: one sent to a leader
    // that just died must not hold up the probes to its successor (a healthy follower would fence
    // during every failover). Each gives up after two intervals.
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.fork(probe), Effect.sleep(Duration.millis(options.probeEveryMs)))))
    return Effect.gen(function* () {
      const status = yield* raft.status
      if (status.role === "leader") {
        prove(
          leaderContactAt({
            self: raft.id,
            now: yield* Clock.currentTimeMillis,
            voters: status.confState.voters,
            acks: yield* raft.quorumAcks
          })
        )
      }
      const flushingSince = yield* raft.flushingSince
      return flushingSince !== undefined && proven !== undefined && flushingSince < proven ? flushingSince : proven
    })
  })
