import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { progressOf } from "../../src/cli/VmOpsCommand.js"
import { buildVmChanges } from "../../src/cli/VmSpecInput.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import { BuildProgress, VmRecord, VmStatus } from "../../src/domain/VmStatus.js"

const record = (over: { desired?: "running" | "stopped"; generation?: number; status: Partial<ConstructorParameters<typeof VmStatus>[0]> }) =>
  new VmRecord({
    spec: new VmSpec({ name: VmName.make("web"), source: new RunnerConfig({ path: "/nix/store/x" }) }),
    desired: over.desired ?? "running",
    node: NodeId.make(2),
    ...(over.generation !== undefined ? { generation: over.generation } : {}),
    status: new VmStatus({ phase: "starting", since: 1_000, restarts: 0, ...over.status }),
    revision: 3,
    createdAt: 0
  })

describe("--wait: progressOf", () => {
  it("shows a build with its elapsed time and newest line; done once the wanted generation runs", () => {
    const building = record({
      generation: 1,
      status: { phase: "running", pid: 7, generation: 0, build: new BuildProgress({ state: "building", generation: 1, startedAt: 1_000, lastLine: "web> compiling" }) }
    })
    expect(progressOf(building, 13_400)).toEqual({ _tag: "Going", line: "building generation 1 on node 2 (12s): web> compiling" })
    // Running, but still the old generation: not done.
    expect(progressOf(record({ generation: 1, status: { phase: "running", pid: 7, generation: 0 } }), 2_000)._tag).toBe("Going")
    expect(progressOf(record({ generation: 1, status: { phase: "running", pid: 8, generation: 1 } }), 2_000)).toEqual({ _tag: "Done" })
    expect(progressOf(record({ desired: "stopped", status: { phase: "stopped" } }), 2_000)).toEqual({ _tag: "Done" })
  })

  it("fails on a failed build of the wanted generation (not an older one) and on a failed VM, with its error", () => {
    const failedBuild = new BuildProgress({ state: "failed", generation: 2, startedAt: 1_000 })
    expect(progressOf(record({ generation: 2, status: { phase: "running", generation: 1, build: failedBuild, lastError: "boom" } }), 2_000)).toEqual({
      _tag: "Failed",
      error: "boom"
    })
    // An update since then (generation 3) is still going, whatever generation 2 did.
    expect(progressOf(record({ generation: 3, status: { phase: "running", generation: 1, build: failedBuild } }), 2_000)._tag).toBe("Going")
    expect(progressOf(record({ status: { phase: "failed", lastError: "runner exited with code 3" } }), 2_000)).toEqual({
      _tag: "Failed",
      error: "runner exited with code 3"
    })
  })
})

describe("buildVmChanges", () => {
  it("takes a new source and resources; refuses two sources, bad values and nothing at all", () => {
    expect(buildVmChanges({ runner: "/nix/store/r", vcpus: 2 })).toEqual(Either.right({ source: new RunnerConfig({ path: "/nix/store/r" }), vcpus: 2 }))
    expect(buildVmChanges({ memory: 2048, restart: "always" })).toEqual(Either.right({ memoryMiB: 2048, restartPolicy: "always" }))
    const two = buildVmChanges({ runner: "/nix/store/r", flake: "github:me/vms#web" })
    expect(Either.isLeft(two) && two.left.message).toContain("give only one of --config, --flake and --runner")
    const bad = buildVmChanges({ vcpus: 0, runner: "relative" })
    expect(Either.isLeft(bad) && bad.left.message).toMatch(/--vcpus.*|--runner.*/)
    const nothing = buildVmChanges({})
    expect(Either.isLeft(nothing) && nothing.left.message).toContain("nothing to change")
  })
})
