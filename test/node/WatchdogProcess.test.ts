/**
 * `blixard node watchdog` as a real process, over real runner processes (test/vm/fixtures.ts)
 * started by a process-mode backend that then goes away, as a daemon that died would: the lease
 * runs out → the runner is stopped; the lease is renewed → it is left alone; a second watchdog of
 * the same node exits; systemd mode goes through `systemctl stop`. Short fencing timeouts; every
 * wait is a condition with a deadline.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Schedule, Scope } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fencingPaths } from "../../src/agent/internal/fencingFiles.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import type { WatchdogConfig } from "../../src/node/Config.js"
import { lineWriter } from "../../src/vm/internal/lineWriter.js"
import { make } from "../../src/vm/ProcessBackend.js"
import { buildStaller, hasCompiler } from "../e2e/staller.js"
import {
  fakeSystemctl,
  killGroup,
  makeRunner,
  processAlive,
  type RunnerScripts,
  scopedTempDir,
  sleeper,
  stalledFile,
  vmName,
  waitFor
} from "../vm/fixtures.js"
import { deadWriter, readRecord, startWatchdog, watchdogsOf, writeLease } from "./fencing.js"

const node = NodeId.make(3)
const FencingMs = 1000

const configIn = (root: string, vmBackend: "process" | "systemd" = "process"): WatchdogConfig => ({
  id: node,
  dataDir: path.join(root, "data"),
  vmBackend,
  microvmStateDir: path.join(root, "microvms"),
  fencingMs: FencingMs,
  stopTimeoutMs: 500
})

/** A runner of VM `name` started by a backend instance that is then closed (the daemon is gone). */
const runnerOf = (config: WatchdogConfig, root: string, name: string, scripts: RunnerScripts = { run: sleeper }) =>
  Effect.gen(function* () {
    const daemon = yield* Scope.make()
    const backend = yield* make({ stateDir: config.microvmStateDir, node, allowedRunnerPrefixes: [root] }).pipe(Scope.extend(daemon), Effect.provide(NodeContext.layer))
    const runner = makeRunner(root, name, scripts)
    yield* backend.prepare(VmSpec.make({ name: vmName(name), source: RunnerConfig.make({ path: runner.dir }) }))
    const pid = yield* backend.start(vmName(name))
    yield* Effect.addFinalizer(() => Effect.sync(() => killGroup(pid)))
    yield* Scope.close(daemon, Exit.void)
    return pid
  })

/** Waits until the watchdog has written its record naming `pid`. */
const recorded = (config: WatchdogConfig, pid: number) =>
  waitFor(`the watchdog (pid ${pid}) to write its record`, () => readRecord(config)?.process.pid === pid)

