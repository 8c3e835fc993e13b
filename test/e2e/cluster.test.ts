/**
 * Real `blixard node` processes on loopback: forming a cluster, writing through followers, losing
 * and restarting the leader, membership changes, and the daemon's start-up errors.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { microvmCreatedVm, processAlive } from "../vm/fixtures.js"
import { BlixardNode, cli, clustersPerTest, runnersPerTest, threeNodesOf, cliJson, freePort, waitFor } from "./harness.js"

interface VmJson {
  readonly spec: { readonly name: string }
  readonly node?: number
}
interface StatusJson {
  readonly leader?: number
  readonly term: number
  readonly members: ReadonlyArray<{ readonly id: number; readonly role: string; readonly address: string }>
}

const newCluster = clustersPerTest()

const threeNodes = threeNodesOf(newCluster)

const vmNames = async (addr: string): Promise<Array<string>> =>
  (await cliJson<Array<VmJson>>(addr, ["vm", "list"])).map((vm) => vm.spec.name).sort()

describe("a three-node cluster of real processes", () => {
  it("forms; a write sent to a follower is applied and readable on every node", async () => {
    const c = await threeNodes()
    const leader = await c.converged([1, 2, 3])
    const follower = [1, 2, 3].find((id) => id !== leader)!
    const created = await cli(c.node(follower).addr, ["vm", "create", "--name", "web", "--runner", "/nix/store/fixture-web"])
    expect(created.stderr).toBe("")
    expect(created.code).toBe(0)
    for (const id of [1, 2, 3]) expect(await vmNames(c.node(id).addr)).toEqual(["web"])
    const status = await cliJson<StatusJson>(c.node(follower).addr, ["cluster", "status"])
    expect(status.members.map((m) => [m.id, m.address])).toEqual([1, 2, 3].map((id) => [id, c.node(id).addr]))
  })

  it("kill -9 of the leader: another node leads, writes resume; the old leader restarts and catches up", async () => {
    const c = await threeNodes()
    const old = await c.converged([1, 2, 3])
    await cli(c.node(old).addr, ["vm", "create", "--name", "before", "--runner", "/nix/store/fixture"])
    await c.node(old).stop("SIGKILL")
    const survivors = [1, 2, 3].filter((id) => id !== old)
    const next = await waitFor("a new leader among the survivors", async () => {
      const s = await cliJson<StatusJson>(c.node(survivors[0]!).addr, ["cluster", "status"])
      return s.leader !== undefined && s.leader !== old ? s.leader : undefined
    })
    expect(survivors).toContain(next)
    const after = await waitFor("a write to succeed after the failover", async () => {
      const r = await cli(c.node(survivors[1]!).addr, ["vm", "create", "--name", "after", "--runner", "/nix/store/fixture"])
      return r.code === 0 ? r : undefined
    })
    expect(after.code).toBe(0)
    c.node(old).start()
    await waitFor("the restarted node to have both VMs", async () => {
      const names = await vmNames(c.node(old).addr)
      return names.join(",") === "after,before" ? true : undefined
    })
  })

  it("a fourth node joins as a voter; a member leaves and stops counting", async () => {
    const c = await threeNodes()
    await c.add()
    await c.converged([1, 2, 3, 4])
    const left = await cli(c.node(4).addr, ["cluster", "leave", "--id", "3"])
    expect(left.stderr).toBe("")
    await waitFor("node 3 to be gone from the membership", async () => {
      const s = await cliJson<StatusJson>(c.node(1).addr, ["cluster", "status"])
      return s.members.some((m) => m.id === 3) ? undefined : s
    })
    await c.node(3).stop("SIGKILL")
    // With 3 of the 4 original members left as voters, the cluster still commits.
    const r = await cli(c.node(2).addr, ["vm", "create", "--name", "still-writable", "--runner", "/nix/store/fixture"])
    expect(r.code).toBe(0)
  })

  it("SIGTERM on the leader hands leadership to another node before it exits", async () => {
    const c = await threeNodes()
    const leader = await c.converged([1, 2, 3])
    await c.node(leader).stop("SIGTERM")
    expect(c.node(leader).output).toMatch(/handing leadership to node \d/)
    expect(c.node(leader).output).toMatch(/leadership handed over in \d+ ms/)
    const other = [1, 2, 3].find((id) => id !== leader)!
    const next = await waitFor("the new leader", async () => (await cliJson<StatusJson>(c.node(other).addr, ["cluster", "status"])).leader)
    expect(next).not.toBe(leader)
  })
})

describe("start-up errors: a clear message and exit 1", () => {
  const runToExit = async (node: BlixardNode): Promise<number | null> => {
    const child = node.child!
    return new Promise((resolve) => child.once("exit", (code) => resolve(code)))
  }

  it("a second node on the same data directory", async () => {
    const c = newCluster()
    const first = await c.add()
    await waitFor("node 1 to serve", () => cliJson(first.addr, ["cluster", "status"]))
    const twin = new BlixardNode(1, await freePort(), first.dataDir, c.secretFile, [])
    twin.start()
    expect(await runToExit(twin)).toBe(1)
    expect(twin.output).toMatch(/BLX_STORAGE_LOCKED: .*in use by another process/)
  })

  it("a port already in use", async () => {
    const c = newCluster()
    const first = await c.add()
    await waitFor("node 1 to serve", () => cliJson(first.addr, ["cluster", "status"]))
    const clash = new BlixardNode(2, first.port, path.join(c.dir, "clash"), c.secretFile, [])
    clash.start()
    expect(await runToExit(clash)).toBe(1)
    expect(clash.output).toMatch(new RegExp(`BLX_UNAVAILABLE: node 2 cannot listen on ${first.addr.replace(/\./g, "\\.")}`))
  })

  it("a data directory that belongs to another node id", async () => {
    const c = newCluster()
    const first = await c.add()
    await waitFor("node 1 to serve", () => cliJson(first.addr, ["cluster", "status"]))
    await first.stop("SIGKILL")
    const impostor = new BlixardNode(7, await freePort(), first.dataDir, c.secretFile, [])
    impostor.start()
    expect(await runToExit(impostor)).toBe(1)
    expect(impostor.output).toMatch(/BLX_WRONG_DATA_DIR: the data directory .* belongs to node 1, not node 7/)
  })

  it("a data directory of another cluster, pointed at this cluster's peers", async () => {
    const c = newCluster()
    const a = await c.add()
    await waitFor("cluster A's node to serve", () => cliJson(a.addr, ["cluster", "status"]))
    const clusterA = await waitFor("cluster A's id", async () => (await cliJson<{ clusterId?: string }>(a.addr, ["cluster", "status"])).clusterId)
    await a.stop("SIGKILL")
    // Cluster B: another founding node (id 2) with its own data.
    const b = new BlixardNode(2, await freePort(), path.join(c.dir, "cluster-b"), c.secretFile, [])
    c.nodes.push(b)
    b.start()
    const clusterB = await waitFor("cluster B's id", async () => (await cliJson<{ clusterId?: string }>(b.addr, ["cluster", "status"])).clusterId)
    expect(clusterB).not.toBe(clusterA)
    // Node 1 restarted on cluster A's data but told to join through cluster B's node.
    const stray = new BlixardNode(1, await freePort(), a.dataDir, c.secretFile, [b])
    stray.start()
    expect(await runToExit(stray)).toBe(1)
    expect(stray.output).toContain(`BLX_WRONG_DATA_DIR: the data directory ${a.dataDir} belongs to cluster ${clusterA}, but node 2 (${b.addr}) is in cluster ${clusterB}`)
  })

  it("a voter restarted on an emptied data directory stops (BLX_MEMBER_AMNESIA) until it is removed; then it joins again", async () => {
    const c = await threeNodes()
    const wiped = c.node(3)
    await wiped.stop("SIGKILL")
    fs.rmSync(wiped.dataDir, { recursive: true, force: true })
    wiped.start()
    expect(await runToExit(wiped)).toBe(1)
    expect(wiped.output).toMatch(/BLX_MEMBER_AMNESIA: node 3 has no Raft state .*blixard cluster leave --id 3/)
    expect((await cli(c.node(1).addr, ["cluster", "leave", "--id", "3"])).code).toBe(0)
    wiped.start()
    await c.converged([1, 2, 3])
  })

  it("an unreadable cluster secret file", async () => {
    const c = newCluster()
    const node = new BlixardNode(1, await freePort(), path.join(c.dir, "n"), path.join(c.dir, "missing-secret"), [])
    node.start()
    expect(await runToExit(node)).toBe(2)
    expect(node.output).toMatch(/BLX_CONFIG_INVALID: node 1: cannot read the cluster secret file .*missing-secret: .*check that it exists/)
    expect(fs.existsSync(path.join(c.dir, "n", "blixard.db"))).toBe(false)
  })

  it("systemd mode without microvm.nix's VM user", async () => {
    const c = newCluster()
    const node = new BlixardNode(1, await freePort(), path.join(c.dir, "n"), c.secretFile, [])
    node.start(["--vm-backend", "systemd", "--vm-user", "no-such-microvm-user"])
    expect(await runToExit(node)).toBe(2)
    expect(node.output).toContain(
      `BLX_CONFIG_INVALID: node 1: systemd mode runs VMs as microvm.nix's user "no-such-microvm-user", which does not exist on this host`
    )
    expect(fs.existsSync(path.join(c.dir, "n", "blixard.db"))).toBe(false)
  })
})

describe("VMs on a real cluster", () => {
  interface VmStatusJson {
    readonly desired: string
    readonly node?: number
    readonly status: { readonly phase: string; readonly pid?: number }
  }
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0)
      return true
    } catch {
      return false
    }
  }
  const pids = runnersPerTest()

  it("create, start (the runner process runs), stop (it stops, the VM stays listed), delete", async () => {
    const c = await threeNodes()
    const runner = c.runnerFixture("web")
    expect((await cli(c.node(2).addr, ["vm", "create", "--name", "web", "--runner", runner])).code).toBe(0)
    expect((await cli(c.node(3).addr, ["vm", "start", "web"])).code).toBe(0)
    const running = await waitFor("web to run", async () => {
      const vm = await cliJson<VmStatusJson>(c.node(1).addr, ["vm", "status", "web"])
      return vm.status.phase === "running" && vm.status.pid !== undefined ? vm : undefined
    })
    pids.push(running.status.pid!)
    expect(alive(running.status.pid!)).toBe(true)
    expect((await cli(c.node(1).addr, ["vm", "stop", "web"])).code).toBe(0)
    await waitFor("web to stop", async () => {
      const vm = await cliJson<VmStatusJson>(c.node(2).addr, ["vm", "status", "web"])
      return vm.status.phase === "stopped" && !alive(running.status.pid!) ? vm : undefined
    })
    expect(await vmNames(c.node(3).addr)).toEqual(["web"])
    expect((await cli(c.node(1).addr, ["vm", "delete", "web"])).code).toBe(0)
    expect(await vmNames(c.node(3).addr)).toEqual([])
  })

  it("a node killed with its VM: the VM is rescheduled and runs on a live node", async () => {
    const c = await threeNodes()
    const runner = c.runnerFixture("db")
    await cli(c.node(1).addr, ["vm", "create", "--name", "db", "--runner", runner])
    await cli(c.node(1).addr, ["vm", "start", "db"])
    const first = await waitFor("db to run", async () => {
      const vm = await cliJson<VmStatusJson>(c.node(1).addr, ["vm", "status", "db"])
      return vm.status.phase === "running" && vm.node !== undefined ? vm : undefined
    })
    pids.push(first.status.pid!)
    const host = first.node!
    await c.node(host).stop("SIGKILL")
    const asker = [1, 2, 3].find((id) => id !== host)!
    const moved = await waitFor(
      "db to run on another node",
      async () => {
        const vm = await cliJson<VmStatusJson>(c.node(asker).addr, ["vm", "status", "db"])
        return vm.node !== host && vm.status.phase === "running" ? vm : undefined
      },
      60_000
    )
    pids.push(moved.status.pid!)
    expect(alive(moved.status.pid!)).toBe(true)
    // Never twice: the killed daemon's fencing watchdog stopped the first runner before.
    expect(processAlive(first.status.pid!)).toBe(false)
  })

  it("a node started on a state directory holding a microvm -c VM lists it as foreign and leaves it intact", async () => {
    const c = newCluster()
    const stateDir = path.join(c.dir, "microvms-1")
    const gcRootDir = path.join(c.dir, "gcroots-1")
    const foreign = microvmCreatedVm(c.dir, stateDir, gcRootDir, "foreign")
    await c.add()
    interface NodeJson {
      readonly id: number
      readonly foreignVms?: ReadonlyArray<string>
    }
    await waitFor("node 1 to report its foreign VM", async () => {
      const nodes = await cliJson<Array<NodeJson>>(c.node(1).addr, ["node", "list"])
      return nodes.find((n) => n.id === 1)?.foreignVms?.includes("foreign") === true ? true : undefined
    })
    expect((await cli(c.node(1).addr, ["node", "list"])).stdout).toContain("node 1: VM directories not Blixard's (left alone): foreign")

    // A VM under the foreign directory's name is not placed there, and says why.
    const created = await cli(c.node(1).addr, ["vm", "create", "--name", "foreign", "--runner", c.runnerFixture("foreign")])
    expect(created.code).toBe(0)
    expect(created.stdout).toContain(`pending placement: no node can host foreign — node 1: holds a VM directory "foreign" that is not Blixard's`)
    expect((await cli(c.node(1).addr, ["vm", "delete", "foreign"])).code).toBe(0)

    // Blixard's own VM: marked, GC-rooted, and removed with its roots on delete.
    expect((await cli(c.node(1).addr, ["vm", "create", "--name", "web", "--runner", c.runnerFixture("web")])).code).toBe(0)
    expect((await cli(c.node(1).addr, ["vm", "start", "web"])).code).toBe(0)
    const running = await waitFor("web to run", async () => {
      const vm = await cliJson<VmStatusJson>(c.node(1).addr, ["vm", "status", "web"])
      return vm.status.phase === "running" && vm.status.pid !== undefined ? vm : undefined
    })
    pids.push(running.status.pid!)
    expect(JSON.parse(fs.readFileSync(path.join(stateDir, "web", "blixard.json"), "utf8"))).toMatchObject({ vm: "web", node: 1 })
    expect(fs.readlinkSync(path.join(gcRootDir, "web"))).toBe(path.join(stateDir, "web", "current"))
    expect(fs.readlinkSync(path.join(gcRootDir, "booted-web"))).toBe(path.join(stateDir, "web", "booted"))
    expect((await cli(c.node(1).addr, ["vm", "delete", "web"])).code).toBe(0)
    await waitFor("web's directory and GC roots removed", async () =>
      !fs.existsSync(path.join(stateDir, "web")) && !fs.existsSync(path.join(gcRootDir, "web")) ? true : undefined
    )
    expect(processAlive(running.status.pid!)).toBe(false)
    expect(foreign.unchanged()).toBe(true)
  })
})
