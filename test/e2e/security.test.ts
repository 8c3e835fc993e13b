/**
 * A real `blixard node` started with no security settings at all: its API refuses every request but
 * `/v1/health` without its admin token (made in its data directory, mode 0600), the CLI on the same
 * host finds that token, role tokens are enforced, and a VM's runner outside the allowed prefixes
 * is refused at the API and, behind a symlink, by the hosting node before anything runs.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { BlixardNode, bin, type CliResult, cli, cliJson, clustersPerTest, freePort, request, waitFor } from "./harness.js"

const newCluster = clustersPerTest()

/** The CLI run from `cwd`, with nothing but PATH in its environment (and `env`). */
const cliIn = (cwd: string, args: ReadonlyArray<string>, env: Record<string, string> = {}): Promise<CliResult> =>
  new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd, timeout: 20_000, env: { PATH: process.env.PATH ?? "", ...env } }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
    )
  })

const http = request

const runnerSpec = (name: string, runner: string) => ({
  spec: { name, source: { _tag: "Runner", path: runner }, vcpus: 1, memoryMiB: 64, labels: {}, constraints: [], restartPolicy: "never" }
})

describe("a node started with no security settings", () => {
  it("refuses every request but /v1/health without its admin token; the CLI on its host finds the token; roles are enforced", async () => {
    const c = newCluster()
    // The hand-started node's default data directory, relative to where the CLI runs.
    const dataDir = path.join(c.dir, "blixard-data", "node-1")
    const node = new BlixardNode(1, await freePort(), dataDir, "", [])
    c.nodes.push(node)
    node.start()
    await waitFor("node 1 to serve", async () => ((await http(node.addr, "GET", "/v1/health")).status === 200 ? true : undefined))

    const tokenFile = path.join(dataDir, "api-token")
    expect(fs.statSync(tokenFile).mode & 0o777).toBe(0o600)
    const admin = fs.readFileSync(tokenFile, "utf8").trim()
    expect(admin.length).toBeGreaterThanOrEqual(43)

    for (const [method, pathname, body] of [
      ["POST", "/v1/vms", runnerSpec("web", "/nix/store/x-runner")],
      ["GET", "/v1/vms", undefined],
      ["POST", "/v1/tokens", { role: "admin" }],
      ["GET", "/v1/cluster", undefined],
      ["GET", "/openapi.json", undefined]
    ] as const) {
      const refused = await http(node.addr, method, pathname, body)
      expect(refused.status).toBe(401)
      expect(refused.json).toMatchObject({ code: "BLX_UNAUTHORIZED" })
      expect(String(refused.json?.message)).toContain(tokenFile)
    }
    expect((await http(node.addr, "GET", "/v1/vms", undefined, admin)).json).toEqual([])

    // From the directory the node was started in, the CLI finds the token with no flag at all.
    const guessed = await cliIn(c.dir, ["vm", "create", "--name", "web", "--runner", "/nix/store/x-runner", "--addr", node.addr])
    expect(guessed.stderr).toBe("")
    expect(guessed.code).toBe(0)
    // Elsewhere, it needs to be told: without the cluster CA it cannot talk to the node's HTTPS and says so;
    // with it but unauthenticated, it says where the token is.
    const blind = await cliIn(path.join(c.dir, "blixard-data"), ["vm", "list", "--addr", node.addr])
    expect(blind.code).toBe(1)
    expect(blind.stderr).toContain("--ca-file")
    const caFile = path.join(dataDir, "tls", "ca.crt")
    const lost = await cliIn(path.join(c.dir, "blixard-data"), ["vm", "list", "--addr", node.addr], { BLIXARD_CA_FILE: caFile })
    expect(lost.code).toBe(1)
    expect(lost.stderr).toContain("BLX_UNAUTHORIZED")
    expect(lost.stderr).toContain(tokenFile)
    expect((await cliIn(path.join(c.dir, "blixard-data"), ["vm", "list", "--addr", node.addr, "--data-dir", dataDir])).code).toBe(0)

    // Role tokens: made by the admin, shown once, enforced per endpoint, revocable.
    const reader = await cliJson<{ id: string; token: string; role: string }>(node.addr, ["token", "create", "--role", "read-only", "--name", "dash"])
    expect(reader.role).toBe("read-only")
    const readerFile = path.join(c.dir, "reader-token")
    fs.writeFileSync(readerFile, reader.token, { mode: 0o600 })
    expect((await cli(node.addr, ["vm", "list"], 20_000, ["--token-file", readerFile])).code).toBe(0)
    const forbidden = await cli(node.addr, ["vm", "start", "web"], 20_000, ["--token-file", readerFile])
    expect(forbidden.code).toBe(1)
    expect(forbidden.stderr).toContain("BLX_FORBIDDEN")
    const operator = await cliJson<{ id: string; token: string }>(node.addr, ["token", "create", "--role", "operator"])
    const asOperator = await cliIn(c.dir, ["vm", "start", "web", "--addr", node.addr], { BLIXARD_API_TOKEN: operator.token })
    expect(asOperator.code).toBe(0)
    const noTokens = await cliIn(c.dir, ["token", "list", "--addr", node.addr], { BLIXARD_API_TOKEN: operator.token })
    expect(noTokens.stderr).toContain("BLX_FORBIDDEN")
    const listed = await cliJson<Array<{ id: string; name?: string }>>(node.addr, ["token", "list"])
    expect(listed.map((t) => t.id).sort()).toEqual([reader.id, operator.id].sort())
    expect(JSON.stringify(listed)).not.toContain(reader.token)
    expect((await cli(node.addr, ["token", "revoke", reader.id])).code).toBe(0)
    const revoked = await cli(node.addr, ["vm", "list"], 20_000, ["--token-file", readerFile])
    expect(revoked.stderr).toContain("BLX_UNAUTHORIZED")

    // Restarted, the node keeps its token and the replicated ones.
    await node.stop("SIGTERM")
    node.start()
    await waitFor("node 1 to serve again", async () => ((await http(node.addr, "GET", "/v1/vms", undefined, admin)).status === 200 ? true : undefined))
    expect(fs.readFileSync(tokenFile, "utf8").trim()).toBe(admin)
    expect((await cliIn(c.dir, ["vm", "list", "--addr", node.addr], { BLIXARD_API_TOKEN: operator.token })).code).toBe(0)
  })

  it("the runner-path attack is refused with 400 at the API, and behind a symlink by the hosting node: nothing runs", async () => {
    const c = newCluster()
    const node = await c.add()
    await c.converged([1])
    const admin = fs.readFileSync(path.join(node.dataDir, "api-token"), "utf8").trim()
    // A "runner" outside the allowed prefixes that would leave a mark if it ever ran.
    const mark = path.join(c.dir, "it-ran")
    const evil = path.join(c.dir, "evil")
    fs.mkdirSync(path.join(evil, "bin"), { recursive: true })
    fs.writeFileSync(path.join(evil, "bin", "microvm-run"), `#!/bin/sh\ntouch ${JSON.stringify(mark)}\nexec sleep 1000\n`, { mode: 0o755 })

    for (const runner of ["/srv/anything", evil, path.join(c.dir, "runners", "..", "evil")]) {
      const created = await http(node.addr, "POST", "/v1/vms", runnerSpec("web", runner), admin)
      expect(created.status).toBe(400)
      expect(created.json).toMatchObject({ code: "BLX_RUNNER_NOT_ALLOWED", subject: "web" })
      expect(String(created.json?.message)).toContain("allowedRunnerPrefixes")
      const started = await http(node.addr, "POST", "/v1/vms/web/start", {}, admin)
      expect(started.status).toBe(404)
    }
    expect((await http(node.addr, "GET", "/v1/vms", undefined, admin)).json).toEqual([])

    // Under an allowed prefix as written, but a symlink to the same script: the hosting node resolves it.
    fs.mkdirSync(path.join(c.dir, "runners"), { recursive: true })
    fs.symlinkSync(evil, path.join(c.dir, "runners", "web"))
    expect((await cli(node.addr, ["vm", "create", "--name", "web", "--runner", path.join(c.dir, "runners", "web")])).code).toBe(0)
    expect((await cli(node.addr, ["vm", "start", "web"])).code).toBe(0)
    const error = await waitFor("the hosting node to refuse the runner", async () => {
      const vm = await cliJson<{ status: { lastError?: string } }>(node.addr, ["vm", "status", "web"])
      return vm.status.lastError?.includes("not under the allowed runner prefixes") === true ? vm.status.lastError : undefined
    })
    expect(error).toContain(`resolved: ${fs.realpathSync(evil)}`)
    expect(fs.existsSync(mark)).toBe(false)
    expect(fs.existsSync(path.join(c.dir, "microvms-1", "web", "current"))).toBe(false)
  })
})
