/**
 * Renewal and revocation over real TLS on loopback: a revoked certificate's peer connection is
 * refused (both ways); a renewed certificate is what the next connection uses, on the client side and
 * the server side, without a restart; `POST /v1/tls/renew` signs only for an unrevoked, unexpired
 * member; the renewed files replace the old ones atomically, and an interrupted write is completed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as https from "node:https"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import type { CertificateReport } from "../../src/api/ControlPlane.js"
import { normalizeSerial } from "../../src/domain/Certificate.js"
import { type BlixardError, Forbidden, NotLeader } from "../../src/domain/Errors.js"
import { NodeId } from "../../src/domain/NodeId.js"
import * as Tls from "../../src/net/Tls.js"
import * as CertRenewal from "../../src/node/CertRenewal.js"
import * as DaemonParts from "../../src/node/DaemonParts.js"
import { eventually, heartbeat, receiveN, receiveWithin, startNode } from "./harness.js"

const cluster = randomUUID()
const day = 24 * 60 * 60 * 1000

const pki = Effect.gen(function* () {
  const ca = yield* Tls.createCa(cluster)
  const issue = (node: number, validityMs?: number) =>
    Effect.gen(function* () {
      const request = yield* Tls.createRequest(node)
      const cert = yield* Tls.signRequest({ ...ca, clusterId: cluster, node, csr: request.csr, names: ["127.0.0.1"], validityMs })
      return { cert, key: request.key }
    })
  return { ca, issue }
})

/** The serial of the certificate the server at `port` presents to a new connection. */
const servedSerial = (port: number, ca: string) =>
  Effect.async<string, Error>((resume) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca, checkServerIdentity: () => undefined }, () => {
      const serial = normalizeSerial(socket.getPeerCertificate().serialNumber)
      socket.end()
      resume(Effect.succeed(serial))
    })
    socket.on("error", (e) => resume(Effect.fail(e)))
  })

describe("peers refuse revoked certificates and use renewed ones", () => {
  it.scopedLive("a revoked certificate's connection is refused; the renewed one is used by the next connection", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      const first = yield* issue(1)
      const live1 = new Tls.LiveTls(ca.ca, first.cert, first.key, cluster)
      const two = yield* issue(2)
      const revokedSerial = Tls.factsOf(first.cert).serial
      const a = yield* startNode(1, { tls: live1, backoffMaxMs: 100 })
      const b = yield* startNode(2, { tls: { ...two, ca: ca.ca, clusterId: cluster }, revoked: (serial) => (serial === revokedSerial ? "key leaked" : undefined) })
      yield* a.peers.set(2, b.address)
      yield* a.transport.send([heartbeat(1, 2, 1)])
      yield* eventually("node 1's connection with its revoked certificate to fail", Effect.map(a.peers.stats, ([s]) => (s?.failures ?? 0) > 1))
      expect(Option.isNone(yield* receiveWithin(b.transport, 300))).toBe(true)
      // Renewed: the next attempt presents the new certificate, which is not revoked.
      const renewed = yield* issue(1)
      live1.replace(renewed.cert, renewed.key)
      yield* a.transport.send([heartbeat(1, 2, 2)])
      // The first heartbeat may still be queued (it was never in flight): it arrives too, or not.
      let got = yield* receiveN(b.transport, 1)
      if (got[0]!.type === "heartbeat" && got[0]!.commit === 1) got = yield* receiveN(b.transport, 1)
      expect(got).toEqual([heartbeat(1, 2, 2)])
    })
  )

  it.scopedLive("a sender refuses a server whose certificate is revoked (BLX_CERT_REVOKED)", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      const one = yield* issue(1)
      const two = yield* issue(2)
      const bad = Tls.factsOf(two.cert).serial
      const a = yield* startNode(1, { tls: { ...one, ca: ca.ca, clusterId: cluster }, backoffMaxMs: 100, revoked: (s) => (s === bad ? "node 2 was removed from the cluster" : undefined) })
      const b = yield* startNode(2, { tls: { ...two, ca: ca.ca, clusterId: cluster } })
      yield* a.peers.set(2, b.address)
      yield* a.transport.send([heartbeat(1, 2, 1)])
      yield* eventually("node 1 to refuse node 2's certificate", Effect.map(a.peers.stats, ([s]) => (s?.lastError ?? "").includes("BLX_CERT_REVOKED")))
      expect(Option.isNone(yield* receiveWithin(b.transport, 300))).toBe(true)
    })
  )

  it.scopedLive("an open connection is closed once its certificate is revoked, and not opened again", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      const one = yield* issue(1)
      const two = yield* issue(2)
      const revoked = new Set<string>()
      const a = yield* startNode(1, { tls: { ...one, ca: ca.ca, clusterId: cluster }, backoffMaxMs: 100 })
      const b = yield* startNode(2, { tls: { ...two, ca: ca.ca, clusterId: cluster }, revoked: (s) => (revoked.has(s) ? "node 1 was removed from the cluster" : undefined) })
      yield* a.peers.set(2, b.address)
      yield* a.transport.send([heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      revoked.add(Tls.factsOf(one.cert).serial)
      yield* eventually("node 2 to close node 1's connection", Effect.map(a.peers.stats, ([s]) => (s?.failuresTotal ?? 0) > 0))
      yield* a.transport.send([heartbeat(1, 2, 2)])
      expect(Option.isNone(yield* receiveWithin(b.transport, 500))).toBe(true)
    })
  )

  it.scopedLive("a listening server serves its renewed certificate to new connections without a restart", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      const first = yield* issue(2)
      const live = new Tls.LiveTls(ca.ca, first.cert, first.key, cluster)
      const b = yield* startNode(2, { tls: live })
      expect(yield* servedSerial(b.port, ca.ca)).toBe(Tls.factsOf(first.cert).serial)
      const renewed = yield* issue(2)
      live.replace(renewed.cert, renewed.key)
      expect(yield* servedSerial(b.port, ca.ca)).toBe(Tls.factsOf(renewed.cert).serial)
    })
  )
})

