/**
 * Rotating the cluster secret over real `blixard node` processes, without a restart
 * (`src/node/ClusterKeyring.ts`): three members each with their own secret file, and a fourth that
 * joined with a join token (its keyring is its own copy, which it keeps in step with the members').
 * The operator's three steps (add the new secret second, move it first, drop the old), each
 * confirmed by `blixard cluster secret status`; the cluster keeps serving throughout, a member
 * restarted at the end talks with the new secret alone, and the old one opens nothing any more.
 */
import { createHmac } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it, vi } from "vitest"
import { nodeCredential } from "../../src/api/Auth.js"
import * as Tls from "../../src/net/Tls.js"
import { BlixardNode, caOf, cliJson, clustersPerTest, freePort, getText, peerWith, waitFor } from "./harness.js"

const newCluster = clustersPerTest()
vi.setConfig({ testTimeout: 300_000 })

const old = "e2e-old-cluster-secret-4f1c9a"
const next = "e2e-new-cluster-secret-7b2d0e"
const fingerprint = (secret: string) => createHmac("sha256", secret).update("blixard cluster secret fingerprint", "utf8").digest("hex").slice(0, 16)

interface Status {
  readonly members: ReadonlyArray<{ readonly node: number; readonly fingerprints?: { readonly uses: string; readonly accepts: ReadonlyArray<string>; readonly source: string }; readonly problem?: string }>
}

describe("rotating the cluster secret", () => {
  it("three steps, each seen on every member by `cluster secret status`, with no restart and no lost write", async () => {
    const c = newCluster()
    const files = [1, 2, 3].map((id) => path.join(c.dir, `secret-${id}`))
    for (const file of files) fs.writeFileSync(file, `${old}\n`, { mode: 0o600 })
    const members: Array<BlixardNode> = []
    for (const id of [1, 2, 3]) {
      const node = new BlixardNode(id, await freePort(), path.join(c.dir, `node-${id}`), files[id - 1]!, members.slice(0, 1))
      c.nodes.push(node)
      members.push(node)
      node.start()
      if (id === 1) await waitFor("node 1 to found the cluster", async () => ((await cliJson<{ leader?: number }>(node.addr, ["cluster", "status"])).leader === 1 ? true : undefined))
    }
    await c.converged([1, 2, 3], 90_000)
    const [one, two, three] = members as [BlixardNode, BlixardNode, BlixardNode]

    // Node 4 joins with a join token: no secret file, it keeps the keyring it receives.
    const created = await cliJson<{ token: string }>(one.addr, ["cluster", "token", "create", "--ttl", "10m"])
    const tokenFile = path.join(c.dir, "join-token-4")
    fs.writeFileSync(tokenFile, `${created.token}\n`, { mode: 0o600 })
    const four = new BlixardNode(4, await freePort(), path.join(c.dir, "node-4"), "", [])
    four.args = ["--join", two.addr, "--join-token-file", tokenFile]
    c.nodes.push(four)
    four.start()
    await c.converged([1, 2, 3, 4], 90_000)

    /** Waits until `cluster secret status`, asked of `via`, shows every member as `want` says. */
    const everyMember = (what: string, want: (uses: string, accepts: ReadonlyArray<string>) => boolean, via: BlixardNode) =>
      waitFor(`every member to ${what}`, async () => {
        const status = await cliJson<Status>(via.addr, ["cluster", "secret", "status"])
        const ok = status.members.length === 4 && status.members.every((m) => m.fingerprints !== undefined && want(m.fingerprints.uses, m.fingerprints.accepts))
        return ok ? status : undefined
      }, 90_000)
    const writeAll = (text: string) => {
      for (const file of files) fs.writeFileSync(file, text, { mode: 0o600 })
    }
    let vms = 0
    const stillServes = async () => {
      vms++
      await cliJson(three.addr, ["vm", "create", "--name", `web-${vms}`, "--runner", c.runnerFixture(`web-${vms}`), "--no-start"])
      const listed = await cliJson<Array<{ spec: { name: string } }>>(four.addr, ["vm", "list"])
      expect(listed.map((vm) => vm.spec.name)).toContain(`web-${vms}`)
    }

    const start = await everyMember("use the old secret", (uses, accepts) => uses === fingerprint(old) && accepts.length === 1, one)
    expect(start.members.find((m) => m.node === 4)!.fingerprints!.source).toBe("received")

    // 1. Install: the new secret second, everywhere.
    writeAll(`${old}\n${next}\n`)
    await everyMember("accept the new secret", (uses, accepts) => uses === fingerprint(old) && accepts.includes(fingerprint(next)), two)
    await stillServes()

    // 2. Use: the new secret first, everywhere.
    writeAll(`${next}\n${old}\n`)
    await everyMember("use the new secret", (uses) => uses === fingerprint(next), three)
    await stillServes()

    // 3. Remove the old one.
    writeAll(`${next}\n`)
    const done = await everyMember("accept only the new secret", (uses, accepts) => uses === fingerprint(next) && accepts.length === 1, one)
    expect(JSON.stringify(done)).not.toContain(old)
    expect(JSON.stringify(done)).not.toContain(next)
    expect(fs.readFileSync(path.join(four.dataDir, "cluster-secret"), "utf8")).toBe(`${next}\n`)
    await stillServes()
    for (const node of [one, two, three, four]) expect(node.running, `node ${node.id}: ${node.state}`).toBe(true)

    // New connections need the new secret: a member restarted now rejoins, and the old secret opens nothing.
    await two.stop("SIGKILL")
    two.start()
    await waitFor("node 2 to serve again", () => cliJson(two.addr, ["cluster", "status"]))
    await c.converged([1, 2, 3, 4], 90_000)
    await stillServes()
    const clusterId = Tls.clusterOfCa(caOf(one.addr))!
    const client = { cert: fs.readFileSync(path.join(three.dataDir, "tls", "node.crt"), "utf8"), key: fs.readFileSync(path.join(three.dataDir, "tls", "node.key"), "utf8") }
    expect(await peerWith(one.addr, caOf(one.addr), old, clusterId, 3, 1, client)).toMatch(/^401/)
    expect(await peerWith(one.addr, caOf(one.addr), next, clusterId, 3, 1, client)).toBe("open")
    const withOld = await getText(one.addr, "/v1/cluster", { authorization: `Bearer ${nodeCredential(old, 3)}` })
    expect(withOld.status).toBe(401)
    expect((await getText(one.addr, "/v1/cluster", { authorization: `Bearer ${nodeCredential(next, 3)}` })).status).toBe(200)
  })
})
