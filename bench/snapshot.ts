/**
 * What one Raft snapshot of the cluster state costs the event loop, by state size: the state's
 * JSON (`ClusterState.snapshot`), and storing it with full durability (`RaftStorage.saveSnapshot`:
 * its checksum, the SQLite write and the fsync). A node takes one at a time, in one go, between two
 * Readies: the sum is how long it stops answering. VMs are creates of the cluster benchmark's
 * spec, on three registered nodes (most stay pending, each with its reason).
 */
import { Effect, Schema } from "effect"
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
          let bytes = 0
          for (let run = 1; run <= runs; run++) {
            const t0 = performance.now()
            const data = state.snapshot()
            const t1 = performance.now()
            yield* storage.saveSnapshot({ metadata: { index: vms + 3, term: run, confState: { voters: [1, 2, 3], learners: [] } }, data })
            json.push(t1 - t0)
            store.push(performance.now() - t1)
            bytes = Buffer.byteLength(data)
          }
          return {
            name: `one snapshot of ${vms} VMs (median of ${runs})`,
            megabytes: Number((bytes / 2 ** 20).toFixed(1)),
            jsonMs: Math.round(median(json)),
            storeMs: Math.round(median(store))
          }
        }).pipe(Effect.provide(layerFile({ filename })), Effect.scoped)
      )
    )
  )
