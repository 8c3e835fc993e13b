/**
 * A VM never runs on two nodes, when the LEADER's disk stalls (its process and network alive), is
 * SIGSTOPped, or is killed with kill -9 — for longer than nodeDownMs, while six VMs run on fixture
 * runners across three real `blixard node` processes. A sampler scans /proc every 100 ms for the
 * runners (the processes whose environment names a VM, `BLIXARD_VM=NAME`, and whose working
 * directory is a VM state directory of one of the nodes): no sample may find a VM on two nodes, the
 * faulty node's runners stop, and once the fault ends every VM runs again, exactly once, where the
 * cluster says it runs.
 *
 * The disk stalls leave the daemon's code unchanged: every node runs with an LD_PRELOAD library
 * (`test/fixtures/stall-fsync.c`, compiled here with `cc`; without a C compiler those tests are
 * skipped, saying so) that holds calls on files under that node's data directory while the node's
 * trigger files exist, in these depths:
 *
 * - Flushes only (fsync, fdatasync, …): the node's SQLite flushes (its Raft writes) hang; its reads,
 *   writes, network and every other path go on. The fencing watchdog the daemon starts inherits the
 *   library, but flushes nothing (its lease and record files are not fsynced), and runners start with
 *   a clean environment (no LD_PRELOAD). So the node must fence through its own agent (its Raft loop,
 *   stuck in the save, proves no contact) and through the watchdog, whose lease the agent stops
 *   renewing.
 * - Every write too (writes, renames, opens to write, …), as on a volume whose journal hangs: the
 *   daemon's SQLite writes run on its one JavaScript thread, so the daemon stops altogether, and the
 *   lease cannot be renewed; the watchdog's own writes (its record, its log) hang as well. Only the
 *   watchdog can stop the runners, and it must, without any write completing.
 * - Flushes first, then every write, in the data directory and the VMs' state directory (one volume,
 *   as on most hosts): the daemon's loop waits in a flush (off its JavaScript thread) when writes
 *   stall, so the daemon lives on and fences too, beside its watchdog, and every stop — the
 *   daemon's and the watchdog's — hangs in its clean-up (pid files, `booted`) after its signal. A
 *   stop hung that way, or a pid file whose removal hung, once held up the other VMs' stops (one run
 *   in twenty left runners running past the lease).
 * - As that, then every read too (opens, reads, stat, readlink, directory listings), cached or not:
 *   a volume that answers nothing. The daemon's JavaScript thread stops in its first read; the
 *   watchdog reads its lease, its record, the state directory and the pid files off its event loop,
 *   waits for none of them past its deadline, finds the runners in /proc and stops them by signals.
 *
 * When a run fails while the fault holds, the faulty node's runners, pid files and the threads of
 * its daemon and watchdog are printed, then the fault is lifted so that the watchdog's log (queued
 * for the stalled disk) is written, and printed too.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it, vi } from "vitest"
import { killGroup } from "../vm/fixtures.js"
import { type BlixardNode, type Cluster, cli, cliJson, clustersPerTest, waitFor } from "./harness.js"
import { processesNaming, runnersOf, sampler } from "./runners.js"
import { buildStaller, hasCompiler } from "./staller.js"

// Short, but with room for a loaded machine: a follower that cannot prove contact within fencingMs
// (three election timeouts) during a failover fences too, and the test then waits for it to recover.
const TickMs = 100
const FencingMs = 4000
const NodeDownMs = 6500
/** How long the fault lasts at least: well beyond nodeDownMs, so the cluster moves the node's VMs meanwhile. */
const FaultMs = 10_000
const Vms = ["vm-1", "vm-2", "vm-3", "vm-4", "vm-5", "vm-6"]

interface VmJson {
  readonly spec: { readonly name: string }
  readonly node?: number
  readonly status: { readonly phase: string; readonly pid?: number }
}


const newCluster = clustersPerTest()
// Three real nodes, six runners and a fault of FaultMs: longer than the harness's default.
vi.setConfig({ testTimeout: 300_000 })
let current: Cluster | undefined
afterEach(async () => {
  const c = current
  current = undefined
  if (c === undefined) return
  for (const n of c.nodes) if (n.child?.pid !== undefined) killGroup(n.child.pid) // SIGKILL ends a SIGSTOPped one too
  await c.stopAll()
  for (const pid of processesNaming(c.dir)) killGroup(pid)
  for (const r of runnersOf(c.dir)) killGroup(r.pid)
})

type Fault =
  | "disk stall"
  | "disk stall, writes too"
  | "disk stall, state directory too"
  | "disk stall, reads too"
  | "SIGSTOP"
  | "kill -9"

const diskStall = (fault: Fault): boolean => fault.startsWith("disk stall")

