/**
 * `npm run bench [-- NAME...]`: runs the named benchmarks (all by default) and prints one JSON
 * object per result, with the machine it ran on. Record results in bench/RESULTS.md.
 */
import * as os from "node:os"
import { benchCluster } from "./cluster.js"
import { benchCompare, compareModes } from "./compare.js"
import { benchFuzz } from "./fuzz.js"
import { benchHttp } from "./http.js"
import { benchIdle } from "./idle.js"
import { benchMemory } from "./memory.js"
import { benchLeaderState, benchRaftMemory, benchRaftRetained } from "./raftMemory.js"
import { benchReschedule } from "./reschedule.js"
import { benchRestart } from "./restart.js"
import { benchScale } from "./scale.js"
import { benchSim } from "./sim.js"
import { benchSnapshot } from "./snapshot.js"
import { benchStorage } from "./storage.js"
import { benchTransport } from "./transport.js"
import { benchVmStart } from "./vmStart.js"

const benches: Record<string, () => Promise<ReadonlyArray<unknown>>> = {
  storage: () => benchStorage(Number(process.env.BENCH_SECONDS ?? 5)),
  sim: async () => benchSim(),
  vmStart: () => benchVmStart(),
  http: () => benchHttp(Number(process.env.BENCH_SECONDS ?? 5)),
  cluster: () => benchCluster(Number(process.env.BENCH_SECONDS ?? 5)),
  idle: () => benchIdle(Number(process.env.BENCH_SECONDS ?? 30)),
  memory: () => benchMemory(Number(process.env.BENCH_SECONDS ?? 5), Number(process.env.BENCH_IDLE_SECONDS ?? 30), Number(process.env.BENCH_MEMORY_WRITES ?? 0)),
  compare: () => benchCompare(Number(process.env.BENCH_SECONDS ?? 5), Number(process.env.BENCH_FAILOVERS ?? 5), compareModes(process.env.BENCH_TLS)),
  transport: () => benchTransport(),
  raftMemory: () => benchRaftMemory(Number(process.env.BENCH_SECONDS ?? 3)),
  raftRetained: () => benchRaftRetained(),
  leaderState: () => benchLeaderState(Number(process.env.BENCH_VMS ?? 100_000)),
  raftLogTail: () => benchRaftRetained(Number(process.env.BENCH_LOG_WRITES ?? 12_000), 2_000, true),
  reschedule: () => benchReschedule(),
  snapshot: () => benchSnapshot(),
  scale: () => benchScale(),
  restart: () =>
    benchRestart(
      Number(process.env.BENCH_VMS ?? 100_000),
      Number(process.env.BENCH_REPORT_ROUNDS ?? 1),
      process.env.BENCH_SNAPSHOT_RATIO === undefined ? undefined : Number(process.env.BENCH_SNAPSHOT_RATIO)
    ),
  fuzz: () =>
    benchFuzz(
      {
        api: Number(process.env.FUZZ_RUNS ?? 20_000),
        peer: Number(process.env.FUZZ_PEER_RUNS ?? 100_000),
        tls: Number(process.env.FUZZ_TLS_RUNS ?? 20_000),
        tlsOnly: process.env.FUZZ_TLS_ONLY === "1"
      },
      Number(process.env.FUZZ_SEED ?? 1)
    )
}

const machine = {
  cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? "unknown"}`,
  memoryGiB: Math.round(os.totalmem() / 2 ** 30),
  node: process.version,
  platform: `${os.platform()} ${os.release()}`
}

const wanted = process.argv.slice(2)
const unknown = wanted.filter((name) => !(name in benches))
if (unknown.length > 0) {
  console.error(`unknown benchmark(s): ${unknown.join(", ")}; known: ${Object.keys(benches).join(", ")}`)
  process.exit(2)
}
console.log(JSON.stringify({ machine }))
for (const name of wanted.length > 0 ? wanted : Object.keys(benches)) {
  for (const result of await benches[name]!()) console.log(JSON.stringify({ bench: name, ...(result as object) }))
}