/** An HTTPS server with the renewal route alone, asking clients for a certificate as the node's does. */
const renewalServer = (options: CertRenewal.RouteOptions, server: { cert: string; key: string }) =>
  Effect.acquireRelease(
    Effect.async<https.Server>((resume) => {
      const route = CertRenewal.route(options)
      const listening = https.createServer({ ca: options.ca, ...server, requestCert: true, rejectUnauthorized: false }, (request, response) =>
        route.handle(request, response, undefined as never)
      )
      listening.listen(0, "127.0.0.1", () => resume(Effect.succeed(listening)))
    }),
    (listening) => Effect.sync(() => listening.closeAllConnections()).pipe(Effect.zipRight(Effect.async<void>((resume) => void listening.close(() => resume(Effect.void)))))
  )

const portOf = (server: https.Server) => (server.address() as { port: number }).port

const run: CertRenewal.RouteOptions["run"] = (effect, then) => void Effect.runPromise(Effect.either(effect)).then(then)

describe("POST /v1/tls/renew", () => {
  it.scopedLive("signs a member's renewal with the shorter validity; refuses a revoked, expired or removed node's", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      const serverCert = yield* issue(1)
      const revokedSerials = new Set<string>()
      const members = new Set([1, 2])
      const recorded: Array<CertificateReport> = []
      const server = yield* renewalServer(
        {
          ca: ca.ca,
          caKey: ca.caKey,
          clusterId: cluster,
          validityMs: 30 * day,
          isMember: (n) => members.has(n),
          revoked: (s) => (revokedSerials.has(s) ? "key leaked" : undefined),
          record: (report) => Effect.sync(() => recorded.push(report)),
          run
        },
        serverCert
      )
      const address = `127.0.0.1:${portOf(server)}`
      const own = yield* issue(2)
      const live = new Tls.LiveTls(ca.ca, own.cert, own.key, cluster)
      const options = { node: 2, current: live, names: ["127.0.0.1"], validityMs: 365 * day, timeoutMs: 5000 }
      const renewed = yield* CertRenewal.renewFrom(address, options)
      const facts = Tls.factsOf(renewed.cert)
      expect(facts.serial).not.toBe(Tls.factsOf(own.cert).serial)
      // The signer's 30 days win over the 365 asked; the certificate is node 2's, with its new key.
      expect(facts.notAfter - Date.now()).toBeLessThanOrEqual(30 * day)
      expect(facts.notAfter - Date.now()).toBeGreaterThan(29 * day)
      expect(Tls.identityOf(new (yield* Effect.promise(() => import("node:crypto"))).X509Certificate(renewed.cert).subjectAltName)?.node).toBe(2)
      // The signer recorded it before answering, with the certificate as proof for the leader.
      expect(recorded).toEqual([{ node: 2, serial: facts.serial, fingerprint: facts.fingerprint, notAfter: facts.notAfter, issued: "renewal", certificate: renewed.cert }])

      revokedSerials.add(Tls.factsOf(own.cert).serial)
      const revoked = yield* Effect.either(CertRenewal.renewFrom(address, options))
      expect(Either.isLeft(revoked) && [revoked.left.code, revoked.left.message]).toEqual(["BLX_CERT_REVOKED", expect.stringMatching(/node 2's certificate .* is revoked \(key leaked\): it is not renewed/)])

      members.delete(3)
      const three = yield* issue(3)
      const removed = yield* Effect.either(CertRenewal.renewFrom(address, { ...options, node: 3, current: new Tls.LiveTls(ca.ca, three.cert, three.key, cluster) }))
      expect(Either.isLeft(removed) && [removed.left.code, removed.left.message]).toEqual(["BLX_FORBIDDEN", expect.stringMatching(/node 3 is not a member/)])

      members.add(4)
      const expired = yield* issue(4, -day / 2)
      const late = yield* Effect.either(CertRenewal.renewFrom(address, { ...options, node: 4, current: new Tls.LiveTls(ca.ca, expired.cert, expired.key, cluster) }))
      expect(Either.isLeft(late) && late.left.message).toMatch(/not valid for this cluster \(CERT_HAS_EXPIRED\)/)
    })
  )

  it.scopedLive("renewNow writes the new pair over the old, swaps it in, and a restart reads it", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      const serverCert = yield* issue(1)
      const server = yield* renewalServer(
        { ca: ca.ca, caKey: ca.caKey, clusterId: cluster, validityMs: 365 * day, isMember: () => true, revoked: () => undefined, record: () => Effect.void, run },
        serverCert
      )
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-renew-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dataDir, { recursive: true, force: true })))
      const own = yield* issue(2)
      yield* Tls.writeNodeTls(dataDir, { ...ca, ...own }, 2)
      const live = new Tls.LiveTls(ca.ca, own.cert, own.key, cluster)
      let changes = 0
      live.onChange(() => changes++)
      const facts = yield* CertRenewal.renewNow({
        node: 2,
        dataDir,
        current: live,
        names: ["127.0.0.1"],
        validityMs: 365 * day,
        timeoutMs: 5000,
        // The first member does not answer: the next one is asked.
        addresses: Effect.succeed(["127.0.0.1:1", `127.0.0.1:${portOf(server)}`]),
        record: () => Effect.void
      })
      expect(changes).toBe(1)
      expect(Tls.factsOf(live.cert).serial).toBe(facts.serial)
      const reread = yield* Tls.readNodeTls(dataDir, 2)
      expect(Tls.factsOf(reread.cert).serial).toBe(facts.serial)
      expect(reread.key).toBe(live.key)
      expect(fs.readdirSync(Tls.tlsDir(dataDir)).sort()).toEqual(["ca.crt", "ca.key", "node.crt", "node.key"])
    })
  )
})

