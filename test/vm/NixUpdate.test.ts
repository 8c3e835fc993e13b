/**
 * `vm update` with a real `nix build` (no network: `--option substituters ''`): the agent over the
 * real process backend builds the new generation of a flake VM while the old runner runs, shows the
 * build's progress (nix's newest line) in the VM's status, then restarts onto the new runner; a
 * flake that fails to build leaves the running VM untouched. Skipped, saying why, without `nix`.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Agent from "../../src/agent/Agent.js"
import * as C from "../../src/domain/Command.js"
import { FlakeConfig, VmSpec } from "../../src/domain/VmSpec.js"
import type { VmStatus } from "../../src/domain/VmStatus.js"
import { make } from "../../src/vm/ProcessBackend.js"
import { hostSystem, standaloneNixOptions } from "../../src/vm/RunnerBuild.js"
import { VmBackend } from "../../src/vm/VmBackend.js"
import { FakeCluster, self } from "../agent/harness.js"
import { killGroup, processAlive, scopedTempDir, vmName, waitFor } from "./fixtures.js"

const inNixSandbox = process.env["NIX_BUILD_TOP"] !== undefined
const nixAvailable = !inNixSandbox && spawnSync("nix", ["--version"], { stdio: "ignore" }).status === 0
if (!nixAvailable) {
  console.log(`test/vm/NixUpdate.test.ts: SKIPPED: ${inNixSandbox ? "inside a Nix build sandbox, where nested nix builds are impossible" : "`nix` is not on PATH (apt-get install -y nix-bin)"}`)
}

const nonce = `${Date.now()}-${Math.random().toString(36).slice(2)}`

/** A runner derivation whose build prints `steps` numbered lines, half a second apart. */
const runner = (label: string, steps: number, fail = false) => `derivation {
      name = "microvm-update-${label}";
      system = "${hostSystem()}";
      builder = "/bin/sh";
      PATH = "/bin:/usr/bin";
      nonce = "${nonce}";
      runScript = ''
        #!/bin/sh
        echo "runner ${label} up"
        exec sleep 1000
      '';
      args = [ "-c" "i=0; while [ $i -lt ${steps} ]; do i=$((i+1)); echo compiling ${label} step $i; sleep 0.5; done; ${fail ? "echo deliberate failure; exit 1; " : ""}mkdir -p $out/bin; printf '%s' \\"$runScript\\" > $out/bin/microvm-run; chmod +x $out/bin/microvm-run" ];
    }`

describe.skipIf(!nixAvailable)("vm update with a real nix build", () => {
  it.scopedLive("builds the new generation while the old runner runs, shows nix's progress, restarts onto it; a failing build leaves it running", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("nix-update")
      const flake = path.join(root, "flake")
      fs.mkdirSync(flake)
      fs.writeFileSync(
        path.join(flake, "flake.nix"),
        `{\n  outputs = { self }: {\n    nixosConfigurations.one.config.microvm.declaredRunner = ${runner("one", 1)};\n    nixosConfigurations.two.config.microvm.declaredRunner = ${runner("two", 8)};\n    nixosConfigurations.bad.config.microvm.declaredRunner = ${runner("bad", 2, true)};\n  };\n}\n`
      )
      const stateDir = path.join(root, "microvms")
      const backend = yield* make({ stateDir, node: self, nix: { options: standaloneNixOptions } }).pipe(Effect.provide(NodeContext.layer))
      const cluster = new FakeCluster()
      cluster.register(1)
      const web = vmName("web")
      cluster.apply(new C.CreateVm({ spec: new VmSpec({ name: web, source: new FlakeConfig({ ref: `path:${flake}#one` }) }) }))
      cluster.start("web")
      const statuses: Array<VmStatus> = []
      yield* Agent.make({
        node: self,
        state: () => cluster.state,
        report: (name, status) =>
          Effect.sync(() => {
            statuses.push(status)
            cluster.apply(new C.ReportVmStatus({ name, node: self, status }))
          }),
        quorumContact: Effect.map(Clock.currentTimeMillis, (now) => now),
        intervalMs: 200,
        fencingMs: 60_000,
        stopTimeoutMs: 2000,
        progressEveryMs: 300
      }).pipe(Effect.provideService(VmBackend, backend))
      const status = () => cluster.vm("web")!.status
      yield* Effect.addFinalizer(() => Effect.sync(() => killGroup(status().pid)))
      const first = yield* waitFor("generation 0 to run", () => (status().phase === "running" ? status().pid : undefined), "120 seconds")
      const booted = path.join(stateDir, "web", "booted")
      expect(fs.readlinkSync(booted)).toMatch(/-microvm-update-one$/)

      cluster.apply(new C.UpdateVm({ name: web, source: new FlakeConfig({ ref: `path:${flake}#two` }) }))
      // Mid-build: the old runner runs on, and the status carries nix's newest line.
      const building = yield* waitFor(
        "the build's progress in the status",
        () => (status().build?.lastLine?.includes("compiling two step") === true ? status() : undefined),
        "120 seconds"
      )
      expect(building).toMatchObject({ phase: "running", pid: first, build: { state: "building", generation: 1 } })
      expect(processAlive(first)).toBe(true)
      const second = yield* waitFor("generation 1 to run", () => (status().generation === 1 ? status().pid : undefined), "120 seconds")
      expect(second).not.toBe(first)
      expect(processAlive(first)).toBe(false)
      expect(fs.readlinkSync(booted)).toMatch(/-microvm-update-two$/)
      expect(status().build).toBeUndefined()
      // Several progress lines were reported, in order, while it built.
      const lines = statuses.flatMap((s) => (s.build?.lastLine !== undefined ? [s.build.lastLine] : []))
      expect(new Set(lines).size).toBeGreaterThan(1)

      cluster.apply(new C.UpdateVm({ name: web, source: new FlakeConfig({ ref: `path:${flake}#bad` }) }))
      const failed = yield* waitFor("the failed build in the status", () => (status().build?.state === "failed" ? status() : undefined), "120 seconds")
      expect(failed).toMatchObject({ phase: "running", pid: second, generation: 1, build: { generation: 2 } })
      expect(failed.lastError).toContain("deliberate failure")
      expect(processAlive(second!)).toBe(true)
      expect(fs.readlinkSync(booted)).toMatch(/-microvm-update-two$/)
    }), 300_000)
})
