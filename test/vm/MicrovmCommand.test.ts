/**
 * microvm.nix's own `microvm` command (pkgs/microvm-command.nix, rendered with nixpkgs' lib and run
 * with bash) on a state directory holding Blixard's VMs: `microvm -l` lists them without evaluating
 * a flake, and `microvm -u NAME` refuses to rebuild one behind Blixard's back instead of failing
 * half-way. Needs `nix-instantiate`, BLIXARD_NIXPKGS_LIB (nixpkgs' lib) and BLIXARD_MICROVM_NIX (a
 * microvm.nix checkout); skipped, saying why, without them.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Schema } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import * as ProcessBackend from "../../src/vm/ProcessBackend.js"
import { killGroup, makeRunner, removeDir, scopedTempDir, sleeper, vmName } from "./fixtures.js"

const nixpkgsLib = process.env["BLIXARD_NIXPKGS_LIB"] ?? ""
const microvmNix = process.env["BLIXARD_MICROVM_NIX"] ?? ""
const skipReason =
  spawnSync("nix-instantiate", ["--version"]).status !== 0
    ? "nix-instantiate is not installed"
    : !fs.existsSync(path.join(nixpkgsLib, "lib", "default.nix"))
      ? "BLIXARD_NIXPKGS_LIB does not name a checkout of nixpkgs' lib"
      : !fs.existsSync(path.join(microvmNix, "pkgs", "microvm-command.nix"))
        ? "BLIXARD_MICROVM_NIX does not name a checkout of microvm.nix"
        : undefined
if (skipReason !== undefined) console.log(`MicrovmCommand.test.ts: skipping microvm -l/-u on Blixard's VMs: ${skipReason}`)

/** The `microvm` script for `stateDir`, with its packages' bin directories stubbed (PATH supplies the tools). */
const renderMicrovmCommand = (stateDir: string): string => {
  const expr = `let lib = import ${JSON.stringify(path.join(nixpkgsLib, "lib"))}; in
    import ${JSON.stringify(path.join(microvmNix, "pkgs", "microvm-command.nix"))} {
      inherit lib; git = "/no-git"; jq = "/no-jq"; nix = "/no-nix"; openssh = "/no-ssh";
      writeShellScriptBin = name: text: text; stateDir = ${JSON.stringify(stateDir)};
    }`
  const run = spawnSync("nix-instantiate", ["--store", "dummy://", "--eval", "--strict", "--json", "--expr", expr], { encoding: "utf8" })
  if (run.status !== 0) throw new Error(`rendering microvm-command.nix failed:\n${run.stderr}`)
  return JSON.parse(run.stdout) as string
}

const node = Schema.decodeSync(NodeId)(6)

describe("microvm.nix's microvm command on Blixard's VM directories", () => {
  it.scopedLive.skipIf(skipReason !== undefined)("microvm -l lists them; microvm -u refuses cleanly", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("microvm-command")
      const stateDir = path.join(root, "microvms")
      const script = path.join(root, "microvm")
      fs.writeFileSync(script, renderMicrovmCommand(stateDir))
      // systemctl says no unit is active (process mode); nix must not be needed to list.
      const bin = path.join(root, "bin")
      fs.mkdirSync(bin)
      fs.writeFileSync(path.join(bin, "systemctl"), "#!/bin/sh\nexit 3\n", { mode: 0o755 })
      fs.writeFileSync(path.join(bin, "nix"), "#!/bin/sh\necho \"nix was called: $*\" >&2\nexit 1\n", { mode: 0o755 })
      const microvm = (args: ReadonlyArray<string>) => {
        const run = spawnSync("bash", [script, ...args], {
          encoding: "utf8",
          env: { PATH: `${bin}:${process.env.PATH ?? ""}` }
        })
        // eslint-disable-next-line no-control-regex
        return { status: run.status, output: `${run.stdout}${run.stderr}`.replace(/\x1b\[[0-9;]*m/g, "") }
      }

      const backend = yield* ProcessBackend.make({ stateDir, node, adoptedPollInterval: Duration.millis(50), allowedRunnerPrefixes: [root] }).pipe(
        Effect.provide(NodeContext.layer)
      )
      // The guests' systems, as store paths are named (HASH-nixos-system-NAME-VERSION, no '-' before
      // the hash: `microvm -l` shows what follows the first '-').
      const store = fs.mkdtempSync(path.join(os.tmpdir(), "blixardstore"))
      yield* Effect.addFinalizer(() => Effect.sync(() => removeDir(store)))
      for (const name of ["web", "db"]) {
        const runner = makeRunner(root, name, { run: sleeper })
        const system = path.join(store, `0000000000000000000000000000000${name.length}-nixos-system-${name}-26.05`)
        fs.mkdirSync(system)
        fs.mkdirSync(path.join(runner.dir, "share", "microvm"), { recursive: true })
        fs.symlinkSync(system, path.join(runner.dir, "share", "microvm", "system"))
        yield* backend.prepare(VmSpec.make({ name: vmName(name), source: RunnerConfig.make({ path: runner.dir }) }))
      }
      const pid = yield* backend.start(vmName("web"))
      yield* Effect.addFinalizer(() => Effect.sync(() => killGroup(pid)))

      const list = microvm(["-l"])
      expect(list.output).not.toContain("nix was called")
      if (list.status !== 0) throw new Error(`microvm -l failed: ${list.output}`)
      expect(list.output).toContain("web: current(nixos-system-web-26.05)")
      expect(list.output).toContain("db: current(nixos-system-db-26.05), not booted")

      const current = fs.readlinkSync(path.join(stateDir, "web", "current"))
      const update = microvm(["-u", "web"])
      expect(update.status).toBe(1)
      expect(update.output).toContain("This MicroVM is managed fully declaratively and cannot be updated manually!")
      expect(fs.readlinkSync(path.join(stateDir, "web", "current"))).toBe(current)
      yield* backend.stop(vmName("web"), "5 seconds")
    }))
})
