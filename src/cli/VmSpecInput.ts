/**
 * `vm create`'s flags → a `VmSpec`, every value checked with its domain schema. Each problem names
 * its flag and value; all of them are reported at once as one `BLX_INVALID_ARGUMENT`.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { Effect, Either, ParseResult, Schema } from "effect"
import type { InvalidArgument } from "../domain/Errors.js"
import { LabelKey, LabelValue, parseLabelPair } from "../domain/Labels.js"
import { MemoryMiB, Vcpus } from "../domain/Resources.js"
import { VmName } from "../domain/VmName.js"
import {
  Constraint,
  FlakeConfig,
  FlakeRef,
  InlineConfig,
  MaxInlineConfigBytes,
  parseConstraint,
  RestartPolicy,
  RunnerConfig,
  type VmChanges,
  VmSpec
} from "../domain/VmSpec.js"
import { check, describe, invalidArgument, issueMessages } from "./Validate.js"

export interface VmCreateFlags {
  readonly name: string
  /** Path of a microvm.nix module (read by `readVmConfigFile`). */
  readonly config?: string | undefined
  readonly flake?: string | undefined
  readonly runner?: string | undefined
  readonly vcpus?: number | undefined
  readonly memory?: number | undefined
  readonly labels?: ReadonlyArray<string> | undefined
  readonly constraints?: ReadonlyArray<string> | undefined
  readonly antiAffinity?: string | undefined
  readonly restart?: string | undefined
}

/** The `--config` file's text, or why it could not be read. */
export type ConfigFileRead = Either.Either<string, string>

/**
 * Reads `--config FILE`, refusing (before reading) anything that is not a regular file or is larger
 * than an inline config may be. The Left is a problem text naming the flag and file.
 */
export const readVmConfigFile = (path: string): Effect.Effect<ConfigFileRead, never, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const origin = describe("--config", path)
    const info = yield* fs.stat(path)
    if (info.type !== "File") return Either.left(`${origin}: not a regular file (it is a ${info.type.toLowerCase()})`)
    if (info.size > BigInt(MaxInlineConfigBytes)) return Either.left(tooLarge(origin, info.size))
    return Either.right(yield* fs.readFileString(path, "utf8"))
  }).pipe(
    Effect.catchAll((error) =>
      Effect.succeed(Either.left(`${describe("--config", path)}: cannot read the file (${error.message})`))
    )
  )

const tooLarge = (origin: string, size: number | bigint) =>
  `${origin}: the file is ${size} bytes; a VM config is at most ${MaxInlineConfigBytes} bytes; put larger configs in a flake (--flake)`

/** The one of `--config`, `--flake`, `--runner` given, checked (problems pushed); `required`: one must be. */
const sourceOf = (
  flags: Pick<VmCreateFlags, "config" | "flake" | "runner">,
  configFile: ConfigFileRead | undefined,
  problems: Array<string>,
  required: boolean
): InlineConfig | FlakeConfig | RunnerConfig | undefined => {
  const sources = (["config", "flake", "runner"] as const).filter((flag) => flags[flag] !== undefined)
  let source: InlineConfig | FlakeConfig | RunnerConfig | undefined
  if (sources.length === 0) {
    if (required) problems.push("--config FILE, --flake REF or --runner PATH: one of them is required, to say what the VM runs")
  } else if (sources.length > 1) {
    problems.push(`${sources.map((flag) => `--${flag}`).join(", ")}: give only one of --config, --flake and --runner`)
  } else if (flags.config !== undefined) {
    const origin = describe("--config", flags.config)
    if (configFile === undefined) {
      problems.push(`${origin}: the file was not read`)
    } else if (Either.isLeft(configFile)) {
      problems.push(configFile.left)
    } else if (Buffer.byteLength(configFile.right, "utf8") > MaxInlineConfigBytes) {
      problems.push(tooLarge(origin, Buffer.byteLength(configFile.right, "utf8")))
    } else {
      // The file's text is not quoted back: only the schema's message (e.g. "the VM's config file is empty").
      const module = Schema.decodeUnknownEither(InlineConfig.fields.module)(configFile.right)
      if (Either.isLeft(module)) problems.push(`${origin}: ${issueMessages(module.left).join("; ")}`)
      else source = new InlineConfig({ module: module.right })
    }
  } else if (flags.flake !== undefined) {
    const ref = check(FlakeRef, flags.flake, "--flake", problems)
    if (ref !== undefined) source = new FlakeConfig({ ref })
  } else if (flags.runner !== undefined) {
    const path = check(RunnerConfig.fields.path, flags.runner, "--runner", problems)
    if (path !== undefined) source = new RunnerConfig({ path })
  }

  return source
}