/** The node's VMs' state directory (the harness's `--microvm-state-dir`). */
const stateDirOf = (c: Cluster, node: BlixardNode): string => path.resolve(c.dir, `microvms-${node.id}`)

/** What each thread of `pid` waits in (its name and the syscall it is in), from /proc. */
const threadsOf = (pid: number): string => {
  try {
    return fs
      .readdirSync(`/proc/${pid}/task`)
      .map((tid) => {
        const read = (file: string) => {
          try {
            return fs.readFileSync(`/proc/${pid}/task/${tid}/${file}`, "utf8").trim()
          } catch {
            return "?"
          }
        }
        return `${tid} ${read("comm")}: syscall ${read("syscall").split(" ")[0]}, wchan ${read("wchan")}`
      })
      .join("; ")
  } catch {
    return "gone"
  }
}

/**
 * What a failing run saw on the faulty node, read while the fault still holds: its runners, their
 * pid files, and where its daemon's and watchdog's threads wait.
 */
const snapshot = (c: Cluster, node: BlixardNode): string => {
  const lines = [`node ${node.id} at ${new Date().toISOString()}:`]
  for (const r of runnersOf(c.dir).filter((r) => r.node === node.id)) {
    const pidFile = path.join(stateDirOf(c, node), r.vm, "blixard.pid")
    const record = fs.existsSync(pidFile) ? fs.readFileSync(pidFile, "utf8").trim() : "(no pid file)"
    lines.push(`  runner of ${r.vm}: pid ${r.pid}; its pid file: ${record}`)
  }
  if (node.child?.pid !== undefined) lines.push(`  daemon (pid ${node.child.pid}) threads: ${threadsOf(node.child.pid)}`)
  const record = path.join(node.dataDir, "fencing", "watchdog.json")
  try {
    const watchdog = (JSON.parse(fs.readFileSync(record, "utf8")) as { process: { pid: number }; phase: string }).process.pid
    lines.push(`  watchdog ${fs.readFileSync(record, "utf8").trim()}`)
    lines.push(`  watchdog (pid ${watchdog}) threads: ${threadsOf(watchdog)}`)
  } catch (e) {
    lines.push(`  no watchdog record (${String(e)})`)
  }
  return lines.join("\n")
}

/** The leader's fault: starts it, and returns how to end it. */
const inflict = async (c: Cluster, leader: BlixardNode, fault: Fault): Promise<() => void> => {
  switch (fault) {
    case "disk stall":
    case "disk stall, writes too":
    case "disk stall, state directory too":
    case "disk stall, reads too": {
      const flushes = leader.env.STALL_FSYNC_TRIGGER!
      const writes = leader.env.STALL_WRITE_TRIGGER!
      const reads = leader.env.STALL_READ_TRIGGER!
      const end = () => {
        for (const trigger of [flushes, writes, reads]) fs.rmSync(trigger, { force: true })
      }
      fs.writeFileSync(flushes, "")
      if (fault === "disk stall, writes too") fs.writeFileSync(writes, "")
      // A write makes the leader's Raft loop save (and wait on the disk); idle, it may write nothing.
      void cli(leader.addr, ["vm", "create", "--name", "during-stall", "--runner", c.runnerFixture("during-stall")], 30_000)
      if (fault === "disk stall, state directory too" || fault === "disk stall, reads too") {
        // Flushes hang first, then every write: the daemon's loop waits in its flush (off the
        // JavaScript thread), so the daemon lives on and fences too, on a state directory it can
        // no longer write — the order in which one run in twenty had left runners running.
        await waitFor("the leader to wait in a flush", async () => (fs.existsSync(`${flushes}.held`) ? true : undefined)).catch((e) => {
          end()
          throw e
        })
        fs.writeFileSync(writes, "")
        // Then reads too, cached or not: the volume answers nothing at all.
        if (fault === "disk stall, reads too") fs.writeFileSync(reads, "")
      }
      return end
    }
    case "SIGSTOP":
      leader.child!.kill("SIGSTOP")
      return () => leader.child!.kill("SIGCONT")
    case "kill -9":
      await leader.stop("SIGKILL")
      return () => leader.start()
  }
}

