import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option, Schema } from "effect"
import * as fc from "fast-check"
import * as fs from "node:fs"
import * as path from "node:path"
import { InvalidArgument } from "../../src/domain/Errors.js"
import { VmName } from "../../src/domain/VmName.js"
import { Constraint, MaxInlineConfigBytes, VmSpec } from "../../src/domain/VmSpec.js"
import { buildVmSpec, readVmConfigFile, type VmCreateFlags } from "../../src/cli/VmSpecInput.js"
import { tempDir } from "./harness.js"

const build = (flags: VmCreateFlags, file?: Either.Either<string, string>) => buildVmSpec(flags, file)

const problemsOf = (result: Either.Either<VmSpec, InvalidArgument>): string => {
  if (Either.isRight(result)) throw new Error(`expected a failure, got ${JSON.stringify(result.right)}`)
  expect(result.left).toBeInstanceOf(InvalidArgument)
  expect(result.left.code).toBe("BLX_INVALID_ARGUMENT")
  return result.left.message
}

const specOf = (result: Either.Either<VmSpec, InvalidArgument>): VmSpec => {
  if (Either.isLeft(result)) throw new Error(`expected a spec, got ${result.left.message}`)
  return result.right
}

describe("buildVmSpec", () => {
  it("builds a spec with the domain's defaults from a name and a flake", () => {
    const spec = specOf(build({ name: "web", flake: "github:me/vms#web" }))
    expect(spec).toBeInstanceOf(VmSpec)
    expect(spec.source).toMatchObject({ _tag: "Flake", ref: "github:me/vms#web" })
    expect(spec.vcpus).toBe(1)
    expect(spec.memoryMiB).toBe(512)
    expect(spec.restartPolicy).toBe("on-failure")
    expect(spec.labels).toEqual({})
    expect(spec.constraints).toEqual([])
    expect(spec.antiAffinity).toBeUndefined()
  })

  it("takes every flag into the spec", () => {
    const spec = specOf(
      build(
        {
          name: "web",
          config: "./web.nix",
          vcpus: 4,
          memory: 2048,
          labels: ["tier=web", "blixard.io/team=ops"],
          constraints: ["zone=eu-1", "gpu!=none"],
          antiAffinity: "web",
          restart: "always"
        },
        Either.right("{ microvm.hypervisor = \"cloud-hypervisor\"; }")
      )
    )
    expect(spec.source).toMatchObject({ _tag: "Inline", module: "{ microvm.hypervisor = \"cloud-hypervisor\"; }" })
    expect(spec.vcpus).toBe(4)
    expect(spec.memoryMiB).toBe(2048)
    expect(spec.labels).toEqual({ tier: "web", "blixard.io/team": "ops" })
    expect(spec.constraints).toEqual([
      new Constraint({ key: "zone", op: "eq", value: "eu-1" }),
      new Constraint({ key: "gpu", op: "neq", value: "none" })
    ])
    expect(spec.antiAffinity).toBe("web")
    expect(spec.restartPolicy).toBe("always")
  })

  it("names the flag and the value of a bad name", () => {
    expect(problemsOf(build({ name: "Bad_Name", runner: "/x" }))).toBe(
      `--name "Bad_Name": a VM name is a lowercase DNS label: a–z, 0–9 and '-', starting and ending with a letter or digit`
    )
    expect(Option.getOrThrow(Either.getLeft(build({ name: "Bad_Name", runner: "/x" }))).subject).toBe("--name")
  })

  it("accepts exactly the names VmName accepts, and quotes a rejected one", () => {
    const isName = Schema.is(VmName)
    fc.assert(
      fc.property(fc.oneof(fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$/), fc.string({ maxLength: 70 })), (name) => {
        const result = build({ name, runner: "/x" })
        expect(Either.isRight(result)).toBe(isName(name))
        if (Either.isLeft(result)) expect(result.left.message.startsWith(`--name ${JSON.stringify(name)}: `)).toBe(true)
      })
    )
  })

  it("requires exactly one of --config, --flake and --runner", () => {
    expect(problemsOf(build({ name: "web" }))).toMatch(/one of them is required/)
    expect(problemsOf(build({ name: "web", flake: "a#b", runner: "/x" }))).toBe(
      "--flake, --runner: give only one of --config, --flake and --runner"
    )
  })

  it("reports every bad flag at once", () => {
    const message = problemsOf(
      build({
        name: "-web",
        runner: "relative/path",
        vcpus: 0,
        memory: 8,
        labels: ["novalue", "Bad Key=x", "ok=bad value!"],
        constraints: ["nokey", "zone!=has space"],
        antiAffinity: "-x",
        restart: "sometimes"
      })
    )
    expect(message.split("; ")).toEqual([
      expect.stringMatching(/^--name "-web": a VM name is a lowercase DNS label/),
      `--runner "relative/path": a runner path must be absolute (it is resolved on the hosting node)`,
      "--vcpus 0: vcpus must be a whole number from 1 to 1024",
      "--memory 8: memory is a whole number of MiB from 16 to 16777216",
      `--label "novalue": a label is KEY=VALUE, e.g. tier=web`,
      expect.stringMatching(/^--label "Bad Key=x": key "Bad Key": a label key is/),
      expect.stringMatching(/^--label "ok=bad value!": value "bad value!": a label value is/),
      expect.stringMatching(/^--constraint "nokey": a constraint is KEY=VALUE \(must equal\) or KEY!=VALUE/),
      expect.stringMatching(/^--constraint "zone!=has space": value "has space": a label value is/),
      expect.stringMatching(/^--anti-affinity "-x": a label value is/),
      `--restart "sometimes": one of "always", "on-failure", "never" (got "sometimes")`
    ])
  })

  it("refuses a label key given twice", () => {
    expect(problemsOf(build({ name: "web", runner: "/x", labels: ["a=1", "a=2"] }))).toBe(
      `--label "a=2": the key "a" is given more than once`
    )
  })

  it("checks the config file's size in bytes, not characters", () => {
    const justFits = "x".repeat(MaxInlineConfigBytes)
    expect(specOf(build({ name: "web", config: "f.nix" }, Either.right(justFits))).source).toMatchObject({
      _tag: "Inline"
    })
    // "é" is one character but two bytes in UTF-8.
    const tooMany = "é".repeat(MaxInlineConfigBytes / 2 + 1)
    expect(problemsOf(build({ name: "web", config: "f.nix" }, Either.right(tooMany)))).toBe(
      `--config "f.nix": the file is ${MaxInlineConfigBytes + 2} bytes; a VM config is at most ${MaxInlineConfigBytes} bytes; put larger configs in a flake (--flake)`
    )
  })

  it("refuses an empty config file and passes on a read failure", () => {
    expect(problemsOf(build({ name: "web", config: "f.nix" }, Either.right("")))).toBe(
      `--config "f.nix": the VM's config file is empty`
    )
    expect(problemsOf(build({ name: "web", config: "f.nix" }, Either.left("--config \"f.nix\": cannot read")))).toBe(
      `--config "f.nix": cannot read`
    )
  })
})

