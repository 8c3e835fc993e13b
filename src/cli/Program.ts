/**
 * The `blixard` process: the command tree (`Cli.ts`) run on `process.argv` with the Node.js
 * services, its outcome turned into the exit code. Both entries run it: `main.ts` (the ES module
 * bundle) and `SnapshotMain.ts` (the start-up snapshot, see there).
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import { Cause, Effect, Exit, Layer, Random } from "effect"
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

/** Runs `blixard` on `argv` (`[node, script, ...args]`) and ends the process with its exit code. */
export function runCli(argv: ReadonlyArray<string>): void {
  run(argv).pipe(
    Effect.flatMap((code) =>
      Effect.sync(() => {
        process.exitCode = code
      })
    ),
    Effect.provide(MainLive),
    // Effect's default random generator is seeded when its module is evaluated: in the start-up
    // snapshot, that was once, at build time. Each run seeds its own.
    Effect.withRandom(Random.make(Math.random())),
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
