/**
 * The CLI's event follower against real HTTP servers: when a stream goes silent or ends it
 * reconnects to the next address with Last-Event-ID, and hands on each batch once, in order.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Stream } from "effect"
import { ApiClient } from "../../src/api/Client.js"
import { follow, type FollowMessage, type FollowTarget } from "../../src/cli/EventFollow.js"
import { VmName } from "../../src/domain/VmName.js"
import { EventLog } from "../../src/events/EventLog.js"
import { serve } from "../api/harness.js"
import { until } from "../support/SseClient.js"

/** A follow target over the API client, as the CLI makes one. */
const targetOf = (addr: string, token?: string): FollowTarget => ({
  addr,
  open: (lastEventId) =>
    Stream.unwrap(Effect.map(Effect.provide(ApiClient, ApiClient.layerFetch({ addr, ...(token !== undefined ? { token } : {}) })), (client) => client.events(lastEventId)))
})

const created = (name: string) => [{ type: "vm.created" as const, vm: VmName.make(name), revision: 1 }]

describe("following the events through dropped connections", () => {
  it.scopedLive("a silent stream is dropped; the next node is asked for what came after the last index, and nothing is repeated", () =>
    Effect.gen(function* () {
      // Node A stalls after index 3 (a dead leader whose socket stays open); node B has more.
      const a = new EventLog(100)
      const b = new EventLog(100)
      for (let i = 1; i <= 3; i++) a.publish(i, 1, i, created(`vm-${i}`))
      for (let i = 1; i <= 5; i++) b.publish(i, 1, i, created(`vm-${i}`))
      const nodeA = yield* serve({ events: { log: a, heartbeatMs: 60_000 } })
      const nodeB = yield* serve({ events: { log: b, heartbeatMs: 60_000 } })
      const received: Array<FollowMessage> = []
      const reconnects: Array<string> = []
      const fiber = yield* Effect.fork(
        follow({
          targets: [nodeA, nodeB].map((n) => targetOf(n.addr)),
          since: 0,
          idleMs: 500,
          onMessage: (message) => Effect.sync(() => void received.push(message)),
          onReconnect: (addr, after) => Effect.sync(() => void reconnects.push(`${addr} after ${after}`))
        })
      )
      yield* Effect.promise(() => until("batches 1 to 5", () => received.length >= 5))
      b.publish(6, 1, 6, created("vm-6"))
      yield* Effect.promise(() => until("the live batch", () => received.length >= 6))
      yield* Effect.sleep(Duration.millis(100))
      yield* Fiber.interrupt(fiber)
      expect(received.map((m) => (m._tag === "Batch" ? m.batch.index : -1))).toEqual([1, 2, 3, 4, 5, 6])
      expect(reconnects[0]).toBe(`${nodeB.addr} after 3`)
    })
  )

  it.scopedLive("a node that refuses the request (a bad token) on every address ends the follow with its error", () =>
    Effect.gen(function* () {
      const node = yield* serve({ auth: { adminTokens: ["right"] }, events: { log: new EventLog(10) } })
      const error = yield* Effect.flip(
        follow({ targets: [targetOf(node.addr, "wrong")], since: undefined, onMessage: () => Effect.void })
      )
      expect(error.code).toBe("BLX_UNAUTHORIZED")
    })
  )
})
