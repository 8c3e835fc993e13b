/**
 * Join tokens over real `blixard node` processes on loopback: a node started with only
 * `--join ADDR --join-token-file FILE` (no cluster secret) joins, serves and replicates; the token
 * is then spent, and a token with another CA's fingerprint or past its expiry admits no one.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it, vi } from "vitest"
import { fingerprintOf } from "../../src/net/Tls.js"
import { BlixardNode, cli, cliJson, clustersPerTest, freePort, waitFor, type Cluster } from "./harness.js"

const newCluster = clustersPerTest()
// Three TLS members and a joiner: slower than most on a busy machine.
vi.setConfig({ testTimeout: 240_000 })

interface Created {
  readonly id: string
  readonly token: string
  readonly expiresAt: number
}

interface Listed {
  readonly id: string
  readonly usedBy?: number
}

const exited = (node: BlixardNode): Promise<number | null> =>
  node.child!.exitCode !== null ? Promise.resolve(node.child!.exitCode) : new Promise((resolve) => node.child!.once("exit", (code) => resolve(code)))

/** A node that has no cluster secret and no peer: only `--join` and a join token file holding `token`. */
const joiner = async (c: Cluster, id: number, through: BlixardNode, token: string): Promise<BlixardNode> => {
  const file = path.join(c.dir, `join-token-${id}`)
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 })
  const node = new BlixardNode(id, await freePort(), path.join(c.dir, `node-${id}`), "", [])
  node.args = ["--join", through.addr, "--join-token-file", file]
  c.nodes.push(node)
  node.start()
  return node
}

/** Starts a joiner that must be refused: it exits 1 naming `code`, and holds no certificate. */
const refused = async (c: Cluster, id: number, through: BlixardNode, token: string, code: string): Promise<string> => {
  const node = await joiner(c, id, through, token)
  expect(await exited(node)).toBe(1)
  expect(node.output).toContain(code)
  expect(node.output).toContain("blixard cluster token create")
  expect(fs.existsSync(path.join(node.dataDir, "tls", "node.crt"))).toBe(false)
  expect(fs.existsSync(path.join(node.dataDir, "cluster-secret"))).toBe(false)
  return node.output
}

describe("join tokens", () => {
  it("a node with only --join and a join token joins, serves and replicates; the token is then spent", async () => {
    const c = newCluster()
    const one = await c.add()
    await waitFor("node 1 to found the cluster", async () => ((await cliJson<{ leader?: number }>(one.addr, ["cluster", "status"])).leader === 1 ? true : undefined))
    const two = await c.add()
    await c.converged([1, 2])

    const created = await cliJson<Created>(one.addr, ["cluster", "token", "create", "--ttl", "10m"])
    const ca = fs.readFileSync(path.join(one.dataDir, "tls", "ca.crt"), "utf8")
    expect(created.token).toMatch(new RegExp(`^K10${fingerprintOf(ca)}::${created.id}\\.[A-Za-z0-9_-]{43}$`))

    // Through node 2, whichever node leads: a follower forwards the token's consumption to the leader.
    const three = await joiner(c, 3, two, created.token)
    await c.converged([1, 2, 3], 90_000)
    expect(three.output).toContain(`with join token ${created.id}`)
    expect(three.output).not.toContain("no cluster secret file is configured")
    // It received the cluster's secret (kept 0600) and a certificate from the cluster's CA.
    const secretFile = path.join(three.dataDir, "cluster-secret")
    expect(fs.readFileSync(secretFile, "utf8").trim()).toBe(fs.readFileSync(c.secretFile, "utf8").trim())
    expect(fs.statSync(secretFile).mode & 0o777).toBe(0o600)
    expect(fs.readFileSync(path.join(three.dataDir, "tls", "ca.crt"), "utf8")).toBe(ca)

    // It serves the API and its writes replicate.
    const runner = c.runnerFixture("web")
    await cliJson(three.addr, ["vm", "create", "--name", "web", "--runner", runner, "--no-start"])
    const listed = await cliJson<Array<{ spec: { name: string } }>>(one.addr, ["vm", "list"])
    expect(listed.map((vm) => vm.spec.name)).toEqual(["web"])
    const tokens = await cliJson<Array<Listed>>(two.addr, ["cluster", "token", "list"])
    expect(tokens).toEqual([expect.objectContaining({ id: created.id, usedBy: 3 })])

    // Restarted, it recovers with the secret it keeps; the spent token in its settings is not used again.
    await three.stop("SIGKILL")
    three.start()
    await waitFor("node 3 to serve again", () => cliJson(three.addr, ["cluster", "status"]))
    await c.converged([1, 2, 3], 90_000)
    expect(three.output).toContain("its join token is not used")

    // The same token again admits no one.
    const again = await refused(c, 4, one, created.token, "BLX_JOIN_TOKEN_USED")
    expect(again).toContain("already used by node 3")
  })

  it("a token pinning another CA is refused before anything is sent; an expired token is refused", async () => {
    const c = newCluster()
    const one = await c.add()
    await waitFor("node 1 to found the cluster", async () => ((await cliJson<{ leader?: number }>(one.addr, ["cluster", "status"])).leader === 1 ? true : undefined))

    // Another fingerprint: a machine in the middle would offer its own CA, which the token does not pin.
    const pinned = await cliJson<Created>(one.addr, ["cluster", "token", "create"])
    const forged = pinned.token.replace(/^K10(.)/, (_, digit: string) => `K10${digit === "0" ? "1" : "0"}`)
    const mismatch = await refused(c, 2, one, forged, "BLX_JOIN_TOKEN_CA_MISMATCH")
    expect(mismatch).toContain("impersonating the cluster")
    // Nothing reached the cluster: the real token is still unused.
    expect(await cliJson<Array<Listed>>(one.addr, ["cluster", "token", "list"])).toEqual([expect.objectContaining({ id: pinned.id })])
    expect((await cliJson<Array<Listed>>(one.addr, ["cluster", "token", "list"]))[0]!.usedBy).toBeUndefined()

    const short = await cliJson<Created>(one.addr, ["cluster", "token", "create", "--ttl", "1s"])
    await waitFor("the short token to expire", async () => (Date.now() > short.expiresAt + 200 ? true : undefined))
    await refused(c, 3, one, short.token, "BLX_JOIN_TOKEN_EXPIRED")
  })

  it("a cluster on the public development secret makes no join token (BLX_CLUSTER_SECRET_REQUIRED): it would hand that secret out", async () => {
    const c = newCluster()
    // No --cluster-secret-file: the node warns that it runs on the public development secret.
    const one = new BlixardNode(1, await freePort(), path.join(c.dir, "node-1"), "", [])
    c.nodes.push(one)
    one.start()
    await waitFor("node 1 to found the cluster", async () => ((await cliJson<{ leader?: number }>(one.addr, ["cluster", "status"])).leader === 1 ? true : undefined))
    const created = await cli(one.addr, ["cluster", "token", "create"])
    expect(created.code).toBe(1)
    expect(created.stderr).toContain("BLX_CLUSTER_SECRET_REQUIRED")
    expect(created.stderr).toContain("--cluster-secret-file")
    expect(created.stdout).not.toMatch(/K10[0-9a-f]{64}::/)
    expect(await cliJson<Array<Listed>>(one.addr, ["cluster", "token", "list"])).toEqual([])
  })
})
