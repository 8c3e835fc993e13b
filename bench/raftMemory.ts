/**
 * `raftMemory`: committed proposals per second of a three-node in-memory cluster: the real RaftNode
 * services over the in-memory network and storage, the KV state machine, live clock — Raft and
 * Effect alone, with no disk and no HTTP. 1 client (sequential proposals) and 64 concurrent clients.
 *
 * `raftRetained`: the live heap three nodes in one process hold once each has taken a state
 * snapshot, over SQLite files (as the daemon stores them): what the Raft side keeps in memory
 * beside the state machines (which hold the state once each). Measured after full collections.
 *
 * `raftLogTail`: the same three nodes, but the writes overwrite 1,000 keys (a small state, as VM
 * status reports are) and no snapshot is due: the live heap beyond the states is what each node
 * holds of its log since the last snapshot (`BENCH_LOG_WRITES` writes of 2,000 B, default 12,000).
 */
import { Context, Duration, Effect, Exit, Layer, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { MemoryNetwork } from "../src/net/Transport.js"
import * as RaftNode from "../src/raft/RaftNode.js"
import { KvStore } from "../src/sim/KvStore.js"
import { layerFile, layerMemory } from "../src/storage/RaftStorage.js"

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

const MB = (n: number) => Number((n / 2 ** 20).toFixed(1))

/** A full collection (twice: weak references and finalizers), then V8's live heap. */
const liveHeap = (): number => {
  v8.setFlagsFromString("--expose-gc")
  const gc = vm.runInNewContext("gc") as () => void
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

export const benchRaftRetained = (writes = 4_200, valueBytes = 2_000, logTail = false) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-raft-retained-"))
      const net = new MemoryNetwork()
      const nodes: Array<RaftNode.RaftNodeShape> = []
      const kvs: Array<KvStore> = []
      const scope = yield* Scope.make()
      const heapBefore = liveHeap()
      for (const id of [1, 2, 3]) {
        const kv = new KvStore()
        kvs.push(kv)
        const config = { id, tickMs: 100, requestTimeoutMs: 10_000, bootstrap: [1, 2, 3], snapshotEvery: logTail ? 1_000_000 : 2_000, snapshotRatio: 0, snapshotRetain: 100 }
        const layer = RaftNode.layer(config).pipe(
          Layer.provide(Layer.mergeAll(layerFile({ filename: path.join(dir, `node-${id}.db`) }), net.layer(id), kv.layer()))
        )
        nodes.push(Context.get(yield* Layer.buildWithScope(layer, scope), RaftNode.RaftNode))
      }
      const leader = Effect.gen(function* () {
        for (;;) {
          for (const n of nodes) if ((yield* n.role) === "leader") return n
          yield* Effect.sleep(Duration.millis(10))
        }
      })
      let key = 0
      const value = "v".repeat(valueBytes)
      yield* Effect.forEach(
        Array.from({ length: 64 }),
        () =>
          Effect.gen(function* () {
            while (key < writes) {
              const command = JSON.stringify({ op: "put", key: `k${logTail ? ++key % 1_000 : ++key}`, value })
              // A loaded machine may see an election: the write goes to the next leader.
              yield* Effect.retry(Effect.flatMap(leader, (n) => n.propose(command)), { times: 20 })
            }
          }),
        { concurrency: "unbounded", discard: true }
      )
      // Every node has taken its snapshot of (nearly) all the writes and compacted behind it; or, for
      // the log's tail, applied them all.
      const deadline = performance.now() + 120_000
      for (;;) {
        if (logTail) {
          const applied = yield* Effect.forEach(nodes, (n) => Effect.map(n.status, (s) => s.applied))
          if (applied.every((a) => a >= writes)) break
          if (performance.now() > deadline) return yield* Effect.die(new Error(`writes not applied within 120 s: ${applied.join(", ")}`))
          yield* Effect.sleep(Duration.millis(100))
          continue
        }
        const firsts = yield* Effect.forEach(nodes, (n) => Effect.map(n.status, (s) => s.firstIndex))
        if (firsts.every((f) => f >= writes - 2_000)) break
        if (performance.now() > deadline) return yield* Effect.die(new Error(`snapshots not taken within 120 s: first indexes ${firsts.join(", ")}`))
        yield* Effect.sleep(Duration.millis(100))
      }
      const stateBytes = kvs[0]!.snapshot().length
      const heapAfter = liveHeap()
      yield* Scope.close(scope, Exit.void)
      fs.rmSync(dir, { recursive: true, force: true })
      return [
        {
          name: logTail
            ? `3 nodes over SQLite files, ${writes} writes of ${valueBytes} B to 1,000 keys, no snapshot since`
            : `3 nodes over SQLite files, ${writes} writes of ${valueBytes} B, snapshot every 2,000 entries`,
          stateMb: MB(stateBytes),
          liveHeapGrowthMb: MB(heapAfter - heapBefore),
          perNodeBeyondStateMb: MB((heapAfter - heapBefore) / 3 - stateBytes),
          loadAverage: os.loadavg()
        }
      ]
    })
  )
