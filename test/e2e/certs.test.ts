/**
 * Certificate renewal and revocation over real `blixard node` processes on loopback: every node
 * reports its certificate; a node configured with shorter certificates renews the longer one it
 * joined with from a member while it runs; a node removed from the cluster has its certificate
 * revoked, after which neither the peers' endpoint nor the API accepts it. A certificate a member
 * signed at a join is recorded by that member, so removing its node revokes it even if the node
 * never reported it.
 */
import { Effect } from "effect"
import { X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import * as https from "node:https"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { clusterOfCa, createRequest, factsOf } from "../../src/net/Tls.js"
import { adminTokenOf, cli, cliJson, clustersPerTest, peerWith, waitFor } from "./harness.js"

const newCluster = clustersPerTest()
const day = 24 * 60 * 60 * 1000

interface Listed {
  readonly certificates: ReadonlyArray<{ readonly node: number; readonly serial: string; readonly notAfter: number }>
  readonly revoked: ReadonlyArray<{ readonly node?: number; readonly serial: string; readonly reason: string }>
}

const serialOf = (file: string) => new X509Certificate(fs.readFileSync(file)).serialNumber.toLowerCase().replace(/^0+(?=.)/, "")

/** `GET /v1/cluster` at `addr` with a valid admin token, presenting `client` as client certificate. */
const apiWith = (addr: string, ca: string, token: string, client: { cert: string; key: string }) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = https.get(`https://${addr}/v1/cluster`, { ca, ...client, checkServerIdentity: () => undefined, headers: { authorization: `Bearer ${token}` } }, (response) => {
      let body = ""
      response.on("data", (chunk: Buffer) => (body += chunk.toString()))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }))
    })
    req.on("error", reject)
  })

