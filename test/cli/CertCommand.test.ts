import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { formatCertificates, parseRevokeTarget } from "../../src/cli/CertCommand.js"
import { CertificateList, CertificateRecord, CertificateSerial, RevokedCertificate } from "../../src/domain/Certificate.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { fakeClient, runBlixard } from "./harness.js"

const day = 24 * 60 * 60 * 1000
const serial = CertificateSerial.make

describe("cluster cert", () => {
  it("revoke takes a node id or a serial in any hex spelling; anything else is a usage error", () => {
    const problems: Array<string> = []
    expect(parseRevokeTarget("3", problems)).toEqual({ node: 3 })
    expect(parseRevokeTarget("00:AB:CD", problems)).toEqual({ serial: "abcd" })
    expect(parseRevokeTarget("5f0c", problems)).toEqual({ serial: "5f0c" })
    expect(problems).toEqual([])
    expect(parseRevokeTarget("node-3", problems)).toBeUndefined()
    expect(problems[0]).toMatch(/a node id \(e\.g\. 3\) or a certificate serial number/)
  })

  it("status lists each node's certificate with the time left, then the revocation list", () => {
    const now = 1_000 * day
    const list = new CertificateList({
      certificates: [
        new CertificateRecord({ serial: serial("b2"), node: NodeId.make(2), fingerprint: "b".repeat(64), notAfter: now + 30 * day, recordedAt: 0 }),
        new CertificateRecord({ serial: serial("a1"), node: NodeId.make(1), fingerprint: "a".repeat(64), notAfter: now + 5 * 3_600_000, recordedAt: 0 })
      ],
      revoked: [new RevokedCertificate({ serial: serial("c3"), node: NodeId.make(3), reason: "node 3 was removed from the cluster" })]
    })
    const lines = formatCertificates(list, false, now).split("\n")
    expect(lines[0]).toMatch(/^NODE +SERIAL +EXPIRES +LEFT$/)
    expect(lines[1]).toMatch(/^1 +a1 +\S+ +5h$/)
    expect(lines[2]).toMatch(/^2 +b2 +\S+ +30d$/)
    expect(lines.slice(4).join("\n")).toMatch(/Revoked:\nNODE +SERIAL +REVOKED +REASON\n3 +c3 +- +node 3 was removed from the cluster/)
    expect(JSON.parse(formatCertificates(list, true, now)).revoked).toEqual([{ serial: "c3", node: 3, reason: "node 3 was removed from the cluster" }])
  })

  it.effect("revoke sends the node or the serial with the reason, and says what was revoked", () =>
    Effect.gen(function* () {
      const client = fakeClient({
        revokeCertificate: () => Effect.succeed([new RevokedCertificate({ serial: serial("a1"), node: NodeId.make(2), reason: "key leaked", revokedAt: 5 })])
      })
      const result = yield* runBlixard(["cluster", "cert", "revoke", "2", "--reason", "key leaked", "--addr", "10.0.0.1:7001"], { client: client.layer })
      expect(result.code).toBe(0)
      expect(result.stdout).toBe("revoked certificate a1 of node 2")
      expect(client.calls).toEqual([{ method: "revokeCertificate", args: [{ addr: "10.0.0.1:7001" }, { node: 2, reason: "key leaked" }] }])
      const bad = yield* runBlixard(["cluster", "cert", "revoke", "xyz"], { client: fakeClient({}).layer })
      expect(bad.code).toBe(2)
    })
  )
})