describe("blixard node watchdog (real processes)", () => {
  it.scopedLive("the lease runs out: the runner is stopped just after it (not before), BLX_FENCED is logged, and the watchdog exits once nothing is left", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("watchdog")
      const config = configIn(root)
      const pid = yield* runnerOf(config, root, "web")
      // Its daemon is gone: the lease's writer does not run.
      yield* writeLease(config, Date.now() + 60_000, deadWriter)
      const watchdog = yield* startWatchdog(config)
      yield* recorded(config, watchdog.pid)
      expect(processAlive(pid)).toBe(true)

      const validUntil = Date.now() + FencingMs
      yield* writeLease(config, validUntil, deadWriter)
      yield* waitFor("the runner to be stopped", () => !processAlive(pid))
      const stoppedAt = Date.now()
      expect(stoppedAt).toBeGreaterThan(validUntil)
      expect(stoppedAt - validUntil).toBeLessThan(2500)

      const code = yield* Deferred.await(watchdog.exited).pipe(Effect.timeout("20 seconds"))
      expect(code).toBe(0)
      expect(watchdog.output()).toMatch(/BLX_FENCED: VM \\"web\\" \(pid \d+\) stopped by node 3's fencing watchdog: node 3's lease expired at .*its daemon \(pid \d+\) is gone/)
      expect(watchdog.output()).toContain("no daemon holds the lease: the fencing watchdog exits")
      expect(fs.existsSync(fencingPaths(config.dataDir).watchdog)).toBe(false)
      expect(fs.readFileSync(path.join(config.microvmStateDir, "web", "blixard.log"), "utf8")).toContain(`stopping the runner (pid ${pid})`)
    }))

  it.scopedLive("a renewed lease leaves the runner alone; a second watchdog of the node exits at once", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("watchdog")
      const config = configIn(root)
      const pid = yield* runnerOf(config, root, "web")
      // This test process plays the daemon in contact with the quorum: renewing every 200 ms.
      const renew = Effect.suspend(() => writeLease(config, Date.now() + FencingMs))
      yield* renew
      const renewing = yield* Effect.forkScoped(Effect.repeat(renew, Schedule.spaced("200 millis")))
      const watchdog = yield* startWatchdog(config)
      yield* recorded(config, watchdog.pid)
      const until = Date.now() + 4 * FencingMs
      yield* waitFor("four fencing periods with the runner alive", () => {
        if (!processAlive(pid)) throw new Error("the runner was stopped although the lease was renewed")
        return Date.now() > until
      })

      const second = yield* startWatchdog(config)
      const code = yield* Deferred.await(second.exited).pipe(Effect.timeout("20 seconds"))
      expect(code).toBe(0)
      expect(second.output()).toContain(`a fencing watchdog already runs for ${config.dataDir} (pid ${watchdog.pid}`)
      expect(readRecord(config)?.process.pid).toBe(watchdog.pid)
      expect(watchdogsOf(config.dataDir)).toEqual([watchdog.pid])
      expect(processAlive(pid)).toBe(true)

      // The renewals stop: the runner is stopped; its daemon (this process) runs, so the watchdog stays.
      yield* Fiber.interrupt(renewing)
      yield* waitFor("the runner to be stopped", () => !processAlive(pid))
      expect(processAlive(watchdog.pid)).toBe(true)
    }))

  it.scopedLive.skipIf(!hasCompiler)(
    "process mode, a runner's directory on a disk that answers nothing (the Nix store's, say): its scripts are not waited for, it is stopped with SIGTERM on time, another VM too",
    () =>
      Effect.gen(function* () {
        const root = yield* scopedTempDir("watchdog")
        const config = configIn(root)
        const staller = buildStaller(root)
        if (staller.library === undefined) throw new Error(staller.why)
        const ran = (what: string) => path.join(root, `ran-${what}`)
        const web = yield* runnerOf(config, root, "web", { run: sleeper, shutdown: `touch ${ran("shutdown")}`, tapDown: `touch ${ran("tap-down")}` })
        const db = yield* runnerOf(config, root, "db")
        // Every stat, access, open and read under web's runner hangs in the watchdog (not in the test).
        const trigger = path.join(root, "stall-reads")
        fs.writeFileSync(trigger, "")
        yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(trigger, { force: true })))
        const validUntil = Date.now() + FencingMs
        yield* writeLease(config, validUntil, deadWriter)
        const watchdog = yield* startWatchdog(config, {
          ...process.env,
          LD_PRELOAD: staller.library,
          STALL_FSYNC_DIR: path.join(root, "runner-web"),
          STALL_READ_TRIGGER: trigger,
          UV_USE_IO_URING: "0"
        })
        yield* waitFor("both runners to be stopped", () => !processAlive(web) && !processAlive(db))
        expect(Date.now() - validUntil).toBeLessThan(3000)
        const bin = path.join(root, "runner-web", "bin")
        // Logged before the signal, but its line may reach us (a pipe) after the runner is seen gone.
        const skipped = `VM \\"web\\" on node 3: whether ${bin}/microvm-shutdown exists was not told within 100ms (is the disk under the runner stalled?): it is not run; stopping the runner with SIGTERM instead`
        yield* waitFor("the skipped microvm-shutdown to be logged", () => watchdog.output().includes(skipped))
        yield* waitFor("web's teardown to be skipped", () => watchdog.output().includes(`${bin}/tap-down exists was not told within 100ms`))
        // Neither script was run; booted is put back, so the next stop (the daemon's) runs tap-down.
        yield* waitFor("web's booted link to be put back", () => fs.lstatSync(path.join(config.microvmStateDir, "web", "booted"), { throwIfNoEntry: false }) !== undefined)
        expect(fs.existsSync(ran("shutdown"))).toBe(false)
        expect(fs.existsSync(ran("tap-down"))).toBe(false)
      })
  )

  it.scopedLive("systemd mode: the watchdog stops the node's VMs with systemctl stop microvm@NAME, and only Blixard's", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("watchdog")
      const config = configIn(root, "systemd")
      const systemctl = fakeSystemctl(root)
      // Blixard's VMs (marked by node 3) and a VM of microvm.nix's own, whose unit runs too.
      for (const name of ["web", "db"]) {
        fs.mkdirSync(path.join(config.microvmStateDir, name), { recursive: true })
        fs.writeFileSync(path.join(config.microvmStateDir, name, "blixard.json"), JSON.stringify({ vm: name, node, createdAt: 1 }))
      }
      fs.mkdirSync(path.join(config.microvmStateDir, "foreign"), { recursive: true })
      systemctl.setState("microvm@web", "active")
      systemctl.setState("microvm@foreign", "active")
      yield* writeLease(config, Date.now() - 1, deadWriter)
      const watchdog = yield* startWatchdog(config, { ...process.env, PATH: `${root}:${process.env.PATH ?? ""}` })
      expect(yield* Deferred.await(watchdog.exited).pipe(Effect.timeout("20 seconds"))).toBe(0)
      expect(systemctl.calls()).toContain("stop microvm@web")
      expect(systemctl.calls()).not.toContain("stop microvm@db")
      // Not started, stopped or asked anything but its invocation (the memory of `SystemdBackend.ts`).
      expect(systemctl.calls().filter((c) => c.includes("foreign") && c !== "show --property=InvocationID --value microvm@foreign")).toEqual([])
      expect(watchdog.output()).toContain('BLX_FENCED: VM \\"web\\" (pid 4242) stopped by node 3')
    }))

  it.scopedLive("systemd mode on a stalled disk: a record read at start-up and markers that never answer do not keep it from stopping the units on time", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("watchdog")
      const config = configIn(root, "systemd")
      const systemctl = fakeSystemctl(root)
      for (const name of ["web", "db"]) {
        fs.mkdirSync(path.join(config.microvmStateDir, name), { recursive: true })
        fs.writeFileSync(path.join(config.microvmStateDir, name, "blixard.json"), JSON.stringify({ vm: name, node, createdAt: 1 }))
        systemctl.setState(`microvm@${name}`, "active")
      }
      // The record and web's marker never answer a read (released when the test ends).
      yield* stalledFile(fencingPaths(config.dataDir).watchdog)
      yield* stalledFile(path.join(config.microvmStateDir, "web", "blixard.json"))
      const validUntil = Date.now() + FencingMs
      yield* writeLease(config, validUntil, deadWriter)
      const watchdog = yield* startWatchdog(config, { ...process.env, PATH: `${root}:${process.env.PATH ?? ""}` })
      yield* waitFor("both units to be stopped", () => ["web", "db"].every((name) => systemctl.calls().includes(`stop microvm@${name}`)))
      const stoppedAt = Date.now()
      expect(stoppedAt).toBeGreaterThan(validUntil)
      expect(stoppedAt - validUntil).toBeLessThan(2500)
      expect(watchdog.output()).toContain("was not read within 1000 ms (is the data directory's disk stalled?); this watchdog starts watching regardless")
      expect(watchdog.output()).toContain('BLX_FENCED: VM \\"web\\" (pid 4242) stopped by node 3')
    }))

  it.scopedLive("systemd mode: a VM made by hand (its unit Restart=no too) whose directory stops answering after the watchdog read it is left alone; Blixard's is stopped", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("watchdog")
      const config = configIn(root, "systemd")
      const systemctl = fakeSystemctl(root)
      fs.mkdirSync(path.join(config.microvmStateDir, "web"), { recursive: true })
      fs.writeFileSync(path.join(config.microvmStateDir, "web", "blixard.json"), JSON.stringify({ vm: "web", node, createdAt: 1 }))
      // `microvm -c hand`: a directory without Blixard's marker, run as microvm@hand (Restart=no, as Blixard's units).
      fs.mkdirSync(path.join(config.microvmStateDir, "hand"), { recursive: true })
      systemctl.setState("microvm@web", "active")
      systemctl.setState("microvm@hand", "active")
      const validUntil = Date.now() + 3 * FencingMs
      yield* writeLease(config, validUntil, deadWriter)
      const watchdog = yield* startWatchdog(config, { ...process.env, PATH: `${root}:${process.env.PATH ?? ""}` })
      // Its survey, while the lease is valid, reads both directories' markers for the units' invocations
      // (then asks the state of the units found Blixard's: each marker has been read by then).
      yield* waitFor("the watchdog to survey the units", () => systemctl.calls().includes("is-active microvm@web"))
      expect(systemctl.calls()).toContain("show --property=InvocationID --value microvm@hand")
      // Then the disk stops answering: neither marker is read again.
      yield* stalledFile(path.join(config.microvmStateDir, "web", "blixard.json"))
      yield* stalledFile(path.join(config.microvmStateDir, "hand", "blixard.json"))
      expect(Date.now()).toBeLessThan(validUntil)
      yield* waitFor("web's unit to be stopped", () => systemctl.calls().includes("stop microvm@web"))
      expect(watchdog.output()).toContain('BLX_FENCED: VM \\"web\\" (pid 4242) stopped by node 3')
      // A round later it is still left alone (the next round comes one poll later at most).
      yield* waitFor("a second fence round", () => systemctl.calls().filter((c) => c === "list-units --plain --no-legend --full microvm@*").length >= 3)
      expect(systemctl.calls().filter((c) => c.startsWith("stop") || c.startsWith("kill"))).toEqual(["stop microvm@web"])
    }))

  it.scopedLive("systemd mode: a watchdog started again on a stalled disk still leaves alone a hand-made unit whose verdict its predecessor read (the runtime directory's file)", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("watchdog")
      const config = configIn(root, "systemd")
      const systemctl = fakeSystemctl(root)
      const runtimeDir = path.join(root, "run")
      fs.mkdirSync(runtimeDir)
      const env = { ...process.env, PATH: `${root}:${process.env.PATH ?? ""}`, RUNTIME_DIRECTORY: runtimeDir }
      fs.mkdirSync(path.join(config.microvmStateDir, "web"), { recursive: true })
      fs.writeFileSync(path.join(config.microvmStateDir, "web", "blixard.json"), JSON.stringify({ vm: "web", node, createdAt: 1 }))
      fs.mkdirSync(path.join(config.microvmStateDir, "hand"), { recursive: true })
      systemctl.setState("microvm@web", "active")
      systemctl.setState("microvm@hand", "active")
      yield* writeLease(config, Date.now() + 60_000, deadWriter)
      // The first watchdog surveys while the lease is valid: both markers read, their verdicts kept in the file.
      const first = yield* startWatchdog(config, env)
      const file = path.join(runtimeDir, `systemd-verdicts-node-${node}.json`)
      yield* waitFor("the verdicts to be written", () => {
        const text = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : ""
        return text.includes('"vm":"hand"') && text.includes('"vm":"web"')
      })
      expect(first.output()).toContain(`the units' marker verdicts are kept in ${file}`)
      // It dies; the disk stops answering; another watchdog starts (as the daemon starts one) and the lease runs out.
      killGroup(first.pid)
      yield* waitFor("the first watchdog to be gone", () => !processAlive(first.pid))
      yield* stalledFile(path.join(config.microvmStateDir, "web", "blixard.json"))
      yield* stalledFile(path.join(config.microvmStateDir, "hand", "blixard.json"))
      yield* writeLease(config, Date.now() + FencingMs, deadWriter)
      const listsBefore = systemctl.calls().filter((c) => c === "list-units --plain --no-legend --full microvm@*").length
      const second = yield* startWatchdog(config, env)
      yield* waitFor("web's unit to be stopped", () => systemctl.calls().includes("stop microvm@web"))
      expect(second.output()).toContain('BLX_FENCED: VM \\"web\\" (pid 4242) stopped by node 3')
      // A round later it is still left alone (its survey, then a round at least twice).
      yield* waitFor("a second fence round", () => systemctl.calls().filter((c) => c === "list-units --plain --no-legend --full microvm@*").length >= listsBefore + 3)
      expect(systemctl.calls().filter((c) => c.startsWith("stop") || c.startsWith("kill"))).toEqual(["stop microvm@web"])
    }))

  it.scopedLive("systemd mode: a verdict file that is not one is ignored with a warning naming it; the watchdog runs and rewrites it", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("watchdog")
      const config = configIn(root, "systemd")
      const systemctl = fakeSystemctl(root)
      const runtimeDir = path.join(root, "run")
      fs.mkdirSync(runtimeDir)
      const file = path.join(runtimeDir, `systemd-verdicts-node-${node}.json`)
      fs.writeFileSync(file, '{"version":1,"verdicts":[{"stateDir":"/x","vm":"web","invocation":"","whose":{"_tag":"Mine"}}]}')
      fs.mkdirSync(path.join(config.microvmStateDir, "web"), { recursive: true })
      fs.writeFileSync(path.join(config.microvmStateDir, "web", "blixard.json"), JSON.stringify({ vm: "web", node, createdAt: 1 }))
      systemctl.setState("microvm@web", "active")
      yield* writeLease(config, Date.now() + 60_000, deadWriter)
      const watchdog = yield* startWatchdog(config, { ...process.env, PATH: `${root}:${process.env.PATH ?? ""}`, RUNTIME_DIRECTORY: runtimeDir })
      yield* waitFor("the warning", () => watchdog.output().includes(`${file} does not hold the systemd units' verdicts`))
      yield* waitFor("the file to be rewritten", () => fs.readFileSync(file, "utf8").includes(`"stateDir":${JSON.stringify(config.microvmStateDir)}`))
      expect(processAlive(watchdog.pid)).toBe(true)
    }))

  it.scopedLive("bad flags exit 2 with BLX_INVALID_ARGUMENT naming each flag", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("watchdog")
      const watchdog = yield* startWatchdog({ ...configIn(root), dataDir: "relative/dir", fencingMs: 5 })
      expect(yield* Deferred.await(watchdog.exited).pipe(Effect.timeout("20 seconds"))).toBe(2)
      expect(watchdog.output()).toMatch(/^BLX_INVALID_ARGUMENT: --data-dir "relative\/dir": must be an absolute path; --fencing-ms 5: /)
    }))
})

