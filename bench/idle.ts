/**
 * `npm run bench -- idle`: what a quiet cluster costs. Three etcd members, then three Blixard nodes
 * (`--insecure-plaintext`, as etcd beside it), each formed on loopback and then left alone: after
 * `settleSeconds` the CPU time of every member's processes (Blixard: daemon + fencing watchdog) is
 * read from `/proc/PID/stat` at the start and end of a `seconds`-long window, and their resident
 * memory from `/proc/PID/status` at its end. Unlike `compare`'s idle figure, nothing was written
 * before (one write proves the cluster formed), so this is the empty cluster's floor: the cost of
 * ticks, heartbeats, contact probes, the lease and the transport's acknowledgements.
 *
 * Per member, and the ratio to etcd's members in the same run (targets: CPU ≤ 1.5×, RSS ≤ 2×).
 * `BENCH_IDLE_SYSTEMS=blixard` skips etcd (to compare two Blixard builds quickly).
 *
 * Counts that do not depend on the machine's load: with `BENCH_IDLE_STRACE_SECONDS=N`, after the CPU
 * window, each member's main process (Blixard: the daemon) is traced for N seconds
 * (`strace -c -f -e trace=epoll_pwait,epoll_wait,writev,write`): its event-loop wake-ups
 * (`epoll_pwait`/`epoll_wait` calls) and its writes (a peer frame is one `writev`, or `write`) per second.
 */
import * as os from "node:os"
import { cpuMs, leaderOf } from "./cluster.js"
import { formed, pssMb, rssMb, type System, withSystem } from "./compare.js"
import { spawn, spawnSync } from "node:child_process"

interface MemberIdle {
  readonly id: number
  readonly role: string
  /** CPU of each process of the member (Blixard: daemon, watchdog), ms per second. */
  readonly cpuMsPerSecond: ReadonlyArray<number>
  readonly rssMb: ReadonlyArray<number>
  /** Proportional set size of each process (pages shared between them counted once: `pssMb`). */
  readonly pssMb: ReadonlyArray<number>
  /** With `BENCH_IDLE_STRACE_SECONDS`: system calls per second of the main process, by name. */
  readonly syscallsPerSecond?: Readonly<Record<string, number>>
}

/** `strace -c` of `pid` for `seconds`: calls per second of each traced system call (empty if strace is missing). */
const traceCalls = (pid: number, seconds: number): Promise<Record<string, number>> =>
  new Promise((resolve) => {
    const child = spawn("strace", ["-c", "-f", "-e", "trace=epoll_pwait,epoll_wait,writev,write", "-p", String(pid)], { stdio: ["ignore", "ignore", "pipe"] })
    let err = ""
    child.stderr.on("data", (d: Buffer) => (err += d.toString()))
    child.on("error", () => resolve({}))
    child.on("close", () => {
      const calls: Record<string, number> = {}
      // "% time     seconds  usecs/call     calls    errors syscall": calls is the 4th column, the name the last.
      for (const line of err.split("\n")) {
        const cols = line.trim().split(/\s+/)
        const name = cols[cols.length - 1]!
        if (/^[0-9.]+$/.test(cols[0] ?? "") && /^[a-z_0-9]+$/.test(name) && name !== "total") calls[name] = Number((Number(cols[3]) / seconds).toFixed(1))
      }
      resolve(calls)
    })
    setTimeout(() => child.kill("SIGINT"), seconds * 1000)
  })

interface SystemIdle {
  readonly members: ReadonlyArray<MemberIdle>
  readonly cpuMsPerSecondPerMember: number
  readonly rssMbPerMember: number
  readonly pssMbPerMember: number
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const measureIdle = async (system: System, settleSeconds: number, seconds: number): Promise<SystemIdle> => {
  await formed(system)
  await sleep(settleSeconds * 1000)
  const processes = system.members.map((m) => [m.child?.pid, ...system.companions(m)])
  const before = processes.map((ps) => ps.map(cpuMs))
  const t0 = performance.now()
  await sleep(seconds * 1000)
  const after = processes.map((ps) => ps.map(cpuMs))
  const elapsed = (performance.now() - t0) / 1000
  const leader = system.name === "blixard" ? await leaderOf(system.members[0]!.port).catch(() => undefined) : undefined
  const straceSeconds = Number(process.env.BENCH_IDLE_STRACE_SECONDS ?? 0)
  const traced = straceSeconds > 0 ? await Promise.all(processes.map((ps) => (ps[0] !== undefined ? traceCalls(ps[0], straceSeconds) : Promise.resolve({})))) : undefined
  const members = system.members.map((m, i) => ({
    id: m.id,
    role: leader === undefined ? "?" : leader === m.id ? "leader" : "follower",
    cpuMsPerSecond: after[i]!.map((a, j) => Number(((a - before[i]![j]!) / elapsed).toFixed(1))),
    rssMb: processes[i]!.map(rssMb),
    pssMb: processes[i]!.map(pssMb),
    ...(traced !== undefined ? { syscallsPerSecond: traced[i]! } : {})
  }))
  const sum = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0)
  return {
    members,
    cpuMsPerSecondPerMember: Number((sum(members.map((m) => sum(m.cpuMsPerSecond))) / members.length).toFixed(1)),
    rssMbPerMember: Math.round(sum(members.map((m) => sum(m.rssMb))) / members.length),
    pssMbPerMember: Math.round(sum(members.map((m) => sum(m.pssMb))) / members.length)
  }
}

const run = (name: "etcd" | "blixard", settleSeconds: number, seconds: number): Promise<SystemIdle> =>
  withSystem(name, "idle", (system) => measureIdle(system, settleSeconds, seconds))

export const benchIdle = async (seconds = 30, settleSeconds = 15): Promise<ReadonlyArray<unknown>> => {
  const systems = (process.env.BENCH_IDLE_SYSTEMS ?? "etcd,blixard").split(",")
  const withEtcd = systems.includes("etcd") && spawnSync("etcd", ["--version"], { stdio: "ignore" }).status === 0
  const load = () => os.loadavg().map((l) => Number(l.toFixed(2)))
  const results: Array<unknown> = []
  const etcd = withEtcd ? await run("etcd", settleSeconds, seconds) : undefined
  if (etcd !== undefined) results.push({ name: "etcd 3 members, idle", seconds, loadAverage: load(), ...etcd })
  else if (systems.includes("etcd")) results.push({ name: "etcd 3 members, idle", skipped: "no etcd binary on the PATH (Debian: apt-get install etcd-server)" })
  const blixard = await run("blixard", settleSeconds, seconds)
  results.push({ name: "blixard 3 nodes, idle (daemon + watchdog)", seconds, loadAverage: load(), ...blixard })
  if (etcd !== undefined) {
    results.push({
      name: "blixard ÷ etcd, idle",
      ratios: {
        "CPU per member (target ≤ 1.5)": Number((blixard.cpuMsPerSecondPerMember / etcd.cpuMsPerSecondPerMember).toFixed(2)),
        "RSS per member (target ≤ 2)": Number((blixard.rssMbPerMember / etcd.rssMbPerMember).toFixed(2)),
        "PSS per member (shared pages once)": Number((blixard.pssMbPerMember / etcd.pssMbPerMember).toFixed(2))
      }
    })
  }
  return results
}
