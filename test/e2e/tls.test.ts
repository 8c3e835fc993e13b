/**
 * TLS by default, plain mode only when chosen: real `blixard node` processes on loopback.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { Effect } from "effect"
import { randomUUID } from "node:crypto"
import { describe, expect, it } from "vitest"
import * as Tls from "../../src/net/Tls.js"
import { BlixardNode, bin, type CliResult, cli, cliJson, clustersPerTest, freePort, root, waitFor } from "./harness.js"

const newCluster = clustersPerTest()

const exited = (node: BlixardNode): Promise<number | null> => new Promise((resolve) => node.child!.once("exit", (code) => resolve(code)))

const plainHealth = (addr: string): Promise<number | undefined> =>
  new Promise((resolve) => {
    const request = http.get(`http://${addr}/v1/health`, (response) => {
      response.resume()
      resolve(response.statusCode)
    })
    request.on("error", () => resolve(undefined))
  })

const run = (args: ReadonlyArray<string>, timeoutMs = 60_000): Promise<CliResult> =>
  new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd: root, timeout: timeoutMs, env: { PATH: process.env.PATH ?? "" } }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
    )
  })

describe("TLS by default", () => {
  it("a node serves peers and the API over TLS only: its CA and key are in its data directory; plain HTTP gets nothing", async () => {
    const c = newCluster()
    const one = await c.add()
    await waitFor("node 1 to serve", () => cliJson(one.addr, ["cluster", "status"]))
    const two = await c.add()
    await c.converged([1, 2])
    for (const node of [one, two]) {
      const tls = path.join(node.dataDir, "tls")
      expect(fs.statSync(path.join(tls, "ca.key")).mode & 0o777).toBe(0o600)
      expect(fs.statSync(path.join(tls, "node.key")).mode & 0o777).toBe(0o600)
    }
    // Node 2 holds node 1's CA: it got its certificate from node 1.
    expect(fs.readFileSync(path.join(two.dataDir, "tls", "ca.crt"), "utf8")).toBe(fs.readFileSync(path.join(one.dataDir, "tls", "ca.crt"), "utf8"))
    expect(await plainHealth(one.addr)).toBeUndefined()
  })

  it("a joining node with another cluster secret does not trust the member's CA: it stops with BLX_TLS_UNTRUSTED", async () => {
    const c = newCluster()
    const one = await c.add()
    await waitFor("node 1 to serve", () => cliJson(one.addr, ["cluster", "status"]))
    const otherSecret = path.join(c.dir, "other-secret")
    fs.writeFileSync(otherSecret, "not-the-clusters-secret\n", { mode: 0o600 })
    const stranger = new BlixardNode(2, await freePort(), path.join(c.dir, "stranger"), otherSecret, [one])
    c.nodes.push(stranger)
    stranger.start()
    expect(await exited(stranger)).toBe(1)
    expect(stranger.output).toContain("BLX_TLS_UNTRUSTED")
    expect(stranger.output).toContain("cluster secret")
    expect(fs.existsSync(path.join(stranger.dataDir, "tls", "node.crt"))).toBe(false)
  })

  it("--insecure-plaintext serves plain HTTP on loopback, warning at every start; off loopback it is refused unless --i-know", async () => {
    const c = newCluster()
    const plain = new BlixardNode(1, await freePort(), path.join(c.dir, "plain"), c.secretFile, [])
    plain.args = ["--insecure-plaintext"]
    c.nodes.push(plain)
    for (const start of [1, 2]) {
      plain.start()
      await waitFor(`the plain node to serve (start ${start})`, async () => ((await plainHealth(plain.addr)) === 200 ? true : undefined))
      expect(plain.output).toContain("--insecure-plaintext: peers and the API are served WITHOUT TLS")
      // Serving is not leading yet (a restarted node waits out an election timeout first).
      const listed = await waitFor(`the plain node to answer vm list (start ${start})`, async () => {
        const r = await cli(plain.addr, ["vm", "list"])
        return r.code === 0 ? r : undefined
      })
      expect(listed.stderr).toBe("")
      await plain.stop("SIGTERM")
    }
    expect(fs.existsSync(path.join(plain.dataDir, "tls"))).toBe(false)

    const port = await freePort()
    const refused = await run(["node", "--id", "5", "--bind", `0.0.0.0:${port}`, "--data-dir", path.join(c.dir, "wide"), "--insecure-plaintext"])
    expect(refused.code).toBe(1)
    expect(refused.stderr + refused.stdout).toContain(`BLX_PLAINTEXT_REFUSED: node 5 refuses --insecure-plaintext on 0.0.0.0:${port}`)
  })

  it("operator-supplied CA, certificate and key (--tls-*-file) are used instead of the node's own; all three or none", async () => {
    const c = newCluster()
    const clusterId = randomUUID()
    const files = await Effect.runPromise(
      Effect.gen(function* () {
        const ca = yield* Tls.createCa(clusterId)
        const request = yield* Tls.createRequest(1)
        const cert = yield* Tls.signRequest({ ...ca, clusterId, node: 1, csr: request.csr, names: ["127.0.0.1"] })
        return { ca: ca.ca, cert, key: request.key }
      })
    )
    const pki = path.join(c.dir, "pki")
    fs.mkdirSync(pki)
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(pki, name), text, { mode: 0o600 })
    const given = ["--tls-ca-file", path.join(pki, "ca"), "--tls-cert-file", path.join(pki, "cert"), "--tls-key-file", path.join(pki, "key")]
    const node = new BlixardNode(1, await freePort(), path.join(c.dir, "own-pki"), c.secretFile, [])
    node.args = given
    c.nodes.push(node)
    node.start()
    const status = await waitFor("the node to serve with the operator's certificate", async () => {
      const r = await run(["cluster", "status", "--json", "--addr", node.addr, "--data-dir", node.dataDir, "--ca-file", path.join(pki, "ca")], 20_000)
      return r.code === 0 ? (JSON.parse(r.stdout) as { clusterId?: string }) : undefined
    })
    expect(status.clusterId).toBe(clusterId)
    expect(fs.existsSync(path.join(node.dataDir, "tls"))).toBe(false)
    await node.stop("SIGTERM")

    const partial = await run(["node", "--id", "2", "--bind", `127.0.0.1:${await freePort()}`, "--data-dir", path.join(c.dir, "partial"), ...given.slice(2)])
    expect(partial.code).toBe(2)
    expect(partial.stderr + partial.stdout).toContain("BLX_CONFIG_INVALID: tlsCaFile, tlsCertFile and tlsKeyFile")
  })
})
