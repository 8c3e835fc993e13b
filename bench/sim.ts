/**
 * Simulated seconds per wall second of both simulator tiers: 5 nodes under the default fault
 * profile with 3 clients writing, reading and compare-and-setting, every invariant checked after
 * every event (explorer) or every instant (full-service tier), and the history checked for
 * linearizability at the end. The full tier runs the real `RaftNode` services on virtual time;
 * its target is 50× real time. The full tier's orchestration workload adds the cluster state,
 * failure detector and an agent per node over a simulated hypervisor (50 ms ticks, as the
 * daemon), 4 clients managing VMs, and the no-double-run check after every instant.
 */
import { explore, profiles } from "../src/sim/Explorer.js"
import type { ExploreOptions, ExploreResult } from "../src/sim/Explorer.js"
import { simulate } from "../src/sim/FullService.js"
import { simulateOrchestration } from "../src/sim/OrchestrationStack.js"

const measure = (name: string, run: (options: ExploreOptions) => ExploreResult, seeds: number, warmup: number) => {
  // Warm up the JIT on other seeds first: both tiers are meant to run many seeds in one process.
  for (let seed = 10_001; seed <= 10_000 + warmup; seed++) run({ ...profiles.default, seed })
  let simulated = 0
  let events = 0
  const started = performance.now()
  for (let seed = 1; seed <= seeds; seed++) {
    const r = run({ ...profiles.default, seed })
    simulated += r.stats.simulatedMs
    events += r.stats.events
  }
  const wall = (performance.now() - started) / 1000
  return {
    name: `${name}, 5 nodes, default profile, ${seeds} seeds`,
    simulatedSeconds: Math.round(simulated / 1000),
    wallSeconds: Number(wall.toFixed(2)),
    speedup: Math.round(simulated / 1000 / wall),
    eventsPerSecond: Math.round(events / wall)
  }
}

export const benchSim = (explorerSeeds = 100, fullSeeds = 20, orchestrationSeeds = 10) => [
  measure("explorer", explore, explorerSeeds, 10),
  measure("full-service tier", simulate, fullSeeds, 3),
  measure("full-service tier, orchestration workload", simulateOrchestration, orchestrationSeeds, 2)
]
