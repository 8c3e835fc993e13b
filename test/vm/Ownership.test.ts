/**
 * Both microvm.nix backends share the state directory with microvm.nix's own VMs: they act only on
 * the directories they marked (`blixard.json`), refuse a foreign one by name, list the others as
 * foreign, and keep GC roots for the runners they run in microvm.nix's layout.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import * as ProcessBackend from "../../src/vm/ProcessBackend.js"
import * as SystemdBackend from "../../src/vm/SystemdBackend.js"
import type { VmBackendShape } from "../../src/vm/VmBackend.js"
import { fakeSystemctl, killGroup, makeRunner, microvmCreatedVm, processAlive, scopedTempDir, sleeper, vmName } from "./fixtures.js"

const node = Schema.decodeSync(NodeId)(4)

interface Setup {
  readonly root: string
  readonly stateDir: string
  readonly gcRootDir: string
  readonly backend: VmBackendShape
  /** systemd mode: every systemctl call. */
  readonly calls: () => ReadonlyArray<string>
}

const backends = {
  process: Effect.gen(function* () {
    const root = yield* scopedTempDir("own-process")
    const stateDir = path.join(root, "microvms")
    const gcRootDir = path.join(root, "gcroots", "microvm")
    const backend = yield* ProcessBackend.make({ stateDir, node, gcRootDir, adoptedPollInterval: Duration.millis(50), allowedRunnerPrefixes: [root] }).pipe(
      Effect.provide(NodeContext.layer)
    )
    return { root, stateDir, gcRootDir, backend, calls: () => [] } satisfies Setup
  }),
  systemd: Effect.gen(function* () {
    const root = yield* scopedTempDir("own-systemd")
    const systemctl = fakeSystemctl(root)
    const stateDir = path.join(root, "microvms")
    const gcRootDir = path.join(root, "gcroots", "microvm")
    const backend = yield* SystemdBackend.make({ stateDir, node, gcRootDir, systemctl: systemctl.file, pollInterval: Duration.millis(50), allowedRunnerPrefixes: [root] }).pipe(
      Effect.provide(NodeContext.layer)
    )
    systemctl.setState("microvm@foreign", "active")
    return { root, stateDir, gcRootDir, backend, calls: systemctl.calls } satisfies Setup
  })
}

describe.each(["process", "systemd"] as const)("VM directory ownership, %s mode", (mode) => {
  it.scopedLive("a microvm -c VM is listed as foreign and refused by name, untouched; Blixard's VMs carry a marker", () =>
    Effect.gen(function* () {
      const s = yield* backends[mode]
      const foreign = microvmCreatedVm(s.root, s.stateDir, s.gcRootDir, "foreign")
      // Another node's VM directory on a shared state directory is not this node's either.
      const otherNode = path.join(s.stateDir, "elsewhere")
      fs.mkdirSync(otherNode)
      fs.writeFileSync(path.join(otherNode, "blixard.json"), JSON.stringify({ vm: "elsewhere", node: 9, createdAt: 1 }))

      const runner = makeRunner(s.root, "web", { run: sleeper })
      yield* s.backend.prepare(VmSpec.make({ name: vmName("web"), source: RunnerConfig.make({ path: runner.dir }) }))
      const marker = JSON.parse(fs.readFileSync(path.join(s.stateDir, "web", "blixard.json"), "utf8"))
      expect(marker).toMatchObject({ vm: "web", node: 4 })
      const pid = yield* s.backend.start(vmName("web"))
      yield* Effect.addFinalizer(() => Effect.sync(() => (mode === "process" ? killGroup(pid) : undefined)))

      expect((yield* s.backend.list).map((o) => o.name)).toEqual(["web"])
      const listed = yield* s.backend.foreign
      expect(listed.map((f) => f.name)).toEqual(["elsewhere", "foreign"])
      expect(listed[0]!.reason).toContain("node 9")
      expect(listed[1]!.reason).toContain("no Blixard marker")
      expect(yield* s.backend.status(vmName("foreign"))).toMatchObject({ _tag: "Absent" })

      // Told to run a VM of the same name: refused with the node and the directory, nothing touched.
      const spec = VmSpec.make({ name: vmName("foreign"), source: RunnerConfig.make({ path: runner.dir }) })
      const refused = yield* Effect.flip(s.backend.prepare(spec))
      expect(refused).toMatchObject({ _tag: "VmDirForeign", code: "BLX_VM_DIR_FOREIGN", node, subject: foreign.dir })
      expect(refused.message).toContain(`the directory ${foreign.dir} on node 4 is not Blixard's`)
      for (const attempt of [
        s.backend.start(vmName("foreign")),
        s.backend.stop(vmName("foreign"), "1 second"),
        s.backend.remove(vmName("foreign"))
      ]) {
        expect(yield* Effect.flip(attempt)).toMatchObject({ _tag: "VmDirForeign", subject: foreign.dir })
      }
      expect(yield* Effect.flip(s.backend.remove(vmName("elsewhere")))).toMatchObject({ _tag: "VmDirForeign" })

      yield* s.backend.remove(vmName("web"))
      expect(fs.existsSync(path.join(s.stateDir, "web"))).toBe(false)
      expect(foreign.unchanged()).toBe(true)
      expect(fs.existsSync(path.join(otherNode, "blixard.json"))).toBe(true)
      expect(s.calls().filter((c) => c.includes("foreign") || c.includes("elsewhere"))).toEqual([])
      if (mode === "process") expect(processAlive(pid)).toBe(false)
    }))

  it.scopedLive("GC roots for current and booted in microvm.nix's layout, made by prepare and removed on delete", () =>
    Effect.gen(function* () {
      const s = yield* backends[mode]
      const foreign = microvmCreatedVm(s.root, s.stateDir, s.gcRootDir, "foreign")
      const runner = makeRunner(s.root, "web", { run: sleeper })
      // A real runner links the guest's system here; `toplevel` repeats it for `microvm -l`/`-u`.
      fs.mkdirSync(path.join(runner.dir, "share", "microvm"), { recursive: true })
      fs.symlinkSync("/nix/store/00000000000000000000000000000000-nixos-system-web", path.join(runner.dir, "share", "microvm", "system"))
      yield* s.backend.prepare(VmSpec.make({ name: vmName("web"), source: RunnerConfig.make({ path: runner.dir }) }))
      const dir = path.join(s.stateDir, "web")
      expect(fs.readlinkSync(path.join(s.gcRootDir, "web"))).toBe(path.join(dir, "current"))
      expect(fs.readlinkSync(path.join(s.gcRootDir, "booted-web"))).toBe(path.join(dir, "booted"))
      expect(fs.readlinkSync(path.join(dir, "toplevel"))).toBe("/nix/store/00000000000000000000000000000000-nixos-system-web")
      // Followed to the store path as Nix's collector follows an indirect root.
      expect(fs.realpathSync(path.join(s.gcRootDir, "web"))).toBe(fs.realpathSync(runner.dir))

      const pid = yield* s.backend.start(vmName("web"))
      yield* Effect.addFinalizer(() => Effect.sync(() => (mode === "process" ? killGroup(pid) : undefined)))
      if (mode === "process") expect(fs.realpathSync(path.join(s.gcRootDir, "booted-web"))).toBe(fs.realpathSync(runner.dir))

      yield* s.backend.remove(vmName("web"))
      expect(fs.existsSync(path.join(s.gcRootDir, "web"))).toBe(false)
      expect(fs.lstatSync(path.join(s.gcRootDir, "booted-web"), { throwIfNoEntry: false })).toBeUndefined()
      expect(foreign.unchanged()).toBe(true)
    }))
})
