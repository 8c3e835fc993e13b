import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, Schema, Scope, Stream } from "effect"
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import * as DiskReads from "../../src/vm/internal/diskReads.js"
import { bootId, readStat } from "../../src/vm/internal/procfs.js"
import { make, type ProcessSettings } from "../../src/vm/ProcessBackend.js"
import type { RunnerExit, VmBackendShape } from "../../src/vm/VmBackend.js"
import {
  crasher,
  killGroup,
  makeRunner,
  processAlive,
  removeDir,
  readMark,
  type Runner,
  type RunnerScripts,
  shutdownAware,
  sleeper,
  stalledFile,
  tempDir,
  termIgnorer,
  vmName,
  waitFor,
  waitForEffect
} from "./fixtures.js"

const node = Schema.decodeSync(NodeId)(3)

interface Setup {
  readonly root: string
  readonly stateDir: string
  readonly settings: ProcessSettings
}

const setup = (): Setup => {
  const root = tempDir("vm-process")
  const stateDir = path.join(root, "microvms")
  // The runner fixtures live in `root`, not in the Nix store.
  return { root, stateDir, settings: { stateDir, node, adoptedPollInterval: Duration.millis(50), allowedRunnerPrefixes: [root] } }
}

/** A backend instance living in `scope` (closing the scope is a daemon restart: runners keep running). */
const backendIn = (settings: ProcessSettings, scope: Scope.Scope) =>
  make(settings).pipe(Scope.extend(scope), Effect.provide(NodeContext.layer))

/** Kills whatever a test left running and deletes its directory, whatever happened. */
const cleanup = (s: Setup, pids: Array<number>) =>
  Effect.addFinalizer(() =>
    Effect.sync(() => {
      pids.forEach(killGroup)
      removeDir(s.root)
    })
  )

/** A prepared VM named `name` on a fixture runner. */
const prepared = (backend: VmBackendShape, s: Setup, name: string, scripts: RunnerScripts) =>
  Effect.gen(function* () {
    const runner = makeRunner(s.root, name, scripts)
    yield* backend.prepare(VmSpec.make({ name: vmName(name), source: RunnerConfig.make({ path: runner.dir }) }))
    return runner
  })

/** A file's trimmed text, undefined when it is not there or empty. */
const readMarkFile = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, "utf8").trim() || undefined
  } catch {
    return undefined
  }
}

/** Ends a `stalledFile`'s stall: a writer opens and closes it, so its readers read it as empty. */
const release = (fifo: string): void => fs.closeSync(fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK))

const startsOf = (runner: Runner) => (readMark(runner, "starts") ?? "").split("\n").filter((l) => l !== "")

/** Takes the next exit event, failing the test if none arrives within the deadline. */
const nextExit = (events: Stream.Stream<RunnerExit>) =>
  Stream.runHead(events).pipe(
    Effect.timeout("20 seconds"),
    Effect.map(Option.getOrThrowWith(() => new Error("the event stream ended")))
  )

/**
 * Holds every one of libuv's threads in this process, as a stalled disk does when each of them waits
 * in a write to it: each opens a FIFO without a reader to write. Every asynchronous file operation
 * queues behind them (they never complete) until the answer is called, which opens the readers.
 */
const holdLibuvThreads = (dir: string): (() => void) => {
  const count = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
  const fifos = Array.from({ length: count }, (_, i) => path.join(dir, `held-${i}`))
  for (const fifo of fifos) {
    execFileSync("mkfifo", [fifo])
    fs.open(fifo, "w", (error, fd) => (error === null ? fs.close(fd, () => undefined) : undefined))
  }
  return () => {
    for (const fifo of fifos) fs.closeSync(fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK))
  }
}

/** Whether an asynchronous file operation completes within `ms`. */
const asyncFsAnswers = (ms: number) =>
  Effect.promise(() => fs.promises.stat("/").then(() => true)).pipe(Effect.timeout(`${ms} millis`), Effect.option, Effect.map(Option.isSome))

