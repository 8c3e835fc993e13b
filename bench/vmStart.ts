/**
 * Process mode's start latency: time from `VmBackend.start` called to the runner spawned (its
 * process exec'd, pid file written), over 50 starts of a trivial runner (`exec sleep`), each
 * stopped (SIGTERM) before the next. This is Blixard's overhead; a real VM's boot comes on top.
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { NodeId } from "../src/domain/NodeId.js"
import { VmName } from "../src/domain/VmName.js"
import { RunnerConfig, VmSpec } from "../src/domain/VmSpec.js"
import { make } from "../src/vm/ProcessBackend.js"

export interface VmStartResult {
  readonly name: string
  readonly starts: number
  readonly p50StartMs: number
  readonly p99StartMs: number
  readonly meanStartMs: number
}

export const benchVmStart = (starts = 50): Promise<ReadonlyArray<VmStartResult>> => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-bench-vmstart-"))
  const runner = path.join(root, "runner")
  fs.mkdirSync(path.join(runner, "bin"), { recursive: true })
  fs.writeFileSync(path.join(runner, "bin", "microvm-run"), "#!/bin/sh\nexec sleep 1000\n")
  fs.chmodSync(path.join(runner, "bin", "microvm-run"), 0o755)
  const name = Schema.decodeSync(VmName)("bench")
  return Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const backend = yield* make({ stateDir: path.join(root, "microvms"), node: NodeId.make(1), allowedRunnerPrefixes: [runner] })
        yield* backend.prepare(VmSpec.make({ name, source: RunnerConfig.make({ path: runner }) }))
        const latencies: Array<number> = []
        for (let i = 0; i < starts; i++) {
          const t0 = performance.now()
          yield* backend.start(name)
          latencies.push(performance.now() - t0)
          yield* backend.stop(name, "10 seconds")
        }
        latencies.sort((a, b) => a - b)
        const pick = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!
        return [
          {
            name: "process mode: start called → runner spawned",
            starts,
            p50StartMs: Number(pick(0.5).toFixed(3)),
            p99StartMs: Number(pick(0.99).toFixed(3)),
            meanStartMs: Number((latencies.reduce((a, b) => a + b, 0) / latencies.length).toFixed(3))
          }
        ] satisfies ReadonlyArray<VmStartResult>
      })
    ).pipe(
      Effect.provide(NodeContext.layer),
      Effect.ensuring(Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))
    )
  )
}
