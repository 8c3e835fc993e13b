/**
 * microvm.nix's state layout, shared by process mode and systemd mode:
 *
 *   ${stateDir}/${name}/current            → the runner to start (what `prepare` made)
 *   ${stateDir}/${name}/booted             → the runner that was started (removed by a clean stop)
 *   ${stateDir}/${name}/flake/             → the generated flake of an inline VM
 *   ${stateDir}/${name}/blixard.log        → build output and the runner's stdout/stderr
 *   ${stateDir}/${name}/blixard.pid        → process mode: the runner's pid file (JSON, see PidRecord)
 *   ${stateDir}/${name}/blixard-virtiofsd.pid
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { VmName } from "../../domain/VmName.js"

export interface VmPaths {
  readonly dir: string
  readonly current: string
  readonly booted: string
  readonly flakeDir: string
  readonly log: string
  readonly pidFile: (process: "vm" | "virtiofsd") => string
}

export const vmPaths = (stateDir: string, name: VmName): VmPaths => {
  const dir = path.join(stateDir, name)
  return {
    dir,
    current: path.join(dir, "current"),
    booted: path.join(dir, "booted"),
    flakeDir: path.join(dir, "flake"),
    log: path.join(dir, "blixard.log"),
    pidFile: (process) => path.join(dir, process === "vm" ? "blixard.pid" : "blixard-virtiofsd.pid")
  }
}

/** Points `link` at `target`, replacing any previous link atomically (a new link renamed over it). */
export const replaceSymlink = (target: string, link: string): void => {
  const tmp = `${link}.tmp-${process.pid}`
  fs.rmSync(tmp, { force: true })
  fs.symlinkSync(target, tmp)
  fs.renameSync(tmp, link)
}

/** Where a link points, resolved against its directory; undefined when it does not exist. */
export const readLink = (link: string): string | undefined => {
  try {
    return path.resolve(path.dirname(link), fs.readlinkSync(link))
  } catch {
    return undefined
  }
}

export const isExecutable = (file: string): boolean => {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}

/** Writes a whole file atomically (temporary file renamed over it). */
export const writeFileAtomic = (file: string, content: string): void => {
  const tmp = `${file}.tmp-${process.pid}`
  fs.writeFileSync(tmp, content)
  fs.renameSync(tmp, file)
}

/** What a pid file holds: enough to recognise the process after a daemon restart. */
export interface PidRecord {
  readonly vm: string
  readonly process: "vm" | "virtiofsd"
  readonly pid: number
  /** /proc/PID/stat start time (clock ticks since boot). */
  readonly startTime: string
  readonly bootId: string
  /** Epoch milliseconds when it was started. */
  readonly startedAt: number
}

export const readPidRecord = (file: string): PidRecord | undefined => {
  let parsed: unknown
  try {
    parsed = JSON.parse(fs.readFileSync(file, "utf8"))
  } catch {
    return undefined
  }
  if (typeof parsed !== "object" || parsed === null) return undefined
  const r = parsed as Record<string, unknown>
  return typeof r.vm === "string" &&
    (r.process === "vm" || r.process === "virtiofsd") &&
    typeof r.pid === "number" &&
    Number.isSafeInteger(r.pid) &&
    r.pid > 0 &&
    typeof r.startTime === "string" &&
    typeof r.bootId === "string" &&
    typeof r.startedAt === "number"
    ? { vm: r.vm, process: r.process, pid: r.pid, startTime: r.startTime, bootId: r.bootId, startedAt: r.startedAt }
    : undefined
}

export const appendLog = (file: string, text: string): void => {
  try {
    fs.appendFileSync(file, text)
  } catch {
    // The log is for people; failing to write it must not fail the operation.
  }
}