describe("VmBackend, microvm.nix process mode (real child processes)", () => {
  it.scopedLive("start runs bin/microvm-run from the state directory, reports its pid, and logs its output", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      const runner = yield* prepared(backend, s, "web", { run: sleeper })
      const vmDir = path.join(s.stateDir, "web")
      expect(fs.readlinkSync(path.join(vmDir, "current"))).toBe(runner.dir)

      const pid = yield* backend.start(vmName("web"))
      pids.push(pid)
      const recorded = yield* waitFor("the runner to record its pid", () => startsOf(runner)[0])
      expect(Number(recorded)).toBe(pid)
      // The fixture writes its pid, then its working directory: wait for the second as well.
      const cwd = yield* waitFor("the runner to record its working directory", () => readMark(runner, "cwd")?.trim() || undefined)
      expect(fs.realpathSync(cwd)).toBe(fs.realpathSync(vmDir))
      expect(fs.readlinkSync(path.join(vmDir, "booted"))).toBe(runner.dir)
      const state = yield* backend.status(vmName("web"))
      expect(state).toMatchObject({ _tag: "Running", pid, adopted: false })
      // Its own process group, so a signal to the daemon's group does not reach it.
      expect(readStat(pid)?.pgrp).toBe(pid)
      const pidFile = JSON.parse(fs.readFileSync(path.join(vmDir, "blixard.pid"), "utf8"))
      expect(pidFile).toMatchObject({ vm: "web", pid, startTime: readStat(pid)?.startTime, bootId: bootId() })
      yield* waitFor("the runner's output in the log", () =>
        fs.readFileSync(path.join(vmDir, "blixard.log"), "utf8").includes("hello from runner web")
      )
      expect(yield* backend.list).toEqual([{ name: "web", state }])
      yield* backend.stop(vmName("web"), "5 seconds")
    }))

  it.scopedLive("a second start of a running VM answers the same pid and starts no second copy", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      const runner = yield* prepared(backend, s, "web", { run: sleeper })
      const [a, b] = yield* Effect.all([backend.start(vmName("web")), backend.start(vmName("web"))], { concurrency: 2 })
      pids.push(a)
      const c = yield* backend.start(vmName("web"))
      expect(b).toBe(a)
      expect(c).toBe(a)
      yield* waitFor("the runner to start", () => startsOf(runner).length > 0)
      expect(startsOf(runner)).toEqual([String(a)])
      yield* backend.stop(vmName("web"), "5 seconds")
    }))

  it.scopedLive("stop without microvm-shutdown sends SIGTERM; the VM is then absent and stop is idempotent", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      const events = yield* backend.subscribe
      yield* prepared(backend, s, "web", { run: sleeper })
      const pid = yield* backend.start(vmName("web"))
      pids.push(pid)
      yield* backend.stop(vmName("web"), "10 seconds")
      expect(processAlive(pid)).toBe(false)
      expect(yield* backend.status(vmName("web"))).toMatchObject({ _tag: "Absent" })
      expect(fs.existsSync(path.join(s.stateDir, "web", "booted"))).toBe(false)
      expect(fs.existsSync(path.join(s.stateDir, "web", "blixard.pid"))).toBe(false)
      yield* backend.stop(vmName("web"), "1 second")
      yield* backend.stop(vmName("never-started"), "1 second")
      // A requested stop is not an exit event: the next event is the crash below, not the stop.
      const next = yield* Effect.fork(nextExit(events))
      yield* prepared(backend, s, "crash", { run: crasher })
      yield* backend.start(vmName("crash"))
      expect(yield* Fiber.join(next)).toMatchObject({ name: "crash", exitCode: 3 })
    }))

  it.scopedLive("stop signals the runner while its log cannot be written (a stalled disk): no write holds the stop", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      yield* prepared(backend, s, "web", { run: sleeper })
      const pid = yield* backend.start(vmName("web"))
      pids.push(pid)
      // The log becomes a FIFO without a reader: opening it to write hangs, as a write to a stalled
      // disk does. A synchronous write on the stop path would hang this whole process here.
      const log = path.join(s.stateDir, "web", "blixard.log")
      fs.rmSync(log)
      execFileSync("mkfifo", [log])
      yield* Effect.addFinalizer(() =>
        // A reader releases the open that hangs (on libuv's thread), so the test's process can end.
        Effect.sync(() => fs.closeSync(fs.openSync(log, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)))
      )
      yield* backend.stop(vmName("web"), "10 seconds").pipe(Effect.timeout("20 seconds"))
      expect(processAlive(pid)).toBe(false)
      expect(fs.existsSync(path.join(s.stateDir, "web", "blixard.pid"))).toBe(false)
    }))

  it.scopedLive("with readWait (the fencing watchdog's), reads and a stale pid file's removal that hang (a stalled disk) hold up neither the listing nor a stop", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      // A daemon started both runners; it is gone (its runners live on), or hung.
      const daemon = yield* Scope.make()
      const first = yield* backendIn(s.settings, daemon)
      yield* prepared(first, s, "a", { run: sleeper })
      yield* prepared(first, s, "b", { run: sleeper })
      const a = yield* first.start(vmName("a"))
      const b = yield* first.start(vmName("b"))
      pids.push(a, b)
      yield* Scope.close(daemon, Exit.void)
      // a's runner was stopped, but its pid file was not removed: stale.
      killGroup(a)
      yield* waitFor("a's runner to exit", () => !processAlive(a))
      expect(fs.existsSync(path.join(s.stateDir, "a", "blixard.pid"))).toBe(true)

      // As the fencing watchdog's round (its settings): a backend built (it lists), a listing.
      const watchdogSettings = { ...s.settings, findUnrecorded: true, readWait: Duration.millis(200) }
      const backend = yield* backendIn(watchdogSettings, yield* Effect.scope).pipe(Effect.timeout("10 seconds"))
      expect(yield* backend.list.pipe(Effect.timeout("10 seconds"))).toEqual([
        { name: "a", state: { _tag: "Absent" } },
        { name: "b", state: expect.objectContaining({ _tag: "Running", pid: b, adopted: true }) }
      ])

      // From now on no file operation off the JavaScript thread completes: every read and the pid
      // file's removal hang.
      const release = holdLibuvThreads(s.root)
      yield* Effect.addFinalizer(() => Effect.sync(release))
      expect(yield* asyncFsAnswers(300)).toBe(false)
      // A new round: the runner is still found (in /proc), within the reads' wait.
      const round = yield* backendIn(watchdogSettings, yield* Effect.scope).pipe(Effect.timeout("10 seconds"))
      const started = Date.now()
      expect(yield* round.list.pipe(Effect.timeout("10 seconds"))).toEqual([
        { name: "b", state: expect.objectContaining({ _tag: "Running", pid: b, adopted: true }) }
      ])
      expect(Date.now() - started).toBeLessThan(2000)
      // Its stop then hangs in its own clean-up on that disk, but only after its signal.
      yield* Effect.forkScoped(round.stop(vmName("b"), "5 seconds"))
      yield* waitFor("b's runner to be stopped", () => !processAlive(b))
      release()
      // Once the disk is back, the stale pid file is removed by the next listing that reads it.
      yield* round.list
      yield* waitFor("a's stale pid file to be removed once the disk is back", () => !fs.existsSync(path.join(s.stateDir, "a", "blixard.pid")))
    }))

  it.scopedLive("start's reads of a marker and of a virtiofs share that never answer (a stalled disk) wait off the event loop, holding no more of libuv's threads than the low lane's", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      // b's virtiofs share names its socket in a file that never answers a read; c's marker never answers.
      const b = yield* prepared(backend, s, "b", { run: sleeper, virtiofsd: `echo $$ > ${JSON.stringify(path.join(s.root, "virtiofsd.pid"))}\nexec sleep 1000` })
      const share = path.join(b.dir, "share", "microvm", "virtiofs", "fs0")
      fs.mkdirSync(share, { recursive: true })
      const socketFile = yield* stalledFile(path.join(share, "socket"))
      yield* prepared(backend, s, "c", { run: sleeper })
      const marker = yield* stalledFile(path.join(s.stateDir, "c", "blixard.json"))
      const startB = yield* Effect.fork(backend.start(vmName("b")))
      const startC = yield* Effect.fork(Effect.either(backend.start(vmName("c"))))
      const virtiofsd = Number(yield* waitFor("b's virtiofsd to start", () => readMarkFile(path.join(s.root, "virtiofsd.pid"))))
      pids.push(virtiofsd)
      // A synchronous read of either file would hang this whole process here: no timer would fire,
      // no other file operation would answer.
      const before = Date.now()
      yield* Effect.sleep("300 millis")
      expect(Date.now() - before).toBeLessThan(3000)
      const other = path.join(s.root, "other")
      fs.writeFileSync(other, "answered")
      expect(yield* Effect.promise(() => DiskReads.readText(other, "high")).pipe(Effect.timeout("5 seconds"))).toBe("answered")
      expect(startB.unsafePoll()).toBeNull()
      expect(startC.unsafePoll()).toBeNull()
      // The disk answers again (each file reads as empty): c's marker is not valid, b has no socket to wait for.
      release(socketFile)
      release(marker)
      const c = yield* Fiber.join(startC).pipe(Effect.timeout("10 seconds"))
      expect(c).toMatchObject({ _tag: "Left", left: { _tag: "VmDirForeign" } })
      const pidB = yield* Fiber.join(startB).pipe(Effect.timeout("10 seconds"))
      pids.push(pidB)
      expect(processAlive(pidB)).toBe(true)
    }))

  it.scopedLive("with findUnrecorded (the fencing watchdog's), a runner whose pid file was never written is found in /proc and stopped", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const daemon = yield* Scope.make()
      const first = yield* backendIn(s.settings, daemon)
      yield* prepared(first, s, "web", { run: sleeper })
      const pid = yield* first.start(vmName("web"))
      pids.push(pid)
      yield* Scope.close(daemon, Exit.void)
      // Its daemon hung, or died, before writing the pid file (a disk stalled just then).
      fs.rmSync(path.join(s.stateDir, "web", "blixard.pid"))
      const plain = yield* backendIn(s.settings, yield* Effect.scope)
      expect(yield* plain.status(vmName("web"))).toMatchObject({ _tag: "Absent" })
      const watchdog = yield* backendIn({ ...s.settings, findUnrecorded: true }, yield* Effect.scope)
      expect(yield* watchdog.list).toEqual([{ name: "web", state: expect.objectContaining({ _tag: "Running", pid, adopted: true }) }])
      yield* watchdog.stop(vmName("web"), "5 seconds")
      expect(processAlive(pid)).toBe(false)
    }))

  it.scopedLive("stop runs microvm-shutdown (from the state directory) and waits for the runner to exit", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      const runner = yield* prepared(backend, s, "web", {
        run: shutdownAware,
        shutdown: `pwd > ${JSON.stringify(path.join(s.root, "shutdown-cwd"))}\ntouch shutdown-requested`
      })
      const pid = yield* backend.start(vmName("web"))
      pids.push(pid)
      yield* waitFor("the runner to start", () => startsOf(runner).length > 0)
      const started = Date.now()
      // The runner ignores SIGTERM: only microvm-shutdown stops it before the (long) timeout.
      yield* backend.stop(vmName("web"), "30 seconds")
      expect(Date.now() - started).toBeLessThan(25_000)
      expect(processAlive(pid)).toBe(false)
      const log = fs.readFileSync(path.join(s.stateDir, "web", "blixard.log"), "utf8")
      expect(log).toContain("clean shutdown")
      expect(log).not.toContain("SIGKILL")
      expect(fs.realpathSync(fs.readFileSync(path.join(s.root, "shutdown-cwd"), "utf8").trim())).toBe(
        fs.realpathSync(path.join(s.stateDir, "web"))
      )
    }))

  it.scopedLive("a runner that ignores SIGTERM is SIGKILLed once the timeout has passed", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      const ready = path.join(s.root, "ready")
      yield* prepared(backend, s, "stubborn", { run: termIgnorer(ready) })
      const pid = yield* backend.start(vmName("stubborn"))
      pids.push(pid)
      yield* waitFor("the runner to ignore SIGTERM", () => fs.existsSync(ready))
      const started = Date.now()
      yield* backend.stop(vmName("stubborn"), "600 millis")
      expect(Date.now() - started).toBeGreaterThanOrEqual(550)
      expect(processAlive(pid)).toBe(false)
      expect(fs.readFileSync(path.join(s.stateDir, "stubborn", "blixard.log"), "utf8")).toContain("SIGKILL")
      expect(yield* backend.status(vmName("stubborn"))).toMatchObject({ _tag: "Absent" })
    }))

  it.scopedLive("a microvm-shutdown that hangs and ignores its interruption (in a stalled state directory) does not hold up the SIGKILL due at the timeout", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      const ready = path.join(s.root, "ready")
      const hung = path.join(s.root, "shutdown-hung")
      // The shutdown script ignores SIGTERM and never ends (as one waiting on a hung disk in D state).
      yield* prepared(backend, s, "stubborn", {
        run: termIgnorer(ready),
        shutdown: `trap '' TERM\necho $$ > ${JSON.stringify(hung)}\nwhile :; do sleep 0.05; done`
      })
      const pid = yield* backend.start(vmName("stubborn"))
      pids.push(pid)
      yield* waitFor("the runner to ignore SIGTERM", () => fs.existsSync(ready))
      const started = Date.now()
      yield* backend.stop(vmName("stubborn"), "600 millis").pipe(Effect.timeout("8 seconds"))
      const script = Number(fs.readFileSync(hung, "utf8"))
      pids.push(script) // still hung: killed by the clean-up
      expect(processAlive(pid)).toBe(false)
      expect(Date.now() - started).toBeLessThan(5000)
    }))

  it.scopedLive("a crashing runner produces an exit event with its code, and status reports it", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      const events = yield* backend.subscribe
      yield* prepared(backend, s, "crash", { run: crasher })
      pids.push(yield* backend.start(vmName("crash")))
      const exit = yield* nextExit(events)
      expect(exit).toMatchObject({ name: "crash", process: "vm", exitCode: 3, signal: undefined })
      const state = yield* backend.status(vmName("crash"))
      expect(state).toMatchObject({ _tag: "Exited", exitCode: 3 })
      // The backend's own lines reach the log off the event loop: shortly after the event.
      const logFile = path.join(s.stateDir, "crash", "blixard.log")
      const log = yield* waitFor("the exit to be logged", () => {
        const text = fs.readFileSync(logFile, "utf8")
        return text.includes("exit code 3") ? text : undefined
      })
      expect(log).toContain("about to crash")
      // The restart policy's move: start again.
      pids.push(yield* backend.start(vmName("crash")))
      expect(yield* nextExit(events)).toMatchObject({ name: "crash", exitCode: 3 })
    }))

  it.scopedLive("tap-up/macvtap-up run before the runner and tap-down/macvtap-down after it stopped; virtiofsd-run is supervised", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      const order = JSON.stringify(path.join(s.root, "order"))
      const runner = yield* prepared(backend, s, "net", {
        run: `echo run >> ${order}\n${sleeper}`,
        tapUp: `echo tap-up >> ${order}`,
        tapDown: `echo tap-down >> ${order}`,
        more: { "macvtap-up": `echo macvtap-up >> ${order}`, "macvtap-down": `echo macvtap-down >> ${order}` },
        virtiofsd: `echo virtiofsd >> ${order}\necho $$ > ${JSON.stringify(path.join(s.root, "virtiofsd.pid"))}\nexec sleep 1000`
      })
      const pid = yield* backend.start(vmName("net"))
      pids.push(pid)
      const virtiofsdPid = Number(
        yield* waitFor("virtiofsd to start", () => {
          try {
            return fs.readFileSync(path.join(s.root, "virtiofsd.pid"), "utf8").trim() || undefined
          } catch {
            return undefined
          }
        })
      )
      pids.push(virtiofsdPid)
      yield* waitFor("the runner to start", () => startsOf(runner).length > 0)
      expect(processAlive(virtiofsdPid)).toBe(true)
      expect(readStat(virtiofsdPid)?.pgrp).toBe(virtiofsdPid)
      const lines = () => fs.readFileSync(path.join(s.root, "order"), "utf8").trim().split("\n")
      expect(lines().slice(0, 2)).toEqual(["tap-up", "macvtap-up"])
      expect(lines()).toContain("virtiofsd")
      expect(lines()[lines().length - 1]).toBe("run")
      yield* backend.stop(vmName("net"), "5 seconds")
      expect(processAlive(pid)).toBe(false)
      expect(processAlive(virtiofsdPid)).toBe(false)
      expect(lines().slice(-2)).toEqual(["tap-down", "macvtap-down"])
      expect(fs.existsSync(path.join(s.stateDir, "net", "booted"))).toBe(false)
    }))

  it.scopedLive("with readWait (the fencing watchdog's), a tap-down slower than readWait is still followed by macvtap-down: each script is looked for within readWait of its own", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn({ ...s.settings, findUnrecorded: true, readWait: Duration.millis(200) }, yield* Effect.scope)
      const order = JSON.stringify(path.join(s.root, "order"))
      yield* prepared(backend, s, "net", {
        run: sleeper,
        tapDown: `sleep 0.6\necho tap-down >> ${order}`,
        more: { "macvtap-down": `echo macvtap-down >> ${order}` }
      })
      pids.push(yield* backend.start(vmName("net")))
      yield* backend.stop(vmName("net"), "5 seconds")
      expect(fs.readFileSync(path.join(s.root, "order"), "utf8").trim().split("\n")).toEqual(["tap-down", "macvtap-down"])
      yield* waitFor("booted to be removed", () => !fs.existsSync(path.join(s.stateDir, "net", "booted")))
    }))

  it.scopedLive("two processes stopping a VM at once (the agent and the fencing watchdog) tear it down once; a failed tap-down is retried", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const daemon = yield* backendIn(s.settings, yield* Effect.scope)
      const order = JSON.stringify(path.join(s.root, "order"))
      const failOnce = JSON.stringify(path.join(s.root, "tap-down-failed"))
      yield* prepared(daemon, s, "net", {
        run: sleeper,
        tapUp: `echo tap-up >> ${order}`,
        tapDown: `sleep 0.2\necho tap-down >> ${order}`
      })
      const pid = yield* daemon.start(vmName("net"))
      pids.push(pid)
      // The watchdog is another process: another backend instance, adopting the runner.
      const watchdog = yield* backendIn(s.settings, yield* Effect.scope)
      yield* Effect.all([daemon.stop(vmName("net"), "5 seconds"), watchdog.stop(vmName("net"), "5 seconds")], { concurrency: 2 })
      expect(processAlive(pid)).toBe(false)
      const lines = () => fs.readFileSync(path.join(s.root, "order"), "utf8").trim().split("\n")
      expect(lines()).toEqual(["tap-up", "tap-down"])
      expect(fs.readdirSync(path.join(s.stateDir, "net")).filter((f) => f.startsWith("booted"))).toEqual([])

      // A tap-down that fails leaves `booted` in place, so the next stop runs it again.
      yield* prepared(daemon, s, "flaky", {
        run: sleeper,
        tapDown: `if [ ! -e ${failOnce} ]; then touch ${failOnce}; exit 1; fi\necho flaky-down >> ${order}`
      })
      pids.push(yield* daemon.start(vmName("flaky")))
      const failed = yield* Effect.flip(daemon.stop(vmName("flaky"), "5 seconds"))
      expect(failed.message).toContain("tap-down failed")
      expect(fs.existsSync(path.join(s.stateDir, "flaky", "booted"))).toBe(true)
      yield* daemon.stop(vmName("flaky"), "5 seconds")
      expect(lines().at(-1)).toBe("flaky-down")
      expect(fs.readdirSync(path.join(s.stateDir, "flaky")).filter((f) => f.startsWith("booted"))).toEqual([])
    }))

  it.scopedLive("ADOPTION: a runner outlives its backend instance and a new instance adopts it, then stops it", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const first = yield* Scope.make()
      const before = yield* backendIn(s.settings, first)
      const runner = yield* prepared(before, s, "web", { run: sleeper })
      const pid = yield* before.start(vmName("web"))
      pids.push(pid)
      yield* waitFor("the runner to start", () => startsOf(runner).length > 0)
      // The daemon "restarts": its backend instance goes away; the detached runner stays.
      yield* Scope.close(first, Exit.void)
      expect(processAlive(pid)).toBe(true)

      const after = yield* backendIn(s.settings, yield* Effect.scope)
      const listed = yield* after.list
      expect(listed).toEqual([{ name: "web", state: expect.objectContaining({ _tag: "Running", pid, adopted: true }) }])
      // Starting it again must not start a second copy.
      expect(yield* after.start(vmName("web"))).toBe(pid)
      expect(startsOf(runner)).toEqual([String(pid)])
      yield* after.stop(vmName("web"), "5 seconds")
      expect(processAlive(pid)).toBe(false)
      expect(yield* after.status(vmName("web"))).toMatchObject({ _tag: "Absent" })
    }))

  it.scopedLive("an adopted runner that dies is reported as an exit event (code unknown)", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const first = yield* Scope.make()
      const before = yield* backendIn(s.settings, first)
      yield* prepared(before, s, "web", { run: sleeper })
      const pid = yield* before.start(vmName("web"))
      pids.push(pid)
      yield* Scope.close(first, Exit.void)
      const after = yield* backendIn(s.settings, yield* Effect.scope)
      const events = yield* after.subscribe
      expect(yield* after.status(vmName("web"))).toMatchObject({ _tag: "Running", pid, adopted: true })
      process.kill(pid, "SIGKILL")
      expect(yield* nextExit(events)).toMatchObject({ name: "web", process: "vm", exitCode: undefined })
      yield* waitForEffect(
        "the VM to be observed as exited",
        Effect.map(after.status(vmName("web")), (st) => st._tag === "Exited")
      )
    }))

  it.scopedLive("a stale pid file (dead pid, reused pid, or another process) is not adopted", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      yield* prepared(backend, s, "web", { run: sleeper })
      const pidFile = path.join(s.stateDir, "web", "blixard.pid")
      const writePidFile = (pid: number, startTime: string) =>
        fs.writeFileSync(
          pidFile,
          JSON.stringify({ vm: "web", process: "vm", pid, startTime, bootId: bootId(), startedAt: Date.now() })
        )

      // 1. The pid is dead.
      const dead = spawn("true")
      const deadPid = dead.pid!
      yield* Effect.async<void>((resume) => void dead.once("exit", () => resume(Effect.void)))
      writePidFile(deadPid, "12345")
      expect(yield* backend.status(vmName("web"))).toMatchObject({ _tag: "Absent" })
      // Removed off the JavaScript thread, not waited for (see the stalled-disk test above).
      yield* waitFor("the stale pid file to be removed", () => !fs.existsSync(pidFile))

      // 2. The pid is alive but belongs to another process: its start time differs (pid reused) …
      const other = spawn("sleep", ["1000"], { stdio: "ignore" })
      pids.push(other.pid!)
      const otherStat = yield* waitFor("the other process", () => readStat(other.pid!))
      writePidFile(other.pid!, String(Number(otherStat.startTime) + 1))
      expect(yield* backend.status(vmName("web"))).toMatchObject({ _tag: "Absent" })
      // 3. … or its start time matches but it is not this VM's runner (no marker, other command line).
      writePidFile(other.pid!, otherStat.startTime)
      expect((yield* backend.list).map((o) => o.state._tag)).toEqual(["Absent"])
      expect(processAlive(other.pid!)).toBe(true)

      // 4. A process that does carry this VM's marker, but started at another time than recorded
      //    (the recorded runner died and its pid was reused): not adopted either.
      const lookalike = spawn("sleep", ["1000"], { stdio: "ignore", env: { ...process.env, BLIXARD_VM: "web" } })
      pids.push(lookalike.pid!)
      const lookalikeStat = yield* waitFor("the look-alike process", () => readStat(lookalike.pid!))
      writePidFile(lookalike.pid!, String(Number(lookalikeStat.startTime) - 1))
      expect(yield* backend.status(vmName("web"))).toMatchObject({ _tag: "Absent" })
      // (With the recorded start time it would be taken for the runner: the start time is what decides.)
      writePidFile(lookalike.pid!, lookalikeStat.startTime)
      expect(yield* backend.status(vmName("web"))).toMatchObject({ _tag: "Running", pid: lookalike.pid, adopted: true })
      yield* backend.stop(vmName("web"), "5 seconds")
      expect(processAlive(lookalike.pid!)).toBe(false)

      // A fresh start then works normally.
      const pid = yield* backend.start(vmName("web"))
      pids.push(pid)
      expect(pid).not.toBe(other.pid)
      yield* backend.stop(vmName("web"), "5 seconds")
    }))

  it.scopedLive("remove stops the VM and deletes its state directory", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      yield* prepared(backend, s, "web", { run: sleeper })
      const pid = yield* backend.start(vmName("web"))
      pids.push(pid)
      yield* backend.remove(vmName("web"))
      expect(processAlive(pid)).toBe(false)
      expect(fs.existsSync(path.join(s.stateDir, "web"))).toBe(false)
      expect(yield* backend.list).toEqual([])
      yield* backend.remove(vmName("web"))
    }))

  it.scopedLive("bad input gets a BackendFailed naming the VM, the node and what to do", () =>
    Effect.gen(function* () {
      const s = setup()
      yield* cleanup(s, [])
      const backend = yield* backendIn(s.settings, yield* Effect.scope)
      const notPrepared = yield* Effect.flip(backend.start(vmName("ghost")))
      expect(notPrepared).toMatchObject({ _tag: "BackendFailed", code: "BLX_BACKEND_FAILED", subject: "ghost", node })
      expect(notPrepared.message).toContain('VM "ghost" is not prepared on node 3')
      expect(notPrepared.message).toContain("Prepare it")

      const empty = path.join(s.root, "not-a-runner")
      fs.mkdirSync(empty)
      const bad = yield* Effect.flip(
        backend.prepare(VmSpec.make({ name: vmName("web"), source: RunnerConfig.make({ path: empty }) }))
      )
      expect(bad).toMatchObject({ _tag: "BackendFailed", subject: "web", node })
      expect(bad.message).toContain("has no executable bin/microvm-run on node 3")
      expect(fs.existsSync(path.join(s.stateDir, "web", "current"))).toBe(false)
    }))

  it.scopedLive("the VM starts only once virtiofsd has created its sockets; a virtiofsd that does not fails the start", () =>
    Effect.gen(function* () {
      const s = setup()
      const pids: Array<number> = []
      yield* cleanup(s, pids)
      const backend = yield* backendIn({ ...s.settings, virtiofsdTimeout: Duration.millis(800) }, yield* Effect.scope)
      /** A runner with one virtiofs share, as microvm.nix's runner records it (share/microvm/virtiofs/TAG/socket). */
      const withShare = (name: string, virtiofsd: string) =>
        Effect.gen(function* () {
          const socket = `${name}-virtiofs-ro-store.sock`
          const runner = yield* prepared(backend, s, name, {
            // The hypervisor fails at once when a share's socket is missing, as cloud-hypervisor and qemu do.
            run: `[ -S ${socket} ] || { echo "no virtiofs socket" >&2; exit 9; }\necho connected > ${JSON.stringify(path.join(s.root, `${name}-connected`))}\n${sleeper}`,
            virtiofsd
          })
          const share = path.join(runner.dir, "share", "microvm", "virtiofs", "ro-store")
          fs.mkdirSync(share, { recursive: true })
          fs.writeFileSync(path.join(share, "socket"), `${socket}\n`)
          return { runner, socket }
        })

      const slow = yield* withShare(
        "web",
        `echo $$ > ${JSON.stringify(path.join(s.root, "web-virtiofsd.pid"))}\nsleep 0.4\nexec ${JSON.stringify(process.execPath)} -e 'require("net").createServer().listen(process.argv[1])' web-virtiofs-ro-store.sock`
      )
      const pid = yield* backend.start(vmName("web"))
      pids.push(pid, Number(fs.readFileSync(path.join(s.root, "web-virtiofsd.pid"), "utf8")))
      yield* waitFor("the runner to connect its share", () => fs.existsSync(path.join(s.root, "web-connected")))
      expect(fs.lstatSync(path.join(s.stateDir, "web", slow.socket)).isSocket()).toBe(true)
      expect(yield* backend.status(vmName("web"))).toMatchObject({ _tag: "Running", pid })
      yield* backend.stop(vmName("web"), "5 seconds")

      const silent = yield* withShare("db", `echo $$ > ${JSON.stringify(path.join(s.root, "db-virtiofsd.pid"))}\n${sleeper}`)
      const error = yield* Effect.flip(backend.start(vmName("db")))
      const virtiofsdPid = Number(fs.readFileSync(path.join(s.root, "db-virtiofsd.pid"), "utf8"))
      pids.push(virtiofsdPid)
      expect(error).toMatchObject({ _tag: "BackendFailed", subject: "db", node })
      expect(error.message).toContain(`did not create ${path.join(s.stateDir, "db", silent.socket)} within`)
      expect(error.message).toContain("on node 3; the VM was not started")
      expect(startsOf(silent.runner)).toEqual([])
      expect(processAlive(virtiofsdPid)).toBe(false)
    }))
})
