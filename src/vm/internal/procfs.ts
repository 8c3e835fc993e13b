/**
 * Reading Linux's /proc to recognise a process again after the daemon restarted. A pid alone can be
 * reused; (boot id, pid, start time in clock ticks since boot) names one process for good.
 *
 * Synchronous on purpose: /proc is served by the kernel, never by a disk, so these reads cannot hang
 * on a stalled volume (the fencing watchdog relies on them while its disk answers nothing, on its
 * stop path too: `isAlive` after each signal, `groupLeadersIn` when no pid file answers). A working
 * directory is read as the kernel's own record of its path (no lookup on the disk under it); stat,
 * cmdline and environ are the kernel's copy or the process's own memory. What could still make one
 * wait is that memory, swapped out to a swap device that stalled, or held by the process's kernel
 * lock (a process blocked in the kernel while mapping memory): not the data disk, and rare enough
 * that going through libuv's thread pool (whose threads a stalled data disk may hold) would cost more
 * than it saves.
 */
import * as fs from "node:fs"
import * as path from "node:path"

export interface ProcStat {
  /** R, S, D, Z (zombie), T, X (dead), … */
  readonly state: string
  readonly pgrp: number
  /** Field 22 of /proc/PID/stat: start time in clock ticks since boot, kept as text (it is compared, not computed). */
  readonly startTime: string
}

const readText = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch {
    return undefined
  }
}

/** Parses /proc/PID/stat; the command name (field 2) may hold spaces and parentheses, so split after the last ')'. */
export const readStat = (pid: number): ProcStat | undefined => {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined
  const text = readText(`/proc/${pid}/stat`)
  if (text === undefined) return undefined
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ")
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  const state = rest[0]
  const pgrp = rest[2]
  const startTime = rest[19]
  if (state === undefined || pgrp === undefined || startTime === undefined) return undefined
  return { state, pgrp: Number(pgrp), startTime }
}

export const readCmdline = (pid: number): ReadonlyArray<string> =>
  (readText(`/proc/${pid}/cmdline`) ?? "").split("\0").filter((arg) => arg.length > 0)

/** The environment the process was exec'd with (readable by the same user or root). */
export const readEnviron = (pid: number): ReadonlyArray<string> =>
  (readText(`/proc/${pid}/environ`) ?? "").split("\0").filter((entry) => entry.length > 0)

let cachedBootId: string | undefined
export const bootId = (): string => {
  cachedBootId ??= (readText("/proc/sys/kernel/random/boot_id") ?? "unknown").trim()
  return cachedBootId
}

/** The process with this pid and start time still exists and has not exited (zombies count as exited). */
export const isAlive = (pid: number, startTime: string): boolean => {
  const stat = readStat(pid)
  return stat !== undefined && stat.startTime === startTime && stat.state !== "Z" && stat.state !== "X"
}

/** A process found in /proc by its working directory and environment (`groupLeadersIn`). */
export interface MarkedProcess {
  readonly pid: number
  /** The name its working directory and its environment agree on. */
  readonly name: string
}

/**
 * The processes that lead their process group, run in a directory right under `parent` (resolved)
 * and were exec'd with `${variable}=NAME` in their environment, NAME being that directory's name
 * (a VM's runner: `BLIXARD_VM=web`, run in `${stateDir}/web`), among those this user may read. One
 * pass over /proc: for what no pid file names (a runner whose pid file was never written, or cannot
 * be read). Nothing of it touches a disk: /proc is the kernel's, and a working directory's path is
 * read from the kernel's own record (readlink of /proc/PID/cwd), not looked up.
 */
export const groupLeadersIn = (parent: string, variable: string): ReadonlyArray<MarkedProcess> => {
  let entries: Array<string>
  try {
    entries = fs.readdirSync("/proc")
  } catch {
    return []
  }
  const found: Array<MarkedProcess> = []
  for (const entry of entries) {
    if (!/^[0-9]+$/.test(entry)) continue
    const pid = Number(entry)
    let cwd: string
    try {
      cwd = fs.readlinkSync(`/proc/${pid}/cwd`)
    } catch {
      continue // gone, or not ours to read
    }
    if (path.dirname(cwd) !== parent) continue
    const name = path.basename(cwd)
    const stat = readStat(pid)
    if (stat === undefined || stat.pgrp !== pid || stat.state === "Z" || stat.state === "X") continue
    if (readEnviron(pid).includes(`${variable}=${name}`)) found.push({ pid, name })
  }
  return found
}
