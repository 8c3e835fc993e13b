/**
 * CA rotation over real TLS on loopback: the leader reads a member's certificate off its port and
 * seals the new CA's key to each member; a member that moved (new-CA certificate, trusting both) and
 * one still on the old CA exchange Raft messages both ways; once finished, a node trusts only the
 * new CA and refuses a certificate of the old one. The files swap is crash-safe.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import { randomUUID, X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import * as https from "node:https"
import { connect as tlsConnect } from "node:tls"
import * as os from "node:os"
import * as path from "node:path"
import { CaRotation } from "../../src/domain/CaRotation.js"
import * as Tls from "../../src/net/Tls.js"
import * as Rotation from "../../src/node/CaRotation.js"
import * as CertRenewal from "../../src/node/CertRenewal.js"
import { eventually, heartbeat, receiveN, receiveWithin, startNode } from "./harness.js"

const cluster = randomUUID()
const day = 24 * 60 * 60 * 1000

const issue = (ca: Tls.CaFiles, node: number) =>
  Effect.gen(function* () {
    const request = yield* Tls.createRequest(node)
    return { cert: yield* Tls.signRequest({ ...ca, clusterId: cluster, node, csr: request.csr, names: ["127.0.0.1"] }), key: request.key }
  })

const dataDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "blixard-ca-rotation-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** A member with its files on disk and its `LiveTls`. */
const member = (ca: Tls.CaFiles, node: number) =>
  Effect.gen(function* () {
    const dir = yield* dataDir
    const own = yield* issue(ca, node)
    yield* Tls.writeNodeTls(dir, { ...ca, ...own }, node)
    return { dir, live: new Tls.LiveTls(ca.ca, own.cert, own.key, cluster, ca.caKey) }
  })

const reconcileOf = (node: number, dir: string, live: Tls.LiveTls, state: () => { readonly rotation: CaRotation | undefined; readonly inForce: string }, moved: Array<number>) =>
  Rotation.reconcile({
    node,
    dataDir: dir,
    live,
    names: ["127.0.0.1"],
    validityMs: 30 * day,
    state,
    record: () => Effect.void,
    moved: () => Effect.sync(() => moved.push(node))
  })

