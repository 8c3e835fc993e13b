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
  Command.withSubcommands([nodeCommand, vmCommand, clusterCommand, tokenCommand, simCommand])
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

/** Prints what went wrong (unless @effect/cli already did) and says how the process exits. */
export const reportFailure = (cause: Cause.Cause<unknown>): Effect.Effect<number> => {
  if (Cause.isInterruptedOnly(cause)) return Effect.succeed(ExitCode.interrupted)
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    // @effect/cli has printed its own message (or the help) already.
    if (ValidationError.isValidationError(error)) return Effect.succeed(ExitCode.usage)
    if (isBlixardError(error)) {
      return Console.error(formatError(error)).pipe(
        Effect.as(usageCodes.has(error.code) ? ExitCode.usage : ExitCode.failure)
      )
    }
  }
  return Console.error(`blixard: unexpected error (a bug; please report it):\n${Cause.pretty(cause)}`).pipe(
    Effect.as(ExitCode.failure)
  )
}

/**
 * Runs `blixard` on a full argv (`[node, script, ...args]`) and succeeds with the exit code.
 * Needs the platform services @effect/cli uses, the process environment and a `BlixardClient`.
 */
export const run = (argv: ReadonlyArray<string>) =>
  (asksForBash(argv.slice(2)) ? printBashCompletions(blixard, "blixard") : app(argv)).pipe(
    Effect.as(ExitCode.ok as number),
    Logger.withMinimumLogLevel(unsetLogLevel),
    Effect.catchAllCause(reportFailure)
  )
