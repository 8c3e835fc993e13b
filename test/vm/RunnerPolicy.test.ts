/**
 * What a VM may run: runner paths under the allowed prefixes only (symlinks resolved, on the hosting
 * node, right before the runner is linked), flake references within the allowed flake prefixes, and
 * every `nix build` with `--` before its installable and the sandbox on.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { trusted } from "../../src/domain/Decode.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { FlakeConfig, FlakeRef, InlineConfig, RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { make } from "../../src/vm/ProcessBackend.js"
import { admitSource, resolveRunner } from "../../src/vm/RunnerPolicy.js"
import { makeRunner, scopedTempDir, vmName } from "./fixtures.js"

const node = Schema.decodeSync(NodeId)(4)
const runnerSpec = (dir: string) => VmSpec.make({ name: vmName("web"), source: RunnerConfig.make({ path: dir }) })

describe("admitSource: the API node's check of a spec as written", () => {
  it("runners only under the allowed prefixes (default /nix/store), component by component, '..' resolved", () => {
    expect(admitSource({}, runnerSpec("/nix/store/abc-microvm-run"))).toBeUndefined()
    for (const bad of ["/srv/anything", "/nix/storefake/x", "/nix/store/../../srv/x", "/"]) {
      const refused = admitSource({}, runnerSpec(bad), node)
      expect(refused?.code).toBe("BLX_RUNNER_NOT_ALLOWED")
      expect(refused?.message).toContain('VM "web"')
      expect(refused?.message).toContain("allowedRunnerPrefixes")
      expect(refused?.node).toBe(node)
    }
    expect(admitSource({ allowedRunnerPrefixes: ["/srv/runners/"] }, runnerSpec("/srv/runners/web"))).toBeUndefined()
    expect(admitSource({ allowedRunnerPrefixes: ["/srv/runners"] }, runnerSpec("/nix/store/x"))?.code).toBe("BLX_RUNNER_NOT_ALLOWED")
  })

  it("flakes: anything by default, else only within allowedFlakePrefixes; inline configs pass", () => {
    const flake = (ref: string) => VmSpec.make({ name: vmName("web"), source: FlakeConfig.make({ ref: Schema.decodeSync(FlakeRef)(ref) }) })
    expect(admitSource({}, flake("github:anyone/vms#web"))).toBeUndefined()
    const policy = { allowedFlakePrefixes: ["github:my-org/", "/etc/vms"] }
    expect(admitSource(policy, flake("github:my-org/vms#web"))).toBeUndefined()
    expect(admitSource(policy, flake("/etc/vms#web"))).toBeUndefined()
    const refused = admitSource(policy, flake("github:evil/vms#web"))
    expect(refused?.code).toBe("BLX_FLAKE_NOT_ALLOWED")
    expect(refused?.message).toContain("allowedFlakePrefixes")
    expect(admitSource(policy, VmSpec.make({ name: vmName("web"), source: InlineConfig.make({ module: "{ }" }) }))).toBeUndefined()
  })

  it("a flake reference starting with '-' is not even a valid spec", () => {
    expect(() => Schema.decodeSync(FlakeRef)("--option#x")).toThrow(/must not start with '-'/)
  })
})

describe("the hosting node's check, right before the runner is linked", () => {
  it.scoped("resolves symlinks: a link under an allowed prefix pointing elsewhere is refused, nothing is linked or run", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("runner-policy")
      const allowed = path.join(root, "allowed")
      fs.mkdirSync(allowed)
      const outside = makeRunner(root, "outside", { run: "exit 0" })
      const inside = makeRunner(allowed, "inside", { run: "exit 0" })
      fs.symlinkSync(outside.dir, path.join(allowed, "link"))
      const policy = { allowedRunnerPrefixes: [allowed] }

      const resolve = (runner: string) => Effect.promise(() => resolveRunner(policy, "web", runner))
      expect(yield* resolve(inside.dir)).toEqual({ resolved: fs.realpathSync(inside.dir) })
      const viaLink = yield* resolve(path.join(allowed, "link"))
      expect("refused" in viaLink && viaLink.refused.message).toContain(`resolved: ${fs.realpathSync(outside.dir)}`)
      // A sibling whose name merely starts like the prefix is not under it.
      fs.mkdirSync(`${allowed}-evil`)
      expect("refused" in (yield* resolve(`${allowed}-evil`))).toBe(true)

      const stateDir = path.join(root, "microvms")
      const backend = yield* make({ stateDir, node, ...policy }).pipe(Effect.provide(NodeContext.layer))
      const refused = yield* Effect.flip(backend.prepare(runnerSpec(path.join(allowed, "link"))))
      expect(refused.code).toBe("BLX_RUNNER_NOT_ALLOWED")
      expect(refused.message).toContain("node 4")
      expect(fs.existsSync(path.join(stateDir, "web", "current"))).toBe(false)
      const outsideRefused = yield* Effect.flip(backend.prepare(runnerSpec(outside.dir)))
      expect(outsideRefused.code).toBe("BLX_RUNNER_NOT_ALLOWED")

      // Allowed: `current` points at the resolved directory, not at the path as given.
      fs.symlinkSync(inside.dir, path.join(allowed, "good-link"))
      yield* backend.prepare(runnerSpec(path.join(allowed, "good-link")))
      expect(fs.readlinkSync(path.join(stateDir, "web", "current"))).toBe(fs.realpathSync(inside.dir))
    })
  )

  it.scoped("a backend with no policy runs runners from /nix/store only", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("runner-policy")
      const runner = makeRunner(root, "web", { run: "exit 0" })
      const backend = yield* make({ stateDir: path.join(root, "microvms"), node }).pipe(Effect.provide(NodeContext.layer))
      expect((yield* Effect.flip(backend.prepare(runnerSpec(runner.dir)))).code).toBe("BLX_RUNNER_NOT_ALLOWED")
    })
  )
})

describe("nix build arguments", () => {
  /** A `nix` that records its arguments, one per line, and fails (nothing is built). */
  const fakeNix = (root: string) => {
    const file = path.join(root, "nix")
    const log = path.join(root, "nix-args")
    fs.writeFileSync(file, `#!/bin/sh\nfor a in "$@"; do echo "$a" >> ${JSON.stringify(log)}; done\nexit 1\n`, { mode: 0o755 })
    return { file, args: () => fs.readFileSync(log, "utf8").trimEnd().split("\n") }
  }

  it.scoped("the installable follows '--', the sandbox is on unless the node's nix options say otherwise", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("runner-policy")
      const nix = fakeNix(root)
      const spec = VmSpec.make({ name: vmName("web"), source: FlakeConfig.make({ ref: Schema.decodeSync(FlakeRef)("github:me/vms#web") }) })
      const backend = yield* make({ stateDir: path.join(root, "microvms"), node, nix: { nix: nix.file } }).pipe(Effect.provide(NodeContext.layer))
      yield* Effect.flip(backend.prepare(spec))
      const args = nix.args()
      expect(args.slice(-2)).toEqual(["--", "github:me/vms#nixosConfigurations.web.config.microvm.declaredRunner"])
      const sandbox = args.indexOf("sandbox")
      expect(args[sandbox - 1]).toBe("--option")
      expect(args[sandbox + 1]).toBe("true")
    })
  )

  it.scoped("a flake reference starting with '-' committed before the schema refused it is refused by the hosting node, nix never runs", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("runner-policy")
      const nix = fakeNix(root)
      const spec = new VmSpec({ name: vmName("web"), source: new FlakeConfig({ ref: "--impure#web" }, trusted) }, trusted)
      const backend = yield* make({ stateDir: path.join(root, "microvms"), node, nix: { nix: nix.file } }).pipe(Effect.provide(NodeContext.layer))
      expect((yield* Effect.flip(backend.prepare(spec))).code).toBe("BLX_FLAKE_NOT_ALLOWED")
      expect(fs.existsSync(path.join(root, "nix-args"))).toBe(false)
      const other = VmSpec.make({ name: vmName("web"), source: FlakeConfig.make({ ref: Schema.decodeSync(FlakeRef)("github:evil/vms#web") }) })
      const restricted = yield* make({ stateDir: path.join(root, "microvms"), node, nix: { nix: nix.file }, allowedFlakePrefixes: ["github:me/"] }).pipe(
        Effect.provide(NodeContext.layer)
      )
      expect((yield* Effect.flip(restricted.prepare(other))).code).toBe("BLX_FLAKE_NOT_ALLOWED")
      expect(fs.existsSync(path.join(root, "nix-args"))).toBe(false)
    })
  )
})