const scenario = async (fault: Fault) => {
  const c = newCluster()
  current = c
  const config = path.join(c.dir, "timeouts.json")
  // Room for all six VMs on the two nodes left (a node's default capacity is this host's cores less one).
  const capacity = { vcpus: 8, memoryMiB: 8192 }
  fs.writeFileSync(config, JSON.stringify({ capacity, timeouts: { tickMs: TickMs, fencingMs: FencingMs, nodeDownMs: NodeDownMs } }))
  const stalls = diskStall(fault)
  const staller = stalls ? buildStaller(c.dir) : {}
  if (stalls && staller.library === undefined) throw new Error(staller.why)
  const setup = (node: BlixardNode) => {
    node.args = ["--config", config]
    if (staller.library !== undefined) {
      node.env = {
        LD_PRELOAD: staller.library,
        // The data directory, and with it (as on a host where both sit on one volume) the VMs'
        // state directory: their logs, pid files and `booted` links.
        STALL_FSYNC_DIR: [path.resolve(node.dataDir), ...(fault === "disk stall, state directory too" || fault === "disk stall, reads too" ? [stateDirOf(c, node)] : [])].join(":"),
        STALL_FSYNC_TRIGGER: path.join(c.dir, `stall-fsync-${node.id}`),
        STALL_WRITE_TRIGGER: path.join(c.dir, `stall-write-${node.id}`),
        STALL_READ_TRIGGER: path.join(c.dir, `stall-read-${node.id}`),
        // The library sees libc's calls only: none of libuv's file operations may go through io_uring.
        UV_USE_IO_URING: "0"
      }
    }
  }
  await c.add(setup)
  await waitFor("node 1 to found the cluster", async () => ((await cliJson<{ leader?: number }>(c.node(1).addr, ["cluster", "status"])).leader === 1 ? true : undefined))
  await c.add(setup)
  await c.add(setup)
  await c.converged([1, 2, 3])

  await Promise.all(
    Vms.map(async (vm, i) => {
      const runner = c.runnerFixture(vm)
      const addr = c.node((i % 3) + 1).addr
      await waitFor(`${vm} to be created`, async () => {
        const created = await cli(addr, ["vm", "create", "--name", vm, "--runner", runner])
        // A retry after an answer lost to a timeout finds it created.
        return created.code === 0 || created.stderr.includes("BLX_VM_EXISTS") ? true : undefined
      }, 90_000)
      await waitFor(`${vm} to be started`, async () => ((await cli(addr, ["vm", "start", vm])).code === 0 ? true : undefined), 90_000)
    })
  )
  /** Every VM runs exactly once, on the node the cluster places it on; the runners' nodes by VM. */
  const allRunningOnce = (addr: string) => async () => {
    const listed = await cliJson<Array<VmJson>>(addr, ["vm", "list"])
    const runners = runnersOf(c.dir)
    const hosts = new Map<string, number>()
    for (const vm of Vms) {
      const record = listed.find((v) => v.spec.name === vm)
      const mine = runners.filter((r) => r.vm === vm)
      if (record?.status.phase !== "running" || mine.length !== 1 || mine[0]!.node !== record.node) return undefined
      hosts.set(vm, mine[0]!.node)
    }
    return hosts
  }
  const before = await waitFor("the six VMs to run", allRunningOnce(c.node(1).addr), 60_000)
  const leaderId = await c.converged([1, 2, 3])
  const leader = c.node(leaderId)
  const moved = Vms.filter((vm) => before.get(vm) === leaderId)
  // The scheduler spreads six VMs over three nodes: the leader hosts some.
  expect(moved.length).toBeGreaterThan(0)

  const watch = sampler(c.dir)
  let end: (() => void) | undefined
  try {
    const faultAt = Date.now()
    end = await inflict(c, leader, fault)
    const others = c.nodes.filter((n) => n !== leader)
    // The majority elects another leader, marks the faulty node down after nodeDownMs and starts its
    // VMs elsewhere: the window in which they could run twice.
    await waitFor(
      `the leader's VMs (${moved.join(", ")}) to run on the other nodes`,
      async () => {
        const runners = runnersOf(c.dir)
        return moved.every((vm) => runners.some((r) => r.vm === vm && r.node !== leaderId)) ? true : undefined
      },
      60_000
    )
    // Stopped by its own fencing (or its watchdog's), not merely outnumbered by the copies elsewhere.
    await waitFor("the faulty node's runners to stop", async () => (runnersOf(c.dir).every((r) => r.node !== leaderId) ? true : undefined))
    await waitFor("the fault to have lasted FaultMs", async () => (Date.now() - faultAt >= FaultMs ? true : undefined), FaultMs + 1000)
    end()
    end = undefined
    // Back: every VM runs again, once, where the cluster says (asked on a node that was not faulty).
    await waitFor("every VM to run exactly once after the fault", allRunningOnce(others[0]!.addr), 60_000)
    await waitFor("the old leader to be back in the cluster", async () => {
      const status = await cliJson<{ leader?: number }>(leader.addr, ["cluster", "status"])
      return status.leader !== undefined && status.leader !== 0 ? true : undefined
    })
    // A few more samples with everything healed.
    const settled = watch.samples + 10
    await waitFor("ten more samples", async () => (watch.samples >= settled ? true : undefined))
  } catch (error) {
    if (end === undefined) throw error
    // Seen while the fault holds, then the fault lifted before the cluster is killed, so that what
    // the faulty node's watchdog logged meanwhile (queued for its stalled log) reaches its log.
    const seen = snapshot(c, leader)
    end()
    const log = path.join(leader.dataDir, "fencing", "watchdog.log")
    const size = () => (fs.existsSync(log) ? fs.statSync(log).size : 0)
    let last = -1
    await waitFor("the watchdog's log to settle", async () => (size() === last ? true : ((last = size()), undefined)), 10_000).catch(() => undefined)
    const tail = fs.existsSync(log) ? fs.readFileSync(log, "utf8").slice(-6000) : "(none)"
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${seen}\n--- its watchdog's log, once the fault ended ---\n${tail}`, { cause: error })
  } finally {
    watch.stop()
  }
  expect(watch.doubles).toEqual([])
  expect(watch.samples).toBeGreaterThan(FaultMs / 100 / 2)
  return { c, leader, moved }
}