/** An HTTPS server that asks for a client certificate and notes the serial of each request's; answers 503. */
const serialRecorder = (server: { cert: string; key: string }, ca: string) =>
  Effect.gen(function* () {
    const seen: Array<string> = []
    const listening = yield* Effect.acquireRelease(
      Effect.async<https.Server>((resume) => {
        const created = https.createServer({ ca, ...server, requestCert: true, rejectUnauthorized: true }, (request, response) => {
          seen.push(normalizeSerial((request.socket as tls.TLSSocket).getPeerCertificate().serialNumber))
          const body = JSON.stringify({ _tag: "Unavailable", code: "BLX_UNAVAILABLE", message: "noted" })
          response.writeHead(503, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
          response.end(body)
        })
        created.listen(0, "127.0.0.1", () => resume(Effect.succeed(created)))
      }),
      (created) => Effect.sync(() => created.closeAllConnections()).pipe(Effect.zipRight(Effect.async<void>((resume) => void created.close(() => resume(Effect.void)))))
    )
    return { seen, address: `127.0.0.1:${portOf(listening)}` }
  })

describe("a node's outgoing API calls present its current certificate", () => {
  it.scopedLive("after a renewal, the next call to another node presents the new serial (kept-alive connections included)", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      const server = yield* serialRecorder(yield* issue(1), ca.ca)
      const first = yield* issue(2)
      const live = new Tls.LiveTls(ca.ca, first.cert, first.key, cluster)
      const remote = yield* DaemonParts.remotePlanes({ credential: () => "blxn_2_x", requestMs: 5000, tls: DaemonParts.outgoingTls(live) })
      const leader = remote(server.address)
      yield* Effect.either(leader.health)
      yield* Effect.either(leader.health)
      const renewed = yield* issue(2)
      live.replace(renewed.cert, renewed.key)
      yield* Effect.either(leader.health)
      yield* Effect.either(leader.clusterStatus)
      const [before, after] = [Tls.factsOf(first.cert).serial, Tls.factsOf(renewed.cert).serial]
      expect(server.seen).toEqual([before, before, after, after])
    })
  )
})

