/**
 * `npm run sim -- --seeds 1000 [--from 1] [--nodes 5] [--steps K] [--profile P] [--bug B]
 * [--full [--workload kv|orchestration [--no-moves]]]`: explores many seeds — of the
 * explorer, or with `--full` of the full-service tier (running the KV store, or the orchestration
 * layer) — and prints each failing seed with the command that replays it, then the runs' counts
 * summed. Exit code 1 if any seed failed.
 */
import { bugNames, bugs, isBugName } from "./Bugs.js"
import { explore, fullTierProfiles, profiles } from "./Explorer.js"
import type { ExploreOptions, ExploreResult, ProfileName } from "./Explorer.js"

const args = process.argv.slice(2)
const flag = (name: string): string | undefined => {
  const at = args.indexOf(`--${name}`)
  return at >= 0 ? args[at + 1] : undefined
}
const int = (name: string, fallback: number): number => {
  const raw = flag(name)
  if (raw === undefined) return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`--${name} must be a whole number, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return n
}

const profileName = flag("profile") ?? "default"
const profile = Object.hasOwn(profiles, profileName) ? profiles[profileName as ProfileName] : undefined
if (profile === undefined) {
  console.error(`unknown --profile ${profileName}; known: ${Object.keys(profiles).join(", ")}`)
  process.exit(2)
}
const full = args.includes("--full")
const workload = flag("workload") ?? "kv"
if (workload !== "kv" && workload !== "orchestration") {
  console.error(`unknown --workload ${workload}; known: kv, orchestration`)
  process.exit(2)
}
const orchestration = workload === "orchestration"
if (orchestration && !full) {
  console.error("--workload orchestration runs in the full-service tier: add --full")
  process.exit(2)
}
const runKind = !full ? "explorer" : orchestration ? "orchestration" : "kv"
const noMoves = args.includes("--no-moves")
if (noMoves && !orchestration) {
  console.error("--no-moves is about the orchestration workload's clients: add --full --workload orchestration")
  process.exit(2)
}
const bugFlag = flag("bug")
if (bugFlag !== undefined && !(isBugName(bugFlag) && (bugs[bugFlag].appliesTo as ReadonlyArray<string>).includes(runKind))) {
  const fit = bugNames.filter((b) => (bugs[b].appliesTo as ReadonlyArray<string>).includes(runKind))
  console.error(`unknown --bug ${bugFlag} for this run (${runKind}); known here: ${fit.join(", ")}`)
  process.exit(2)
}
const bug = bugFlag !== undefined && isBugName(bugFlag) ? bugFlag : undefined
if (full && "churnEveryMs" in profile) {
  console.error(`--profile ${profileName}: membership churn runs in the explorer tier only; drop --full`)
  process.exit(2)
}
if (!full && fullTierProfiles.includes(profileName as ProfileName)) {
  console.error(`--profile ${profileName} runs in the full-service tier only: add --full`)
  process.exit(2)
}
// The full tier loads Effect and the node's services: only when asked for.
const simulateOrchestration = orchestration ? (await import("./OrchestrationStack.js")).simulateOrchestration : undefined
const tier = full && !orchestration ? (await import("./FullService.js")).simulate : explore
const seeds = int("seeds", 100)
const from = int("from", 1)
const options: Omit<ExploreOptions, "seed"> = {
  ...profile,
  ...(flag("nodes") !== undefined ? { nodes: int("nodes", 5) } : {}),
  ...(flag("steps") !== undefined ? { safetyMs: int("steps", 100) * 100 } : {})
}
const run = (seed: number): ExploreResult =>
  simulateOrchestration !== undefined
    ? simulateOrchestration({ ...options, seed, ...(bug !== undefined ? { bug } : {}), ...(noMoves ? { moves: false } : {}) })
    : tier({ ...options, seed, ...(bug !== undefined ? { bug } : {}) })

let failed = 0
let firstFailure: number | undefined
const started = performance.now()
let simulated = 0
/** The runs' counts (the orchestration workload's, a rolling upgrade's…), summed over the seeds; a moment (`raisedAtMs`) counts the runs that had it. */
const counts = new Map<string, number>()
for (let seed = from; seed < from + seeds; seed++) {
  const result = run(seed)
  simulated += result.stats.simulatedMs
  // Moments (`…AtMs`) do not add up: counted as the runs that had one.
  for (const [name, n] of Object.entries(result.counts ?? {})) counts.set(name, (counts.get(name) ?? 0) + (name.endsWith("AtMs") ? 1 : n))
  if (!result.ok) {
    failed++
    firstFailure ??= seed
    const replay = `blixard sim --seed ${seed}${full ? " --full" : ""}${orchestration ? " --workload orchestration" : ""}${noMoves ? " --no-moves" : ""} --profile ${profileName}${flag("nodes") !== undefined ? ` --nodes ${options.nodes}` : ""}${flag("steps") !== undefined ? ` --steps ${flag("steps")}` : ""}${bug !== undefined ? ` --bug ${bug}` : ""}`
    console.log(`FAIL seed ${seed}: ${result.violation}\n  replay: ${replay}`)
  }
}
const wall = (performance.now() - started) / 1000
console.log(
  `${seeds - failed} passed, ${failed} failed (seeds ${from}–${from + seeds - 1}, ${full ? "full-service tier, " : ""}${orchestration ? `orchestration workload${noMoves ? " without moves" : ""}, ` : ""}profile ${profileName}${bug !== undefined ? `, bug ${bug}` : ""}; ${(simulated / 1000).toFixed(0)} simulated s in ${wall.toFixed(1)} s wall, ${Math.round(simulated / 1000 / wall)}× real time; ${(seeds / (wall / 60)).toFixed(1)} seeds per minute${firstFailure !== undefined ? `; first failure at seed ${firstFailure}` : ""})`
)
if (counts.size > 0) console.log(`summed over the seeds: ${[...counts].map(([name, n]) => `${name} ${n}`).join(", ")}`)
process.exitCode = failed > 0 ? 1 : 0
