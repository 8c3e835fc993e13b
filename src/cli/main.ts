/**
 * The `blixard` executable (`bin/blixard.js` imports the compiled form). Only what every command
 * needs is imported here; a command that needs heavy machinery (the daemon, the HTTP client) loads
 * it itself, so `blixard --help` starts nothing.
 *
 * `blixard node watchdog …` has its own entry (`node/WatchdogMain.ts`), which `bin/blixard.js` runs
 * without loading this module; run as this module (`node dist/src/cli/main.js node …`, the daemon
 * then starts its watchdog the same way), it is handed over to that entry too.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import { Cause, Effect, Exit, Layer } from "effect"
import { BlixardClient } from "./BlixardClient.js"
import { ExitCode, run } from "./Cli.js"
import { ProcessEnv } from "./ProcessEnv.js"

const MainLive = Layer.mergeAll(
  NodeFileSystem.layer,
  NodePath.layer,
  NodeTerminal.layer,
  ProcessEnv.layer,
  BlixardClient.layerHttp.pipe(Layer.provide(ProcessEnv.layer))
)

const [command, sub] = process.argv.slice(2)
if (command === "node" && sub === "watchdog") await import("../node/WatchdogMain.js")
else runCli()

function runCli(): void {
  run(process.argv).pipe(
    Effect.flatMap((code) =>
      Effect.sync(() => {
        process.exitCode = code
      })
    ),
    Effect.provide(MainLive),
    NodeRuntime.runMain({
      disableErrorReporting: true,
      disablePrettyLogger: true,
      // `run` reports every failure itself and sets process.exitCode; what is left is an interrupt
      // (SIGINT/SIGTERM), which exits 130, and the impossible.
      teardown: (exit, onExit) =>
        onExit(
          Exit.isSuccess(exit)
            ? ExitCode.ok
            : Cause.isInterruptedOnly(exit.cause)
              ? ExitCode.interrupted
              : ExitCode.failure
        )
    })
  )
}
