import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { DefaultLogMemoryBytes } from "../../src/raft/LocalSnapshots.js"
import { KvStore } from "../../src/sim/KvStore.js"
import { RaftCluster, value } from "../support/RaftCluster.js"

describe("a node's log beyond its mirror's in-memory tail", () => {
  it.scoped("a follower down while more than the tail was written catches up from entries the leader reads back from storage", () =>
    Effect.gen(function* () {
      const c = new RaftCluster([1, 2, 3], () => new KvStore(), (kv) => kv.layer())
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const lagging = [1, 2, 3].find((id) => id !== leader)!
      value(yield* c.drive(c.node(leader).propose(JSON.stringify({ op: "put", key: "first", value: "1" }))))
      yield* c.until("the follower applied the first write", () => Effect.succeed(c.state(lagging).get("first") === "1"))
      yield* c.crash(lagging)
      // More than the mirror keeps in memory, so the entries the lagging follower needs have left
      // the leader's memory (no snapshot is due: the state stays small, the same keys are written).
      const value100k = "v".repeat(100_000)
      const writes = Math.ceil((DefaultLogMemoryBytes * 1.5) / 100_000)
      for (let k = 0; k < writes; k++) {
        value(yield* c.drive(c.node(leader).propose(JSON.stringify({ op: "put", key: `k${k % 10}`, value: `${k}:${value100k}` }))))
      }
      const status = yield* c.node(leader).status
      expect(status.firstIndex).toBeLessThanOrEqual(3)
      yield* c.start(lagging, false)
      yield* c.until("the restarted follower caught up", () => Effect.succeed(c.state(lagging).get(`k${(writes - 1) % 10}`) === `${writes - 1}:${value100k}`), 60_000)
      for (let k = 0; k < 10; k++) expect(c.state(lagging).get(`k${k}`)).toBe(c.state(leader).get(`k${k}`))
      expect(c.members.get(lagging)!.store.lastIndex).toBe(status.lastIndex)
    })
  )
})
