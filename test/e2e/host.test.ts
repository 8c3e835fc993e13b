/**
 * A host that is not a Raft member (`blixard node --server …`, real processes): three members,
 * cordoned, so the only place for a VM is the host; the host runs it on a fixture runner. Then the
 * host's daemon is killed with kill -9: its fencing watchdog stops the runner once the lease runs
 * out, the members mark the host down, and the VM runs on a member (one is uncordoned) — never on
 * two machines at once, as a sampler of the runner processes every 100 ms checks.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it, vi } from "vitest"
import { killGroup, processAlive } from "../vm/fixtures.js"
import { BlixardNode, type Cluster, caFileOf, cli, cliJson, clustersPerTest, freePort, threeNodesOf, waitFor } from "./harness.js"
import { processesNaming, runnersOf, sampler } from "./runners.js"

interface VmStatusJson {
  readonly node?: number
  readonly status: { readonly phase: string; readonly pid?: number }
}

interface NodeJson {
  readonly id: number
  readonly health: string
  readonly state: string
  readonly capacity: { readonly vcpus: number }
}

const newCluster = clustersPerTest()
vi.setConfig({ testTimeout: 240_000 })
let current: Cluster | undefined
afterEach(() => {
  const c = current
  current = undefined
  if (c === undefined) return
  for (const pid of processesNaming(c.dir)) killGroup(pid)
  for (const r of runnersOf(c.dir)) killGroup(r.pid)
})

/** Three members, all cordoned, and host 4 started with `flags`; resolves once the host is registered and up. */
const clusterWithHost = async (flags: (c: Cluster) => ReadonlyArray<string>) => {
  const c = await threeNodesOf(newCluster)()
  current = c
  for (const id of [1, 2, 3]) {
    await waitFor(`node ${id} cordoned`, async () => ((await cli(c.node(1).addr, ["node", "cordon", String(id)])).code === 0 ? true : undefined))
  }
  const host = new BlixardNode(4, await freePort(), path.join(c.dir, "node-4"), c.secretFile, [])
  host.args = [...[1, 2, 3].flatMap((id) => ["--server", c.node(id).addr]), ...flags(c)]
  c.nodes.push(host)
  host.start()
  const registered = await waitFor(
    "host 4 registered and up",
    async () => {
      if (!host.running) throw new Error(`the host daemon ended: ${host.output.slice(-2000)}`)
      const nodes = await cliJson<ReadonlyArray<NodeJson>>(c.node(2).addr, ["node", "list"])
      return nodes.find((n) => n.id === 4 && n.health === "up")
    },
    60_000
  )
  return { c, host, registered }
}

