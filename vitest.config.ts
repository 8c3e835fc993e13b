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
    sequence: { concurrent: false }
  }
})
