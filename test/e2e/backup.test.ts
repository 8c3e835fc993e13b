/**
 * Backup and restore with real processes: a three-node cluster's state saved through a follower,
 * the cluster destroyed (processes killed, data directories deleted), a new cluster seeded from the
 * file, and everything back; a damaged file is refused before anything is written.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { BlixardNode, bin, cli, cliJson, clustersPerTest, freePort, root, waitFor } from "./harness.js"
import { execFile } from "node:child_process"
import { LogVersion } from "../../src/cluster/ClusterVersion.js"

interface VmJson {
  readonly spec: { readonly name: string; readonly labels: Record<string, string>; readonly vcpus: number; readonly memoryMiB: number }
  readonly desired: string
  readonly createdAt: number
}
interface NodeJson {
  readonly id: number
  readonly labels: Record<string, string>
  readonly state: string
}
interface StatusJson {
  readonly clusterId?: string
  readonly leader?: number
  readonly members: ReadonlyArray<{ readonly id: number; readonly address: string }>
}

/** Runs the CLI without a node (restore works on files only). */
const local = (args: ReadonlyArray<string>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) =>
    execFile(process.execPath, [bin, ...args], { cwd: root, env: { PATH: process.env.PATH ?? "" } }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
    )
  )

/** What must survive a backup: each VM's spec, desired state and creation time; each node's labels and state. */
const vmsOf = async (addr: string) =>
  (await cliJson<Array<VmJson>>(addr, ["vm", "list", "--all"])).map((vm) => ({ spec: vm.spec, desired: vm.desired, createdAt: vm.createdAt }))
const nodesOf = async (addr: string) =>
  (await cliJson<Array<NodeJson>>(addr, ["node", "list", "--all"])).map((n) => ({ id: n.id, labels: n.labels, state: n.state }))

const newCluster = clustersPerTest()

describe("cluster snapshot save and restore", () => {
  it("saves a running cluster, which is destroyed; a new cluster restored from the file has every VM and node and takes writes", async () => {
    const c = newCluster()
    for (const id of [1, 2, 3]) {
      await c.add((node) => {
        node.args = ["--label", `zone=z${id}`]
      })
      if (id === 1) await waitFor("node 1 to found the cluster", async () => ((await cliJson<StatusJson>(c.node(1).addr, ["cluster", "status"])).leader === 1 ? true : undefined))
    }
    const leader = await c.converged([1, 2, 3])
    const follower = c.node([1, 2, 3].find((id) => id !== leader)!)
    for (const [name, labels] of [["web", ["--label", "tier=web", "--label", "team=a"]], ["db", ["--label", "tier=db"]], ["cache", []]] as const) {
      const created = await cli(follower.addr, ["vm", "create", "--name", name, "--runner", `/nix/store/fixture-${name}`, "--no-start", "--memory", "64", ...labels])
      expect(created.stderr).toBe("")
    }
    expect((await cli(follower.addr, ["node", "cordon", "3"])).code).toBe(0)
    // A replicated API token (the state keeps its hash): it still works in the restored cluster.
    const operator = await cliJson<{ token: string }>(follower.addr, ["token", "create", "--role", "operator", "--name", "ci"])
    const operatorFile = path.join(c.dir, "operator-token")
    fs.writeFileSync(operatorFile, operator.token, { mode: 0o600 })
    await waitFor("every node to be registered", async () => ((await nodesOf(follower.addr)).length === 3 ? true : undefined))
    const vmsBefore = await vmsOf(follower.addr)
    const nodesBefore = await nodesOf(follower.addr)
    const before = await cliJson<StatusJson>(follower.addr, ["cluster", "status"])
    expect(vmsBefore.map((vm) => vm.spec.name)).toEqual(["cache", "db", "web"])

    const file = path.join(c.dir, "backups", "cluster.snap")
    fs.mkdirSync(path.dirname(file))
    const saved = await cliJson<{ clusterId: string; index: number; vms: number; nodes: number; sha256: string }>(follower.addr, ["cluster", "snapshot", "save", file])
    expect(saved).toMatchObject({ clusterId: before.clusterId, vms: 3, nodes: 3 })
    expect(fs.readdirSync(path.dirname(file))).toEqual(["cluster.snap"])

    // The disaster: every process gone, every data directory deleted.
    await c.stopAll()
    for (const node of c.nodes) fs.rmSync(node.dataDir, { recursive: true, force: true })

    // A damaged copy is refused and writes nothing.
    const bytes = fs.readFileSync(file)
    const damaged = path.join(c.dir, "backups", "damaged.snap")
    fs.writeFileSync(damaged, Buffer.from(bytes.map((b, i) => (i === Math.floor(bytes.length * 0.6) ? b ^ 0x10 : b))))
    const fresh = path.join(c.dir, "restored", "node-1")
    const refused = await local(["cluster", "snapshot", "restore", damaged, "--data-dir", fresh])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/^BLX_SNAPSHOT_INVALID: .*damaged\.snap: .*truncated or damaged/)
    const truncated = path.join(c.dir, "backups", "truncated.snap")
    fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 30))
    expect((await local(["cluster", "snapshot", "restore", truncated, "--data-dir", fresh])).stderr).toMatch(/^BLX_SNAPSHOT_INVALID: /)
    expect(fs.existsSync(fresh)).toBe(false)
    expect(fs.existsSync(path.dirname(fresh))).toBe(false)

    // The new cluster, founded by node 1 on a new port from the good file.
    const port = await freePort()
    const restored = await local(["cluster", "snapshot", "restore", file, "--data-dir", fresh, "--id", "1", "--bind", `127.0.0.1:${port}`])
    expect(restored.stderr).toBe("")
    expect(restored.code).toBe(0)
    expect(restored.stdout).toContain(`blixard node --id 1 --bind 127.0.0.1:${port} --data-dir ${fresh}`)
    const node = new BlixardNode(1, port, fresh, c.secretFile, [])
    c.nodes.push(node)
    // Its own record is refreshed when it registers: the same labels as before keep it equal.
    node.start(["--label", "zone=z1"])
    const after = await waitFor("the restored node to lead its new cluster", async () => {
      const s = await cliJson<StatusJson>(node.addr, ["cluster", "status"])
      return s.leader === 1 ? s : undefined
    })
    expect(after.clusterId).toBeDefined()
    expect(after.clusterId).not.toBe(before.clusterId)
    expect(after.members).toEqual([{ id: 1, address: node.addr, role: "leader", match: expect.any(Number), lag: 0, logVersion: LogVersion }])
    expect(await vmsOf(node.addr)).toEqual(vmsBefore)
    expect(await nodesOf(node.addr)).toEqual(nodesBefore)

    // It takes writes, also from the token made in the old cluster.
    const created = await cli(node.addr, ["vm", "create", "--name", "after", "--runner", "/nix/store/fixture-after", "--no-start", "--memory", "64"], 20_000, ["--token-file", operatorFile])
    expect(created.stderr).toBe("")
    expect((await vmsOf(node.addr)).map((vm) => vm.spec.name)).toEqual(["after", "cache", "db", "web"])
  })
})
