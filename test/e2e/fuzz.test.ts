/**
 * A small budget of the API fuzz benchmark (`npm run bench -- fuzz`, bench/fuzz.ts) against a real
 * node: no 5xx, no state changed by a refused request, the node still up.
 */
import { afterAll, describe, expect, it } from "vitest"
import { fuzzApi, type FuzzNode, startFuzzNode } from "../../bench/fuzz.js"
import { bin } from "./harness.js"

const runs = Number(process.env.FUZZ_RUNS ?? 300)

describe("API fuzz (small budget)", () => {
  let node: FuzzNode | undefined
  afterAll(async () => {
    await node?.stop()
  })

  it(`${runs} generated requests: no 5xx, no state change from a refused request, the node stays up`, { timeout: 300_000 }, async () => {
    node = await startFuzzNode(bin)
    const result = await fuzzApi(node, runs, Number(process.env.FUZZ_SEED ?? Date.now() % 100_000))
    const report = JSON.stringify(result, null, 2)
    expect(result.failures, report).toEqual([])
    expect(result.serverErrors, report).toBe(0)
    expect(result.refusedThatChangedState, report).toBe(0)
    expect(result.nodeAlive, report).toBe(true)
    // The inputs reach every kind of refusal, and some get through.
    for (const status of ["400", "401", "403", "404"]) expect(result.byStatus[status] ?? 0, report).toBeGreaterThan(0)
    expect(Object.entries(result.byStatus).some(([status, n]) => status.startsWith("2") && n > 0), report).toBe(true)
  })
})
