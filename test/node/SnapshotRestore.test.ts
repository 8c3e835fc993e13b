import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import * as SnapshotFile from "../../src/cluster/SnapshotFile.js"
import * as C from "../../src/domain/Command.js"
import { CommandEnvelope } from "../../src/domain/Command.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { Resources } from "../../src/domain/Resources.js"
import { VmName } from "../../src/domain/VmName.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { restore } from "../../src/node/SnapshotRestore.js"
import * as NodeMeta from "../../src/storage/NodeMeta.js"
import { layerFile, RaftStorage } from "../../src/storage/RaftStorage.js"
import { tempDir } from "../support/TempDir.js"

const oldCluster = "0ld0ld00-0000-4000-8000-000000000001"

/** A snapshot file of a three-member cluster with two nodes registered and `vms` VMs. */
const writeSnapshot = (file: string, vms = 3): void => {
  const state = new ClusterState()
  state.clusterId = oldCluster
  let index = 10
  state.appliedIndex = index
  for (const id of [1, 2, 3]) state.members.set(id, `127.0.0.1:${7000 + id}`)
  const run = (command: C.Command) => state.apply(++index, new CommandEnvelope({ command, proposedAt: 5_000 + index }))
  for (const id of [1, 2]) {
    run(
      new C.RegisterNode({
        info: new NodeInfo({
          id: NodeId.make(id),
          address: HostPort.make(`127.0.0.1:${7000 + id}`),
          capacity: new Resources({ vcpus: 8, memoryMiB: 8192 }),
          labels: { zone: `z${id}` },
          state: "active",
          health: "up"
        })
      })
    )
  }
  for (let i = 0; i < vms; i++) {
    run(new C.CreateVm({ spec: new VmSpec({ name: VmName.make(`vm-${i}`), source: new RunnerConfig({ path: `/nix/store/r${i}` }) }) }))
  }
  const header = new SnapshotFile.SnapshotHeader({
    magic: SnapshotFile.SnapshotMagic,
    format: SnapshotFile.SnapshotFormat,
    clusterId: oldCluster,
    index: state.appliedIndex,
    term: 7,
    node: NodeId.make(2),
    createdAt: "2026-12-06T06:00:00.000Z"
  })
  fs.writeFileSync(file, [...SnapshotFile.encode(header, state.snapshotView())].join(""))
}

/** What a node starting on `dataDir` would find. */
const inspect = (dataDir: string, id: number) =>
  Effect.gen(function* () {
    const storage = yield* RaftStorage
    const init = yield* storage.initialState
    const snapshot = Option.getOrThrow(yield* storage.snapshot)
    return {
      init,
      state: ClusterState.restore(snapshot.data),
      meta: { node: yield* NodeMeta.get("node_id"), cluster: yield* NodeMeta.get("cluster_id"), incarnation: yield* NodeMeta.get("incarnation") }
    }
  }).pipe(Effect.provide(layerFile({ filename: path.join(dataDir, "blixard.db"), node: NodeId.make(id) })))

describe("cluster snapshot restore", () => {
  it.effect("seeds a founding node's data directory: the snapshot's state, a new cluster id, this node its only member", () =>
    Effect.gen(function* () {
      const dir = tempDir("restore")
      const file = path.join(dir, "backup.snap")
      writeSnapshot(file)
      const dataDir = path.join(dir, "new", "node-4")
      const restored = yield* restore({ file, dataDir, id: NodeId.make(4), bind: HostPort.make("127.0.0.1:7104") })
      expect(restored.clusterId).not.toBe(oldCluster)
      expect(restored.vms).toBe(3)
      expect(restored.nodes).toBe(2)

      const found = yield* inspect(dataDir, 4)
      expect(found.init.hardState).toEqual({ term: 7, vote: 0, commit: restored.header.index })
      expect(Option.getOrThrow(found.init.snapshot)).toEqual({ index: restored.header.index, term: 7, confState: { voters: [4], learners: [] } })
      expect(found.meta).toEqual({ node: "4", cluster: restored.clusterId, incarnation: expect.any(String) })
      expect(found.state.clusterId).toBe(restored.clusterId)
      expect([...found.state.members]).toEqual([[4, "127.0.0.1:7104"]])
      expect([...found.state.vms.keys()].sort()).toEqual(["vm-0", "vm-1", "vm-2"])
      expect([...found.state.nodes.keys()].sort()).toEqual([1, 2])
      // Nothing beside the data directory is left behind.
      expect(fs.readdirSync(path.join(dir, "new"))).toEqual(["node-4"])
    })
  )

  it.effect("takes the node's address from the snapshot when --bind is not given, and needs it otherwise", () =>
    Effect.gen(function* () {
      const dir = tempDir("restore")
      const file = path.join(dir, "backup.snap")
      writeSnapshot(file)
      const restored = yield* restore({ file, dataDir: path.join(dir, "node-2"), id: NodeId.make(2) })
      expect(restored.address).toBe("127.0.0.1:7002")
      const unknown = yield* Effect.either(restore({ file, dataDir: path.join(dir, "node-9"), id: NodeId.make(9) }))
      expect(Either.isLeft(unknown) && unknown.left.code).toBe("BLX_INVALID_ARGUMENT")
      expect(fs.existsSync(path.join(dir, "node-9"))).toBe(false)
    })
  )

  it.effect("refuses a damaged or truncated file and writes nothing", () =>
    Effect.gen(function* () {
      const dir = tempDir("restore")
      const file = path.join(dir, "backup.snap")
      writeSnapshot(file)
      const bytes = fs.readFileSync(file)
      const cases: Record<string, Buffer> = {
        truncated: bytes.subarray(0, Math.floor(bytes.length * 0.7)),
        flipped: Buffer.from(bytes.map((b, i) => (i === Math.floor(bytes.length / 2) ? b ^ 1 : b)))
      }
      for (const [what, content] of Object.entries(cases)) {
        fs.writeFileSync(file, content)
        const dataDir = path.join(dir, `node-${what}`)
        const result = yield* Effect.either(restore({ file, dataDir, id: NodeId.make(1) }))
        if (Either.isRight(result)) throw new Error(`${what}: restored`)
        expect(result.left.code, what).toBe("BLX_SNAPSHOT_INVALID")
        expect(result.left.message).toContain("truncated or damaged")
        expect(fs.existsSync(dataDir), what).toBe(false)
      }
      expect(fs.readdirSync(dir).sort()).toEqual(["backup.snap"])
    })
  )

  it.effect("refuses a data directory that holds anything, and leaves it as it was", () =>
    Effect.gen(function* () {
      const dir = tempDir("restore")
      const file = path.join(dir, "backup.snap")
      writeSnapshot(file)
      const dataDir = path.join(dir, "node-1")
      fs.mkdirSync(dataDir)
      fs.writeFileSync(path.join(dataDir, "api-token"), "secret\n")
      const result = yield* Effect.either(restore({ file, dataDir, id: NodeId.make(1) }))
      expect(Either.isLeft(result) && result.left.code).toBe("BLX_WRONG_DATA_DIR")
      expect(fs.readdirSync(dataDir)).toEqual(["api-token"])
      // An empty directory (made by the operator, say with the right owner) is fine.
      fs.rmSync(path.join(dataDir, "api-token"))
      yield* restore({ file, dataDir, id: NodeId.make(1) })
      expect(fs.readdirSync(dataDir)).toContain("blixard.db")
    })
  )
})
