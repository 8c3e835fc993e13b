/**
 * A real `blixard node` running a VM on a fixture runner is killed with kill -9, while its host
 * (this machine) and the runner live on. Its fencing watchdog stops the runner once the lease the
 * daemon left runs out — fencingMs after its last quorum contact — and the daemon stays dead; or
 * the daemon is restarted within fencingMs, renews the lease and adopts the runner: not stopped,
 * not started twice. Short fencing timeouts; every wait is a condition with a deadline.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Option } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { fencingPaths } from "../../src/agent/internal/fencingFiles.js"
import * as NodeLease from "../../src/agent/NodeLease.js"
import * as Watchdog from "../../src/agent/Watchdog.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { killGroup, processAlive } from "../vm/fixtures.js"
import { watchdogsOf } from "../node/fencing.js"
import { BlixardNode, type Cluster, cli, cliJson, clustersPerTest, freePort, waitFor } from "./harness.js"

interface VmStatusJson {
  readonly node?: number
  readonly status: { readonly phase: string; readonly pid?: number; readonly restarts: number }
}

const node1 = NodeId.make(1)
const newCluster = clustersPerTest()

/** Processes a test leaves behind (runners, watchdogs): killed after it. */
const leftovers: Array<number> = []
afterEach(() => {
  for (const pid of leftovers.splice(0)) killGroup(pid)
})

/** Node 1 alone, with these fencing timeouts, running VM `web` on a fixture runner. */
const nodeWithVm = async (c: Cluster, fencingMs: number) => {
  const node = new BlixardNode(1, await freePort(), path.join(c.dir, "node-1"), c.secretFile, [])
  c.nodes.push(node)
  const config = path.join(c.dir, "timeouts.json")
  fs.writeFileSync(config, JSON.stringify({ timeouts: { fencingMs, nodeDownMs: fencingMs + 1000 } }))
  const flags = ["--config", config]
  node.start(flags)
  await waitFor("node 1 to lead", async () => ((await cliJson<{ leader?: number }>(node.addr, ["cluster", "status"])).leader === 1 ? true : undefined))
  const runner = c.runnerFixture("web")
  expect((await cli(node.addr, ["vm", "create", "--name", "web", "--runner", runner])).code).toBe(0)
  expect((await cli(node.addr, ["vm", "start", "web"])).code).toBe(0)
  const vm = await waitFor("web to run", async () => {
    const status = await cliJson<VmStatusJson>(node.addr, ["vm", "status", "web"])
    return status.status.phase === "running" && status.status.pid !== undefined ? status : undefined
  })
  const pid = vm.status.pid!
  leftovers.push(pid)
  const dataDir = path.resolve(node.dataDir)
  const files = fencingPaths(dataDir)
  const watchdog = await waitFor("the node's fencing watchdog", async () => {
    const record = Option.getOrUndefined(await Effect.runPromise(Watchdog.readRecord(files.watchdog, node1).pipe(Effect.orElseSucceed(() => Option.none()))))
    return record !== undefined && Watchdog.isLive(record, dataDir) ? record.process.pid : undefined
  })
  leftovers.push(watchdog)
  const lease = () => Effect.runPromise(NodeLease.read(files.lease, node1).pipe(Effect.map(Option.getOrThrow)))
  const vmLog = path.join(c.dir, "microvms-1", "web", "blixard.log")
  return { node, flags, pid, watchdog, dataDir, files, lease, vmLog }
}

describe("fencing a node whose daemon dies (real processes)", () => {
  it("kill -9 of the daemon: the runner is stopped once the lease runs out, within fencingMs and a margin; the daemon stays dead", async () => {
    const c = newCluster()
    const FencingMs = 2000
    const { node, pid, watchdog, files } = await nodeWithVm(c, FencingMs)
    const killedAt = Date.now()
    await node.stop("SIGKILL")
    await waitFor("the runner to be stopped", async () => (processAlive(pid) ? undefined : true))
    const stoppedAfter = Date.now() - killedAt
    // Not at once (the lease still held, the daemon could have come back), and on time.
    expect(stoppedAfter).toBeGreaterThan(FencingMs / 2)
    expect(stoppedAfter).toBeLessThan(FencingMs + 2000)
    expect(node.running).toBe(false)
    // Nothing left to guard: the watchdog says what it did and exits.
    await waitFor("the watchdog to exit", async () => (processAlive(watchdog) ? undefined : true))
    const log = fs.readFileSync(files.log, "utf8")
    expect(log).toMatch(/BLX_FENCED: VM \\"web\\" \(pid \d+\) stopped by node 1's fencing watchdog: node 1's lease expired at .* its daemon \(pid \d+\) is gone/)
    expect(log).toContain("the fencing watchdog exits")
  })

  it("the daemon restarted within fencingMs renews the lease and adopts the runner: not stopped, not started twice, one watchdog", async () => {
    const c = newCluster()
    // Long enough for a daemon to start again on a loaded machine (Node.js start-up, the store opened, quorum contact proven).
    const FencingMs = 8000
    const { node, flags, pid, watchdog, dataDir, lease, vmLog } = await nodeWithVm(c, FencingMs)
    await node.stop("SIGKILL")
    const left = await lease()
    node.start(flags)
    await waitFor("the restarted daemon to renew the lease", async () => {
      const now = await lease()
      return now.writer.pid === node.child?.pid && now.validUntil > left.validUntil ? true : undefined
    })
    await waitFor("the old lease's deadline to pass with the runner alive", async () => {
      if (!processAlive(pid)) throw new Error("the runner was stopped although the daemon came back in time")
      return Date.now() > left.validUntil + 1000 ? true : undefined
    })
    const vm = await waitFor("web reported running with the same pid", async () => {
      const status = await cliJson<VmStatusJson>(node.addr, ["vm", "status", "web"])
      return status.status.phase === "running" ? status : undefined
    })
    expect(vm.status).toMatchObject({ pid, restarts: 0 })
    expect(processAlive(pid)).toBe(true)
    expect(node.output).toContain(`adopting its running runner (pid ${pid})`)
    expect(fs.readFileSync(vmLog, "utf8").match(/starting .*microvm-run/g)).toHaveLength(1)
    expect(watchdogsOf(dataDir)).toEqual([watchdog])
  })
})
