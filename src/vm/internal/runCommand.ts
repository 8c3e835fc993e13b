/**
 * Runs a short-lived external command (nix, systemctl, a runner's tap-up/tap-down/microvm-shutdown)
 * through `@effect/platform`'s `CommandExecutor`: no shell, arguments passed as an array, stdout and
 * stderr read line by line (to a progress callback and a bounded tail for error messages). The
 * executor kills the command's process group if the effect is interrupted (e.g. by a timeout).
 */
import * as Command from "@effect/platform/Command"
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Stream } from "effect"

export interface CommandSpec {
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly cwd?: string
  readonly env?: Readonly<Record<string, string>>
  /** Every output line (stdout and stderr, interleaved as they arrive). */
  readonly onLine?: (line: string) => Effect.Effect<void>
  /** How many of the last output lines to keep for the result (default 20). */
  readonly tailLines?: number
}

export interface CommandResult {
  readonly exitCode: number
  readonly tail: ReadonlyArray<string>
}

export const runCommand = (
  spec: CommandSpec
): Effect.Effect<CommandResult, PlatformError, CommandExecutor.CommandExecutor> =>
  Effect.scoped(
    Effect.gen(function* () {
      let command = Command.make(spec.command, ...spec.args)
      if (spec.cwd !== undefined) command = Command.workingDirectory(command, spec.cwd)
      if (spec.env !== undefined) command = Command.env(command, spec.env)
      const limit = spec.tailLines ?? 20
      const tail: Array<string> = []
      const onLine = spec.onLine
      const lines = (stream: Stream.Stream<Uint8Array, PlatformError>) =>
        stream.pipe(Stream.decodeText(), Stream.splitLines)
      const process = yield* Command.start(command)
      const [, exitCode] = yield* Effect.all(
        [
          Stream.merge(lines(process.stdout), lines(process.stderr)).pipe(
            Stream.runForEach((line) => {
              tail.push(line)
              if (tail.length > limit) tail.shift()
              return onLine === undefined ? Effect.void : onLine(line)
            })
          ),
          process.exitCode
        ],
        { concurrency: 2 }
      )
      return { exitCode: Number(exitCode), tail }
    })
  )

/** `a b 'c d'`: how a command is shown to a person (never executed). */
export const showCommand = (command: string, args: ReadonlyArray<string>): string =>
  [command, ...args].map((a) => (/^[A-Za-z0-9_@%+=:,./#-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)).join(" ")
