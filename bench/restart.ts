/**
 * `restart`: where a member's restart goes at scale, without the cluster around it. One node (a
 * cluster of one) over a SQLite file with the cluster state machine and the default snapshot policy
 * (as `leaderState` builds it): 100 hosts, `BENCH_VMS` VM creates (default 100,000), then
 * `BENCH_REPORT_ROUNDS` (default 1) `running` reports for each VM, as agents send them (up to 256 to an entry; `BENCH_SNAPSHOT_RATIO`: the
 * snapshot policy's ratio, default the node's). Its Raft node is then closed and
 * a new one built over the same file and a fresh state machine: how long recovery from the file takes
 * (building the node: the storage verified, snapshot and log read, the state restored), then until
 * the stored log's committed entries are applied again, then until it serves a linearizable read
 * (its own election first: it is alone). The node's own info lines (`raft/Recovery.ts`) print the
 * parts of recovery. What `scale`'s follower restart adds to this is the process start, the API's
 * listening and the catch-up from its leader.
 */
import { Context, Duration, Effect, Exit, Layer, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ClusterStateHolder } from "../src/cluster/ClusterStateMachine.js"
import { MemoryNetwork } from "../src/net/Transport.js"
import * as RaftNode from "../src/raft/RaftNode.js"
import { layerFile } from "../src/storage/RaftStorage.js"
import { stateWorkload } from "./raftMemory.js"

export const benchRestart = (vms = 100_000, reportRounds = 1, snapshotRatio?: number, hosts = 100) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-restart-"))
      const filename = path.join(dir, "node-1.db")
      const start = (holder: ClusterStateHolder, scope: Scope.Scope, bootstrap: boolean) =>
        Effect.map(
          Layer.buildWithScope(
            RaftNode.layer({ id: 1, tickMs: 100, requestTimeoutMs: 60_000, snapshotRatio, ...(bootstrap ? { bootstrap: [1] } : {}) }).pipe(
              Layer.provide(Layer.mergeAll(layerFile({ filename }), new MemoryNetwork().layer(1), holder.layer()))
            ),
            scope
          ),
          (context) => Context.get(context, RaftNode.RaftNode)
        )
      const leads = (node: RaftNode.RaftNodeShape) =>
        Effect.gen(function* () {
          while ((yield* node.role) !== "leader") yield* Effect.sleep(Duration.millis(5))
        })

      const scope = yield* Scope.make()
      const holder = new ClusterStateHolder()
      const node = yield* start(holder, scope, true)
      yield* leads(node)
      const workload = stateWorkload(node, holder)
      yield* workload.registerHosts(hosts)
      const cpu = () => {
        const u = process.cpuUsage()
        return (u.user + u.system) / 1000
      }
      const writesStarted = performance.now()
      const writesCpu = cpu()
      yield* workload.createVms(vms)
      for (let round = 0; round < reportRounds; round++) yield* workload.reportRunning(vms, () => 1000 + round)
      const writesMs = performance.now() - writesStarted
      const writesCpuMs = cpu() - writesCpu
      const before = yield* node.status
      const stateChars = holder.current.snapshot().length
      yield* Scope.close(scope, Exit.void)

      // The same file, a new node and state machine: as a process started again.
      const scope2 = yield* Scope.make()
      const holder2 = new ClusterStateHolder()
      const restarted = performance.now()
      const restartCpu = cpu()
      const node2 = yield* start(holder2, scope2, false)
      const builtMs = performance.now() - restarted
      const builtCpuMs = cpu() - restartCpu
      const appliedFrom = holder2.current.appliedIndex
      while (holder2.current.appliedIndex < before.commit) yield* Effect.sleep(Duration.millis(1))
      const appliedAgainMs = performance.now() - restarted
      const appliedAgainCpuMs = cpu() - restartCpu - builtCpuMs
      yield* leads(node2)
      yield* node2.readIndex
      const readMs = performance.now() - restarted
      yield* Scope.close(scope2, Exit.void)
      fs.rmSync(dir, { recursive: true, force: true })
      return [
        {
          name: `one node, ${vms} VMs created and reported running ${reportRounds}×, restarted over its file`,
          snapshotRatio: snapshotRatio ?? "default",
          writesMs: Math.round(writesMs),
          writesCpuMs: Math.round(writesCpuMs),
          stateMb: Number((stateChars / 1e6).toFixed(1)),
          logAtStop: { first: before.firstIndex, last: before.lastIndex, commit: before.commit, applied: before.applied },
          recoveredMs: Math.round(builtMs),
          recoveredCpuMs: Math.round(builtCpuMs),
          appliedAgain: before.commit - appliedFrom,
          appliedAgainMs: Math.round(appliedAgainMs),
          appliedAgainCpuMs: Math.round(appliedAgainCpuMs),
          firstReadMs: Math.round(readMs),
          loadAverage: os.loadavg()
        }
      ]
    })
  )
