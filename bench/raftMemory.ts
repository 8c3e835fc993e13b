/**
 * Committed proposals per second of a three-node in-memory cluster: the real RaftNode services over
 * the in-memory network and storage, the KV state machine, live clock — Raft and Effect alone, with
 * no disk and no HTTP. 1 client (sequential proposals) and 64 concurrent clients.
 */
import { Context, Duration, Effect, Exit, Layer, Scope } from "effect"
import { MemoryNetwork } from "../src/net/Transport.js"
import * as RaftNode from "../src/raft/RaftNode.js"
import { KvStore } from "../src/sim/KvStore.js"
import { layerMemory } from "../src/storage/RaftStorage.js"

export const benchRaftMemory = (seconds = 3) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const net = new MemoryNetwork()
      const nodes: Array<RaftNode.RaftNodeShape> = []
      const scope = yield* Scope.make()
      for (const id of [1, 2, 3]) {
        const layer = RaftNode.layer({ id, tickMs: 10, requestTimeoutMs: 5_000, bootstrap: [1, 2, 3] }).pipe(
          Layer.provide(Layer.mergeAll(layerMemory(), net.layer(id), new KvStore().layer()))
        )
        nodes.push(Context.get(yield* Layer.buildWithScope(layer, scope), RaftNode.RaftNode))
      }
      const leader = yield* Effect.gen(function* () {
        for (;;) {
          for (const n of nodes) if ((yield* n.role) === "leader") return n
          yield* Effect.sleep(Duration.millis(10))
        }
      })
      const results: Array<Record<string, unknown>> = []
      let key = 0
      for (const clients of [1, 64]) {
        const latencies: Array<number> = []
        const end = performance.now() + seconds * 1000
        yield* Effect.forEach(
          Array.from({ length: clients }),
          () =>
            Effect.gen(function* () {
              while (performance.now() < end) {
                const t0 = performance.now()
                yield* leader.propose(JSON.stringify({ op: "put", key: `k${++key % 100}`, value: String(key) }))
                latencies.push(performance.now() - t0)
              }
            }),
          { concurrency: "unbounded", discard: true }
        )
        latencies.sort((a, b) => a - b)
        results.push({
          name: `3-node in-memory cluster, ${clients} client(s)`,
          proposalsPerSecond: Math.round(latencies.length / seconds),
          p50Ms: Number(latencies[Math.floor(latencies.length / 2)]!.toFixed(3)),
          p99Ms: Number(latencies[Math.floor(latencies.length * 0.99)]!.toFixed(3))
        })
      }
      yield* Scope.close(scope, Exit.void)
      return results
    })
  )
