/**
 * A VM's log on its node (`VmLogs.ts`): the process backend's log file with a real runner printing
 * over time, and systemd mode's journal through a fake `journalctl` (see `fakeJournalctl` for what
 * it does not model).
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Fiber, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { make } from "../../src/vm/ProcessBackend.js"
import * as VmLogs from "../../src/vm/VmLogs.js"
import { fakeJournalctl, killGroup, makeRunner, processAlive, scopedTempDir, ticker, vmName, waitFor } from "./fixtures.js"

const node = Schema.decodeSync(NodeId)(3)

describe("lastLines", () => {
  it("keeps the last N lines, with or without a final newline", () => {
    expect(VmLogs.lastLines("a\nb\nc\n", 2)).toBe("b\nc\n")
    expect(VmLogs.lastLines("a\nb\nc", 2)).toBe("b\nc")
    expect(VmLogs.lastLines("a\nb\n", 5)).toBe("a\nb\n")
    expect(VmLogs.lastLines("a\nb\n", 0)).toBe("")
    expect(VmLogs.lastLines("a\nb\n", undefined)).toBe("a\nb\n")
  })
})

describe("VmLogs, process mode (a real runner)", () => {
  it.scopedLive("shows the build and console log, --tail, and follows the runner's output as it prints; interrupting ends it", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("vm-logs")
      const stateDir = path.join(root, "microvms")
      const backend = yield* make({ stateDir, node, allowedRunnerPrefixes: [root] }).pipe(Effect.provide(NodeContext.layer))
      const runner = makeRunner(root, "web", { run: ticker(30, 150) })
      const name = vmName("web")
      yield* backend.prepare(VmSpec.make({ name, source: RunnerConfig.make({ path: runner.dir }) }))
      const pid = yield* backend.start(name)
      yield* Effect.addFinalizer(() => Effect.sync(() => killGroup(pid)))
      const settings: VmLogs.VmLogSettings = { backend: "process", stateDir, node, pollMs: 50 }
      const log = path.join(stateDir, "web", "blixard.log")
      yield* waitFor("tick 2 in the log", () => fs.readFileSync(log, "utf8").includes("tick 2\n"))

      const all = Chunk.join(yield* Stream.runCollect(VmLogs.stream(settings, { name, follow: false })), "")
      expect(all).toContain("# blixard")
      expect(all).toContain("hello from runner web")
      const tail = Chunk.join(yield* Stream.runCollect(VmLogs.stream(settings, { name, follow: false, tail: 1 })), "")
      expect(tail).toMatch(/^tick \d+\n$/)

      // Following: lines printed after the request arrive, in order, with none lost or repeated.
      const seen: Array<string> = []
      const fiber = yield* VmLogs.stream(settings, { name, follow: true, tail: 1 }).pipe(
        Stream.runForEach((chunk) => Effect.sync(() => seen.push(chunk))),
        Effect.fork
      )
      const start = Number(/tick (\d+)/.exec(tail)![1])
      yield* Effect.promise(() =>
        Effect.runPromise(waitFor(`tick ${start + 4} followed`, () => seen.join("").includes(`tick ${start + 4}\n`), Duration.seconds(30)))
      )
      const ticks = seen.join("").split("\n").filter((l) => l.startsWith("tick")).map((l) => Number(l.slice(5)))
      expect(ticks.slice(0, 5)).toEqual([0, 1, 2, 3, 4].map((k) => ticks[0]! + k))
      yield* Fiber.interrupt(fiber)
      expect(fiber.unsafePoll()?._tag).toBe("Failure") // interrupted, not still polling
    }))

  it.scopedLive("a VM never prepared here has no log (BLX_BACKEND_FAILED naming the node)", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("vm-logs")
      const error = yield* Effect.flip(
        Stream.runCollect(VmLogs.stream({ backend: "process", stateDir: root, node }, { name: vmName("nope"), follow: false }))
      )
      expect(error.code).toBe("BLX_BACKEND_FAILED")
      expect(error.message).toContain("node 3")
    }))
})

describe("VmLogs, systemd mode (fake journalctl)", () => {
  it.scopedLive("reads the unit's journal (-u microvm@NAME -o cat -n N), after the build log; following stops journalctl when the reader goes", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("vm-logs-systemd")
      const stateDir = path.join(root, "microvms")
      const backend = yield* make({ stateDir, node, allowedRunnerPrefixes: [root] }).pipe(Effect.provide(NodeContext.layer))
      const runner = makeRunner(root, "db", { run: ticker(1) })
      const name = vmName("db")
      yield* backend.prepare(VmSpec.make({ name, source: RunnerConfig.make({ path: runner.dir }) }))
      fs.appendFileSync(path.join(stateDir, "db", "blixard.log"), "building db: done\n")
      const journalctl = fakeJournalctl(root, ["booting", "login: ", "line 3"])
      const settings: VmLogs.VmLogSettings = { backend: "systemd", stateDir, node, journalctl: journalctl.file }

      const text = Chunk.join(yield* Stream.runCollect(VmLogs.stream(settings, { name, follow: false, tail: 2 })), "")
      expect(text).toBe("building db: done\nlogin: \nline 3\n")
      expect(journalctl.calls()).toEqual(["-u microvm@db -o cat --no-pager -n 2"])

      const seen: Array<string> = []
      const fiber = yield* VmLogs.stream(settings, { name, follow: true, tail: 1 }).pipe(
        Stream.runForEach((chunk) => Effect.sync(() => seen.push(chunk))),
        Effect.fork
      )
      yield* Effect.promise(() => Effect.runPromise(waitFor("followed lines", () => seen.join("").includes("followed 3\n"))))
      const pid = journalctl.pid()!
      expect(processAlive(pid)).toBe(true)
      expect(journalctl.calls()[1]).toBe("-u microvm@db -o cat --no-pager -n 1 -f")
      yield* Fiber.interrupt(fiber)
      yield* Effect.promise(() => Effect.runPromise(waitFor("journalctl killed", () => !processAlive(pid))))
    }))
})
