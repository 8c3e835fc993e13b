/**
 * `blixard node watchdog …`: the fencing watchdog's own entry point (`WatchdogProcess.ts` says what
 * the process does). `bin/blixard.js` runs this instead of the CLI for that command line, so the
 * watchdog loads only its loop, the backend of its node's kind and Effect's core: not @effect/cli,
 * the HTTP client, the daemon's Raft and storage stack. Each module loaded stays resident for the
 * process's life (its code and the objects it builds at load); this one process per node lives for
 * as long as the node does, mostly asleep.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Either, Exit } from "effect"
import { formatError } from "../domain/Errors.js"
import { parseWatchdogArgs, usage } from "./WatchdogArgs.js"
import { run } from "./WatchdogProcess.js"

export const WatchdogThreads = 16
process.env.UV_THREADPOOL_SIZE ??= String(WatchdogThreads)

/** Exit codes as the CLI's: 0, 1 a failure, 2 a usage error, 130 interrupted (SIGINT/SIGTERM). */
const main = Effect.suspend(() => {
  const args = process.argv.slice(4)
  if (args.includes("--help") || args.includes("-h")) return Effect.sync(() => console.log(usage)).pipe(Effect.as(0))
  return Either.match(parseWatchdogArgs(args), {
    onLeft: (problem) => Effect.sync(() => console.error(formatError(problem))).pipe(Effect.as(2)),
    onRight: (config) =>
      run(config).pipe(
        Effect.as(0),
        Effect.catchAll((e) => Effect.sync(() => console.error(formatError(e))).pipe(Effect.as(1)))
      )
  })
})

main.pipe(
  Effect.flatMap((code) => Effect.sync(() => void (process.exitCode = code))),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    disablePrettyLogger: true,
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? 0 : Cause.isInterruptedOnly(exit.cause) ? 130 : 1)
  })
)
