/**
 * `blixard node --log-format json`: every line the daemon writes is one JSON object (Effect's
 * `Logger.json`), with its level, message and annotations (the node's id), for journald or Loki.
 */
import { spawn } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { freePort } from "../../src/node/FreePort.js"
import { waitFor } from "../e2e/harness.js"
import { tempDir } from "../support/TempDir.js"

const root = path.resolve(import.meta.dirname, "../..")

/** Starts a one-node cluster with `flags` and returns its output once it serves, then stops it. */
const outputOf = async (flags: ReadonlyArray<string>, env: Record<string, string> = {}): Promise<string> => {
  const dir = tempDir("logformat")
  const port = await freePort()
  const child = spawn(
    process.execPath,
    [path.join(root, "bin/blixard.js"), "node", "--id", "1", "--bind", `127.0.0.1:${port}`, "--data-dir", path.join(dir, "data"), "--microvm-state-dir", path.join(dir, "microvms"), "--gc-root-dir", path.join(dir, "gcroots"), ...flags],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "", ...env } }
  )
  let output = ""
  child.stdout.on("data", (d: Buffer) => (output += d.toString()))
  child.stderr.on("data", (d: Buffer) => (output += d.toString()))
  try {
    await waitFor("the node to serve", async () => (output.includes("serving peers and the API") ? true : undefined), 60_000)
  } finally {
    const exited = new Promise((resolve) => child.once("exit", resolve))
    child.kill("SIGTERM")
    await exited
  }
  return output
}

describe("blixard node --log-format", () => {
  it("json: one JSON object per line, with level, message and the node's annotation", async () => {
    const lines = (await outputOf(["--log-format", "json"])).split("\n").filter((line) => line.trim() !== "")
    expect(lines.length).toBeGreaterThan(2)
    const entries = lines.map((line) => JSON.parse(line) as { logLevel: string; message: unknown; annotations: Record<string, unknown> })
    const serving = entries.find((e) => String(e.message).includes("serving peers and the API"))
    expect(serving).toMatchObject({ logLevel: "INFO", annotations: { node: 1 } })
    expect(entries.some((e) => e.logLevel === "WARN" && String(e.message).includes("no cluster secret file"))).toBe(true)
  })

  it("text by default; BLIXARD_LOG_FORMAT=json chooses json too", async () => {
    expect(await outputOf([])).toMatch(/^timestamp=\S+ level=INFO .*message="starting node 1/m)
    const fromEnv = (await outputOf([], { BLIXARD_LOG_FORMAT: "json" })).split("\n").filter((line) => line.trim() !== "")
    expect(() => fromEnv.map((line) => JSON.parse(line))).not.toThrow()
  })
})
