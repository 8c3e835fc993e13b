/**
 * VMs leave a live node in two phases, with real processes: three `blixard node` processes, four
 * VMs running on fixture runners (microvm.nix's runner contract) on node 1; `blixard node drain 1`.
 * A sampler scans /proc every 100 ms for the runners: no sample may find a VM on two nodes; every VM
 * ends running, once, on another node, and node 1 runs none; `node uncordon 1` makes it active again.
 * Then `vm update --memory` makes a VM too big for its node beside the other VM there: it moves to
 * the one node with room (node 1), again never running on two nodes.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it, vi } from "vitest"
import { killGroup } from "../vm/fixtures.js"
import { type BlixardNode, type Cluster, cli, cliJson, clustersPerTest, waitFor } from "./harness.js"
import { processesNaming, runnersOf, sampler } from "./runners.js"

const Vms = ["vm-1", "vm-2", "vm-3", "vm-4"]
/** Each node's memory: room for all four VMs, and for a VM resized to all of it on an empty node only. */
const NodeMemoryMiB = 4096
const VmMemoryMiB = 512

interface VmJson {
  readonly spec: { readonly name: string; readonly memoryMiB: number }
  readonly node?: number
  readonly moving?: number
  readonly status: { readonly phase: string; readonly pid?: number }
}

interface NodeJson {
  readonly id: number
  readonly state: string
  readonly capabilities?: ReadonlyArray<string>
}

const newCluster = clustersPerTest()
vi.setConfig({ testTimeout: 300_000 })
let current: Cluster | undefined
afterEach(async () => {
  const c = current
  current = undefined
  if (c === undefined) return
  await c.stopAll()
  // Runners run in their own process groups and outlive a killed node.
  for (const pid of processesNaming(c.dir)) killGroup(pid)
  for (const r of runnersOf(c.dir)) killGroup(r.pid)
})

/**
 * A CLI command that must succeed; tried again while no node answers in time (a loaded machine).
 * Each command here may apply twice: a drain, cordon or start again changes nothing, a create again
 * finds the VM (BLX_VM_EXISTS), an update again to the same memory changes nothing.
 */
const ok = (addr: string, args: ReadonlyArray<string>) =>
  waitFor(
    `blixard ${args.join(" ")} to succeed`,
    async () => {
      const r = await cli(addr, args, 30_000)
      if (r.code === 0 || (args[1] === "create" && r.stderr.includes("BLX_VM_EXISTS"))) return r.stdout
      if (/BLX_(UNAVAILABLE|TIMEOUT|NOT_LEADER|PROPOSAL_DROPPED)/.test(r.stderr) || r.code === null) return undefined
      throw new Error(`blixard ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`)
    },
    90_000
  )

/** Every VM runs exactly once, on the node the cluster places it on, and `where` holds: the VMs' nodes. */
const runningOnce = (c: Cluster, addr: string, where: (vm: VmJson) => boolean) => async () => {
  const listed = await cliJson<Array<VmJson>>(addr, ["vm", "list"])
  const runners = runnersOf(c.dir)
  const hosts = new Map<string, number>()
  for (const name of Vms) {
    const vm = listed.find((v) => v.spec.name === name)
    const mine = runners.filter((r) => r.vm === name)
    if (vm === undefined || vm.status.phase !== "running" || vm.moving !== undefined || !where(vm)) return undefined
    if (mine.length !== 1 || mine[0]!.node !== vm.node) return undefined
    hosts.set(name, vm.node!)
  }
  return hosts
}

describe("moves off a live node (real processes, four VMs)", () => {
  it("node drain: every VM stops on the drained node before it runs on another, never on two; uncordon; a resize that no longer fits moves the VM the same way", async () => {
    const c = newCluster()
    current = c
    const config = path.join(c.dir, "node.json")
    fs.writeFileSync(config, JSON.stringify({ capacity: { vcpus: 8, memoryMiB: NodeMemoryMiB }, timeouts: { tickMs: 100, fencingMs: 4000, nodeDownMs: 6500 } }))
    const setup = (node: BlixardNode) => {
      node.args = ["--config", config]
    }
    await c.add(setup)
    await waitFor("node 1 to found the cluster", async () => ((await cliJson<{ leader?: number }>(c.node(1).addr, ["cluster", "status"])).leader === 1 ? true : undefined))
    await c.add(setup)
    await c.add(setup)
    await c.converged([1, 2, 3])
    const addr = c.node(2).addr
    // Every node says it releases the VMs moving off it (this version).
    const nodes = await waitFor("the three nodes to register", async () => {
      const listed = await cliJson<Array<NodeJson>>(addr, ["node", "list"])
      return listed.length === 3 ? listed : undefined
    })
    expect(nodes.map((n) => n.capabilities)).toEqual([["releases-moves"], ["releases-moves"], ["releases-moves"]])

    // All four VMs on node 1: the others cordoned while they are created.
    await ok(addr, ["node", "cordon", "2"])
    await ok(addr, ["node", "cordon", "3"])
    for (const vm of Vms) {
      await ok(addr, ["vm", "create", "--name", vm, "--runner", c.runnerFixture(vm), "--memory", String(VmMemoryMiB)])
      await ok(addr, ["vm", "start", vm])
    }
    await ok(addr, ["node", "uncordon", "2"])
    await ok(addr, ["node", "uncordon", "3"])
    await waitFor("the four VMs to run on node 1", runningOnce(c, addr, (vm) => vm.node === 1), 60_000)

    const watch = sampler(c.dir)
    try {
      const drained = await ok(addr, ["node", "drain", "1"])
      expect(drained).toContain("draining")
      const after = await waitFor("every VM to run once on node 2 or 3", runningOnce(c, addr, (vm) => vm.node !== 1), 60_000)
      expect([...after.values()].every((n) => n !== 1)).toBe(true)
      expect(runnersOf(c.dir).filter((r) => r.node === 1)).toEqual([])
      // Node 1 stays drained and empty (a few samples more), then is made active again.
      const settled = watch.samples + 10
      await waitFor("ten more samples", async () => (watch.samples >= settled ? true : undefined))
      expect(runnersOf(c.dir).filter((r) => r.node === 1)).toEqual([])
      await ok(addr, ["node", "uncordon", "1"])
      await waitFor("node 1 to be active", async () =>
        (await cliJson<Array<NodeJson>>(addr, ["node", "list"])).find((n) => n.id === 1)?.state === "active" ? true : undefined
      )

      // A VM sharing its node grows to a whole node's memory: only the emptied node 1 has room.
      const listed = await cliJson<Array<VmJson>>(addr, ["vm", "list"])
      const shared = listed.find((vm) => listed.some((other) => other !== vm && other.node === vm.node))
      expect(shared).toBeDefined()
      const name = shared!.spec.name
      const from = shared!.node!
      const updated = JSON.parse(await ok(addr, ["vm", "update", name, "--memory", String(NodeMemoryMiB), "--json"])) as VmJson
      // Still on its node, moving (or, if a retry answered, already moved).
      expect(updated.node === from ? updated.moving !== undefined : updated.node === 1).toBe(true)
      const resized = await waitFor(`${name} to run once on node 1, the others where they were`, runningOnce(c, addr, (vm) => (vm.spec.name === name ? vm.node === 1 : vm.node === after.get(vm.spec.name))), 60_000)
      expect(resized.get(name)).toBe(1)
      const more = watch.samples + 10
      await waitFor("ten more samples", async () => (watch.samples >= more ? true : undefined))
    } finally {
      watch.stop()
    }
    expect(watch.doubles).toEqual([])
    expect(watch.samples).toBeGreaterThan(20)
  })
})