describe("node certificates", () => {
  it("are reported and renewed; a removed node's certificate is revoked and refused by peers and the API", async () => {
    const c = newCluster()
    const one = await c.add()
    await waitFor("node 1 to found the cluster", async () => ((await cliJson<{ leader?: number }>(one.addr, ["cluster", "status"])).leader === 1 ? true : undefined))
    // Node 2 wants 30-day certificates: the year-long one it joins with is renewed once it is a member.
    const config = path.join(c.dir, "node-2.json")
    fs.writeFileSync(config, JSON.stringify({ certValidityDays: 30 }))
    const two = await c.add((node) => (node.args = ["--config", config]))
    const three = await c.add()
    await c.converged([1, 2, 3])

    const listed = await waitFor(
      "every node to report its certificate, node 2 its renewed one",
      async () => {
        const list = await cliJson<Listed>(one.addr, ["cluster", "cert", "status"])
        const nodes = new Set(list.certificates.map((cert) => cert.node))
        const renewed = list.certificates.some((cert) => cert.node === 2 && cert.notAfter - Date.now() <= 30 * day)
        return nodes.has(1) && nodes.has(2) && nodes.has(3) && renewed ? list : undefined
      },
      90_000
    )
    expect(two.output).toMatch(/node 2: renewed its certificate from 127\.0\.0\.1:\d+/)
    const twoCert = path.join(two.dataDir, "tls", "node.crt")
    expect(Date.parse(new X509Certificate(fs.readFileSync(twoCert)).validTo) - Date.now()).toBeLessThanOrEqual(30 * day)
    expect(listed.certificates.find((cert) => cert.node === 2 && cert.notAfter - Date.now() <= 30 * day)?.serial).toBe(serialOf(twoCert))
    // The cluster goes on with the renewed certificate: a write through node 2 replicates.
    await cliJson(two.addr, ["vm", "create", "--name", "web", "--runner", c.runnerFixture("web"), "--no-start"])
    expect((await cliJson<Array<{ spec: { name: string } }>>(three.addr, ["vm", "list"])).map((vm) => vm.spec.name)).toEqual(["web"])

    // Node 3 leaves: its certificate is revoked by the removal itself.
    const threeFiles = { cert: fs.readFileSync(path.join(three.dataDir, "tls", "node.crt"), "utf8"), key: fs.readFileSync(path.join(three.dataDir, "tls", "node.key"), "utf8") }
    const threeSerial = serialOf(path.join(three.dataDir, "tls", "node.crt"))
    const ca = fs.readFileSync(path.join(one.dataDir, "tls", "ca.crt"), "utf8")
    const secret = fs.readFileSync(c.secretFile, "utf8").trim()
    const clusterId = clusterOfCa(ca)!
    // Before: node 3's certificate opens a peer connection to node 1.
    expect(await peerWith(one.addr, ca, secret, clusterId, 3, 1, threeFiles)).toBe("open")
    await cliJson(one.addr, ["cluster", "leave", "--id", "3"])
    await waitFor("node 3's certificate to be revoked on node 1", async () => {
      const list = await cliJson<Listed>(one.addr, ["cluster", "cert", "status"])
      return list.revoked.some((entry) => entry.serial === threeSerial && entry.node === 3 && /removed from the cluster/.test(entry.reason)) ? true : undefined
    })
    await three.stop("SIGKILL")
    expect(await peerWith(one.addr, ca, secret, clusterId, 3, 1, threeFiles)).toBe("401 BLX_CERT_REVOKED")
    const api = await apiWith(one.addr, ca, adminTokenOf(one.addr), threeFiles)
    expect(api.status).toBe(403)
    expect(api.body).toContain("BLX_CERT_REVOKED")
    expect(one.output).toMatch(/refused a connection .*BLX_CERT_REVOKED: node 3's certificate/)
    // Node 2's own certificate is still accepted.
    const twoFiles = { cert: fs.readFileSync(twoCert, "utf8"), key: fs.readFileSync(path.join(two.dataDir, "tls", "node.key"), "utf8") }
    expect((await apiWith(one.addr, ca, adminTokenOf(one.addr), twoFiles)).status).toBe(200)

    // By hand (admin): node 2's certificate, by serial; then node 1 refuses it too.
    const revoked = await cliJson<Array<{ serial: string; node?: number }>>(one.addr, ["cluster", "cert", "revoke", serialOf(twoCert).toUpperCase(), "--reason", "test"])
    expect(revoked).toEqual([expect.objectContaining({ serial: serialOf(twoCert), node: 2 })])
    await waitFor("node 1 to refuse node 2's certificate", async () => ((await apiWith(one.addr, ca, adminTokenOf(one.addr), twoFiles)).status === 403 ? true : undefined))
  })

  it("a certificate signed at a join is recorded by the signer: removing its node revokes it though the node never reported it", async () => {
    const c = newCluster()
    const one = await c.add()
    await waitFor("node 1 to found the cluster", async () => ((await cliJson<{ leader?: number }>(one.addr, ["cluster", "status"])).leader === 1 ? true : undefined))
    const ca = fs.readFileSync(path.join(one.dataDir, "tls", "ca.crt"), "utf8")
    const created = await cliJson<{ readonly token: string }>(one.addr, ["cluster", "token", "create", "--ttl", "10m"])
    // Node 7 joins as far as its certificate, and no further: it never runs, so it never reports it.
    const request = await Effect.runPromise(createRequest(7))
    const joined = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const body = JSON.stringify({ token: created.token.split("::")[1], node: 7, csr: request.csr, names: ["127.0.0.1"] })
      const req = https.request(`https://${one.addr}/v1/tls/join`, { method: "POST", ca, checkServerIdentity: () => undefined, headers: { "content-type": "application/json" } }, (response) => {
        let text = ""
        response.on("data", (chunk: Buffer) => (text += chunk.toString()))
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text }))
      })
      req.on("error", reject)
      req.end(body)
    })
    expect(joined.status).toBe(200)
    const certificate = (JSON.parse(joined.body) as { certificate: string }).certificate
    const serial = factsOf(certificate).serial
    expect((await cliJson<Listed>(one.addr, ["cluster", "cert", "status"])).certificates).toContainEqual(expect.objectContaining({ node: 7, serial }))
    // It is made a member (a learner that never catches up: the command may time out waiting for it), then removed.
    await cli(one.addr, ["cluster", "join", "--id", "7", "--address", "127.0.0.1:9"])
    await waitFor("node 7 to be a member", async () =>
      (await cliJson<{ members: ReadonlyArray<{ id: number }> }>(one.addr, ["cluster", "status"])).members.some((m) => m.id === 7) ? true : undefined
    )
    await cliJson(one.addr, ["cluster", "leave", "--id", "7"])
    await waitFor("node 7's certificate to be revoked", async () => {
      const list = await cliJson<Listed>(one.addr, ["cluster", "cert", "status"])
      return list.revoked.some((entry) => entry.serial === serial && entry.node === 7 && /node 7 was removed from the cluster/.test(entry.reason)) ? true : undefined
    })
    const secret = fs.readFileSync(c.secretFile, "utf8").trim()
    expect(await peerWith(one.addr, ca, secret, clusterOfCa(ca)!, 7, 1, { cert: certificate, key: request.key })).toBe("401 BLX_CERT_REVOKED")
  })
})
