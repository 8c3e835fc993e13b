/**
 * Every known bug the simulator can put back (`src/sim/Bugs.ts`) is caught by the tier, workload and
 * profile its entry names, within its seed bound. A bug whose fix has landed is put back by its
 * switch; one still in the code is caught as it is. So a fix that lands without its switch (or a
 * profile that stops reaching a bug) fails here.
 */
import { describe, expect, it } from "vitest"
import type { BugName } from "../../src/sim/Bugs.js"
import { bugNames, bugs } from "../../src/sim/Bugs.js"
import type { ExploreResult } from "../../src/sim/Explorer.js"
import { explore, profiles } from "../../src/sim/Explorer.js"
import { simulate } from "../../src/sim/FullService.js"
import { simulateOrchestration } from "../../src/sim/OrchestrationStack.js"

const run = (bug: BugName, seed: number): ExploreResult => {
  const c = bugs[bug].catch
  const options = { ...profiles[c.profile], seed, bug }
  if (c.tier === "explorer") return explore(options)
  return c.workload === "orchestration" ? simulateOrchestration(options) : simulate(options)
}

describe("the simulator catches each known bug within its seed bound", () => {
  for (const bug of bugNames) {
    const c = bugs[bug].catch
    const where = `${c.tier === "explorer" ? "explorer" : `full tier, ${c.workload} workload`}, profile ${c.profile}`
    it(`${bug} (${where}): a failing seed within ${c.seeds}`, async () => {
      let caught: { seed: number; violation: string } | undefined
      for (let seed = 1; seed <= c.seeds && caught === undefined; seed++) {
        const r = run(bug, seed)
        if (!r.ok) caught = { seed, violation: r.violation! }
        // A run is synchronous: let the test runner's worker answer its runner between seeds.
        await new Promise((resolve) => setImmediate(resolve))
      }
      expect(caught, `no seed of 1–${c.seeds} failed`).toBeDefined()
      expect(caught!.violation).toMatch(c.violation)
      // Up to about 3 s per orchestration seed on a loaded machine (the amnesia bound is 40 seeds).
    }, Math.max(120_000, c.seeds * 6_000))
  }
})
