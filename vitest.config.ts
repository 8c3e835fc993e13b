import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/globalSetup.ts"],
    // Real processes (e2e) and real SQLite files share two cores with everything else: generous
    // per-test deadlines, while each test waits on conditions, never on fixed sleeps.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Two test files at a time (one per core of the CI machine): the suite's real-process tests are
    // built to pass on busy cores, and run one at a time the suite took over 15 minutes per Node.js.
    maxWorkers: 2,
    minWorkers: 1,
    sequence: { concurrent: false }
  }
})