describe("a host that is not a Raft member (real processes)", () => {
  it("runs the VM placed on it; killed with kill -9, its watchdog stops the VM before the members start it elsewhere, never twice", async () => {
    const { c, host, registered } = await clusterWithHost(() => [])
    expect(registered.state).toBe("active")
    // Not a member: the cluster's membership is still the three.
    const status = await cliJson<{ members: ReadonlyArray<{ id: number }> }>(c.node(1).addr, ["cluster", "status"])
    expect(status.members.map((m) => m.id).sort()).toEqual([1, 2, 3])
    expect(host.output).toContain("not a Raft member")

    const runner = c.runnerFixture("web")
    expect((await cli(c.node(1).addr, ["vm", "create", "--name", "web", "--runner", runner])).code).toBe(0)
    expect((await cli(c.node(1).addr, ["vm", "start", "web"])).code).toBe(0)
    const onHost = await waitFor(
      "web running on host 4",
      async () => {
        const vm = await cliJson<VmStatusJson>(c.node(3).addr, ["vm", "status", "web"])
        return vm.node === 4 && vm.status.phase === "running" && vm.status.pid !== undefined ? vm.status.pid : undefined
      },
      60_000
    )
    // The process is there, in the host's VM directory.
    expect(runnersOf(c.dir)).toEqual([{ pid: onHost, vm: "web", node: 4 }])

    const rssMb = (pid: number | undefined) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024
    const hostRssMb = rssMb(host.child?.pid)
    const watch = sampler(c.dir)
    try {
      const killedAt = Date.now()
      await host.stop("SIGKILL")
      expect(processAlive(onHost)).toBe(true)
      await waitFor("the host's watchdog to stop the runner", async () => (processAlive(onHost) ? undefined : true), 30_000)
      const stoppedAfter = Date.now() - killedAt
      // The lease it left ran out (default fencingMs 3 s after its last answered heartbeat).
      expect(stoppedAfter).toBeGreaterThan(1000)
      expect(stoppedAfter).toBeLessThan(3000 + 5000)

      await waitFor("host 4 marked down", async () => {
        const nodes = await cliJson<ReadonlyArray<NodeJson>>(c.node(1).addr, ["node", "list"])
        return nodes.find((n) => n.id === 4)?.health === "down" ? true : undefined
      })
      expect((await cli(c.node(1).addr, ["node", "uncordon", "2"])).code).toBe(0)
      const moved = await waitFor(
        "web running on node 2",
        async () => {
          const vm = await cliJson<VmStatusJson>(c.node(1).addr, ["vm", "status", "web"])
          return vm.node === 2 && vm.status.phase === "running" && vm.status.pid !== undefined ? vm.status.pid : undefined
        },
        60_000
      )
      expect(moved).not.toBe(onHost)
      console.log(
        `host e2e: host daemon RSS ${hostRssMb.toFixed(0)} MB; kill -9 → runner stopped by the watchdog in ${stoppedAfter} ms; → running on node 2 in ${Date.now() - killedAt} ms (uncordoned after the host was marked down)`
      )
      expect(runnersOf(c.dir)).toEqual([{ pid: moved, vm: "web", node: 2 }])
      expect(watch.samples).toBeGreaterThan(20)
      expect(watch.doubles).toEqual([])
    } finally {
      watch.stop()
    }
    const log = fs.readFileSync(path.join(host.dataDir, "fencing", "watchdog.log"), "utf8")
    expect(log).toContain("stopped by node 4's fencing watchdog")
  })

  it("verifies the members against --tls-ca-file; refuses a cluster secret that does not match the members' CA, and a member's id", async () => {
    const { c, host } = await clusterWithHost((cluster) => ["--tls-ca-file", caFileOf(cluster.node(1).addr)])
    expect(host.output).toMatch(/TLS, cluster [0-9a-f-]{36}/)

    // Another host with the wrong secret fetching the CA: refused with the reason, and it stops.
    const wrongSecret = path.join(c.dir, "wrong-secret")
    fs.writeFileSync(wrongSecret, "not-the-cluster-secret\n", { mode: 0o600 })
    const stranger = new BlixardNode(5, await freePort(), path.join(c.dir, "node-5"), wrongSecret, [])
    stranger.args = ["--server", c.node(1).addr]
    c.nodes.push(stranger)
    stranger.start()
    await waitFor("the stranger to stop", async () => (stranger.running ? undefined : true))
    expect(stranger.output).toContain("BLX_TLS_UNTRUSTED")
    expect(stranger.output).toContain("does not bind to this node's cluster secret")
    const nodes = await cliJson<ReadonlyArray<NodeJson>>(c.node(1).addr, ["node", "list"])
    expect(nodes.map((n) => n.id)).not.toContain(5)

    // A host under a member's id would take that member's VMs for its own: refused before its agent starts.
    const impostor = new BlixardNode(3, await freePort(), path.join(c.dir, "host-3"), c.secretFile, [])
    impostor.args = ["--server", c.node(1).addr]
    c.nodes.push(impostor)
    impostor.start()
    await waitFor("the host with a member's id to stop", async () => (impostor.running ? undefined : true))
    expect(impostor.output).toContain("BLX_CONFIG_INVALID: host 3: node 3 is a Raft member of cluster")

    // A second host under host 4's id, with its own data directory (another incarnation): refused
    // while host 4 is heard, so the VM placed on host 4 never runs on it.
    const runner = c.runnerFixture("web")
    expect((await cli(c.node(1).addr, ["vm", "create", "--name", "web", "--runner", runner])).code).toBe(0)
    const pid = await waitFor("web running on host 4", async () => {
      const vm = await cliJson<VmStatusJson>(c.node(1).addr, ["vm", "status", "web"])
      return vm.node === 4 && vm.status.phase === "running" ? vm.status.pid : undefined
    }, 60_000)
    // (Its VM state directory is its own too, as on another machine: `twin/microvms-4`.)
    const twin = new BlixardNode(4, await freePort(), path.join(c.dir, "twin", "node-4"), c.secretFile, [])
    twin.args = ["--server", c.node(2).addr, "--tls-ca-file", caFileOf(c.node(1).addr)]
    c.nodes.push(twin)
    twin.start()
    const incarnation = fs.readFileSync(path.join(host.dataDir, "host-incarnation"), "utf8").trim()
    await waitFor("the twin refused three times", async () => {
      if (!twin.running) throw new Error(`the twin ended: ${twin.output.slice(-2000)}`)
      return (twin.output.match(/registering with the cluster failed \(BLX_NODE_ID_IN_USE/g) ?? []).length >= 3 ? true : undefined
    }, 60_000)
    expect(twin.output).toContain(`held by another host (data directory incarnation ${incarnation}`)
    expect(twin.output).toMatch(/a heartbeat failed \(BLX_NODE_ID_IN_USE/)
    expect(runnersOf(c.dir)).toEqual([{ pid, vm: "web", node: 4 }])
    expect(runnersOf(path.join(c.dir, "twin"))).toEqual([])
    const nodes4 = await cliJson<ReadonlyArray<NodeJson & { incarnation?: string }>>(c.node(3).addr, ["node", "list"])
    expect(nodes4.find((n) => n.id === 4)).toMatchObject({ health: "up", incarnation })
    await twin.stop("SIGTERM")
    expect(runnersOf(c.dir)).toEqual([{ pid, vm: "web", node: 4 }])
    // Host 4 was heard throughout: never marked down (a registration counts as contact, so none
    // was marked down before its first heartbeat either).
    for (const m of [1, 2, 3]) expect(c.node(m).output).not.toContain("marked node 4 down")
  })

  it("--insecure-plaintext: a host of a plaintext member runs its VM; to a server off loopback it is refused without --i-know", async () => {
    const c = newCluster()
    current = c
    const member = new BlixardNode(1, await freePort(), path.join(c.dir, "node-1"), c.secretFile, [])
    member.args = ["--insecure-plaintext"]
    c.nodes.push(member)
    member.start()
    await waitFor("node 1 cordoned", async () => ((await cli(member.addr, ["node", "cordon", "1"])).code === 0 ? true : undefined))
    const host = new BlixardNode(2, await freePort(), path.join(c.dir, "node-2"), c.secretFile, [])
    host.args = ["--server", member.addr, "--insecure-plaintext"]
    c.nodes.push(host)
    host.start()
    const runner = c.runnerFixture("web")
    expect((await cli(member.addr, ["vm", "create", "--name", "web", "--runner", runner])).code).toBe(0)
    const pid = await waitFor("web running on host 2", async () => {
      const vm = await cliJson<VmStatusJson>(member.addr, ["vm", "status", "web"])
      return vm.node === 2 && vm.status.phase === "running" ? vm.status.pid : undefined
    }, 60_000)
    expect(runnersOf(c.dir)).toEqual([{ pid, vm: "web", node: 2 }])
    expect(host.output).toContain("the servers are reached WITHOUT TLS")

    const wide = new BlixardNode(3, await freePort(), path.join(c.dir, "node-3"), c.secretFile, [])
    wide.args = ["--server", "192.0.2.1:7001", "--insecure-plaintext"]
    c.nodes.push(wide)
    wide.start()
    await waitFor("the host with a remote plaintext server to stop", async () => (wide.running ? undefined : true))
    expect(wide.output).toContain("BLX_PLAINTEXT_REFUSED: host 3 refuses --insecure-plaintext to 192.0.2.1:7001")
  })
})
