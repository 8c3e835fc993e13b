/**
 * Operating VMs on real node processes: `vm logs -f` through a node that does not host the VM,
 * `vm update` restarting the runner onto a new one, a failing update leaving the old one running,
 * and `--wait`.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { processAlive } from "../vm/fixtures.js"
import { adminTokenOf, bin, caFileOf, type Cluster, cli, cliJson, clustersPerTest, runnersPerTest, threeNodesOf, getText, root, waitFor } from "./harness.js"

interface VmJson {
  readonly node?: number
  readonly generation?: number
  readonly status: {
    readonly phase: string
    readonly pid?: number
    readonly generation?: number
    readonly lastError?: string
    readonly build?: { readonly state: string; readonly generation: number }
  }
}

const newCluster = clustersPerTest()

const threeNodes = threeNodesOf(newCluster)

/** A runner that says which it is, then prints `tick N` every `everyMs`, then sleeps. */
const runner = (c: Cluster, name: string, everyMs = 300): string => {
  const dir = path.join(c.dir, "runners", name)
  fs.mkdirSync(path.join(dir, "bin"), { recursive: true })
  fs.writeFileSync(
    path.join(dir, "bin", "microvm-run"),
    `#!/bin/sh\necho "runner ${name} up"\ni=0\nwhile [ $i -lt 2000 ]; do i=$((i+1)); echo "tick $i"; sleep ${everyMs / 1000}; done\nexec sleep 1000\n`,
    { mode: 0o755 }
  )
  return dir
}

const status = (c: Cluster, id: number) => cliJson<VmJson>(c.node(id).addr, ["vm", "status", "web"])

const pids = runnersPerTest()

