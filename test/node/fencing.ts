/**
 * For the tests of the fencing watchdog as a real process (`blixard node watchdog`, run from the
 * built `bin/blixard.js`): starting one with a node's settings, its lease and record files, and
 * finding every watchdog process of a data directory through /proc.
 */
import { Deferred, Effect, Option, Schema } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fencingPaths, type ProcessIdentity, selfIdentity } from "../../src/agent/internal/fencingFiles.js"
import * as NodeLease from "../../src/agent/NodeLease.js"
import * as Watchdog from "../../src/agent/Watchdog.js"
import type { WatchdogConfig } from "../../src/node/Config.js"
import { watchdogArgs } from "../../src/node/HostFence.js"
import { bootId, readCmdline } from "../../src/vm/internal/procfs.js"
import { killGroup } from "../vm/fixtures.js"

export const bin = path.resolve(import.meta.dirname, "../../bin/blixard.js")

/** A lease writer that is not running: no process can have a pid above the kernel's pid_max (2^22). */
export const deadWriter: ProcessIdentity = { pid: 2 ** 22 + 1, startTime: "1", bootId: bootId() }

export const writeLease = (config: WatchdogConfig, validUntil: number, writer: ProcessIdentity = selfIdentity()) =>
  NodeLease.write(
    fencingPaths(config.dataDir).lease,
    new NodeLease.NodeLease({ node: config.id, validUntil, writtenAt: Date.now(), writer })
  )

export const readLease = (config: WatchdogConfig) =>
  Effect.map(NodeLease.read(fencingPaths(config.dataDir).lease, config.id), Option.getOrUndefined)

/** The node's watchdog record, if there is a valid one. */
export const readRecord = (config: WatchdogConfig): Watchdog.WatchdogRecord | undefined => {
  const file = fencingPaths(config.dataDir).watchdog
  if (!fs.existsSync(file)) return undefined
  return Option.getOrUndefined(Schema.decodeUnknownOption(Schema.parseJson(Watchdog.WatchdogRecord))(fs.readFileSync(file, "utf8")))
}

/** The pids of every running `… watchdog … --data-dir DIR …` process. */
export const watchdogsOf = (dataDir: string): ReadonlyArray<number> =>
  fs
    .readdirSync("/proc")
    .filter((entry) => /^[0-9]+$/.test(entry))
    .map(Number)
    .filter((pid) => {
      const argv = readCmdline(pid)
      const at = argv.indexOf("--data-dir")
      return argv.includes("watchdog") && at >= 0 && argv[at + 1] === dataDir
    })

export interface WatchdogChild {
  readonly pid: number
  /** Its stdout and stderr so far. */
  readonly output: () => string
  /** Its exit code (null when killed by a signal). */
  readonly exited: Deferred.Deferred<number | null>
}

/** Starts `blixard node watchdog` with `config`, detached as the daemon starts it; killed when the scope closes. */
export const startWatchdog = (config: WatchdogConfig, env: NodeJS.ProcessEnv = process.env) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const exited = yield* Deferred.make<number | null>()
      let output = ""
      const child = spawn(process.execPath, [bin, ...watchdogArgs(config)], {
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
        env
      })
      child.stdout.on("data", (d: Buffer) => (output += d.toString()))
      child.stderr.on("data", (d: Buffer) => (output += d.toString()))
      child.once("exit", (code) => Deferred.unsafeDone(exited, Effect.succeed(code)))
      return { pid: child.pid!, output: () => output, exited } satisfies WatchdogChild
    }),
    (w) => Effect.sync(() => killGroup(w.pid))
  )
