/**
 * `bin/blixard.js` run as a program starts Node.js from the CLI's start-up snapshot
 * (`dist/snapshot/cli.blob`, built by `npm run bundle`) only when `node` is the binary that built
 * it, and every other way ends in the ES module bundle (`dist/bundle`): a blob missing, stale or
 * from another Node.js, the daemon, a module left out of the snapshot.
 *
 * Each case runs a copy of the executable in a package laid out in a temporary directory, with or
 * without the bundle: without it, the module path fails ("blixard is not built"), which tells
 * which path a run took.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "vitest"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const built = path.join(root, "dist/snapshot")
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-snapshot-"))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))

interface Layout {
  /** The snapshot's files: as built, with a stamp naming another binary, a blob of garbage, or none. */
  readonly snapshot: "built" | "other-node" | "garbage" | "none"
  readonly bundle: boolean
}

let packages = 0
const packageWith = (layout: Layout): string => {
  const dir = path.join(scratch, `p${packages++}`)
  fs.mkdirSync(path.join(dir, "bin"), { recursive: true })
  fs.copyFileSync(path.join(root, "bin/blixard.js"), path.join(dir, "bin/blixard.js"))
  fs.chmodSync(path.join(dir, "bin/blixard.js"), 0o755)
  fs.symlinkSync(path.join(root, "node_modules"), path.join(dir, "node_modules"))
  fs.mkdirSync(path.join(dir, "dist"))
  if (layout.bundle) fs.symlinkSync(path.join(root, "dist/bundle"), path.join(dir, "dist/bundle"))
  if (layout.snapshot !== "none") {
    const snapshot = path.join(dir, "dist/snapshot")
    fs.mkdirSync(snapshot)
    if (layout.snapshot === "garbage") fs.writeFileSync(path.join(snapshot, "cli.blob"), "not a snapshot")
    else fs.symlinkSync(path.join(built, "cli.blob"), path.join(snapshot, "cli.blob"))
    const stamp = fs.readFileSync(path.join(built, "cli.node"), "utf8")
    fs.writeFileSync(path.join(snapshot, "cli.node"), layout.snapshot === "built" ? stamp : "1 2\n")
  }
  return dir
}

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs `executable ARGS` as a program, with this test's Node.js first on PATH (the one that built the snapshot). */
const run = (executable: string, args: ReadonlyArray<string>, env: Record<string, string> = {}): Promise<Result> =>
  new Promise((resolve) =>
    execFile(executable, args, { env: { PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ""}`, ...env } }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout: stdout.toString(), stderr: stderr.toString() })
    )
  )

/** Runs `node executable ARGS`. */
const runNode = (executable: string, args: ReadonlyArray<string>, env: Record<string, string> = {}): Promise<Result> =>
  run(process.execPath, [executable, ...args], env)

const canExecve = typeof (process as { execve?: unknown }).execve === "function"

const notBuilt = /^blixard is not built: run `npm run build`/

describe.skipIf(!fs.existsSync(path.join(built, "cli.blob")))("bin/blixard.js and the start-up snapshot", () => {
  it("runs a command from the snapshot when node built it: no bundle needed", async () => {
    const bin = path.join(packageWith({ snapshot: "built", bundle: false }), "bin/blixard.js")
    expect(await run(bin, ["--version"])).toMatchObject({ code: 0, stdout: expect.stringContaining("0.1.0") })
    // The CLI's validation with its usage exit code, from the snapshot.
    const bad = await run(bin, ["vm", "create", "--name", "Bad_Name", "--runner", "/x"])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/^BLX_INVALID_ARGUMENT: --name "Bad_Name": /)
  })

  it("finds the snapshot through a symbolic link to the executable (npm's node_modules/.bin)", async () => {
    const bin = path.join(packageWith({ snapshot: "built", bundle: false }), "bin/blixard.js")
    const link = path.join(scratch, `link${packages}`)
    fs.symlinkSync(bin, link)
    expect(await run(link, ["--version"])).toMatchObject({ code: 0, stdout: expect.stringContaining("0.1.0") })
  })

  it("a snapshot stamped by another node binary is not used: the bundle runs (none here, so it says so)", async () => {
    const bin = path.join(packageWith({ snapshot: "other-node", bundle: false }), "bin/blixard.js")
    const result = await run(bin, ["--version"])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(notBuilt)
  })

  it("a blob from another Node.js (which Node.js would refuse and exit) is never started: the bundle answers", async () => {
    const bin = path.join(packageWith({ snapshot: "garbage", bundle: true }), "bin/blixard.js")
    expect(await run(bin, ["--version"])).toMatchObject({ code: 0, stdout: expect.stringContaining("0.1.0"), stderr: "" })
  })

  it("with NODE_OPTIONS (a V8 flag there makes Node.js refuse the blob and exit), the bundle answers", async () => {
    const bin = path.join(packageWith({ snapshot: "built", bundle: true }), "bin/blixard.js")
    const env = { NODE_OPTIONS: "--max-old-space-size=300" }
    expect(await run(bin, ["--version"], env)).toMatchObject({ code: 0, stdout: expect.stringContaining("0.1.0"), stderr: "" })
    expect(await runNode(bin, ["--version"], env)).toMatchObject({ code: 0, stdout: expect.stringContaining("0.1.0"), stderr: "" })
    expect(await run(process.execPath, ["--max-old-space-size=300", bin, "--version"])).toMatchObject({ code: 0, stdout: expect.stringContaining("0.1.0"), stderr: "" })
  })

  it("without a snapshot, the bundle answers", async () => {
    const bin = path.join(packageWith({ snapshot: "none", bundle: true }), "bin/blixard.js")
    expect(await run(bin, ["--version"])).toMatchObject({ code: 0, stdout: expect.stringContaining("0.1.0") })
  })

  it("the daemon and its watchdog never start from the snapshot", async () => {
    const bin = path.join(packageWith({ snapshot: "built", bundle: false }), "bin/blixard.js")
    for (const args of [["node", "--check-config"], ["node"], ["node", "watchdog", "--help"]]) {
      const result = await run(bin, args)
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(notBuilt)
    }
  })

  it("a command needing a module left out of the snapshot (the simulator) runs again from the bundle", async () => {
    const args = ["sim", "--seed", "1", "--steps", "5"]
    const withoutBundle = await run(path.join(packageWith({ snapshot: "built", bundle: false }), "bin/blixard.js"), args)
    expect(withoutBundle.code).toBe(1)
    expect(withoutBundle.stderr).toMatch(notBuilt)
    const withBundle = await run(path.join(packageWith({ snapshot: "built", bundle: true }), "bin/blixard.js"), args)
    expect(withBundle.code).toBe(0)
    expect(withBundle.stdout).toContain("linearizability ok")
  })

  it.runIf(canExecve)("node bin/blixard.js replaces itself with a Node.js started from the snapshot (Node.js with process.execve)", async () => {
    const bin = path.join(packageWith({ snapshot: "built", bundle: false }), "bin/blixard.js")
    expect(await runNode(bin, ["--version"])).toMatchObject({ code: 0, stdout: expect.stringContaining("0.1.0") })
    const stale = path.join(packageWith({ snapshot: "other-node", bundle: false }), "bin/blixard.js")
    expect((await runNode(stale, ["--version"])).stderr).toMatch(notBuilt)
  })

  it.runIf(canExecve)("node bin/blixard.js: a command handed back by the snapshot runs from the bundle, not from the snapshot again", async () => {
    const bin = path.join(packageWith({ snapshot: "built", bundle: true }), "bin/blixard.js")
    const result = await runNode(bin, ["sim", "--seed", "1", "--steps", "5"])
    expect(result.code).toBe(0)
    expect(result.stdout).toContain("linearizability ok")
  })
})
