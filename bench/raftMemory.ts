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
 *
 * `leaderState`: one node (a cluster of one) over a SQLite file with the cluster state machine and
 * the default snapshot policy, as a daemon runs them without its API: 100 hosts registered, then
 * `BENCH_VMS` VM creates (default 100,000) and one `running` report for each, 64 proposals in
 * flight, as `scale` sends them. Then the process's RSS, and the live heap after full collections
 * beside the state's own (its snapshot size): what the Raft side holds at that size.
 * `BENCH_HEAP_FILE=F` writes a heap snapshot to F at the end, with the node still running.
 */
import { Context, Duration, Effect, Exit, Layer, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { ClusterStateHolder } from "../src/cluster/ClusterStateMachine.js"
import { MemoryNetwork } from "../src/net/Transport.js"
import * as RaftNode from "../src/raft/RaftNode.js"
import { KvStore } from "../src/sim/KvStore.js"
import { breakdown } from "./memory.js"
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

/**
 * The leader-state workload `leaderState` and `restart` drive through one Raft node: `hosts` hosts
 * registered, then VMs created and reported running, 64 proposals in flight.
 */
export const stateWorkload = (node: RaftNode.RaftNodeShape, holder: ClusterStateHolder) => {
  let request = 0
  const propose = (command: unknown) => node.propose(JSON.stringify({ proposedAt: Date.now(), requestId: `r${++request}`, command }))
  const inFlight = (count: number, f: (k: number) => Effect.Effect<unknown, unknown>) => {
    let next = 0
    return Effect.forEach(
      Array.from({ length: 64 }),
      () =>
        Effect.gen(function* () {
          while (next < count) yield* f(++next)
        }),
      { concurrency: "unbounded", discard: true }
    )
  }
  return {
    registerHosts: (hosts: number) =>
      Effect.gen(function* () {
        for (let k = 1; k <= hosts; k++) {
          const id = 100 + k
          const info = { id, address: `127.0.0.1:${20000 + id}`, capacity: { vcpus: 1024, memoryMiB: 1024 * 16 }, labels: { rack: `r${id % 10}` }, state: "active", health: "up" }
          yield* propose({ _tag: "RegisterNode", info })
        }
      }),
    createVms: (vms: number) =>
      inFlight(vms, (k) =>
        propose({ _tag: "CreateVm", spec: { name: `s${k}`, source: { _tag: "Runner", path: "/nix/store/bench-runner" }, vcpus: 1, memoryMiB: 16, labels: {}, constraints: [], restartPolicy: "never" }, desired: "running" })
      ),
    /** Each VM reported running by the node it was placed on, with the pid `pid(placed)`: as agents report, up to 256 to an entry. */
    reportRunning: (vms: number, pid: (placed: number) => number) =>
      Effect.suspend(() => {
        const byNode = new Map<number, Array<string>>()
        for (let k = 1; k <= vms; k++) {
          const placed = holder.current.vms.get(`s${k}`)?.node ?? 101
          const names = byNode.get(placed) ?? []
          names.push(`s${k}`)
          byNode.set(placed, names)
        }
        const batches = [...byNode].flatMap(([node, names]) =>
          Array.from({ length: Math.ceil(names.length / 256) }, (_, i) => ({ node, names: names.slice(i * 256, (i + 1) * 256) }))
        )
        return inFlight(batches.length, (k) => {
          const { node, names } = batches[k - 1]!
          const status = { phase: "running", since: Date.now(), pid: pid(node), restarts: 0 }
          return propose({ _tag: "ReportVmStatuses", node, reports: names.map((name) => ({ name, status })) })
        })
      })
  }
}

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

export const benchLeaderState = (vms = 100_000, hosts = 100) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-leader-state-"))
      const scope = yield* Scope.make()
      const heapBefore = liveHeap()
      const rssBefore = process.memoryUsage().rss
      const holder = new ClusterStateHolder()
      const layer = RaftNode.layer({ id: 1, tickMs: 100, requestTimeoutMs: 30_000, bootstrap: [1] }).pipe(
        Layer.provide(Layer.mergeAll(layerFile({ filename: path.join(dir, "node-1.db") }), new MemoryNetwork().layer(1), holder.layer()))
      )
      const node = Context.get(yield* Layer.buildWithScope(layer, scope), RaftNode.RaftNode)
      while ((yield* node.role) !== "leader") yield* Effect.sleep(Duration.millis(10))
      const workload = stateWorkload(node, holder)
      yield* workload.registerHosts(hosts)
      const began = performance.now()
      yield* workload.createVms(vms)
      yield* workload.reportRunning(vms, (placed) => 1000 + placed)
      const writesMs = performance.now() - began
      const rss = process.memoryUsage().rss
      const status = yield* node.status
      const stateBytes = holder.current.snapshot().length
      const heapAfter = liveHeap()
      const usage = process.memoryUsage()
      const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, `${MB(s.space_size)}/${MB(s.space_used_size)}`]))
      const split = breakdown(process.pid)
      if (process.env.BENCH_HEAP_FILE !== undefined) v8.writeHeapSnapshot(process.env.BENCH_HEAP_FILE)
      yield* Scope.close(scope, Exit.void)
      fs.rmSync(dir, { recursive: true, force: true })
      return [
        {
          name: `one node, ${hosts} hosts, ${vms} VMs created and reported running`,
          writesPerSecond: Math.round((2 * vms) / (writesMs / 1000)),
          logSinceCompaction: status.lastIndex - status.firstIndex + 1,
          stateMb: MB(stateBytes),
          rssGrowthMb: MB(rss - rssBefore),
          rssGrowthAfterGcMb: MB(usage.rss - rssBefore),
          liveHeapGrowthMb: MB(heapAfter - heapBefore),
          afterGc: { heapTotalMb: MB(usage.heapTotal), externalMb: MB(usage.external), mallocMb: split?.heapMb, anonMb: split?.anonMb, fileMb: split?.fileMb, spaces },
          loadAverage: os.loadavg()
        }
      ]
    })
  )
