/**
 * `prepare` with a real `nix build` of flakes that need no network: a fixture flake whose
 * `nixosConfigurations.NAME.config.microvm.declaredRunner` is a plain derivation, and an inline VM
 * whose generated flake's inputs point at local stub flakes for nixpkgs and microvm.nix.
 * Skipped (with the reason printed) when `nix` is not on PATH; CI installs Debian's nix-bin.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import { FlakeConfig, InlineConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { make, type ProcessSettings } from "../../src/vm/ProcessBackend.js"
import { hostSystem, standaloneNixOptions } from "../../src/vm/RunnerBuild.js"
import { killGroup, processAlive, scopedTempDir, vmName, waitFor } from "./fixtures.js"

// Inside a Nix build sandbox (the flake's test-suite check) there is `nix` but no store to build
// into: NIX_BUILD_TOP is set there, and these tests skip.
const inNixSandbox = process.env["NIX_BUILD_TOP"] !== undefined
const nixAvailable = !inNixSandbox && spawnSync("nix", ["--version"], { stdio: "ignore" }).status === 0
if (!nixAvailable) {
  console.log(
    inNixSandbox
      ? "test/vm/NixBuild.test.ts: SKIPPED: running inside a Nix build sandbox, where nested nix builds are impossible"
      : "test/vm/NixBuild.test.ts: SKIPPED: `nix` is not on PATH (install it, e.g. apt-get install -y nix-bin, to run these tests)"
  )
}

const node = Schema.decodeSync(NodeId)(1)
const nonce = () => `${Date.now()}-${Math.random().toString(36).slice(2)}`

/**
 * A derivation producing a microvm.nix-shaped runner: `bin/microvm-run` records its pid in the
 * state directory (its working directory) and sleeps; `bin/microvm-shutdown` stops it from there.
 */
const runnerDerivation = (label: string, message: string) => `derivation {
      name = "microvm-fixture-${label}";
      system = "${hostSystem()}";
      builder = "/bin/sh";
      PATH = "/bin:/usr/bin";
      nonce = "${nonce()}";
      runScript = ''
        #!/bin/sh
        echo $$ > nix-runner.pid
        echo "${message}"
        exec sleep 1000
      '';
      shutdownScript = ''
        #!/bin/sh
        touch shutdown-ran
        kill -TERM "$(cat nix-runner.pid)"
      '';
      args = [ "-c" "echo building the fixture runner ${label}; mkdir -p $out/bin; printf '%s' \\"$runScript\\" > $out/bin/microvm-run; printf '%s' \\"$shutdownScript\\" > $out/bin/microvm-shutdown; chmod +x $out/bin/microvm-run $out/bin/microvm-shutdown" ];
    }`

/** Nix interpolations the stub nixosSystem resolves from the merged modules. */
const inlineMessage =
  "greeting=${merged.blixardTest.greeting} host=${merged.networking.hostName} " +
  "microvm=${merged.microvmModuleLoaded} platform=${merged.nixpkgs.hostPlatform}"

const writeFlake = (dir: string, text: string) => {
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, "flake.nix"), text)
  return dir
}

const settingsFor = (root: string, nix: ProcessSettings["nix"] = {}): ProcessSettings => ({
  stateDir: path.join(root, "microvms"),
  node,
  nix: { options: standaloneNixOptions, ...nix }
})

const backend = (settings: ProcessSettings) => make(settings).pipe(Effect.provide(NodeContext.layer))