describe("rotating the cluster CA", () => {
  it.scopedLive("members on the old and the new CA talk both ways during the rotation; after finish an old-CA certificate is refused", () =>
    Effect.gen(function* () {
      const old = yield* Tls.createCa(cluster)
      const one = yield* member(old, 1)
      const two = yield* member(old, 2)
      const a = yield* startNode(1, { tls: one.live, backoffMaxMs: 100 })
      const b = yield* startNode(2, { tls: two.live, backoffMaxMs: 100 })

      // The leader (node 1) prepares: node 2's certificate read off its port, the key sealed to both.
      const start = yield* Rotation.prepare({ self: 1, live: one.live, members: new Map([[1, a.address], [2, b.address]]), revoked: () => undefined, timeoutMs: 5_000 })
      expect(start.keys.map((k) => k.node)).toEqual([1, 2])
      expect(start.previous).toBe(Tls.fingerprintOf(old.ca))
      expect(JSON.stringify(start)).not.toMatch(/PRIVATE KEY/)
      const { _tag, ...fields } = start
      const rotation = new CaRotation({ ...fields, startedAt: Date.now(), moved: [] })
      const moved: Array<number> = []

      // Node 1 applies it: trusts both CAs at once, then (next pass) moves to a certificate of the new one, reports it.
      yield* reconcileOf(1, one.dir, one.live, () => ({ rotation, inForce: "" }), moved)
      expect([one.live.fingerprint, Tls.splitPem(one.live.ca).length]).toEqual([start.previous, 2])
      yield* reconcileOf(1, one.dir, one.live, () => ({ rotation, inForce: "" }), moved)
      expect(one.live.fingerprint).toBe(start.fingerprint)
      expect(Tls.splitPem(one.live.ca).map(Tls.fingerprintOf)).toEqual([start.fingerprint, start.previous])
      expect(moved).toEqual([1])
      // What it runs with is on disk, and reads back as a whole (the CA key is the new one's).
      const onDisk = yield* Tls.readNodeTls(one.dir, 1)
      expect([onDisk.fingerprint, onDisk.cert]).toEqual([start.fingerprint, one.live.cert])

      // Node 2 cannot move yet (here: no copy for it), but trusts the new CA from the state at once.
      const withheld = new CaRotation({ ...rotation, keys: rotation.keys.filter((k) => k.node !== 2) })
      yield* reconcileOf(2, two.dir, two.live, () => ({ rotation: withheld, inForce: "" }), moved)
      const stuck = yield* Effect.either(reconcileOf(2, two.dir, two.live, () => ({ rotation: withheld, inForce: "" }), moved))
      expect(Either.isLeft(stuck) && stuck.left.message).toMatch(/node 2 has no copy of the new CA's key/)
      expect(two.live.fingerprint).toBe(start.previous)
      expect(Tls.splitPem(two.live.ca).map(Tls.fingerprintOf)).toEqual([start.previous, start.fingerprint])

      // New-CA node 1 and old-CA node 2 talk, both ways (each is client of one connection, server of the other).
      yield* a.peers.set(2, b.address)
      yield* b.peers.set(1, a.address)
      yield* a.transport.send([heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      yield* b.transport.send([heartbeat(2, 1, 1)])
      expect(yield* receiveN(a.transport, 1)).toEqual([heartbeat(2, 1, 1)])

      // Node 2 moves with its own copy; a wrong node's key would not open it (KeySeal.test.ts).
      yield* reconcileOf(2, two.dir, two.live, () => ({ rotation, inForce: "" }), moved)
      expect(two.live.fingerprint).toBe(start.fingerprint)
      expect(two.live.fingerprint).toBe(start.fingerprint)
      expect(moved).toEqual([1, 2])

      // Finished: node 1 drops the old CA, on disk and live.
      yield* reconcileOf(1, one.dir, one.live, () => ({ rotation: undefined, inForce: start.fingerprint }), moved)
      expect(Tls.splitPem(one.live.ca).map(Tls.fingerprintOf)).toEqual([start.fingerprint])
      expect(Tls.splitPem(fs.readFileSync(path.join(Tls.tlsDir(one.dir), Tls.caFileName), "utf8"))).toHaveLength(1)

      // A node holding only an old-CA certificate (a removed member keeps its files) is refused by node 1
      // as a client, although it trusts node 1's new certificate.
      const three = yield* issue(old, 3)
      const c = yield* startNode(3, { tls: { ...three, ca: Tls.bundleOf(old.ca, rotation.ca), clusterId: cluster }, backoffMaxMs: 100 })
      yield* c.peers.set(1, a.address)
      yield* c.transport.send([heartbeat(3, 1, 1)])
      yield* eventually("node 1 to refuse node 3's old-CA certificate", Effect.map(c.peers.stats, ([s]) => (s?.failures ?? 0) > 1))
      expect(Option.isNone(yield* receiveWithin(a.transport, 300))).toBe(true)
      // And the new-CA node 2 is still accepted.
      yield* b.transport.send([heartbeat(2, 1, 2)])
      expect(yield* receiveN(a.transport, 1)).toEqual([heartbeat(2, 1, 2)])
    })
  )

  it.scopedLive("connections opened with an old-CA certificate while the rotation lasts are closed when it finishes, both ways", () =>
    Effect.gen(function* () {
      const old = yield* Tls.createCa(cluster)
      const fresh = yield* Tls.createCa(cluster, new Date())
      // Node 1 moved (a new-CA certificate, both CAs trusted while the rotation lasts); node 3 did not
      // (say, it was removed meanwhile and keeps its files): an old-CA certificate, trusting both.
      const oneFiles = yield* issue(fresh, 1)
      const one = new Tls.LiveTls(Tls.bundleOf(fresh.ca, old.ca), oneFiles.cert, oneFiles.key, cluster, fresh.caKey)
      const threeFiles = yield* issue(old, 3)
      const three = new Tls.LiveTls(Tls.bundleOf(old.ca, fresh.ca), threeFiles.cert, threeFiles.key, cluster, old.caKey)
      const a = yield* startNode(1, { tls: one, backoffMaxMs: 100 })
      const c = yield* startNode(3, { tls: three, backoffMaxMs: 100 })
      yield* a.peers.set(3, c.address)
      yield* c.peers.set(1, a.address)
      // Both connections open during the rotation: 3 → 1 (node 3's old-CA client certificate) and
      // 1 → 3 (node 3's old-CA server certificate).
      yield* c.transport.send([heartbeat(3, 1, 1)])
      expect(yield* receiveN(a.transport, 1)).toEqual([heartbeat(3, 1, 1)])
      yield* a.transport.send([heartbeat(1, 3, 1)])
      expect(yield* receiveN(c.transport, 1)).toEqual([heartbeat(1, 3, 1)])
      const failures = (node: typeof a) => Effect.map(node.peers.stats, ([s]) => s?.failuresTotal ?? 0)
      expect([yield* failures(a), yield* failures(c)]).toEqual([0, 0])

      // The rotation finishes on node 1: it trusts the new CA alone. Neither open connection outlives
      // that: node 1 closes the one node 3 opened, and drops its own to node 3.
      one.trust(fresh.ca)
      yield* eventually("node 1 to close node 3's connection", Effect.map(failures(c), (n) => n > 0))
      yield* eventually("node 1 to drop its connection to node 3", Effect.map(failures(a), (n) => n > 0))
      yield* c.transport.send([heartbeat(3, 1, 2)])
      yield* a.transport.send([heartbeat(1, 3, 2)])
      expect(Option.isNone(yield* receiveWithin(a.transport, 1_000))).toBe(true)
      expect(Option.isNone(yield* receiveWithin(c.transport, 1_000))).toBe(true)
    })
  )

  it.scopedLive("a client trusting only the old CA verifies a moved member while the rotation lasts (the new CA certified by the old), not after finish", () =>
    Effect.gen(function* () {
      const old = yield* Tls.createCa(cluster)
      const one = yield* member(old, 1)
      const a = yield* startNode(1, { tls: one.live, backoffMaxMs: 100 })
      /** A TLS handshake with node 1's port by a client trusting `ca` alone: "verified", or why not. */
      const handshake = (ca: string) =>
        Effect.async<string>((resume) => {
          const socket = tlsConnect({ host: "127.0.0.1", port: a.port, ca, checkServerIdentity: () => undefined })
          socket.once("secureConnect", () => (socket.destroy(), resume(Effect.succeed("verified"))))
          socket.once("error", (e) => resume(Effect.succeed(e.message)))
        })
      expect(yield* handshake(old.ca)).toBe("verified")

      const start = yield* Rotation.prepare({ self: 1, live: one.live, members: new Map([[1, a.address]]), revoked: () => undefined, timeoutMs: 5_000 })
      expect(start.cross).toBeDefined()
      const { _tag, ...fields } = start
      const rotation = new CaRotation({ ...fields, startedAt: Date.now(), moved: [] })
      const cross = new X509Certificate(start.cross!)
      // The link: the new CA's subject and key, issued by the old CA.
      expect([cross.subject, cross.issuer, cross.publicKey.export({ type: "spki", format: "pem" })]).toEqual([
        new X509Certificate(rotation.ca).subject,
        new X509Certificate(old.ca).subject,
        new X509Certificate(rotation.ca).publicKey.export({ type: "spki", format: "pem" })
      ])
      expect(cross.verify(new X509Certificate(old.ca).publicKey)).toBe(true)
      const state = { rotation: rotation as CaRotation | undefined, inForce: "" }
      yield* reconcileOf(1, one.dir, one.live, () => state, [])
      yield* reconcileOf(1, one.dir, one.live, () => state, [])
      expect(one.live.fingerprint).toBe(start.fingerprint)
      // Moved: a client of the old CA alone verifies it, and so does one of the new CA alone.
      expect(yield* handshake(old.ca)).toBe("verified")
      expect(yield* handshake(rotation.ca)).toBe("verified")
      // Without the link, the old CA's client could not.
      one.live.serveAfter(undefined)
      expect(yield* handshake(old.ca)).toMatch(/certificate/)
      yield* reconcileOf(1, one.dir, one.live, () => state, [])
      expect(yield* handshake(old.ca)).toBe("verified")

      // Finished: the link is no longer served; only the new CA verifies the node.
      state.rotation = undefined
      state.inForce = start.fingerprint
      yield* reconcileOf(1, one.dir, one.live, () => state, [])
      expect(one.live.chain).toBe(one.live.cert)
      expect(yield* handshake(old.ca)).toMatch(/certificate/)
      expect(yield* handshake(rotation.ca)).toBe("verified")
    })
  )

  it.scopedLive("the leader refuses to prepare when a member does not answer: its key could not reach it", () =>
    Effect.gen(function* () {
      const old = yield* Tls.createCa(cluster)
      const one = yield* member(old, 1)
      const refused = yield* Effect.either(
        Rotation.prepare({ self: 1, live: one.live, members: new Map([[1, "127.0.0.1:1"], [2, "127.0.0.1:1"]]), revoked: () => undefined, timeoutMs: 2_000 })
      )
      expect(Either.isLeft(refused) && `${refused.left.code}: ${refused.left.message}`).toMatch(/^BLX_UNAVAILABLE: .*node 2 at 127\.0\.0\.1:1: .*nothing was changed/)
    })
  )

  it.scopedLive("during a rotation a moved member keeps a renewal only from a member signing with the new CA", () =>
    Effect.gen(function* () {
      const old = yield* Tls.createCa(cluster)
      const fresh = yield* Tls.createCa(cluster, new Date())
      const run: CertRenewal.RouteOptions["run"] = (effect, then) => void Effect.runPromise(Effect.either(effect)).then(then)
      /** A member's renewal endpoint signing with `signer`, trusting both CAs. */
      const signerAt = (signer: Tls.CaFiles, other: Tls.CaFiles, node: number) =>
        Effect.gen(function* () {
          const serverCert = yield* issue(signer, node)
          const route = CertRenewal.route({ ca: Tls.bundleOf(signer.ca, other.ca), caKey: signer.caKey, clusterId: cluster, validityMs: 30 * day, isMember: () => true, revoked: () => undefined, record: () => Effect.void, run })
          const server = yield* Effect.acquireRelease(
            Effect.async<https.Server>((resume) => {
              const listening = https.createServer({ ca: Tls.bundleOf(signer.ca, other.ca), ...serverCert, requestCert: true, rejectUnauthorized: false }, (request, response) =>
                route.handle(request, response, undefined as never)
              )
              listening.listen(0, "127.0.0.1", () => resume(Effect.succeed(listening)))
            }),
            (listening) => Effect.sync(() => listening.closeAllConnections()).pipe(Effect.zipRight(Effect.async<void>((resume) => void listening.close(() => resume(Effect.void)))))
          )
          return `127.0.0.1:${(server.address() as { port: number }).port}`
        })
      const notMoved = yield* signerAt(old, fresh, 1)
      const moved = yield* signerAt(fresh, old, 3)
      const dir = yield* dataDir
      const own = yield* issue(fresh, 2)
      const files = { ca: Tls.bundleOf(fresh.ca, old.ca), caKey: fresh.caKey, ...own }
      yield* Tls.writeNodeTls(dir, files, 2)
      const live = new Tls.LiveTls(files.ca, own.cert, own.key, cluster, fresh.caKey)
      const renew = (addresses: ReadonlyArray<string>) =>
        CertRenewal.renewNow({ node: 2, dataDir: dir, current: live, names: ["127.0.0.1"], validityMs: 30 * day, timeoutMs: 5_000, addresses: Effect.succeed(addresses), record: () => Effect.void })
      // Only a member still on the old CA answers: its certificate is not kept (it would be cut off at finish).
      const refused = yield* Effect.either(renew([notMoved]))
      expect(Either.isLeft(refused) && refused.left.message).toMatch(/signed node 2's renewal with another CA than the one it uses now/)
      expect(live.cert).toBe(own.cert)
      // The next member signs with the new CA: kept.
      const facts = yield* renew([notMoved, moved])
      expect(Tls.factsOf(live.cert).serial).toBe(facts.serial)
      expect(Tls.issuerIn(new X509Certificate(live.cert), fresh.ca)).toBeDefined()
    })
  )

  it.scoped("the swap of the TLS directory is crash-safe: a half-written next directory is dropped, a whole one beside no tls/ is taken", () =>
    Effect.gen(function* () {
      const old = yield* Tls.createCa(cluster)
      const one = yield* member(old, 1)
      const fresh = yield* Tls.createCa(cluster, new Date())
      const moved = yield* issue(fresh, 1)
      const files = { ca: Tls.bundleOf(fresh.ca, old.ca), caKey: fresh.caKey, ...moved }
      const tls = Tls.tlsDir(one.dir)
      // Crashed while writing tls.next: the old directory is whole and stays.
      fs.mkdirSync(`${tls}.next`)
      fs.writeFileSync(path.join(`${tls}.next`, Tls.caFileName), fresh.ca)
      expect((yield* Tls.readNodeTls(one.dir, 1)).fingerprint).toBe(Tls.fingerprintOf(old.ca))
      expect(fs.existsSync(`${tls}.next`)).toBe(false)
      // Crashed between the two renames: tls.next is whole, tls/ is gone; it is taken.
      yield* Tls.writeRotated(one.dir, files, 1)
      fs.renameSync(tls, `${tls}.next`)
      fs.mkdirSync(`${tls}.old`)
      const read = yield* Tls.readNodeTls(one.dir, 1)
      expect([read.fingerprint, read.cert]).toEqual([Tls.fingerprintOf(fresh.ca), moved.cert])
      expect([fs.existsSync(`${tls}.next`), fs.existsSync(`${tls}.old`)]).toEqual([false, false])
    })
  )
})
