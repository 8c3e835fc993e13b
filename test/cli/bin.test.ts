/**
 * The real executable: `node bin/blixard.js …` as a child process, against the compiled `dist/`.
 * `dist/` is (re)built first when it is missing or older than the sources the CLI is made of.
 */
import { execFile, execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { beforeAll, describe, expect, it } from "vitest"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const entry = path.join(root, "dist/src/cli/main.js")

/** The folders the CLI's import graph reaches (a folder that does not exist yet is skipped). */
const sources = ["src/cli", "src/node", "src/domain", "src/api"]

const newestSource = (): number =>
  sources
    .filter((dir) => fs.existsSync(path.join(root, dir)))
    .flatMap((dir) =>
      fs
        .readdirSync(path.join(root, dir))
        .filter((name) => name.endsWith(".ts"))
        .map((name) => fs.statSync(path.join(root, dir, name)).mtimeMs)
    )
    .reduce((a, b) => Math.max(a, b), 0)

const builtAt = (): number => (fs.existsSync(entry) ? fs.statSync(entry).mtimeMs : 0)

beforeAll(() => {
  if (builtAt() >= newestSource()) return
  try {
    execFileSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"], {
      cwd: root,
      stdio: "pipe"
    })
  } catch (error) {
    // tsc still emits when another module of the tree has type errors; the CLI's own must be fresh.
    if (builtAt() < newestSource()) throw error
  }
})

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the executable with only the variables given (no BLIXARD_* from the test's environment). */
const blixard = (args: ReadonlyArray<string>, env: Record<string, string> = {}): Promise<Result> =>
  new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(root, "bin/blixard.js"), ...args],
      { cwd: root, env: { PATH: process.env.PATH ?? "", ...env } },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : null
        resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() })
      }
    )
  })

describe("bin/blixard.js", () => {
  it("--help lists every command and exits 0", async () => {
    const { code, stdout } = await blixard(["--help"])
    expect(code).toBe(0)
    for (const command of ["node", "vm create", "vm start", "vm stop", "vm delete", "vm status", "vm list", "cluster status", "cluster join", "cluster leave"]) {
      expect(stdout).toMatch(new RegExp(`- ${command}\\b`))
    }
  })

  it("a bad VM name exits 2 with BLX_INVALID_ARGUMENT", async () => {
    const { code, stderr } = await blixard(["vm", "create", "--name", "Bad_Name", "--runner", "/x"])
    expect(code).toBe(2)
    expect(stderr).toMatch(/^BLX_INVALID_ARGUMENT: --name "Bad_Name": /)
  })

  it("an unknown option exits 2", async () => {
    const { code, stderr } = await blixard(["vm", "list", "--frobnicate"])
    expect(code).toBe(2)
    expect(stderr).toContain("--frobnicate")
  })

  it("vm list exits 1 with BLX_NOT_IMPLEMENTED, asking the address from the flag or BLIXARD_ADDR", async () => {
    const plain = await blixard(["vm", "list"])
    expect(plain.code).toBe(1)
    expect(plain.stdout).toBe("")
    expect(plain.stderr.trim()).toBe(
      `BLX_NOT_IMPLEMENTED: the REST API client is not built yet; "vm list" cannot reach a node (asked 127.0.0.1:7001)`
    )
    expect((await blixard(["vm", "list", "--json", "--addr", "10.1.2.3:7001"])).stderr).toContain("(asked 10.1.2.3:7001)")
    expect((await blixard(["--json", "vm", "list"], { BLIXARD_ADDR: "10.9.9.9:7009" })).stderr).toContain(
      "(asked 10.9.9.9:7009)"
    )
  })

  it("node with a bad id and bind exits 2 with BLX_CONFIG_INVALID naming the flags", async () => {
    const { code, stderr } = await blixard(["node", "--id", "0", "--bind", "x"])
    expect(code).toBe(2)
    expect(stderr).toMatch(/^BLX_CONFIG_INVALID: --id 0: .*; --bind "x": an address is HOST:PORT/)
  })

  it("node reads BLIXARD_* from its environment", async () => {
    const { code, stdout } = await blixard(["node", "--check-config"], {
      BLIXARD_ID: "7",
      BLIXARD_BIND: "127.0.0.1:7007",
      BLIXARD_PEERS: "1:127.0.0.1:7001"
    })
    expect(code).toBe(0)
    expect(JSON.parse(stdout)).toMatchObject({
      id: 7,
      bind: "127.0.0.1:7007",
      dataDir: "./blixard-data/node-7",
      peers: [{ id: 1, address: "127.0.0.1:7001" }]
    })
  })
})