describe("a VM never runs on two nodes when the leader stalls (real processes, six VMs)", () => {
  it.skipIf(!hasCompiler)("its disk stops completing fsync for longer than nodeDownMs: it fences, says so, and every VM runs again", async () => {
    const { leader } = await scenario("disk stall")
    expect(leader.output).toMatch(
      new RegExp(`BLX_STORAGE_STALLED: node ${leader.id}'s data directory ${path.resolve(leader.dataDir).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} has not completed a write`)
    )
    expect(leader.output).toContain("FENCING")
  })

  it.skipIf(!hasCompiler)(
    "its disk stops completing every write, the watchdog's too, for longer than nodeDownMs: the watchdog fences regardless, and every VM runs again",
    async () => {
      const { leader, moved } = await scenario("disk stall, writes too")
      // The daemon was stuck in a write: the runners were stopped by the watchdog, whose log (in the
      // stalled directory) is written once the disk is back.
      const log = path.join(leader.dataDir, "fencing", "watchdog.log")
      const fenced = await waitFor("the watchdog's log to name the VMs it stopped", async () => {
        // logfmt escapes the quotes around a VM's name.
        const text = fs.existsSync(log) ? fs.readFileSync(log, "utf8").replaceAll('\\"', '"') : ""
        return moved.every((vm) => text.includes(`BLX_FENCED: VM "${vm}"`)) ? text : undefined
      })
      expect(fenced).toContain(`node ${leader.id}'s lease expired`)
      // Its own record write hung, and it stopped them anyway.
      expect(fenced).toContain(`node ${leader.id}: FENCING — the watchdog's record (phase "fencing") was not written within`)
    }
  )

  it.skipIf(!hasCompiler)(
    "its disk, where the VMs' state directory is too, stops completing every write for longer than nodeDownMs: the watchdog fences regardless, and every VM runs again",
    async () => {
      const { leader, moved } = await scenario("disk stall, state directory too")
      // The daemon lived on (its loop waiting in a flush) and fenced as well as its watchdog: each of
      // the node's VMs was stopped by one or both, which say so.
      const log = path.join(leader.dataDir, "fencing", "watchdog.log")
      await waitFor("the daemon's or the watchdog's log to name each VM stopped", async () => {
        const text = `${fs.existsSync(log) ? fs.readFileSync(log, "utf8") : ""}\n${leader.output}`.replaceAll('\\"', '"')
        return moved.every((vm) => text.includes(`BLX_FENCED: VM "${vm}"`) || text.includes(`VM "${vm}": FENCING`)) ? true : undefined
      })
    }
  )

  it.skipIf(!hasCompiler)(
    "its disk, where the VMs' state directory is too, stops answering every write and every read for longer than nodeDownMs: the watchdog fences regardless, and every VM runs again",
    async () => {
      const { leader, moved } = await scenario("disk stall, reads too")
      // The daemon's JavaScript thread stopped in a read (SQLite's, its own files'): only the watchdog
      // could stop the runners, its lease read, its record and every pid file unanswered.
      const log = path.join(leader.dataDir, "fencing", "watchdog.log")
      const fenced = await waitFor("the watchdog's log to name the VMs it stopped", async () => {
        const text = fs.existsSync(log) ? fs.readFileSync(log, "utf8").replaceAll('\\"', '"') : ""
        return moved.every((vm) => text.includes(`BLX_FENCED: VM "${vm}"`)) ? text : undefined
      })
      expect(fenced).toContain(`node ${leader.id}: the lease file was not read within`)
      expect(fenced).toContain(`node ${leader.id}'s lease expired`)
    }
  )

  it("it is SIGSTOPped for longer than nodeDownMs, then continued", async () => {
    await scenario("SIGSTOP")
  })

  it("it is killed with kill -9, and restarted after longer than nodeDownMs", async () => {
    await scenario("kill -9")
  })
})
