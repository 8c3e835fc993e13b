/**
 * Speed of the linearizability checker on generated register histories.
 *
 *   npx vite-node test/sim/benchChecker.ts [keys] [opsPerKey] [clients] [unknownRate] [seeds] [cas 0|1]
 *
 * Defaults: 5 keys × 1,000 operations per key, 8 clients, 1 % lost outcomes, 5 seeds, with cas.
 * For each seed: the generated (linearizable) history, then the same with a stale read planted at
 * the end of key k0 (not linearizable).
 */
import { performance } from "node:perf_hooks"
import { checkLinearizability, type Operation, Register, type RegisterInput, registerModel, type RegisterOutput } from "../../src/sim/Linearizability.js"
import { generateRegisterHistory } from "./registerHistory.js"

const [keys = 5, perKey = 1000, clients = 8, unknownRate = 0.01, seeds = 5, cas = 1] = process.argv.slice(2).map(Number)

const time = (label: string, history: ReadonlyArray<Operation<RegisterInput, RegisterOutput>>): void => {
  const t0 = performance.now()
  const r = checkLinearizability(registerModel, history)
  const ms = performance.now() - t0
  console.log(`  ${label}: ${r._tag}${r._tag === "Unknown" ? ` (${r.reason})` : ""} — ${ms.toFixed(1)} ms, ${r.steps} steps`)
}

for (let seed = 1; seed <= seeds; seed++) {
  const history = generateRegisterHistory(seed, { keys, ops: keys * perKey, clients, unknownRate, cas: cas !== 0 })
  const lost = history.filter((o) => o.ret === Infinity).length
  console.log(`seed ${seed}: ${history.length} ops (${keys} keys, ${clients} clients, ${lost} unknown${cas ? "" : ", no cas"})`)
  time("generated", history)
  const last = Math.max(...history.filter((o) => o.ret !== Infinity).map((o) => o.ret))
  const first = history.find((o) => o.input._tag === "write" && o.input.key === "k0" && o.ret !== Infinity)
  if (first === undefined || first.input._tag !== "write") continue
  const n = history.length
  time("stale read planted", [
    ...history,
    { id: n, client: clients, input: Register.write("k0", -1), output: null, call: last + 1, ret: last + 2 },
    { id: n + 1, client: clients, input: Register.read("k0"), output: first.input.value, call: last + 3, ret: last + 4 }
  ])
}
