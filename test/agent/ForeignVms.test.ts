/**
 * A node's agent and its fencing watchdog over the real microvm.nix backends (process mode with real
 * runners, systemd mode with a fake `systemctl`), on a state directory that also holds a VM made by
 * microvm.nix's `microvm -c` (running, with a volume and its GC roots). Blixard's own VM is started,
 * moved away (its node marked down), placed here again and drained away, then fenced by the
 * watchdog; a VM of the foreign one's name is refused: the foreign VM is never stopped, changed or
 * removed, and its `tap-down` never runs.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Layer, Option, Scope } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Agent from "../../src/agent/Agent.js"
import * as Watchdog from "../../src/agent/Watchdog.js"
import * as C from "../../src/domain/Command.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import * as ProcessBackend from "../../src/vm/ProcessBackend.js"
import * as SystemdBackend from "../../src/vm/SystemdBackend.js"
import {
  fakeSystemctl,
  killGroup,
  makeRunner,
  microvmCreatedVm,
  processAlive,
  scopedTempDir,
  sleeper,
  vmName,
  waitFor
} from "../vm/fixtures.js"
import { FakeCluster, Quorum } from "./harness.js"

const here = NodeId.make(1)

const backendLayer = (mode: "process" | "systemd", root: string, systemctl: string) => {
  const common = { stateDir: path.join(root, "microvms"), node: here, gcRootDir: path.join(root, "gcroots", "microvm"), allowedRunnerPrefixes: [root] }
  return (
    mode === "process"
      ? ProcessBackend.layerProcess({ ...common, adoptedPollInterval: Duration.millis(50) })
      : SystemdBackend.layerSystemd({ ...common, systemctl, pollInterval: Duration.millis(50) })
  ).pipe(Layer.provide(NodeContext.layer))
}

describe.each(["process", "systemd"] as const)("a foreign microvm.nix VM beside Blixard's, %s mode", (mode) => {
  it.scopedLive("survives the node's start, a reschedule away, a drain and a fence round", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir(`foreign-${mode}`)
      const stateDir = path.join(root, "microvms")
      const systemctl = fakeSystemctl(root)
      const foreign = microvmCreatedVm(root, stateDir, path.join(root, "gcroots", "microvm"), "foreign")
      // It runs: `microvm -r foreign` in process mode's world, its unit in systemd's.
      const foreignVm = spawn(path.join(foreign.dir, "current", "bin", "microvm-run"), [], { cwd: foreign.dir, detached: true, stdio: "ignore" })
      foreignVm.unref()
      yield* Effect.addFinalizer(() => Effect.sync(() => killGroup(foreignVm.pid)))
      systemctl.setState("microvm@foreign", "active")
      const foreignUntouched = () => {
        expect(foreign.unchanged()).toBe(true)
        expect(processAlive(foreignVm.pid!)).toBe(true)
        expect(systemctl.calls().filter((c) => c.includes("foreign"))).toEqual([])
      }

      const cluster = new FakeCluster()
      cluster.register(1)
      const runner = makeRunner(root, "web", { run: sleeper })
      const create = (name: string) => {
        cluster.apply(new C.CreateVm({ spec: new VmSpec({ name: vmName(name), source: new RunnerConfig({ path: runner.dir }), memoryMiB: 512 }) }))
        cluster.start(name)
      }
      const running = (name: string) => {
        const record = cluster.vm(name)
        return record?.node === here && record.status.phase === "running" ? record.status.pid : undefined
      }
      const gone = (name: string) => !fs.existsSync(path.join(stateDir, name))
      const layer = backendLayer(mode, root, systemctl.file)

      // The node starts (its agent's first rounds) and runs its VM.
      const daemon = yield* Scope.make()
      yield* Agent.make({
        node: here,
        state: () => cluster.state,
        report: (name, status) => Effect.sync(() => void cluster.apply(new C.ReportVmStatus({ name, node: here, status }))),
        quorumContact: new Quorum().contact,
        intervalMs: 100,
        fencingMs: 60_000,
        stopTimeoutMs: 2000
      }).pipe(Effect.provide(layer), Scope.extend(daemon))
      create("web")
      const first = yield* waitFor("web running on node 1", () => running("web"))
      foreignUntouched()

      // Told to run a VM under the foreign directory's name: refused with the code, the node and the directory.
      create("foreign")
      const refused = yield* waitFor("the refusal reported", () => cluster.vm("foreign")?.status.lastError)
      expect(refused).toContain(`BLX_VM_DIR_FOREIGN: VM "foreign": the directory ${foreign.dir} on node 1 is not Blixard's`)
      expect(cluster.vm("foreign")?.status.phase).toBe("starting")
      cluster.delete("foreign")
      foreignUntouched()

      // A reschedule away: node 1 marked down, web placed on node 2; node 1 removes its copy.
      cluster.register(2)
      cluster.down(1)
      expect(cluster.vm("web")?.node).toBe(NodeId.make(2))
      yield* waitFor("web's directory removed from node 1", () => gone("web"))
      if (mode === "process") expect(processAlive(first)).toBe(false)
      foreignUntouched()

      // Placed here again (node 2 cordoned), then drained away.
      cluster.up(1)
      cluster.apply(new C.SetNodeState({ id: NodeId.make(2), state: "cordoned" }))
      create("db")
      yield* waitFor("db running on node 1", () => running("db"))
      cluster.apply(new C.SetNodeState({ id: NodeId.make(2), state: "active" }))
      cluster.drain(1)
      // Node 1 stops it first (and reports so); then it moves to node 2.
      yield* waitFor("db moved to node 2", () => cluster.vm("db")?.node === NodeId.make(2))
      yield* waitFor("db's directory removed from node 1", () => gone("db"))
      foreignUntouched()

      // Placed here once more; the daemon dies and the fencing watchdog's lease runs out.
      cluster.apply(new C.SetNodeState({ id: NodeId.make(1), state: "active" }))
      cluster.apply(new C.SetNodeState({ id: NodeId.make(2), state: "cordoned" }))
      create("api")
      const api = yield* waitFor("api running on node 1", () => running("api"))
      yield* Scope.close(daemon, Exit.void)
      const end = yield* Watchdog.run({
        node: here,
        fencingMs: 100,
        stopTimeoutMs: 2000,
        pollMs: 25,
        lease: Effect.succeed(Option.none()),
        stillOwner: Effect.succeed(true),
        publish: () => Effect.void,
        backend: layer,
        writerAlive: () => false
      }).pipe(Effect.timeout("60 seconds"))
      expect(end).toBe("idle")
      if (mode === "process") expect(processAlive(api)).toBe(false)
      else expect(systemctl.calls()).toContain("stop microvm@api")
      foreignUntouched()
      expect(fs.readdirSync(stateDir).sort()).toEqual(["api", "foreign"])
    }))
})
