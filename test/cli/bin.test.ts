/**
 * The real executable: `node bin/blixard.js …` as a child process, against the built `dist/`
 * (test/globalSetup.ts builds it when the sources are newer).
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { freePort } from "../../src/node/FreePort.js"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

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

  it("the unbundled CLI (dist/src/cli/main.js) runs the fencing watchdog too: a daemon started through it starts its watchdog the same way", async () => {
    const result = await new Promise<Result>((resolve) =>
      execFile(process.execPath, [path.join(root, "dist/src/cli/main.js"), "node", "watchdog", "--help"], { cwd: root, env: { PATH: process.env.PATH ?? "" } }, (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout: stdout.toString(), stderr: stderr.toString() })
      )
    )
    expect(result.stderr).toBe("")
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/^blixard node watchdog --id N/)
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

  it("vm list with no node listening exits 1 with BLX_UNAVAILABLE, asking the address from the flag or BLIXARD_ADDR", async () => {
    const [a, b] = [await freePort(), await freePort()]
    const flag = await blixard(["vm", "list", "--json", "--addr", `127.0.0.1:${a}`])
    expect(flag.code).toBe(1)
    expect(flag.stdout).toBe("")
    // --json: the error too is JSON.
    expect(JSON.parse(flag.stderr.trim())).toMatchObject({
      error: { code: "BLX_UNAVAILABLE", message: `no Blixard node answers at 127.0.0.1:${a}; is it running? (--addr / BLIXARD_ADDR)` }
    })
    expect((await blixard(["--json", "vm", "list"], { BLIXARD_ADDR: `127.0.0.1:${b}` })).stderr).toContain(`answers at 127.0.0.1:${b};`)
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

  it("a command talking to a node loads no certificate generator (@peculiar/x509), only Node's X509 reader", () => {
    const bundle = path.join(root, "dist/bundle")
    const main = fs.readFileSync(path.join(bundle, "main.js"), "utf8")
    // The modules BlixardClient loads for its first request, as the bundle names them.
    const batch = /Promise\.all\(\[\s*((?:import\("\.\/[^"]+"\),?\s*)+)\]\)/g
    const clientBatch = [...main.matchAll(batch)].map((m) => [...m[1]!.matchAll(/import\("\.\/([^"]+)"\)/g)].map((i) => i[1]!)).find((files) => files.some((f) => f.startsWith("Client-")))
    expect(clientBatch).toBeDefined()
    // Everything those and main.js load statically.
    const loaded = new Set<string>()
    const visit = (file: string): void => {
      if (loaded.has(file)) return
      loaded.add(file)
      for (const m of fs.readFileSync(path.join(bundle, file), "utf8").matchAll(/^(?:import|export)\s[^;]*?from\s*"\.\/([^"]+)"|^import\s*"\.\/([^"]+)"/gms)) visit((m[1] ?? m[2])!)
    }
    for (const file of ["main.js", ...clientBatch!]) visit(file)
    expect([...loaded].filter((file) => fs.readFileSync(path.join(bundle, file), "utf8").includes("node_modules/@peculiar/x509/"))).toEqual([])
    // The daemon does load it (the check above would pass vacuously on a bundle without it).
    expect(fs.readdirSync(bundle).some((file) => fs.readFileSync(path.join(bundle, file), "utf8").includes("node_modules/@peculiar/x509/"))).toBe(true)
  })
})
