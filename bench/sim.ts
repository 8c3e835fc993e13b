/**
 * Simulated seconds per wall second of the explorer: 5 nodes under the default fault profile with
 * 3 clients writing, reading and compare-and-setting, every invariant checked after every event and
 * the history checked for linearizability at the end.
 */
import { explore, profiles } from "../src/sim/Explorer.js"

export const benchSim = (seeds = 100) => {
  // Warm up the JIT on a few seeds first: the explorer is meant to run thousands.
  for (let seed = 10_001; seed <= 10_010; seed++) explore({ ...profiles.default, seed })
  let simulated = 0
  let events = 0
  const started = performance.now()
  for (let seed = 1; seed <= seeds; seed++) {
    const r = explore({ ...profiles.default, seed })
    simulated += r.stats.simulatedMs
    events += r.stats.events
  }
  const wall = (performance.now() - started) / 1000
  return [
    {
      name: `explorer, 5 nodes, default profile, ${seeds} seeds`,
      simulatedSeconds: Math.round(simulated / 1000),
      wallSeconds: Number(wall.toFixed(2)),
      speedup: Math.round(simulated / 1000 / wall),
      eventsPerSecond: Math.round(events / wall)
    }
  ]
}