describe("a renewal the signer cannot record", () => {
  it.scopedLive("is not handed out: the renewing node keeps its certificate and hears why (refused as the cluster refused it, else BLX_UNAVAILABLE)", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      let refusal: BlixardError = new NotLeader({ message: "no leader yet" })
      const server = yield* renewalServer(
        { ca: ca.ca, caKey: ca.caKey, clusterId: cluster, validityMs: 365 * day, isMember: () => true, revoked: () => undefined, record: () => Effect.fail(refusal), run },
        yield* issue(1)
      )
      const own = yield* issue(2)
      const options = { node: 2, current: new Tls.LiveTls(ca.ca, own.cert, own.key, cluster), names: ["127.0.0.1"], validityMs: 365 * day, timeoutMs: 5000 }
      const unrecorded = yield* Effect.either(CertRenewal.renewFrom(`127.0.0.1:${portOf(server)}`, options))
      expect(Either.isLeft(unrecorded) && [unrecorded.left.code, unrecorded.left.message]).toEqual([
        "BLX_UNAVAILABLE",
        expect.stringMatching(/signed for node 2 \(renewal\) could not be recorded in the cluster, so it is not handed out \(BLX_NOT_LEADER: no leader yet\)/)
      ])
      // Removed while its renewal was signed: the state machine refused the record.
      refusal = new Forbidden({ node: NodeId.make(2), message: "node 2 is not a member of the cluster: its renewed certificate is not issued" })
      const removed = yield* Effect.either(CertRenewal.renewFrom(`127.0.0.1:${portOf(server)}`, options))
      expect(Either.isLeft(removed) && [removed.left.code, removed.left.message]).toEqual(["BLX_FORBIDDEN", expect.stringMatching(/node 2 is not a member of the cluster/)])
    })
  )
})

describe("renewal on disk", () => {
  it.effect("a renewal interrupted between its two renames is completed when the files are read; one interrupted before them is dropped", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      const old = yield* issue(2)
      const renewed = yield* issue(2)
      for (const keyRenamed of [true, false]) {
        const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-renew-"))
        try {
          yield* Tls.writeNodeTls(dataDir, { ...ca, ...old }, 2)
          const dir = Tls.tlsDir(dataDir)
          fs.writeFileSync(path.join(dir, "node.next.crt"), renewed.cert)
          if (keyRenamed) fs.writeFileSync(path.join(dir, "node.key"), renewed.key)
          else fs.writeFileSync(path.join(dir, "node.next.key"), renewed.key)
          const read = yield* Tls.readNodeTls(dataDir, 2)
          expect(read.cert).toBe(keyRenamed ? renewed.cert : old.cert)
          expect(fs.readdirSync(dir).sort()).toEqual(["ca.crt", "ca.key", "node.crt", "node.key"])
        } finally {
          fs.rmSync(dataDir, { recursive: true, force: true })
        }
      }
    })
  )

  it.effect("an expired certificate stops the node with BLX_CERT_EXPIRED naming the node, the file and what to do", () =>
    Effect.gen(function* () {
      const { ca, issue } = yield* pki
      const expired = yield* issue(5, -day / 2)
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-expired-"))
      try {
        yield* Tls.writeNodeTls(dataDir, { ...ca, ...expired }, 5)
        const result = yield* Effect.either(Tls.readNodeTls(dataDir, 5))
        expect(Either.isLeft(result) && result.left.code).toBe("BLX_CERT_EXPIRED")
        expect(Either.isLeft(result) && result.left.node).toBe(5)
        expect(Either.isLeft(result) && result.left.message).toContain(path.join(Tls.tlsDir(dataDir), "node.crt"))
        expect(Either.isLeft(result) && result.left.message).toMatch(/blixard cluster leave --id 5.*join token/)
      } finally {
        fs.rmSync(dataDir, { recursive: true, force: true })
      }
    })
  )

  it("renewal is due at two thirds of the lifetime, or at once for a certificate longer than allowed", () => {
    const facts = { serial: "1", fingerprint: "", notBefore: 0, notAfter: 300 * day }
    expect(Tls.renewalDue(facts, 365 * day)).toBe(200 * day)
    expect(Tls.renewalDue({ ...facts, notAfter: 3650 * day }, 365 * day)).toBe(0)
  })
})
