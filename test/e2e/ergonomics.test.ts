/**
 * `vm create` starts the VM (unless `--no-start`), and `vm list` pages and filters on a real node.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { cli, cliJson, clustersPerTest, runnersPerTest, waitFor } from "./harness.js"

interface VmJson {
  readonly spec: { readonly name: string }
  readonly desired: string
  readonly status: { readonly phase: string; readonly pid?: number }
}

const newCluster = clustersPerTest()
const pids = runnersPerTest()

describe("vm create and vm list on a real node", () => {
  it("create starts the VM unless --no-start; list pages by name and filters by phase and label", async () => {
    const c = newCluster()
    const node = await c.add((n) => {
      // Room for the VMs whatever this host's cores.
      const config = path.join(c.dir, "capacity.json")
      fs.writeFileSync(config, JSON.stringify({ capacity: { vcpus: 8, memoryMiB: 8192 } }))
      n.args = ["--config", config]
    })
    await waitFor("node 1 to lead", async () => ((await cliJson<{ leader?: number }>(node.addr, ["cluster", "status"])).leader === 1 ? true : undefined))

    const created = await cli(node.addr, ["vm", "create", "--name", "web", "--runner", c.runnerFixture("web"), "--label", "tier=web"])
    expect(created.stderr).toBe("")
    expect(created.stdout).toMatch(/^created VM web \(desired running/)
    const running = await waitFor("web to run without a vm start", async () => {
      const vm = await cliJson<VmJson>(node.addr, ["vm", "status", "web"])
      return vm.status.phase === "running" && vm.status.pid !== undefined ? vm : undefined
    })
    pids.push(running.status.pid!)
    for (const name of ["db", "cache"]) {
      const declared = await cli(node.addr, ["vm", "create", "--name", name, "--runner", c.runnerFixture(name), "--no-start", "--label", "tier=data"])
      expect(declared.stdout).toMatch(new RegExp(`^created VM ${name} \\(desired stopped`))
    }

    const names = (vms: ReadonlyArray<VmJson>) => vms.map((vm) => vm.spec.name)
    const first = await cli(node.addr, ["vm", "list", "--limit", "2", "--json"])
    expect(names(JSON.parse(first.stdout) as Array<VmJson>)).toEqual(["cache", "db"])
    expect(first.stderr).toContain("--after db for the next page")
    expect(names(await cliJson<Array<VmJson>>(node.addr, ["vm", "list", "--limit", "2", "--after", "db"]))).toEqual(["web"])
    expect(names(await cliJson<Array<VmJson>>(node.addr, ["vm", "list", "--phase", "running"]))).toEqual(["web"])
    expect(names(await cliJson<Array<VmJson>>(node.addr, ["vm", "list", "--label", "tier=data", "--node", "1"]))).toEqual(["cache", "db"])
    expect(names(await cliJson<Array<VmJson>>(node.addr, ["vm", "list", "--label", "tier!=data", "--all"]))).toEqual(["web"])
  })
})
