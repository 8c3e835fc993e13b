/**
 * Speed of the linearizability checker on generated register histories.
 *
 *   npx vite-node test/sim/benchChecker.ts [keys] [opsPerKey] [clients] [unknownRate] [seeds]
 *
 * Defaults: 5 keys × 1,000 operations per key, 8 clients, 1 % lost outcomes, 5 seeds.
 */
import { performance } from "node:perf_hooks"
import { checkLinearizability, formatResult, registerModel } from "../../src/sim/Linearizability.js"
import { generateRegisterHistory } from "./registerHistory.js"

const [keys = 5, perKey = 1000, clients = 8, unknownRate = 0.01, seeds = 5] = process.argv.slice(2).map(Number)

for (let seed = 1; seed <= seeds; seed++) {
  const history = generateRegisterHistory(seed, { keys, ops: keys * perKey, clients, unknownRate })
  const lost = history.filter((o) => o.ret === Infinity).length
  const t0 = performance.now()
  const result = checkLinearizability(registerModel, history)
  const ms = performance.now() - t0
  const outcome = result._tag === "Ok" ? "Ok" : formatResult(registerModel, result)
  console.log(
    `seed ${seed}: ${history.length} ops (${keys} keys, ${clients} clients, ${lost} unknown): ${outcome} — ${ms.toFixed(1)} ms, ${result.steps} steps`
  )
}
