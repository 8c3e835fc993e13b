/**
 * The `blixard` command tree and how a run ends: every outcome becomes an exit code — 0 success,
 * 1 failure, 2 usage error (unknown command or option, a bad value) — and every Blixard error is
 * printed on stderr as `CODE: message`.
 *
 * To add a command: write it in its own module (`FooCommand.ts`, with `...clientOptions` and
 * `clientContext(args)` when it talks to a node) and list it in `subcommands` below.
 */
import * as Command from "@effect/cli/Command"
import * as ValidationError from "@effect/cli/ValidationError"
import { Cause, Console, Effect, Logger, Option } from "effect"
import { type BlixardError, formatError } from "../domain/Errors.js"
import { asksForBash, printBashCompletions } from "./BashCompletions.js"
import { clusterCommand } from "./ClusterCommand.js"
import { eventsCommand } from "./EventsCommand.js"
import { rootCommand } from "./GlobalOptions.js"
import { nodeCommand, unsetLogLevel } from "./NodeCommand.js"
import { simCommand } from "./SimCommand.js"
import { tokenCommand } from "./TokenCommand.js"
import { vmCommand } from "./VmCommand.js"

/** Kept equal to package.json's version (a test checks it). */
export const version = "0.1.0"

export const ExitCode = { ok: 0, failure: 1, usage: 2, interrupted: 130 } as const

export const blixard = rootCommand.pipe(
  Command.withDescription(
    "Blixard: a distributed microVM orchestrator for NixOS. `blixard node` runs a cluster member; the other commands talk to one (--addr)."
  ),
  Command.withSubcommands([nodeCommand, vmCommand, clusterCommand, tokenCommand, eventsCommand, simCommand])
)

const app = Command.run(blixard, { name: "blixard", version })

const isBlixardError = (error: unknown): error is BlixardError =>
  typeof error === "object" &&
  error !== null &&
  "code" in error &&
  typeof error.code === "string" &&
  error.code.startsWith("BLX_") &&
  "message" in error

/** Bad input from the person at the keyboard: a usage error. */
const usageCodes: ReadonlySet<string> = new Set(["BLX_INVALID_ARGUMENT", "BLX_CONFIG_INVALID"])

/** `{"error":{"code":"BLX_…","message":…}}`: what `--json` prints on stderr for a failure. */
export const jsonError = (code: string, message: string, fields: { readonly subject?: string | undefined; readonly node?: number | undefined } = {}): string =>
  JSON.stringify({
    error: { code, message, ...(fields.subject !== undefined ? { subject: fields.subject } : {}), ...(fields.node !== undefined ? { node: fields.node } : {}) }
  })

/**
 * Prints what went wrong (unless @effect/cli already did) and says how the process exits. With
 * `json`, the failure is one JSON line on stderr (`jsonError`), a usage error included: `usage` is
 * what @effect/cli would have printed for it.
 */
export const reportFailure = (cause: Cause.Cause<unknown>, json?: { readonly usage: ReadonlyArray<string> }): Effect.Effect<number> => {
  if (Cause.isInterruptedOnly(cause)) return Effect.succeed(ExitCode.interrupted)
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    // @effect/cli has printed its own message (or the help) already, unless it was held back for --json.
    if (ValidationError.isValidationError(error)) {
      if (json === undefined) return Effect.succeed(ExitCode.usage)
      const message = stripAnsi(json.usage.join("\n")).trim() || "the command line is not valid; see blixard --help"
      return Console.error(jsonError("BLX_INVALID_ARGUMENT", message)).pipe(Effect.as(ExitCode.usage))
    }
    if (isBlixardError(error)) {
      const text = json !== undefined ? jsonError(error.code, error.message, error) : formatError(error)
      return Console.error(text).pipe(Effect.as(usageCodes.has(error.code) ? ExitCode.usage : ExitCode.failure))
    }
  }
  const message = `blixard: unexpected error (a bug; please report it):\n${Cause.pretty(cause)}`
  return Console.error(json !== undefined ? jsonError("BLX_UNEXPECTED", message) : message).pipe(Effect.as(ExitCode.failure))
}

const stripAnsi = (text: string): string => text.replace(/\u001b\[[0-9;]*m/g, "")

/** Whether `--json` is on the command line (it may come before or after the subcommand). */
const wantsJson = (argv: ReadonlyArray<string>): boolean => argv.slice(2).some((arg) => arg === "--json" || arg === "--json=true")

/**
 * Runs `blixard` on a full argv (`[node, script, ...args]`) and succeeds with the exit code.
 * Needs the platform services @effect/cli uses, the process environment and a `BlixardClient`.
 * With `--json`, what @effect/cli prints on stderr for a usage error is held back and reported as JSON.
 */
export const run = (argv: ReadonlyArray<string>) => {
  const json = wantsJson(argv) ? { usage: [] as Array<string> } : undefined
  const command = asksForBash(argv.slice(2)) ? printBashCompletions(blixard, "blixard") : app(argv)
  const program =
    json === undefined
      ? command
      : Console.consoleWith((console) =>
          Console.withConsole(command, { ...console, error: (...args) => Effect.sync(() => void json.usage.push(args.map(String).join(" "))) })
        )
  // What the command itself wrote on stderr (a paging hint, --wait's progress) is printed after all,
  // at the end: only @effect/cli's own text for a usage error is replaced by the JSON error.
  const flushHeld = Effect.suspend(() => Effect.forEach(json?.usage.splice(0) ?? [], (line) => Console.error(line), { discard: true }))
  const isUsage = (cause: Cause.Cause<unknown>) => Option.exists(Cause.failureOption(cause), ValidationError.isValidationError)
  return program.pipe(
    Effect.as(ExitCode.ok as number),
    Effect.tap(() => flushHeld),
    Logger.withMinimumLogLevel(unsetLogLevel),
    Effect.catchAllCause((cause) => Effect.zipRight(isUsage(cause) ? Effect.void : flushHeld, reportFailure(cause, json)))
  )
}