describe("vm logs", () => {
  it("vm logs -f through a node that does not host the VM prints the runner's lines as they appear", async () => {
    const c = await threeNodes()
    expect((await cli(c.node(1).addr, ["vm", "create", "--name", "web", "--runner", runner(c, "web")])).code).toBe(0)
    const started = await cli(c.node(1).addr, ["vm", "start", "web", "--wait", "--json"], 90_000)
    expect(started.code, started.stderr).toBe(0)
    const vm = JSON.parse(started.stdout) as VmJson
    expect(vm.status.phase).toBe("running")
    pids.push(vm.status.pid!)
    const host = vm.node!
    const other = [1, 2, 3].find((id) => id !== host)!
    const logFile = path.join(c.dir, `microvms-${host}`, "web", "blixard.log")

    // The whole log, through the other node: Blixard's own lines and the runner's first line.
    const whole = await cli(c.node(other).addr, ["vm", "logs", "web"])
    expect(whole.code, whole.stderr).toBe(0)
    expect(whole.stdout).toContain("runner web up")
    expect(whole.stdout).toContain("# blixard")
    const tail = await cli(c.node(other).addr, ["vm", "logs", "web", "--tail", "1"])
    expect(tail.stdout).toMatch(/^tick \d+\n$/)

    // Following, through the other node.
    const follower = spawn(process.execPath, [bin, "vm", "logs", "web", "-f", "--tail", "1", "--addr", c.node(other).addr], {
      cwd: root,
      env: { PATH: process.env.PATH ?? "", BLIXARD_API_TOKEN: adminTokenOf(c.node(other).addr), BLIXARD_CA_FILE: caFileOf(c.node(other).addr) },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let out = ""
    let err = ""
    follower.stdout.on("data", (d: Buffer) => (out += d.toString()))
    follower.stderr.on("data", (d: Buffer) => (err += d.toString()))
    try {
      const first = await waitFor("the first followed line", async () => {
        const m = /tick (\d+)/.exec(out)
        return m === null ? undefined : Number(m[1])
      }, 60_000)
      // What the runner had written when the follower began; lines after it must arrive while it runs.
      const writtenThen = Math.max(...[...fs.readFileSync(logFile, "utf8").matchAll(/tick (\d+)/g)].map((m) => Number(m[1])))
      const later = writtenThen + 3
      await waitFor(`tick ${later} to be followed (${err})`, async () => (out.includes(`tick ${later}\n`) ? true : undefined), 60_000)
      const seen = [...out.matchAll(/tick (\d+)/g)].map((m) => Number(m[1]))
      // In order, none lost, none twice.
      expect(seen).toEqual(seen.map((_, i) => first + i))
      expect(follower.exitCode).toBeNull()
    } finally {
      follower.kill("SIGTERM")
    }
    await new Promise((resolve) => follower.once("exit", resolve))

    // Like every endpoint but health, it needs a token.
    const anonymous = await getText(c.node(other).addr, "/v1/vms/web/logs")
    expect(anonymous.status).toBe(401)
    expect((JSON.parse(anonymous.text) as { code: string }).code).toBe("BLX_UNAUTHORIZED")

    // An unknown VM: the error, with its code, from any node.
    const missing = await cli(c.node(other).addr, ["vm", "logs", "nope"])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain("BLX_VM_NOT_FOUND")
  })
})

describe("vm update", () => {
  it("restarts the runner onto a new one; a failing update leaves the old runner running and says why", async () => {
    const c = await threeNodes()
    const first = runner(c, "one", 1000)
    expect((await cli(c.node(2).addr, ["vm", "create", "--name", "web", "--runner", first])).code).toBe(0)
    const started = await cli(c.node(2).addr, ["vm", "start", "web", "--wait", "--json"], 90_000)
    expect(started.code, started.stderr).toBe(0)
    const before = JSON.parse(started.stdout) as VmJson
    pids.push(before.status.pid!)
    const host = before.node!
    const booted = path.join(c.dir, `microvms-${host}`, "web", "booted")
    expect(fs.readlinkSync(booted)).toBe(first)

    // The update, through a node that does not host it, waited for.
    const second = runner(c, "two", 1000)
    const asker = [1, 2, 3].find((id) => id !== host)!
    const updated = await cli(c.node(asker).addr, ["vm", "update", "web", "--runner", second, "--wait", "--json"], 90_000)
    expect(updated.code, updated.stderr).toBe(0)
    const after = JSON.parse(updated.stdout) as VmJson
    pids.push(after.status.pid!)
    expect(after.generation).toBe(1)
    expect(after.status).toMatchObject({ phase: "running", generation: 1 })
    expect(after.status.pid).not.toBe(before.status.pid)
    expect(after.node).toBe(host)
    expect(fs.readlinkSync(booted)).toBe(second)
    expect(processAlive(after.status.pid!)).toBe(true)
    expect(processAlive(before.status.pid!)).toBe(false)
    const log = await cli(c.node(asker).addr, ["vm", "logs", "web"])
    expect(log.stdout.indexOf("runner one up")).toBeLessThan(log.stdout.indexOf("runner two up"))

    // A runner the hosting node cannot use (no bin/microvm-run): the update fails, the VM runs on.
    const broken = path.join(c.dir, "runners", "broken")
    fs.mkdirSync(broken, { recursive: true })
    const failed = await cli(c.node(asker).addr, ["vm", "update", "web", "--runner", broken, "--wait"], 90_000)
    expect(failed.code).toBe(1)
    expect(failed.stderr).toContain("BLX_BACKEND_FAILED")
    expect(failed.stderr).toContain("update to spec generation 2 failed")
    const still = await status(c, asker)
    expect(still.status).toMatchObject({ phase: "running", pid: after.status.pid, generation: 1, build: { state: "failed", generation: 2 } })
    expect(processAlive(after.status.pid!)).toBe(true)
    expect(fs.readlinkSync(booted)).toBe(second)

    // Outside the node's allowed runner prefixes: refused before anything is replicated.
    const refused = await cli(c.node(asker).addr, ["vm", "update", "web", "--runner", "/opt/elsewhere"])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain("BLX_RUNNER_NOT_ALLOWED")
    expect((await status(c, asker)).generation).toBe(2)
  })
})