describe("readVmConfigFile", () => {
  const dir = tempDir()
  const read = (file: string) => readVmConfigFile(file).pipe(Effect.provide(NodeFileSystem.layer))

  it.effect("reads a file's text", () =>
    Effect.gen(function* () {
      const file = path.join(dir, "web.nix")
      fs.writeFileSync(file, "{ }\n")
      expect(yield* read(file)).toEqual(Either.right("{ }\n"))
    })
  )

  it.effect("names the file it cannot read", () =>
    Effect.gen(function* () {
      const file = path.join(dir, "missing.nix")
      const problem = Option.getOrThrow(Either.getLeft(yield* read(file)))
      expect(problem.startsWith(`--config ${JSON.stringify(file)}: cannot read the file (`)).toBe(true)
      expect(problem).toContain("ENOENT")
    })
  )

  it.effect("refuses a directory and a file too large before reading it", () =>
    Effect.gen(function* () {
      expect(yield* read(dir)).toEqual(Either.left(`--config ${JSON.stringify(dir)}: not a regular file (it is a directory)`))
      const big = path.join(dir, "big.nix")
      fs.writeFileSync(big, Buffer.alloc(MaxInlineConfigBytes + 1, 0x61))
      expect(yield* read(big)).toEqual(
        Either.left(
          `--config ${JSON.stringify(big)}: the file is ${MaxInlineConfigBytes + 1} bytes; a VM config is at most ${MaxInlineConfigBytes} bytes; put larger configs in a flake (--flake)`
        )
      )
    })
  )
})
