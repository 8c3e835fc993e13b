/**
 * The cluster secret as a keyring on the real transport, over loopback (`node/ClusterKeyring.ts`):
 * a node proves with its first secret and accepts all of its own, so the four keyrings a rotation
 * passes through (old; old,new; new,old; new) connect exactly where the sender's first secret is
 * in the receiver's keyring, and a keyring that changes is used for the next connection.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually, heartbeat, receiveN, startNode, type TestNode } from "./harness.js"

const old = "old-cluster-secret-0123456789"
const next = "new-cluster-secret-9876543210"
const rings = {
  "old": [old],
  "old,new": [old, next],
  "new,old": [next, old],
  "new": [next]
} as const
type Ring = keyof typeof rings

/** A refused handshake, as the sender sees it: its attempts fail with 401. */
const refusedBy = (sender: TestNode, receiver: number) =>
  eventually(
    `node ${sender.id}'s connection to node ${receiver} refused`,
    Effect.map(sender.peers.stats, (all) => all.some((p) => p.id === receiver && p.failuresTotal > 0 && (p.lastError ?? "").includes("401")))
  )

describe("PeerTransport with keyrings", () => {
  // Every ordered pair of the rotation's keyrings.
  for (const from of Object.keys(rings) as Array<Ring>) {
    for (const to of Object.keys(rings) as Array<Ring>) {
      const connects = (rings[to] as ReadonlyArray<string>).includes(rings[from][0])
      it.scopedLive(`${from} → ${to}: ${connects ? "connects" : "refused"}`, () =>
        Effect.gen(function* () {
          const a = yield* startNode(1, { clusterSecret: () => rings[from], backoffMaxMs: 200 })
          const b = yield* startNode(2, { clusterSecret: () => rings[to] })
          yield* a.peers.set(2, b.address)
          yield* a.transport.send([heartbeat(1, 2, 5)])
          if (connects) expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 5)])
          else yield* refusedBy(a, 2)
        })
      )
    }
  }

  it.scopedLive("a keyring that changes is used for the next connection, without a restart", () =>
    Effect.gen(function* () {
      let receiver: ReadonlyArray<string> = [old]
      const a = yield* startNode(1, { clusterSecret: () => [next, old], backoffMaxMs: 200 })
      const b = yield* startNode(2, { clusterSecret: () => receiver })
      yield* a.peers.set(2, b.address)
      yield* a.transport.send([heartbeat(1, 2, 6)])
      yield* refusedBy(a, 2)
      // The receiver's file gains the new secret: the sender's next attempt is accepted.
      receiver = [old, next]
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 6)])
    })
  )

  it.scopedLive("a secret removed from the keyring closes the connections made with it, both ways; the next ones use the secret in use", () =>
    Effect.gen(function* () {
      let one: ReadonlyArray<string> = [old, next]
      let two: ReadonlyArray<string> = [old, next]
      const a = yield* startNode(1, { clusterSecret: () => one, backoffMaxMs: 100 })
      const b = yield* startNode(2, { clusterSecret: () => two, backoffMaxMs: 100 })
      yield* a.peers.set(2, b.address)
      yield* b.peers.set(1, a.address)
      // Both connections made with the old secret (the first of both keyrings).
      yield* a.transport.send([heartbeat(1, 2, 7)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 7)])
      yield* b.transport.send([heartbeat(2, 1, 7)])
      expect(yield* receiveN(a.transport, 1)).toEqual([heartbeat(2, 1, 7)])
      const failures = (node: TestNode) => Effect.map(node.peers.stats, (all) => all.find((p) => p.failuresTotal >= 0)?.failuresTotal ?? 0)
      expect([yield* failures(a), yield* failures(b)]).toEqual([0, 0])
      // The rotation's step 2: new first; old is still held.
      one = [next, old]
      two = [next, old]
      // Step 3 on node 2 only: it closes the connection node 1 made with the old secret, and drops its own.
      two = [next]
      yield* eventually("node 2 to close node 1's connection made with the old secret", Effect.map(failures(a), (n) => n > 0))
      yield* eventually("node 2 to drop its own connection made with the old secret", Effect.map(failures(b), (n) => n > 0))
      // Both reconnect with the secret in use.
      yield* a.transport.send([heartbeat(1, 2, 8)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 8)])
      yield* b.transport.send([heartbeat(2, 1, 8)])
      expect(yield* receiveN(a.transport, 1)).toEqual([heartbeat(2, 1, 8)])
    })
  )
})
