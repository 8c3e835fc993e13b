/**
 * `blixard sim --seed N [--nodes 5] [--steps K] [--profile P] [--bug B] [--full
 * [--workload kv|orchestration [--log] [--no-moves]]] [--json]`: replays one seed of the
 * deterministic simulator — the explorer, or with `--full` the full-service tier, running the KV
 * store or (`--workload orchestration`) the orchestration layer — and prints its summary. The same
 * seed always prints the same output; a failing seed printed by CI or `npm run sim` is a
 * reproduction.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Option } from "effect"
import { InvalidArgument, InvariantViolated } from "../domain/Errors.js"
import { bugNames, bugs } from "../sim/Bugs.js"

const seed = Options.integer("seed").pipe(Options.withPseudoName("N"), Options.withDescription("The run to replay: every fault, delay and client operation derives from it."))
const nodes = Options.integer("nodes").pipe(
  Options.withPseudoName("N"),
  Options.optional,
  Options.withDescription("Cluster size (default: the profile's, 5 for default, 3 for crashpoints).")
)
const steps = Options.integer("steps").pipe(
  Options.withPseudoName("K"),
  Options.optional,
  Options.withDescription("Length of the safety phase (faults and load) in steps of 100 simulated ms (default 100; 300 for the orchestration workload).")
)
const fullOnly = ["storage", "join", "shrink", "amnesia", "learners", "votes", "waiters", "restarts", "upgrade", "stalereads"] as const
const explorerOnly = ["churn", "reconfig", "snapreconfig"] as const
const profile = Options.choice("profile", ["default", "crashpoints", "transfer", ...explorerOnly, ...fullOnly]).pipe(
  Options.withDefault("default" as const),
  Options.withDescription(
    "Fault profile: default (5 nodes, network faults, crashes, drift), crashpoints (leaders crash around their appends, before their fsync) churn (default plus membership changes; explorer tier), transfer (an operator asking for leadership transfers every few hundred ms) reconfig (frequent membership changes, a snapshot every 4 entries, slow Readys; explorer tier) or snapreconfig (membership changes every ~60 ms mostly on one node, a snapshot behind every entry, a follower cut off every ~300 ms; explorer tier); with --full also storage (disks that stall, fail and slow down, mostly the leader's; a crash loses unflushed writes), join (one founder, the others join as learners), shrink (the cluster shrinks to one voter and grows back), amnesia (restarts with an empty data directory), learners (amnesia, and a re-added node wiped again while a learner that acknowledged entries), votes (amnesia, and a node wiped as its vote grant leaves, while the election goes on), waiters (the leader cut off, then handed leadership back while its proposals still wait) restarts (followers' processes killed and restarted, crash loops, reads at every node) upgrade (a rolling upgrade from log version 1 with rollbacks; the replicas must apply every entry alike) or stalereads (a follower killed as its first ReadIndex request leaves while the third node is cut off from the leader; a client reads at its successor after a write)."
  )
)
const bug = Options.choice("bug", bugNames).pipe(
  Options.optional,
  Options.withDescription(
    `Put a known bug back to watch the simulator catch it: ${bugNames.map((name) => `${name} (${bugs[name].summary}; caught with ${bugs[name].catch.tier === "full" ? `--full --workload ${bugs[name].catch.workload} ` : ""}--profile ${bugs[name].catch.profile})`).join("; ")}.`
  )
)
const full = Options.boolean("full").pipe(Options.withDescription("Run the full-service tier (real RaftNode services on a virtual clock) instead of the explorer."))
const workload = Options.choice("workload", ["kv", "orchestration"]).pipe(
  Options.withDefault("kv" as const),
  Options.withDescription(
    "With --full, what the nodes run: kv (a replicated key-value store; clients checked for linearizability) or orchestration (cluster state, failure detector and an agent per node over a simulated hypervisor; clients create, start, stop and delete VMs; no VM may run on two nodes)."
  )
)
const log = Options.boolean("log").pipe(Options.withDescription("With --workload orchestration: print the nodes' log lines (agents, failure detector) with simulated time."))
const noMoves = Options.boolean("no-moves", { negationNames: ["moves"] }).pipe(
  Options.withDescription(
    "With --workload orchestration: clients never move VMs off live nodes (no drains, no resizing updates), as runs were before moves existed. --moves (the default) lets them."
  )
)
const json = Options.boolean("json").pipe(Options.withDescription("Print the result as JSON."))

export const simCommand = Command.make("sim", { seed, nodes, steps, profile, bug, full, workload, log, noMoves, json }, (args) =>
  Effect.gen(function* () {
    const n = Option.getOrUndefined(args.nodes)
    if (n !== undefined && (n < 1 || n > 9)) {
      return yield* new InvalidArgument({ subject: "--nodes", message: `--nodes ${n}: a simulated cluster has 1 to 9 nodes` })
    }
    const k = Option.getOrUndefined(args.steps)
    if (args.seed < 0 || (k !== undefined && k < 1)) {
      return yield* new InvalidArgument({ subject: "--seed", message: "--seed must be ≥ 0 and --steps ≥ 1" })
    }
    if (!args.full && (fullOnly as ReadonlyArray<string>).includes(args.profile)) {
      return yield* new InvalidArgument({ subject: "--profile", message: `--profile ${args.profile} runs in the full-service tier only: add --full` })
    }
    if (args.full && (explorerOnly as ReadonlyArray<string>).includes(args.profile)) {
      return yield* new InvalidArgument({
        subject: "--profile",
        message: `--profile ${args.profile}: membership churn runs in the explorer tier only; drop --full, or pick default, crashpoints or transfer`
      })
    }
    const orchestration = args.workload === "orchestration"
    if (orchestration && !args.full) {
      return yield* new InvalidArgument({ subject: "--workload", message: "--workload orchestration runs in the full-service tier: add --full" })
    }
    const b = Option.getOrUndefined(args.bug)
    if (!orchestration && args.log) {
      return yield* new InvalidArgument({ subject: "--log", message: "--log is about the orchestration layer: add --full --workload orchestration" })
    }
    if (!orchestration && args.noMoves) {
      return yield* new InvalidArgument({ subject: "--no-moves", message: "--no-moves is about the orchestration workload's clients: add --full --workload orchestration" })
    }
    if (args.noMoves && b === "one-step-moves") {
      return yield* new InvalidArgument({ subject: "--no-moves", message: "--bug one-step-moves is caught only through moves: drop --no-moves" })
    }
    const runKind = !args.full ? "explorer" : orchestration ? "orchestration" : "kv"
    if (b !== undefined && !(bugs[b].appliesTo as ReadonlyArray<string>).includes(runKind)) {
      const where = bugs[b].appliesTo.map((k) => (k === "explorer" ? "the explorer" : `--full --workload ${k}`)).join(" or ")
      return yield* new InvalidArgument({ subject: `--bug ${b}`, message: `--bug ${b} applies to ${where}` })
    }
    const { explore, profiles } = yield* Effect.promise(() => import("../sim/Explorer.js"))
    const options = {
      ...profiles[args.profile],
      seed: args.seed,
      ...(k !== undefined ? { safetyMs: k * 100 } : {}),
      ...(n !== undefined ? { nodes: n } : {})
    }
    const lines: Array<string> = []
    const result = orchestration
      ? (yield* Effect.promise(() => import("../sim/OrchestrationStack.js"))).simulateOrchestration({
          ...options,
          ...(b !== undefined ? { bug: b } : {}),
          ...(args.noMoves ? { moves: false } : {}),
          ...(args.log ? { log: (line: string) => void lines.push(line) } : {})
        })
      : (args.full ? (yield* Effect.promise(() => import("../sim/FullService.js"))).simulate : explore)({
          ...options,
          ...(b !== undefined ? { bug: b } : {})
        })
    for (const line of lines) yield* Console.log(line)
    if (args.json) yield* Console.log(JSON.stringify(result, null, 2))
    else {
      const s = result.stats
      const counts = result.counts
      yield* Console.log(
        [
          `seed ${result.seed} (${args.full ? "full-service tier, " : ""}${orchestration ? `orchestration workload${args.noMoves ? " without moves" : ""}, ` : ""}profile ${args.profile}${b !== undefined ? `, bug ${b}` : ""}): ${result.ok ? "ok" : "FAILED"}`,
          `  simulated ${(s.simulatedMs / 1000).toFixed(1)} s: ${s.events} events, ${s.elections} elections (highest term ${s.maxTerm}), ${s.committed} entries committed, ${s.snapshotsInstalled} snapshots installed, ${s.crashes} crashes`,
          `  network: ${s.messages} messages sent, ${s.dropped} dropped, ${s.queued} queued for a node that was down, ${s.late} late from a crashed node${s.membershipChanges > 0 ? `; ${s.membershipChanges} membership changes` : ""}`,
          `  clients: ${s.operations} operations (${s.unknownOutcomes} with unknown outcome), linearizability ${result.linearizability}`,
          ...(counts !== undefined ? [`  counts: ${Object.entries(counts).map(([name, value]) => `${name} ${value}`).join(", ")}`] : []),
          `  trace ${result.traceHash}`,
          ...(result.violation !== undefined ? [`  violation: ${result.violation}`] : [])
        ].join("\n")
      )
    }
    if (!result.ok) {
      return yield* new InvariantViolated({
        subject: `seed ${result.seed}`,
        message: `seed ${result.seed} failed: ${result.violation}`
      })
    }
  })
).pipe(Command.withDescription("Replay one seed of the deterministic simulator: a whole cluster under faults, with its invariants checked."))
