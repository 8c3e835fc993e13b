/**
 * Membership through a single voter, for the full-service tier (`ExploreOptions.membership`): the
 * changes an operator makes, proposed to whichever node leads, one at a time, retried until they
 * apply — as `cluster join` (NodeControlPlane: add as a learner, wait until it has caught up,
 * promote) and `cluster leave` do.
 *
 * - `join`: node 1 founded the cluster alone; every other node joins.
 * - `shrink`: once, at a seeded time in the first half of the safety phase, the voters are removed
 *   one by one until the leader is the only one; a moment later they join again.
 *
 * Either way the run ends its changes with every node a voter, so the liveness phase can ask every
 * node to apply a new entry. The same commands (`operator`) re-add a node whose daemon refused to
 * start without its data (`FullService.ts`, the `amnesia` profile).
 */
import { Duration, Effect, Either, Exit } from "effect"
import type { RaftNodeShape } from "../raft/RaftNode.js"
import type { ConfChange, ConfState } from "../raft/Types.js"
import type { Prng } from "./Prng.js"

/** What the operator needs of the simulated cluster. */
export interface OperatorEnv {
  /** The running node that leads the highest term, if any. */
  readonly leader: () => RaftNodeShape | undefined
  readonly tickMs: number
  /** A change was accepted by a leader. */
  readonly changed: (change: ConfChange) => void
}

export interface MembershipEnv extends OperatorEnv {
  readonly mode: "join" | "shrink"
  readonly ids: ReadonlyArray<number>
  readonly phase: () => "safety" | "liveness"
  readonly safetyMs: number
  readonly prng: Prng
}

const holds = (cs: ConfState, cc: ConfChange): boolean => {
  switch (cc.type) {
    case "addLearner":
      return cs.voters.includes(cc.nodeId) || cs.learners.includes(cc.nodeId)
    case "promote":
      return cs.voters.includes(cc.nodeId)
    case "remove":
      return !cs.voters.includes(cc.nodeId) && !cs.learners.includes(cc.nodeId)
  }
}

/**
 * The leader's status once its configuration is the cluster's membership: it still leads (a
 * ReadIndex round answered, which also waits until it has applied what it had committed) and it has
 * applied its log's membership changes (`pendingConfIndex`). Otherwise, none. A leader cut off from
 * a newer one, or a new leader that holds a committed change it has not applied yet, still lists a
 * node removed since: a re-added voter taken for present was never added again (`votes` seed 2067:
 * a new leader; `shrink` seed 2191: a deposed one). The product's join refuses such a node as a
 * voter back without its data, and it is asked again.
 */
const settled = (leader: RaftNodeShape | undefined) =>
  leader === undefined
    ? Effect.succeed(undefined)
    : Effect.gen(function* () {
        if (Either.isLeft(yield* Effect.either(leader.readIndex))) return undefined
        const st = yield* leader.status
        return st.role === "leader" && st.applied >= st.pendingConfIndex ? st : undefined
      })

/** An operator's commands: `cluster leave` (`change` of a removal) and `cluster join` (`join`). */
export interface Operator {
  /** Proposes `cc` to the leader until the leader's configuration holds it. */
  readonly change: (cc: ConfChange) => Effect.Effect<void>
  /** Adds `id` as a learner, waits until it has caught up, promotes it. */
  readonly join: (id: number) => Effect.Effect<void>
}

export const operator = (env: OperatorEnv): Operator => {
  const wait = Effect.sleep(Duration.millis(env.tickMs))

  /**
   * Proposes `cc` to the leader until the leader's configuration holds it (true), or until `gone`
   * says the change can no longer be made (false); judged on a `settled` leader only.
   */
  const propose = (cc: ConfChange, gone: (cs: ConfState) => boolean) =>
    Effect.gen(function* () {
      for (;;) {
        const leader = env.leader()
        const st = yield* settled(leader)
        if (leader !== undefined && st !== undefined) {
          if (holds(st.confState, cc)) return true
          if (gone(st.confState)) return false
          const result = yield* Effect.exit(leader.proposeConfChange(cc))
          if (Exit.isSuccess(result)) {
            env.changed(cc)
            return true
          }
        }
        yield* wait
      }
    })

  const change = (cc: ConfChange) => Effect.asVoid(propose(cc, () => false))

  /**
   * Waits until the leader has replicated to `id` what it had committed when first asked; false if
   * `id` is no member any more (a learner back on an empty data directory had itself removed).
   */
  const caughtUp = (id: number) =>
    Effect.gen(function* () {
      let target: number | undefined
      for (;;) {
        const st = yield* settled(env.leader())
        if (st !== undefined) {
          target ??= st.commit
          const p = st.progress.find((x) => x.id === id)
          if (st.confState.voters.includes(id) || (p !== undefined && p.match >= target)) return true
          if (!st.confState.learners.includes(id)) return false
        }
        yield* wait
      }
    })

  /**
   * As `cluster join` (retried, as the joining daemon's `joinLoop` does) until it is promoted. A
   * learner removed before its promotion (back on an empty data directory, it had itself removed)
   * is added again: the daemon's join fails on the promotion and its `joinLoop` asks again.
   */
  const join = (id: number) =>
    Effect.gen(function* () {
      for (;;) {
        yield* change({ type: "addLearner", nodeId: id })
        if (!(yield* caughtUp(id))) continue
        if (yield* propose({ type: "promote", nodeId: id }, (cs) => !cs.learners.includes(id))) return
      }
    })

  return { change, join }
}

/** The fiber making the changes, and whether it is done (every node a voter, after its work). */
export const membership = (env: MembershipEnv): { readonly run: Effect.Effect<void>; readonly done: () => boolean } => {
  let done = false
  const wait = Effect.sleep(Duration.millis(env.tickMs))
  const { change, join } = operator(env)

  const everyoneVotes = Effect.gen(function* () {
    for (;;) {
      const st = yield* settled(env.leader())
      const voters = st === undefined ? [] : st.confState.voters
      const missing = env.ids.filter((id) => !voters.includes(id))
      if (st !== undefined && missing.length === 0) return
      for (const id of missing) yield* join(id)
      if (st === undefined) yield* wait
    }
  })

  const shrink = Effect.gen(function* () {
    yield* Effect.sleep(Duration.millis(1000 + env.prng.int(Math.max(1, env.safetyMs / 2 - 1000))))
    while (env.phase() === "safety") {
      const leader = env.leader()
      const st = yield* settled(leader)
      if (leader === undefined || st === undefined) {
        yield* wait
        continue
      }
      const victim = st.confState.voters.find((v) => v !== leader.id)
      if (victim === undefined) break
      yield* change({ type: "remove", nodeId: victim })
    }
    yield* Effect.sleep(Duration.millis(500 + env.prng.int(2500)))
  })

  const run = Effect.gen(function* () {
    if (env.mode === "shrink") yield* shrink
    yield* everyoneVotes
    done = true
  })
  return { run, done: () => done }
}
