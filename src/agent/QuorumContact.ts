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
 * - Any other node: the newest of two proofs, each a time `c` on its own clock such that, after `c`,
 *   (a) the leader heard this node and (b) a majority of the voters were still in the leader's term.
 *   That is what fencing needs: by (a) the leader's failure detector (`HealthMonitor`) counts this
 *   node as heard at `c` or later, so it marks it down no earlier than `c + nodeDownMs`; by (b) any
 *   leader of a later term was elected after `c` (its majority shares a voter with the one that was
 *   still in this term), and it gives every node until its own start + nodeDownMs. This node stops
 *   its VMs by `c + fencingMs`, earlier. Hearing the leader is NOT enough: in a one-way partition a
 *   follower keeps hearing a leader that no longer hears it — the leader marks it down and moves its
 *   VMs while it would keep running them. Both proofs need its own messages to arrive, so there its
 *   contact ages and it fences in time.
 *   1. The leader's own heartbeat rounds (`RaftNode.followerContact`, `raft/ContactProof.ts`), no
 *      message of their own. The follower answers each heartbeat with a stamp, its clock read before
 *      it sends (so `c` is never later than the truth), and the newest round of this leader's it has
 *      stepped. The leader numbers its rounds; a stamp that arrived when round `k` was the newest
 *      sent is proven once a majority of the voters (itself counting as the round it sends now)
 *      answered, in its current term, a round after `k` — each was in the term after it received
 *      that round, which the leader sent after the stamp arrived, after `c`: (a) and (b). The
 *      leader sends the proven stamp back on its next heartbeat; the follower counts it only from a
 *      heartbeat of its current term from the leader it follows, stepped by its own Raft loop, and
 *      only if it is a stamp this process sent. A proof lags its stamp by two to three heartbeat
 *      intervals (with the daemon's timing, 200–300 ms).
 *   2. A ReadIndex round of its own, sent only while proof 1 is older than `probeEveryMs` (a leader
 *      of an older build sends no proofs; a failover): its send time. The request travelled to
 *      the leader, which answered only after confirming its leadership with a heartbeat round to a
 *      majority, sent after the request arrived. A quiet cluster with a leader of this build sends
 *      none: they were a third of a quiet leader's frames (bench/RESULTS.md).
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
  /**
   * How old a node that is not the leader lets its heartbeat-proven contact grow before it proves
   * contact with a ReadIndex round of its own, and how often it looks (e.g. one election timeout).
   */
  readonly probeEveryMs: number
}

/**
 * A quorum signal for `Agent.make` over a live `RaftNode`. Starts (in the caller's scope) the fiber
 * that probes with ReadIndex while this node is not the leader and its leader's heartbeats prove
 * nothing recent; the returned effect answers the newest contact proven by any rule.
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
    // `readIndex` fails (NotLeader, Timeout) when the round cannot complete: nothing is proven.
    const round = (sent: number) =>
      Effect.either(raft.readIndex).pipe(
        Effect.flatMap((answer) => Effect.sync(() => (Either.isRight(answer) ? prove(sent) : undefined))),
        Effect.timeout(Duration.millis(2 * options.probeEveryMs)),
        Effect.ignore
      )
    // Every interval: the leader's heartbeats usually prove contact (no fiber, no message); only
    // when they prove nothing recent does a ReadIndex round start. A round starts every interval
    // while that lasts, whether or not the last one has answered: one sent to a leader that just
    // died must not hold up the rounds to its successor (a healthy follower would fence during
    // every failover). Each gives up after two intervals.
    const look = Effect.gen(function* () {
      const status = yield* raft.status
      if (status.role === "leader" || status.lead === 0) return
      const sent = yield* Clock.currentTimeMillis
      const heartbeats = yield* raft.followerContact
      prove(heartbeats)
      if (heartbeats !== undefined && sent - heartbeats <= options.probeEveryMs) return
      yield* Effect.fork(round(sent))
    })
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(look, Effect.sleep(Duration.millis(options.probeEveryMs)))))
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
      prove(yield* raft.followerContact)
      const flushingSince = yield* raft.flushingSince
      return flushingSince !== undefined && proven !== undefined && flushingSince < proven ? flushingSince : proven
    })
  })
