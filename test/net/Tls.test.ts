/** The cluster CA and node certificates: what they name, and what reading them back refuses. */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { randomUUID, X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Tls from "../../src/net/Tls.js"

const issue = (clusterId: string, node: number) =>
  Effect.gen(function* () {
    const ca = yield* Tls.createCa(clusterId)
    const request = yield* Tls.createRequest(node)
    const cert = yield* Tls.signRequest({ ...ca, clusterId, node, csr: request.csr, names: ["127.0.0.1", "node-1.example"] })
    return { ...ca, cert, key: request.key }
  })

describe("cluster CA and node certificates", () => {
  it.effect("a node certificate names its cluster and node, its addresses, and is issued by the CA", () =>
    Effect.gen(function* () {
      const clusterId = randomUUID()
      const files = yield* issue(clusterId, 3)
      const cert = new X509Certificate(files.cert)
      const ca = new X509Certificate(files.ca)
      expect(ca.ca).toBe(true)
      expect(cert.ca).toBe(false)
      expect(cert.checkIssued(ca)).toBe(true)
      expect(cert.verify(ca.publicKey)).toBe(true)
      expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1")
      expect(Tls.identityOf(cert.subjectAltName)).toEqual({ clusterId, node: 3 })
      expect(cert.subjectAltName).toContain("IP Address:127.0.0.1")
      expect(cert.subjectAltName).toContain("DNS:node-1.example")
      const checked = Tls.checkNodeTls(files, 3, "test")
      expect(Either.isRight(checked) && checked.right.fingerprint).toBe(Tls.fingerprintOf(files.ca))
    })
  )

  it.effect("files that do not fit are refused with BLX_TLS_INVALID", () =>
    Effect.gen(function* () {
      const a = yield* issue(randomUUID(), 1)
      const b = yield* issue(randomUUID(), 1)
      const problem = (files: typeof a, node = 1) => {
        const checked = Tls.checkNodeTls(files, node, "dir")
        return Either.isLeft(checked) ? `${checked.left.code}: ${checked.left.message}` : "accepted"
      }
      expect(problem(a)).toBe("accepted")
      expect(problem(a, 2)).toContain("BLX_TLS_INVALID: dir: node.crt is node 1's certificate, not node 2's")
      expect(problem({ ...a, ca: b.ca, caKey: b.caKey })).toContain("node.crt was not issued by ca.crt")
      expect(problem({ ...a, key: b.key })).toContain("node.key is not the key of node.crt")
      expect(problem({ ...a, caKey: b.caKey })).toContain("ca.key is not the key of ca.crt")
    })
  )

  it.effect("written files read back (keys 0600); a damaged file is refused naming the directory", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-tls-"))
      try {
        const files = yield* issue(randomUUID(), 2)
        yield* Tls.writeNodeTls(dir, files, 2)
        expect(fs.statSync(path.join(dir, "tls", "ca.key")).mode & 0o777).toBe(0o600)
        expect(fs.statSync(path.join(dir, "tls", "node.key")).mode & 0o777).toBe(0o600)
        expect((yield* Tls.readNodeTls(dir, 2)).cert).toBe(files.cert)
        fs.writeFileSync(path.join(dir, "tls", "node.crt"), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        const error = yield* Effect.flip(Tls.readNodeTls(dir, 2))
        expect(error.code).toBe("BLX_TLS_INVALID")
        expect(error.message).toContain(path.join(dir, "tls"))
        expect(error.message).toContain("cert")
        fs.rmSync(path.join(dir, "tls", "ca.crt"))
        expect((yield* Effect.flip(Tls.readNodeTls(dir, 2))).message).toContain("cannot read")
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    })
  )

  it.effect("a certificate request whose signature does not match is not signed", () =>
    Effect.gen(function* () {
      const clusterId = randomUUID()
      const ca = yield* Tls.createCa(clusterId)
      const request = yield* Tls.createRequest(1)
      // Flip a byte inside the request's signature (the end of its DER).
      const der = Buffer.from(request.csr.replace(/-----[^-]+-----/g, "").replace(/\s/g, ""), "base64")
      der[der.length - 3] = (der[der.length - 3] ?? 0) ^ 0xff
      const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`
      const error = yield* Effect.flip(Tls.signRequest({ ...ca, clusterId, node: 1, csr: tampered, names: [] }))
      expect(error.code).toBe("BLX_TLS_INVALID")
    })
  )
})