/** Pure: the flags → the changes of `vm update` (at least one), or every problem. */
export const buildVmChanges = (
  flags: Omit<VmCreateFlags, "name" | "labels" | "constraints" | "antiAffinity">,
  configFile?: ConfigFileRead
): Either.Either<VmChanges, InvalidArgument> => {
  const problems: Array<string> = []
  const source = sourceOf(flags, configFile, problems, false)
  const vcpus = flags.vcpus === undefined ? undefined : check(Vcpus, flags.vcpus, "--vcpus", problems)
  const memoryMiB = flags.memory === undefined ? undefined : check(MemoryMiB, flags.memory, "--memory", problems)
  const restartPolicy = flags.restart === undefined ? undefined : check(RestartPolicy, flags.restart, "--restart", problems)
  const changes: VmChanges = {
    ...(source !== undefined ? { source } : {}),
    ...(vcpus !== undefined ? { vcpus } : {}),
    ...(memoryMiB !== undefined ? { memoryMiB } : {}),
    ...(restartPolicy !== undefined ? { restartPolicy } : {})
  }
  if (problems.length === 0 && Object.keys(changes).length === 0) {
    problems.push("nothing to change: give --config FILE, --flake REF or --runner PATH, and/or --vcpus, --memory, --restart")
  }
  return problems.length > 0 ? Either.left(invalidArgument(problems)) : Either.right(changes)
}

/** Pure: the flags (and the `--config` file's text, when given) → the spec, or every problem. */
export const buildVmSpec = (
  flags: VmCreateFlags,
  configFile?: ConfigFileRead
): Either.Either<VmSpec, InvalidArgument> => {
  const problems: Array<string> = []
  const name = check(VmName, flags.name, "--name", problems)

  const source = sourceOf(flags, configFile, problems, true)

  const vcpus = flags.vcpus === undefined ? undefined : check(Vcpus, flags.vcpus, "--vcpus", problems)
  const memoryMiB = flags.memory === undefined ? undefined : check(MemoryMiB, flags.memory, "--memory", problems)

  const labels: Record<string, string> = {}
  for (const entry of flags.labels ?? []) {
    const origin = describe("--label", entry)
    const pair = parseLabelPair(entry)
    if (pair === undefined) {
      problems.push(`${origin}: a label is KEY=VALUE, e.g. tier=web`)
      continue
    }
    const [key, value] = pair
    if (key in labels) {
      problems.push(`${origin}: the key "${key}" is given more than once`)
      continue
    }
    const okKey = check(LabelKey, key, `${origin}: key`, problems)
    const okValue = check(LabelValue, value, `${origin}: value`, problems)
    if (okKey !== undefined && okValue !== undefined) labels[okKey] = okValue
  }

  const constraints: Array<Constraint> = []
  for (const entry of flags.constraints ?? []) {
    const origin = describe("--constraint", entry)
    const parsed = parseConstraint(entry)
    if (parsed === undefined) {
      problems.push(`${origin}: a constraint is KEY=VALUE (must equal) or KEY!=VALUE (must not), e.g. zone=eu-1`)
      continue
    }
    const key = check(LabelKey, parsed.key, `${origin}: key`, problems)
    const value = check(LabelValue, parsed.value, `${origin}: value`, problems)
    if (key !== undefined && value !== undefined) constraints.push(new Constraint({ key, op: parsed.op, value }))
  }

  const antiAffinity =
    flags.antiAffinity === undefined ? undefined : check(LabelValue, flags.antiAffinity, "--anti-affinity", problems)
  const restartPolicy =
    flags.restart === undefined ? undefined : check(RestartPolicy, flags.restart, "--restart", problems)

  if (problems.length > 0 || name === undefined || source === undefined) {
    return Either.left(invalidArgument(problems.length > 0 ? problems : ["the VM's flags are incomplete"]))
  }
  // The whole spec through its own schema (the class constructor validates), defaults included.
  return Either.try({
    try: () =>
      new VmSpec({
        name,
        source,
        labels,
        constraints,
        ...(vcpus !== undefined ? { vcpus } : {}),
        ...(memoryMiB !== undefined ? { memoryMiB } : {}),
        ...(antiAffinity !== undefined ? { antiAffinity } : {}),
        ...(restartPolicy !== undefined ? { restartPolicy } : {})
      }),
    catch: (error) =>
      invalidArgument([
        `the VM spec is invalid: ${ParseResult.isParseError(error) ? issueMessages(error).join("; ") : String(error)}`
      ])
  })
}
