/**
 * The runner processes of an e2e cluster's VMs, found in /proc (a runner's cwd is its VM's state
 * directory, `DIR/microvms-N/VM`, and its environment names the VM), and a sampler that looks every
 * 100 ms for a VM running on two nodes at once.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { processAlive } from "../vm/fixtures.js"

export interface RunnerProcess {
  readonly pid: number
  readonly vm: string
  readonly node: number
}

/** The runners of this cluster's VMs that run now, from /proc. */
export const runnersOf = (dir: string): Array<RunnerProcess> => {
  const found: Array<RunnerProcess> = []
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(entry)) continue
    const pid = Number(entry)
    let environ: string
    let cwd: string
    try {
      environ = fs.readFileSync(`/proc/${pid}/environ`, "latin1")
      cwd = fs.readlinkSync(`/proc/${pid}/cwd`)
    } catch {
      continue // gone, or not ours to read
    }
    const vm = /(?:^|\0)BLIXARD_VM=([^\0]*)/.exec(environ)?.[1]
    const where = /^microvms-([0-9]+)\/([^/]+)$/.exec(path.relative(dir, cwd))
    if (vm === undefined || where === null || where[2] !== vm || !processAlive(pid)) continue
    found.push({ pid, vm, node: Number(where[1]) })
  }
  return found
}

/** Processes whose command line names this cluster's directory (daemons, watchdogs). */
export const processesNaming = (dir: string): Array<number> =>
  fs
    .readdirSync("/proc")
    .filter((e) => /^[0-9]+$/.test(e))
    .map(Number)
    .filter((pid) => {
      try {
        return pid !== process.pid && fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir)
      } catch {
        return false
      }
    })

/** Samples the runners every 100 ms; records each VM found on two nodes (when first and last, in how many samples). */
export const sampler = (dir: string) => {
  const seen = new Map<string, { first: string; last: string; samples: number }>()
  let samples = 0
  const sample = () => {
    samples++
    const byVm = new Map<string, Array<RunnerProcess>>()
    for (const r of runnersOf(dir)) byVm.set(r.vm, [...(byVm.get(r.vm) ?? []), r])
    for (const [vm, runners] of byVm) {
      if (new Set(runners.map((r) => r.node)).size < 2) continue
      const key = `${vm} on ${runners.map((r) => `node ${r.node} (pid ${r.pid})`).join(" and ")}`
      const now = new Date().toISOString()
      const entry = seen.get(key) ?? { first: now, last: now, samples: 0 }
      entry.last = now
      entry.samples++
      seen.set(key, entry)
    }
  }
  const timer = setInterval(sample, 100)
  return {
    get doubles() {
      return [...seen].map(([key, e]) => `${key}: ${e.samples} samples from ${e.first} to ${e.last}`)
    },
    get samples() {
      return samples
    },
    stop: () => clearInterval(timer)
  }
}