describe.skipIf(!nixAvailable)("VmBackend prepare with a real nix build", () => {
  it.scopedLive("a Flake source is built with nix build -o current; start runs it, stop stops it via microvm-shutdown", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("vm-nix")
      const flake = writeFlake(
        path.join(root, "vms"),
        `{\n  outputs = { self }: {\n    nixosConfigurations.web.config.microvm.declaredRunner = ${runnerDerivation("web", "nix-built runner up")};\n  };\n}\n`
      )
      const settings = settingsFor(root)
      const vms = yield* backend(settings)
      const progress: Array<string> = []
      yield* vms.prepare(
        VmSpec.make({ name: vmName("web"), source: FlakeConfig.make({ ref: `path:${flake}#web` }) }),
        (line) => Effect.sync(() => void progress.push(line))
      )
      expect(progress.some((line) => line.includes("building the fixture runner web"))).toBe(true)
      const vmDir = path.join(settings.stateDir, "web")
      const current = fs.readlinkSync(path.join(vmDir, "current"))
      expect(current).toMatch(/^\/nix\/store\/[a-z0-9]{32}-microvm-fixture-web$/)
      const log = () => fs.readFileSync(path.join(vmDir, "blixard.log"), "utf8")
      expect(log()).toContain("building the fixture runner web")
      expect(log()).toContain("nix --extra-experimental-features 'nix-command flakes' --option substituters ''")

      const pid = yield* vms.start(vmName("web"))
      yield* Effect.addFinalizer(() => Effect.sync(() => killGroup(pid)))
      const recorded = yield* waitFor("the runner's pid file", () => {
        try {
          return fs.readFileSync(path.join(vmDir, "nix-runner.pid"), "utf8").trim() || undefined
        } catch {
          return undefined
        }
      })
      expect(Number(recorded)).toBe(pid)
      expect(fs.readlinkSync(path.join(vmDir, "booted"))).toBe(current)
      yield* waitFor("the runner's output in the log", () => log().includes("nix-built runner up"))

      yield* vms.stop(vmName("web"), "20 seconds")
      expect(processAlive(pid)).toBe(false)
      expect(fs.existsSync(path.join(vmDir, "shutdown-ran"))).toBe(true)
    }))

  it.scopedLive("a failing build is a BackendFailed with the exit code and the last lines of nix's output", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("vm-nix")
      const flake = writeFlake(
        path.join(root, "vms"),
        `{\n  outputs = { self }: {\n    nixosConfigurations.broken.config.microvm.declaredRunner = derivation {\n      name = "broken-${nonce()}";\n      system = "${hostSystem()}";\n      builder = "/bin/sh";\n      args = [ "-c" "echo deliberate failure in the runner build; exit 1" ];\n    };\n  };\n}\n`
      )
      const vms = yield* backend(settingsFor(root))
      const error = yield* Effect.flip(
        vms.prepare(VmSpec.make({ name: vmName("broken"), source: FlakeConfig.make({ ref: `path:${flake}#broken` }) }))
      )
      expect(error).toMatchObject({ _tag: "BackendFailed", subject: "broken", node })
      expect(error.message).toContain('VM "broken": building the runner on node 1 failed (exit code 1)')
      expect(error.message).toContain("deliberate failure in the runner build")
      expect(error.message).toContain("prepare again")

      const missing = yield* Effect.flip(
        vms.prepare(VmSpec.make({ name: vmName("web"), source: FlakeConfig.make({ ref: `path:${flake}#nope` }) }))
      )
      expect(missing.message).toContain("nixosConfigurations.nope.config.microvm.declaredRunner")
    }))

  it.scopedLive("an Inline module is built through a generated flake importing microvm.nix's module and the VM's module", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("vm-nix")
      // Stand-ins for nixpkgs and microvm.nix (no network here): nixosSystem "evaluates" the modules
      // by merging them shallowly and builds a runner that prints what it saw.
      const nixpkgs = writeFlake(
        path.join(root, "nixpkgs-stub"),
        `{
  outputs = { self }: {
    lib.nixosSystem = { modules, ... }:
      let
        args = { lib = { mkDefault = v: v; }; config = { }; pkgs = { }; };
        load = m: let f = if builtins.isPath m || builtins.isString m then import m else m;
                  in if builtins.isFunction f then f args else f;
        merged = builtins.foldl' (acc: m: acc // load m) { } modules;
      in {
        config.microvm.declaredRunner = ${runnerDerivation("inline", inlineMessage)};
      };
  };
}
`
      )
      const microvm = writeFlake(
        path.join(root, "microvm-stub"),
        `{\n  inputs.nixpkgs.url = "path:${nixpkgs}";\n  outputs = { self, nixpkgs }: {\n    nixosModules.microvm = { microvmModuleLoaded = "yes"; };\n  };\n}\n`
      )
      const settings = settingsFor(root, { nixpkgsUrl: `path:${nixpkgs}`, microvmUrl: `path:${microvm}` })
      const vms = yield* backend(settings)
      const module = `{ lib, ... }: {\n  blixardTest.greeting = "hello-from-vm.nix";\n}\n`
      yield* vms.prepare(VmSpec.make({ name: vmName("inline-vm"), source: InlineConfig.make({ module }) }))
      const vmDir = path.join(settings.stateDir, "inline-vm")
      expect(fs.readFileSync(path.join(vmDir, "flake", "vm.nix"), "utf8")).toBe(module)
      const flakeText = fs.readFileSync(path.join(vmDir, "flake", "flake.nix"), "utf8")
      expect(flakeText).toContain(`inputs.nixpkgs.url = "path:${nixpkgs}";`)
      expect(flakeText).toContain("microvm.nixosModules.microvm")
      expect(fs.readlinkSync(path.join(vmDir, "current"))).toMatch(/^\/nix\/store\/[a-z0-9]{32}-microvm-fixture-inline$/)

      const pid = yield* vms.start(vmName("inline-vm"))
      yield* Effect.addFinalizer(() => Effect.sync(() => killGroup(pid)))
      yield* waitFor("the runner's output in the log", () =>
        fs
          .readFileSync(path.join(vmDir, "blixard.log"), "utf8")
          .includes(`greeting=hello-from-vm.nix host=inline-vm microvm=yes platform=${hostSystem()}`)
      )
      yield* vms.stop(vmName("inline-vm"), "20 seconds")
      expect(processAlive(pid)).toBe(false)
    }))
})
