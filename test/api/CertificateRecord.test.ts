/**
 * `POST /v1/cluster/certificates/record` takes a node's report of its own certificate only (its
 * credential or client certificate names the body's node), or a signing member's record of a
 * certificate it issued, proven by the certificate itself (from the cluster CA, for that node, with
 * the body's serial, fingerprint and expiry). Anything else is 403 `BLX_FORBIDDEN`, and nothing is
 * recorded. Admin tokens record nothing.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { randomUUID } from "node:crypto"
import { nodeCredential } from "../../src/api/Auth.js"
import type { CertificateReport } from "../../src/api/ControlPlane.js"
import { reportRefusal } from "../../src/api/Server.js"
import { CertificateRecord, CertificateSerial } from "../../src/domain/Certificate.js"
import { NodeId } from "../../src/domain/NodeId.js"
import * as Tls from "../../src/net/Tls.js"
import * as CertRenewal from "../../src/node/CertRenewal.js"
import { raw, serve } from "./harness.js"

const cluster = randomUUID()
const secret = "cluster secret"
const path = "/v1/cluster/certificates/record"

const issue = (ca: Tls.CaFiles, clusterId: string, node: number) =>
  Effect.gen(function* () {
    const request = yield* Tls.createRequest(node)
    return yield* Tls.signRequest({ ...ca, clusterId, node, csr: request.csr, names: ["127.0.0.1"] })
  })

const reportOf = (pem: string, node: number, extra: Partial<CertificateReport> = {}): CertificateReport => {
  const facts = Tls.factsOf(pem)
  return { node: NodeId.make(node), serial: CertificateSerial.make(facts.serial), fingerprint: facts.fingerprint, notAfter: facts.notAfter, ...extra }
}

describe("POST /v1/cluster/certificates/record: who may record what", () => {
  it.scopedLive("a node records its own; another node only with the certificate as proof; an admin token never (403 BLX_FORBIDDEN)", () =>
    Effect.gen(function* () {
      const ca = yield* Tls.createCa(cluster)
      const three = yield* issue(ca, cluster, 3)
      const recorded: Array<CertificateReport> = []
      const served = yield* serve(
        { auth: { clusterSecret: secret, adminTokens: ["admin-token"] }, issuedCertificate: CertRenewal.issuedBy(() => ca.ca, cluster) },
        (plane) => ({
          ...plane,
          recordCertificate: (report) =>
            Effect.sync(() => recorded.push(report)).pipe(
              Effect.as(new CertificateRecord({ node: report.node, serial: report.serial, fingerprint: report.fingerprint, notAfter: report.notAfter, recordedAt: 0 }))
            )
        })
      )
      const post = (bearer: string, body: unknown) =>
        raw(served.url, { method: "POST", path, body: JSON.stringify(body), headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` } })

      // Node 3 reports its own certificate.
      expect((yield* post(nodeCredential(secret, 3), reportOf(three, 3))).status).toBe(200)

      // Node 2 reports node 3's: refused, saying whose credential it was and what is allowed.
      const foreign = yield* post(nodeCredential(secret, 2), reportOf(three, 3))
      expect(foreign.status).toBe(403)
      expect(foreign.json).toMatchObject({
        code: "BLX_FORBIDDEN",
        node: 3,
        message: expect.stringMatching(/node 2's credential reports a certificate of node 3; a node reports only its own certificate/)
      })

      // An admin token: the endpoint is the nodes'.
      const admin = yield* post("admin-token", reportOf(three, 3))
      expect(admin.status).toBe(403)
      expect(admin.json).toMatchObject({ code: "BLX_FORBIDDEN", message: expect.stringMatching(/needs a node's credential/) })

      // The member that signed node 3's certificate records it with the certificate itself.
      expect((yield* post(nodeCredential(secret, 2), reportOf(three, 3, { issued: "join", certificate: three }))).status).toBe(200)

      // A certificate that is not the one reported, or not from this cluster's CA, proves nothing.
      const otherSerial = yield* post(nodeCredential(secret, 2), reportOf(three, 3, { serial: CertificateSerial.make("abc"), issued: "join", certificate: three }))
      expect(otherSerial.status).toBe(403)
      expect(otherSerial.json).toMatchObject({ code: "BLX_FORBIDDEN", message: expect.stringMatching(/is not that certificate: its serial is /) })
      const otherCa = yield* Tls.createCa(cluster)
      const forged = yield* issue(otherCa, cluster, 3)
      const untrusted = yield* post(nodeCredential(secret, 2), reportOf(forged, 3, { issued: "join", certificate: forged }))
      expect(untrusted.status).toBe(403)
      expect(untrusted.json).toMatchObject({ code: "BLX_FORBIDDEN", message: expect.stringMatching(/does not prove it: it was not issued by the cluster's CA/) })
      const wrongNode = yield* post(nodeCredential(secret, 2), reportOf(three, 4, { issued: "join", certificate: three }))
      expect(wrongNode.status).toBe(403)
      expect(wrongNode.json).toMatchObject({ code: "BLX_FORBIDDEN", message: expect.stringMatching(/it is node 3's/) })

      // Only the two allowed reports reached the control plane.
      expect(recorded.map((r) => [r.node, r.issued])).toEqual([
        [3, undefined],
        [3, "join"]
      ])
    })
  )

  it.effect("a client certificate naming the body's node is the node's own report, whatever credential forwards it", () =>
    Effect.gen(function* () {
      const ca = yield* Tls.createCa(cluster)
      const three = yield* issue(ca, cluster, 3)
      const report = reportOf(three, 3)
      expect(reportRefusal({ credentialNode: 2, certificateNode: () => 3 }, report, undefined)).toBeUndefined()
      const refused = reportRefusal({ credentialNode: 2, certificateNode: () => 2 }, report, undefined)
      expect(refused?.message).toMatch(/node 2's credential and node 2's client certificate reports a certificate of node 3/)
      // A server checking no tokens (tests, benchmarks of the API alone) checks no callers.
      expect(reportRefusal(undefined, report, undefined)).toBeUndefined()
      // Another cluster's certificate, even from a CA of the same key type, is not this cluster's node.
      const elsewhere = randomUUID()
      const foreignCa = yield* Tls.createCa(elsewhere)
      const foreign = yield* issue(foreignCa, elsewhere, 3)
      expect(Either.isLeft(CertRenewal.issuedBy(() => `${ca.ca}\n${foreignCa.ca}`, cluster)(foreign))).toBe(true)
      expect(CertRenewal.issuedBy(() => `${foreignCa.ca}\n${ca.ca}`, cluster)(three)).toEqual(
        Either.right({ node: 3, serial: report.serial, fingerprint: report.fingerprint, notAfter: report.notAfter })
      )
      expect(CertRenewal.issuedBy(() => ca.ca, cluster)("not a certificate")).toEqual(Either.left("it is not a PEM certificate"))
    })
  )
})
