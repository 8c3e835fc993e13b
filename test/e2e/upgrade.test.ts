/**
 * A node started on a release older than its cluster's log version (a downgrade) stops at once,
 * naming its data directory and both versions, instead of applying the log with older semantics
 * (`src/cluster/ClusterVersion.ts`). The data directory is seeded from a snapshot file whose state
 * records a log version one above this release's, as a newer release would write it.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import { LogVersion } from "../../src/cluster/ClusterVersion.js"
import * as SnapshotFile from "../../src/cluster/SnapshotFile.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { BlixardNode, bin, clustersPerTest, freePort, root, waitFor } from "./harness.js"

const local = (args: ReadonlyArray<string>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) =>
    execFile(process.execPath, [bin, ...args], { cwd: root, env: { PATH: process.env.PATH ?? "" } }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
    )
  )

const newCluster = clustersPerTest()

describe("upgrades: a release older than the cluster's log", () => {
  it("stops at start-up with BLX_RELEASE_TOO_OLD naming its data directory and both versions", async () => {
    const c = newCluster()
    const port = await freePort()
    const newer = LogVersion + 1
    const state = new ClusterState()
    state.clusterVersion = newer
    state.clusterId = "00000000-0000-4000-8000-000000000001"
    state.appliedIndex = 7
    state.members.set(1, `127.0.0.1:${port}`)
    const header = new SnapshotFile.SnapshotHeader({
      magic: SnapshotFile.SnapshotMagic,
      format: SnapshotFile.SnapshotFormat,
      clusterId: state.clusterId,
      index: 7,
      term: 2,
      node: NodeId.make(1),
      createdAt: new Date().toISOString()
    })
    const file = path.join(c.dir, "newer.snap")
    fs.writeFileSync(file, [...SnapshotFile.encode(header, state.snapshotView())].join(""))
    const dataDir = path.join(c.dir, "node-1")
    const restored = await local(["cluster", "snapshot", "restore", file, "--data-dir", dataDir, "--id", "1", "--bind", `127.0.0.1:${port}`])
    expect(restored.stderr).toBe("")

    const node = new BlixardNode(1, port, dataDir, c.secretFile, [])
    c.nodes.push(node)
    node.start()
    await waitFor(`node 1 to stop (it is ${node.state})`, async () => (node.running ? undefined : true), 60_000)
    expect(node.child?.exitCode).toBe(1)
    expect(node.output).toMatch(
      new RegExp(`BLX_RELEASE_TOO_OLD: node 1 \\(data directory ${path.resolve(dataDir).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\) runs a release of log version ${LogVersion}, but the cluster's log is at version ${newer}: .*Upgrade the node's blixard binary`)
    )
  })
})
