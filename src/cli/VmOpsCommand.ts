/**
 * `blixard vm update|logs`, and `--wait` of `vm create|start|update`: operating a VM once it exists.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Clock, Console, Effect, Option, Stream } from "effect"
import { BackendFailed, type BlixardError, Timeout } from "../domain/Errors.js"
import { MaxInlineConfigBytes } from "../domain/VmSpec.js"
import { VmName } from "../domain/VmName.js"
import type { VmRecord } from "../domain/VmStatus.js"
import { BlixardClient, type Target } from "./BlixardClient.js"
import { formatVm, formatVmChange } from "./Format.js"
import { clientContext, clientOptions } from "./GlobalOptions.js"
import { check, invalidArgument } from "./Validate.js"
import { buildVmChanges, readVmConfigFile } from "./VmSpecInput.js"

const nameArg = Args.text({ name: "NAME" }).pipe(
  Args.withDescription("The VM's name: a lowercase DNS label (a–z, 0–9, '-'; at most 63 characters).")
)

/** `--wait`: the flag, shared by `vm create|start|update`. */
export const waitOption = Options.boolean("wait").pipe(
  Options.withDescription(
    "Wait until the VM runs (or stays stopped, if it is not wanted running), showing its build's progress; exit 1 if it fails."
  )
)
export const waitTimeoutOption = Options.integer("wait-timeout").pipe(
  Options.withPseudoName("SECONDS"),
  Options.withDescription("How long --wait waits at most (default 1800 s: a nix build may take long)."),
  Options.optional
)

/** Where the VM is on its way: done, failed (with why), or still going (a line to show). */
export type Progress =
  | { readonly _tag: "Done" }
  | { readonly _tag: "Failed"; readonly error: string }
  | { readonly _tag: "Going"; readonly line: string }

const seconds = (ms: number) => `${Math.max(0, Math.round(ms / 1000))}s`

/** Pure: how far `record` is, asked at `now`. */
export const progressOf = (record: VmRecord, now: number): Progress => {
  const { status } = record
  const generation = record.generation ?? 0
  const build = status.build
  if (build !== undefined && build.state === "failed" && build.generation === generation) {
    return { _tag: "Failed", error: status.lastError ?? `building generation ${generation} failed` }
  }
  if (status.phase === "failed") return { _tag: "Failed", error: status.lastError ?? "the VM failed" }
  if (record.desired === "running" && status.phase === "running" && (status.generation ?? 0) >= generation && build === undefined) {
    return { _tag: "Done" }
  }
  if (record.desired === "stopped" && (status.phase === "stopped" || status.phase === "pending")) return { _tag: "Done" }
  if (build !== undefined && build.state === "building") {
    return {
      _tag: "Going",
      line: `building generation ${build.generation} on node ${record.node ?? "?"} (${seconds(now - build.startedAt)})${build.lastLine !== undefined ? `: ${build.lastLine}` : ""}`
    }
  }
  const where = record.node === undefined ? `pending${record.pendingReason !== undefined ? `: ${record.pendingReason}` : ""}` : `on node ${record.node}`
  return {
    _tag: "Going",
    line: `${status.phase} ${where} (${seconds(now - status.since)})${status.lastError !== undefined ? `; last error: ${status.lastError}` : ""}`
  }
}

/**
 * Polls the VM until `progressOf` says done or failed, printing each new progress line (to stderr,
 * so `--json` output stays one document); fails with the VM's error.
 */
export const waitForVm = (target: Target, name: VmName, timeoutSeconds: number | undefined) =>
  Effect.gen(function* () {
    const client = yield* BlixardClient
    const started = yield* Clock.currentTimeMillis
    const limit = (timeoutSeconds ?? 1800) * 1000
    let shown = ""
    for (;;) {
      const record = yield* client.vmStatus(target, name)
      const now = yield* Clock.currentTimeMillis
      const progress = progressOf(record, now)
      if (progress._tag === "Done") return record
      if (progress._tag === "Failed") {
        return yield* new BackendFailed({
          subject: name,
          ...(record.node !== undefined ? { node: record.node } : {}),
          message: `VM "${name}": ${progress.error}`
        })
      }
      // The elapsed time is left out of the comparison: a line is shown again only when it changed.
      const key = progress.line.replace(/\(\d+s\)/, "")
      if (key !== shown) {
        shown = key
        yield* Console.error(progress.line)
      }
      if (now - started > limit) {
        return yield* new Timeout({ subject: name, message: `VM "${name}" is not settled after ${seconds(limit)} (${progress.line}); see \`blixard vm status ${name}\` and \`blixard vm logs ${name}\`` })
      }
      yield* Effect.sleep("500 millis")
    }
  })

