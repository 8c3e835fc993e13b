/**
 * What one Raft snapshot of the cluster state costs, by state size: the state's JSON
 * (`ClusterState.snapshot`), and storing it with full durability (`RaftStorage.saveSnapshot`: its
 * checksum, the SQLite write and the fsync). The sum is what the Raft loop waited for when it took
 * snapshots in its own path.
 *
 * Then as the driver takes one now: the loop only captures the state (`snapshotView`); a side fiber
 * serialises it a piece at a time, yielding to the event loop between pieces (a 0 ms timer), and
 * stores it. `captureMs` is what the Raft loop waits for; `longestStallMs` is the longest the event
 * loop could not run anything meanwhile (ticks, heartbeats, peer messages), from
 * `monitorEventLoopDelay`. VMs are creates of the cluster benchmark's spec, on three registered
 * nodes (most stay pending, each with its reason).
 */
import { Effect, Schema } from "effect"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { ClusterState } from "../src/cluster/ClusterState.js"
import { CommandEnvelope } from "../src/domain/Command.js"
import { layerFile, RaftStorage } from "../src/storage/RaftStorage.js"
import { inTempDir } from "./storage.js"

const decode = Schema.decodeUnknownSync(CommandEnvelope)

const stateWith = (vms: number): ClusterState => {
  const state = new ClusterState()
  let index = 1
  for (const id of [1, 2, 3]) {
    const info = { id, address: `127.0.0.1:${7000 + id}`, capacity: { vcpus: 64, memoryMiB: 65536 }, labels: {}, state: "active", health: "up" }
    state.apply(index++, decode({ proposedAt: 0, command: { _tag: "RegisterNode", info } }))
  }
  for (let k = 0; k < vms; k++) {
    const spec = { name: `b${k}`, source: { _tag: "Runner", path: "/nix/store/bench-runner" }, vcpus: 1, memoryMiB: 16, labels: {}, constraints: [], restartPolicy: "never" }
    state.apply(index++, decode({ proposedAt: 0, command: { _tag: "CreateVm", spec } }))
  }
  return state
}

const median = (xs: Array<number>) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

export const benchSnapshot = (sizes: ReadonlyArray<number> = [10_000, 50_000, 100_000], runs = 3) =>
  Effect.runPromise(
    Effect.forEach(sizes, (vms) =>
      inTempDir((filename) =>
        Effect.gen(function* () {
          const state = stateWith(vms)
          const storage = yield* RaftStorage
          const json: Array<number> = []
          const store: Array<number> = []
          const capture: Array<number> = []
          const side: Array<number> = []
          const stall: Array<number> = []
          let bytes = 0
          let index = vms + 3
          const metadata = () => ({ index: ++index, term: 1, confState: { voters: [1, 2, 3], learners: [] } })
          for (let run = 1; run <= runs; run++) {
            const t0 = performance.now()
            const data = state.snapshot()
            const t1 = performance.now()
            yield* storage.saveSnapshot({ metadata: metadata(), data })
            json.push(t1 - t0)
            store.push(performance.now() - t1)
            bytes = Buffer.byteLength(data)

            // The driver's way (RaftNode's `compact` and `writeSnapshot`).
            const delay = monitorEventLoopDelay({ resolution: 5 })
            delay.enable()
            const t2 = performance.now()
            const pieces = state.snapshotView()
            const t3 = performance.now()
            const parts: Array<string> = []
            for (const piece of pieces) {
              parts.push(piece)
              yield* Effect.sleep(0)
            }
            yield* storage.saveSnapshot({ metadata: metadata(), data: parts.join("") })
            side.push(performance.now() - t3)
            delay.disable()
            capture.push(t3 - t2)
            stall.push(delay.max / 1e6)
          }
          return {
            name: `one snapshot of ${vms} VMs (median of ${runs})`,
            megabytes: Number((bytes / 2 ** 20).toFixed(1)),
            jsonMs: Math.round(median(json)),
            storeMs: Math.round(median(store)),
            captureMs: Math.round(median(capture)),
            sideMs: Math.round(median(side)),
            longestStallMs: Math.round(median(stall))
          }
        }).pipe(Effect.provide(layerFile({ filename })), Effect.scoped)
      )
    )
  )
