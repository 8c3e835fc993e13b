/**
 * Rotating the cluster CA over real `blixard node` processes on loopback: a member is removed (it
 * keeps the old CA's key and can sign itself any certificate of it), `cluster ca rotate` moves every
 * remaining member to a new CA, `cluster ca finish` drops the old one; the cluster goes on working,
 * the CLI verifies every node against the rewritten `ca.crt`, a host (not a member) follows the CA
 * the members offer, and a certificate the removed member signs with the old key no longer opens a
 * peer connection.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import * as Tls from "../../src/net/Tls.js"
import { parse, valueOf } from "../support/PrometheusText.js"
import { adminTokenOf, BlixardNode, cli, cliJson, clustersPerTest, freePort, getText, peerWith, threeNodesOf, waitFor } from "./harness.js"

/** `blixard_ca_rotation_waiting_members` in a scrape of the node at `addr` (-1: no rotation in progress). */
const waitingGauge = async (addr: string): Promise<number> =>
  valueOf(parse((await getText(addr, "/metrics", { authorization: `Bearer ${adminTokenOf(addr)}` })).text), "blixard_ca_rotation_waiting_members", {})

const newCluster = clustersPerTest()
const threeNodes = threeNodesOf(newCluster)

interface Status {
  readonly phase: "steady" | "rotating"
  readonly fingerprint: string
  readonly rotation?: { readonly fingerprint: string; readonly previous: string; readonly moved: ReadonlyArray<number>; readonly waiting: ReadonlyArray<number> }
}

describe("cluster ca rotate", () => {
  it("moves every member to a new CA; after finish the old CA's key (kept by a removed member) opens nothing", async () => {
    const c = await threeNodes()
    const [one, two, three] = [c.node(1), c.node(2), c.node(3)]
    const tlsOf = (dataDir: string, name: string) => fs.readFileSync(path.join(dataDir, "tls", name), "utf8")
    const oldCa = tlsOf(one.dataDir, "ca.crt")
    const oldKey = tlsOf(three.dataDir, "ca.key")
    const clusterId = Tls.clusterOfCa(oldCa)!
    const secret = fs.readFileSync(c.secretFile, "utf8").trim()
    // Host 4 verifies the members with the CA it fetched from them.
    const host = new BlixardNode(4, await freePort(), path.join(c.dir, "node-4"), c.secretFile, [])
    host.args = [one, two].flatMap((node) => ["--server", node.addr])
    c.nodes.push(host)
    host.start()
    const hostUp = async () => ((await cliJson<ReadonlyArray<{ id: number; health: string }>>(one.addr, ["node", "list"])).some((n) => n.id === 4 && n.health === "up") ? true : undefined)
    await waitFor("host 4 registered and up", hostUp, 60_000)

    // Node 3 is removed; it keeps the CA's key and signs itself a fresh certificate (not on the revocation list).
    await cliJson(one.addr, ["cluster", "leave", "--id", "3"])
    await three.stop("SIGKILL")
    const forged = await Effect.runPromise(
      Effect.gen(function* () {
        const request = yield* Tls.createRequest(3)
        return { cert: yield* Tls.signRequest({ ca: oldCa, caKey: oldKey, clusterId, node: 3, csr: request.csr, names: ["127.0.0.1"] }), key: request.key }
      })
    )
    expect(await peerWith(one.addr, oldCa, secret, clusterId, 3, 1, forged)).toBe("open")

    expect((await cliJson<Status>(one.addr, ["cluster", "ca", "status"])).phase).toBe("steady")
    expect(await waitingGauge(two.addr)).toBe(-1)
    const started = await cliJson<Status>(two.addr, ["cluster", "ca", "rotate"])
    expect(started.phase).toBe("rotating")
    const rotation = started.rotation!
    expect(rotation.previous).toBe(Tls.fingerprintOf(oldCa))

    const moved = await waitFor(
      "nodes 1 and 2 to move to the new CA",
      async () => {
        const status = await cliJson<Status>(one.addr, ["cluster", "ca", "status"])
        return status.rotation?.waiting.length === 0 ? status : undefined
      },
      60_000
    )
    expect(moved.rotation?.moved).toEqual([1, 2])
    expect(await waitingGauge(one.addr)).toBe(0)
    // A second rotation while this one runs: refused.
    const again = await cli(one.addr, ["cluster", "ca", "rotate"])
    expect([again.code, again.stderr]).toEqual([1, expect.stringMatching(/BLX_CONFLICT: a CA rotation .* is in progress already/)])
    for (const node of [one, two]) {
      expect(Tls.splitPem(tlsOf(node.dataDir, "ca.crt")).map(Tls.fingerprintOf)).toEqual([rotation.fingerprint, rotation.previous])
      expect(Tls.bundleFingerprint(tlsOf(node.dataDir, "ca.crt"))).not.toBe(rotation.previous)
      expect(tlsOf(node.dataDir, "ca.key")).not.toBe(oldKey)
    }
    expect(one.output).toMatch(/node 1: moved to the new cluster CA/)
    // The new CA's key is not in the Raft log in clear: no node's database holds it.
    const newKey = tlsOf(one.dataDir, "ca.key")
    const body = newKey.split("\n").filter((line) => !line.startsWith("-----")).join("")
    for (const node of [one, two]) expect(fs.readFileSync(path.join(node.dataDir, "blixard.db")).includes(body.slice(0, 40))).toBe(false)

    const finished = await cliJson<Status>(one.addr, ["cluster", "ca", "finish"])
    expect(finished).toEqual({ phase: "steady", fingerprint: rotation.fingerprint })
    expect(await waitingGauge(one.addr)).toBe(-1)
    await waitFor("both nodes to trust only the new CA", async () =>
      [one, two].every((node) => Tls.splitPem(tlsOf(node.dataDir, "ca.crt")).length === 1) ? true : undefined
    )
    // The host follows (fetching every 10 s, it may see the bundle of both CAs or only the end): it trusts the new CA alone, and is still heard from.
    await waitFor("host 4 to trust only the new CA", async () => (/it now trusts 1 CA\(s\)/.test(host.output) ? true : undefined), 60_000)
    await waitFor("host 4 up", hostUp)
    // The cluster works on: a write through node 2 replicates, and the CLI verifies both nodes with their ca.crt.
    await cliJson(two.addr, ["vm", "create", "--name", "web", "--runner", c.runnerFixture("web"), "--no-start"])
    expect((await cliJson<Array<{ spec: { name: string } }>>(one.addr, ["vm", "list"])).map((vm) => vm.spec.name)).toEqual(["web"])
    // The removed member's certificate of the old CA opens nothing now (it trusts the new CA here, so the refusal is node 1's).
    const newCa = tlsOf(one.dataDir, "ca.crt")
    expect(await peerWith(one.addr, Tls.bundleOf(oldCa, newCa), secret, clusterId, 3, 1, forged)).toMatch(/^401 .*BLX_PEER_CERT_REFUSED/)
    // And a client trusting only the old CA cannot verify the members any more.
    expect(await peerWith(one.addr, oldCa, secret, clusterId, 3, 1, forged)).toMatch(/certificate/)
  })
})