/** After a write: with `--wait`, waits and prints the settled VM; else prints `record` as it is. */
export const answerOrWait = (
  verb: Parameters<typeof formatVmChange>[0],
  record: VmRecord,
  context: { readonly target: Target; readonly json: boolean },
  wait: { readonly wait: boolean; readonly timeout: Option.Option<number> }
): Effect.Effect<void, BlixardError, BlixardClient> =>
  Effect.gen(function* () {
    if (!wait.wait) return yield* Console.log(formatVmChange(verb, record, context.json))
    yield* Console.error(formatVmChange(verb, record, false))
    const settled = yield* waitForVm(context.target, record.spec.name, Option.getOrUndefined(wait.timeout))
    yield* Console.log(formatVm(settled, context.json))
  })

const vmName = (text: string) =>
  Effect.suspend(() => {
    const problems: Array<string> = []
    const name = check(VmName, text, "NAME", problems)
    return name === undefined ? Effect.fail(invalidArgument(problems)) : Effect.succeed(name)
  })

export const update = Command.make(
  "update",
  {
    ...clientOptions,
    name: nameArg,
    config: Options.text("config").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription(`A new microvm.nix NixOS module for the VM (at most ${MaxInlineConfigBytes} bytes).`),
      Options.optional
    ),
    flake: Options.text("flake").pipe(Options.withPseudoName("REF"), Options.withDescription("A new flake output, FLAKE#NAME."), Options.optional),
    runner: Options.text("runner").pipe(
      Options.withPseudoName("PATH"),
      Options.withDescription("A new prebuilt runner (a directory with bin/microvm-run on the hosting node)."),
      Options.optional
    ),
    vcpus: Options.integer("vcpus").pipe(Options.withPseudoName("N"), Options.withDescription("Virtual CPUs, 1–1024."), Options.optional),
    memory: Options.integer("memory").pipe(Options.withPseudoName("MIB"), Options.withDescription("Memory in MiB, at least 16."), Options.optional),
    restart: Options.choice("restart", ["always", "on-failure", "never"]).pipe(
      Options.withDescription("What the hosting node does when the VM exits."),
      Options.optional
    ),
    ifRevision: Options.integer("if-revision").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("Apply only if the VM is still at this revision (else BLX_CONFLICT)."),
      Options.optional
    ),
    wait: waitOption,
    waitTimeout: waitTimeoutOption
  },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const name = yield* vmName(args.name)
      const config = Option.getOrUndefined(args.config)
      const file = config === undefined ? undefined : yield* readVmConfigFile(config)
      const changes = yield* buildVmChanges(
        {
          config,
          flake: Option.getOrUndefined(args.flake),
          runner: Option.getOrUndefined(args.runner),
          vcpus: Option.getOrUndefined(args.vcpus),
          memory: Option.getOrUndefined(args.memory),
          restart: Option.getOrUndefined(args.restart)
        },
        file
      )
      const client = yield* BlixardClient
      const ifRevision = Option.getOrUndefined(args.ifRevision)
      const record = yield* client.updateVm(context.target, name, changes, ifRevision)
      yield* answerOrWait("updated", record, context, { wait: args.wait, timeout: args.waitTimeout })
    })
).pipe(
  Command.withDescription(
    "Change a VM's runner (--config, --flake or --runner), resources or restart policy. The hosting node builds the new runner while the VM runs on, then restarts it onto it (microvm -u); a failed build leaves the VM running and says why in its status. A VM that no longer fits its node moves."
  )
)

export const logs = Command.make(
  "logs",
  {
    ...clientOptions,
    name: nameArg,
    follow: Options.boolean("follow").pipe(Options.withAlias("f"), Options.withDescription("Keep printing what the VM writes, until interrupted.")),
    tail: Options.integer("tail").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("Start with only the last N lines (default: the whole log)."),
      Options.optional
    )
  },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const name = yield* vmName(args.name)
      const tail = Option.getOrUndefined(args.tail)
      if (tail !== undefined && (tail < 0 || tail > 1_000_000)) {
        return yield* invalidArgument([`--tail ${tail}: a number of lines from 0 to 1000000`])
      }
      const client = yield* BlixardClient
      yield* client.vmLogs(context.target, name, { follow: args.follow, ...(tail !== undefined ? { tail } : {}) }).pipe(
        Stream.runForEach((chunk) => Effect.sync(() => process.stdout.write(chunk)))
      )
    })
).pipe(
  Command.withDescription(
    "Print a VM's console output and build log, from whichever node hosts it (any node forwards the request). Process mode: the runner's log file; systemd mode: the build log, then the unit's journal."
  )
)