describe("the watchdog's log writer (its output may sit on a stalled disk)", () => {
  it.scopedLive("never blocks the event loop while a write hangs; the lines arrive in order, those beyond its bound counted", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("watchdog-log")
      // A FIFO opened read-write: a blocking write end whose writes hang once its 64 KiB are full, as a
      // write to a hung disk does, until this test reads.
      const fifo = path.join(root, "log")
      execFileSync("mkfifo", [fifo])
      const fd = fs.openSync(fifo, "r+")
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.closeSync(fd)))
      const writer = lineWriter(10)
      const big = "x".repeat(100_000)
      writer.line(fd, big) // more than the pipe holds: this write hangs
      const queued = Array.from({ length: 15 }, (_, i) => `line ${i}`)
      for (const text of queued) writer.line(fd, text)
      // The event loop still turns (timers fire) while the write hangs on libuv's thread.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
      let drained = false
      writer.drained(() => (drained = true))
      expect(drained).toBe(false)
      // Read without blocking: the writer's next write starts from this thread.
      const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.closeSync(reader)))
      let text = ""
      const chunk = Buffer.alloc(65_536)
      yield* waitFor("every line to arrive", () => {
        try {
          text += chunk.subarray(0, fs.readSync(reader, chunk)).toString()
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e
        }
        return text.endsWith("line 14\n")
      })
      // Ten lines waited at most: the five oldest were dropped, and the log says so.
      expect(text).toBe(`${big}\n(5 log lines dropped here: the log file took no writes meanwhile)\n${queued.slice(5).join("\n")}\n`)
      yield* waitFor("the writer to be drained", () => drained)
    }))
})
