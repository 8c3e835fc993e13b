/**
 * `blixard sim`: one seed replayed by the real executable, identically every time.
 */
import { execFile } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

const root = path.resolve(import.meta.dirname, "../..")

const blixard = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [path.join(root, "bin/blixard.js"), ...args], { cwd: root }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
    })
  })

describe("blixard sim", () => {
  it("replays a seed: the same seed prints the same summary, in another process too", async () => {
    const [a, b] = await Promise.all([blixard(["sim", "--seed", "5"]), blixard(["sim", "--seed", "5"])])
    expect(a.code).toBe(0)
    expect(a.stdout).toMatch(/^seed 5 \(profile default\): ok/)
    expect(a.stdout).toMatch(/linearizability ok/)
    expect(b.stdout).toBe(a.stdout)
    const json = await blixard(["sim", "--seed", "5", "--json"])
    const parsed = JSON.parse(json.stdout) as { traceHash: string; ok: boolean }
    expect(parsed.ok).toBe(true)
    expect(a.stdout).toContain(`trace ${parsed.traceHash}`)
  })

  it("a failing seed exits 1 with BLX_INVARIANT_VIOLATED and says what broke", async () => {
    const r = await blixard(["sim", "--seed", "16", "--profile", "crashpoints", "--bug", "figure8"])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^BLX_INVARIANT_VIOLATED: seed 16 failed: .*leader completeness/m)
  })

  it("--full replays a seed of the full-service tier: same seed, same summary, in two processes", async () => {
    const [a, b] = await Promise.all([blixard(["sim", "--seed", "5", "--full"]), blixard(["sim", "--seed", "5", "--full"])])
    expect(a.code).toBe(0)
    expect(a.stdout).toMatch(/^seed 5 \(full-service tier, profile default\): ok/)
    expect(a.stdout).toMatch(/linearizability ok/)
    expect(b.stdout).toBe(a.stdout)
    const explorer = await blixard(["sim", "--seed", "5"])
    expect(explorer.stdout.match(/trace (\w+)/)![1]).not.toBe(a.stdout.match(/trace (\w+)/)![1])
  })

  it("--workload orchestration: a failing seed exits 1 naming the VM and its nodes, --log shows the nodes' log; it needs --full", async () => {
    const [bugged, usage, storage, misplaced] = await Promise.all([
      blixard(["sim", "--seed", "4", "--full", "--workload", "orchestration", "--bug", "no-fencing", "--log"]),
      blixard(["sim", "--seed", "2", "--workload", "orchestration"]),
      blixard(["sim", "--seed", "2", "--profile", "storage"]),
      blixard(["sim", "--seed", "2", "--bug", "stall-contact"])
    ])
    expect(storage.code).toBe(2)
    expect(storage.stderr).toMatch(/--profile storage runs in the full-service tier only: add --full/)
    expect(misplaced.code).toBe(2)
    expect(misplaced.stderr).toMatch(/--bug stall-contact applies to --full --workload kv or --full --workload orchestration/)
    expect(bugged.code).toBe(1)
    expect(bugged.stdout).toMatch(/^ +\d+ ms {2}node \d {2}INFO +node \d: VM "c\d-\d+" is running \(pid \d+\)$/m)
    expect(bugged.stdout).toMatch(/^seed 4 \(full-service tier, orchestration workload, profile default, bug no-fencing\): FAILED$/m)
    expect(bugged.stdout).toMatch(/^ {2}counts: vmsCreated \d+, /m)
    expect(bugged.stderr).toMatch(/^BLX_INVARIANT_VIOLATED: seed 4 failed: at \d+ ms: VM "c\d-\d+" runs on nodes \d, \d at once/m)
    expect(usage.code).toBe(2)
    expect(usage.stderr).toMatch(/--workload orchestration runs in the full-service tier: add --full/)
  })

  it("--workload orchestration moves VMs off live nodes unless --no-moves; --no-moves is refused where it means nothing", async () => {
    const [moves, none, kv, oneStep] = await Promise.all([
      blixard(["sim", "--seed", "1", "--full", "--workload", "orchestration", "--moves"]),
      blixard(["sim", "--seed", "1", "--full", "--workload", "orchestration", "--no-moves"]),
      blixard(["sim", "--seed", "1", "--full", "--no-moves"]),
      blixard(["sim", "--seed", "1", "--full", "--workload", "orchestration", "--no-moves", "--bug", "one-step-moves"])
    ])
    expect(moves.code).toBe(0)
    expect(moves.stdout).toMatch(/^seed 1 \(full-service tier, orchestration workload, profile default\): ok$/m)
    expect(moves.stdout).toMatch(/drains [1-9]\d*, resizes [1-9]\d*$/m)
    expect(none.code).toBe(0)
    expect(none.stdout).toMatch(/^seed 1 \(full-service tier, orchestration workload without moves, profile default\): ok$/m)
    expect(none.stdout).toMatch(/drains 0, resizes 0$/m)
    expect(kv.code).toBe(2)
    expect(kv.stderr).toMatch(/BLX_INVALID_ARGUMENT: .*--no-moves is about the orchestration workload's clients: add --full --workload orchestration/)
    expect(oneStep.code).toBe(2)
    expect(oneStep.stderr).toMatch(/--bug one-step-moves is caught only through moves: drop --no-moves/)
  }, 240_000)

  it("a failing seed of the full-service tier exits 1 and says what broke", async () => {
    const r = await blixard(["sim", "--seed", "5", "--full", "--profile", "waiters", "--bug", "overwrite-proposal-waiters"])
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/^seed 5 \(full-service tier, profile waiters, bug overwrite-proposal-waiters\): FAILED/)
    expect(r.stderr).toMatch(/^BLX_INVARIANT_VIOLATED: seed 5 failed: .*request without an answer: client \d's write to node \d/m)
  })
})
