/**
 * A member's part in rotating the cluster CA (`domain/CaRotation.ts` has the replicated side).
 *
 * `blixard cluster ca rotate` reaches the leader, which `prepare`s the rotation: it makes a new CA
 * for the same cluster (`Tls.createCa`), reads each current member's certificate off a TLS
 * connection to its address (verified against the CA, naming that node, not revoked; its own it
 * has), and seals the new CA's key to each (`net/KeySeal.ts`). Only the sealed copies enter the
 * Raft log (`StartCaRotation`). A member that does not answer stops the rotation before anything is
 * proposed: the key can reach only the members it was sealed to.
 *
 * Every member then `reconcile`s, every second, its files with the replicated state:
 *
 *   rotation in progress, the new CA not trusted yet     → trust it beside its own (`ca.crt`, a
 *       bundle: the CA it signs with first), so members on either CA talk whatever happens next,
 *       and move only on the next pass (a second later), once the others trust it too;
 *   rotation in progress, this node still on the old CA  → open its sealed copy with its own key,
 *       make a new key and a certificate of the new CA for it, write CA bundle (new, then old), the
 *       new CA's key and the certificate at once (`Tls.writeRotated`), swap them into its `LiveTls`
 *       (new connections, both ways, and the API use them), report the certificate
 *       (`RecordCertificate`) and that it moved (`CaRotationMoved`);
 *   rotation in progress, moved but not reported          → report again (until it is applied);
 *   no rotation, the CA in force is this node's, but it still trusts another one → drop it (`Tls.writeTrust`).
 *
 * The state, not the log entry, drives it: a member that was down, or crashed half-way, catches up
 * when it is back (the swap of files is crash-safe, and the sealed copy stays in the state until
 * the rotation finishes). While it lasts, both CAs are trusted everywhere, so members on either talk.
 * Once it is finished no connection made under the old CA lives on: dropping the old CA from a
 * node's trust closes the open connections whose certificate it no longer covers (`PeerTransport`:
 * clients of the node's port, peers and API callers, at once; its own connections to peers within
 * a second), and they come back, if at all, under the new one.
 *
 * Limits, said where they bite: a member whose certificate key changed after the copy was sealed to
 * it (a renewal in that instant) cannot open it and says so; a node that joins during a rotation
 * gets its certificate from a member that moved already (one that has not refuses to sign,
 * `TlsBootstrap.ts`), so it starts on the new CA and reports itself moved; a host follows the CA
 * the members offer, fetched every 10 s (`HostDaemon.ts`), one with `tlsCaFile` needs the new
 * file before the rotation is finished.
 */
import { Effect, Either } from "effect"
import * as tls from "node:tls"
import type { CaRotation } from "../domain/CaRotation.js"
import * as C from "../domain/Command.js"
import { trusted } from "../domain/Decode.js"
import type { BlixardError } from "../domain/Errors.js"
import { TlsInvalid, Unavailable } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import * as KeySeal from "../net/KeySeal.js"
import * as Tls from "../net/Tls.js"

/** The certificate the member at `address` presents, if it is node `node`'s of this cluster (verified against `live`'s CA). */
export const peerCertificate = (address: string, live: Tls.LiveTls, node: number, revoked: Tls.RevokedCheck, timeoutMs: number): Effect.Effect<string, Unavailable> =>
  Effect.async<string, Unavailable>((resume) => {
    const at = address.lastIndexOf(":")
    const host = address.slice(0, at).replace(/^\[|\]$/g, "")
    const fail = (why: string) => resume(Effect.fail(new Unavailable({ node: NodeId.make(node), subject: address, message: `node ${node} at ${address}: ${why}` })))
    const socket = tls.connect({
      host,
      port: Number(address.slice(at + 1)),
      ca: live.ca,
      cert: live.cert,
      key: live.key,
      checkServerIdentity: Tls.checkServerIdentity(live.clusterId, node, revoked) as never,
      ALPNProtocols: ["http/1.1"]
    })
    const timer = setTimeout(() => {
      socket.destroy()
      fail(`no TLS answer within ${timeoutMs} ms`)
    }, timeoutMs)
    socket.once("secureConnect", () => {
      clearTimeout(timer)
      const raw = socket.getPeerCertificate().raw
      socket.end()
      resume(Effect.succeed(`-----BEGIN CERTIFICATE-----\n${raw.toString("base64").match(/.{1,64}/g)!.join("\n")}\n-----END CERTIFICATE-----\n`))
    })
    socket.once("error", (e) => {
      clearTimeout(timer)
      fail(e.message)
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      socket.destroy()
    })
  })

export interface PrepareOptions {
  readonly self: number
  readonly live: Tls.LiveTls
  /** The current members and their addresses. */
  readonly members: ReadonlyMap<number, string>
  readonly revoked: Tls.RevokedCheck
  readonly timeoutMs: number
}

/** The `StartCaRotation` a leader proposes: a new CA, its key sealed to each current member. */
export const prepare = (options: PrepareOptions): Effect.Effect<C.StartCaRotation, BlixardError> =>
  Effect.gen(function* () {
    const { live, self } = options
    const caKey = live.caKey
    if (caKey === undefined) {
      return yield* new Unavailable({
        node: NodeId.make(self),
        message: `node ${self} runs with operator-supplied certificates (tlsCaFile, tlsCertFile, tlsKeyFile) and holds no CA key: rotate that CA with the tools that made it`
      })
    }
    const ids = [...options.members.keys()].sort((a, b) => a - b)
    const certificates = yield* Effect.forEach(
      ids,
      (id): Effect.Effect<Either.Either<string, Unavailable>> =>
        id === self ? Effect.succeed(Either.right(live.cert)) : Effect.either(peerCertificate(options.members.get(id)!, live, id, options.revoked, options.timeoutMs)),
      { concurrency: "unbounded" }
    )
    const missing = certificates.flatMap((c) => (Either.isLeft(c) ? [c.left.message] : []))
    if (missing.length > 0) {
      return yield* new Unavailable({
        node: NodeId.make(self),
        subject: "members",
        message: `the new CA's key is sealed to every member, so each must answer; ${missing.join("; ")}. Start the members that are down, or remove those that are gone (blixard cluster leave --id N), then rotate again; nothing was changed`
      })
    }
    const ca = yield* Tls.createCa(live.clusterId, new Date())
    const fingerprint = Tls.fingerprintOf(ca.ca)
    const keys = ids.map((id, i) => KeySeal.seal(ca.caKey, id, Either.getOrThrow(certificates[i]!), KeySeal.caKeyContext(live.clusterId, id, fingerprint)))
    const cross = yield* Tls.crossSign(ca.ca, { ca: live.ca, caKey }).pipe(
      Effect.mapError((e) => new Unavailable({ node: NodeId.make(self), subject: "CA", message: `node ${self}: ${e.message}; nothing was changed` }))
    )
    if (cross === undefined) {
      yield* Effect.logWarning(
        `node ${self}: the cluster's CA ${live.fingerprint.slice(0, 16)}… was made by an earlier version and may certify no other CA, so the members on the new CA cannot be verified by a client trusting only the old one: give such clients (a copied ca.crt, hosts with tlsCaFile) a ca.crt holding both CAs now`
      )
    }
    return new C.StartCaRotation({ ca: ca.ca, fingerprint, previous: live.fingerprint, keys, ...(cross !== undefined ? { cross } : {}) }, trusted)
  })

/** The bundle a member on the new CA trusts: the new CA, then every other it trusted. */
export const bundleWith = (newCa: string, trust: string): string => {
  const fingerprint = Tls.fingerprintOf(newCa)
  return Tls.bundleOf(newCa, ...Tls.splitPem(trust).filter((pem) => Tls.fingerprintOf(pem) !== fingerprint))
}

/** This member's files of the new CA, from its sealed copy: the bundle, the new CA's key, a certificate of it and its key. */
export const moveTo = (rotation: CaRotation, live: Tls.LiveTls, node: number, names: ReadonlyArray<string>, validityMs: number) =>
  Effect.gen(function* () {
    const invalid = (message: string) => new TlsInvalid({ node: NodeId.make(node), subject: rotation.fingerprint, message })
    const sealed = rotation.keys.find((k) => k.node === node)
    if (sealed === undefined) {
      return yield* invalid(
        `node ${node} has no copy of the new CA's key (it joined after the rotation started): remove it (blixard cluster leave --id ${node}), empty its data directory and join it again with a new join token`
      )
    }
    const opened = KeySeal.open(sealed, live.key, KeySeal.caKeyContext(live.clusterId, node, rotation.fingerprint))
    if (Either.isLeft(opened)) {
      return yield* invalid(`node ${node} cannot move to the new CA: ${opened.left}; if its key changed since (a renewal), remove and rejoin it, or start another rotation after this one`)
    }
    const request = yield* Tls.createRequest(node)
    const cert = yield* Tls.signRequest({ ca: rotation.ca, caKey: opened.right, clusterId: live.clusterId, node, csr: request.csr, names, validityMs })
    const files = { ca: bundleWith(rotation.ca, live.ca), caKey: opened.right, cert, key: request.key }
    // The same checks as at start: the new files must be whole and this node's before they replace the old.
    yield* Tls.checkNodeTls(files, node, `node ${node}'s certificate of the new CA`)
    return files
  })

export interface ReconcileOptions {
  readonly node: number
  readonly dataDir: string
  readonly live: Tls.LiveTls
  readonly names: ReadonlyArray<string>
  readonly validityMs: number
  /** The replicated rotation in progress, and the CA in force. */
  readonly state: () => { readonly rotation: CaRotation | undefined; readonly inForce: string }
  readonly record: (facts: Tls.CertificateFacts) => Effect.Effect<unknown, BlixardError>
  readonly moved: (fingerprint: string) => Effect.Effect<unknown, BlixardError>
}

/** One pass of the member's side (see the module comment); fails with what stops it, to be logged and retried. */
export const reconcile = (options: ReconcileOptions): Effect.Effect<void, BlixardError | TlsInvalid> =>
  Effect.gen(function* () {
    const { live, node } = options
    const { rotation, inForce } = options.state()
    if (rotation !== undefined) {
      const trusted = Tls.splitPem(live.ca).map((pem) => Tls.fingerprintOf(pem))
      if (!trusted.includes(rotation.fingerprint)) {
        const both = Tls.bundleOf(live.ca, rotation.ca)
        yield* Tls.writeTrust(options.dataDir, both, node)
        live.trust(both)
        yield* Effect.logInfo(`node ${node}: a CA rotation started: it trusts the new cluster CA ${rotation.fingerprint.slice(0, 16)}… beside the old one`)
        // It moves on the next pass: meanwhile the other members (and a CLI reading this ca.crt) trust the new CA too.
        return
      }
      if (live.fingerprint !== rotation.fingerprint) {
        const files = yield* moveTo(rotation, live, node, options.names, options.validityMs)
        yield* Tls.writeRotated(options.dataDir, files, node)
        live.rotate(files)
        const facts = Tls.factsOf(files.cert)
        yield* Effect.logInfo(
          `node ${node}: moved to the new cluster CA ${rotation.fingerprint.slice(0, 16)}… (certificate ${facts.serial} in ${Tls.tlsDir(options.dataDir)}); it trusts the old CA too until the rotation is finished`
        )
      }
      // Moved: its port serves the new CA certified by the old one after its certificate (see `crossSign`).
      live.serveAfter(live.fingerprint === rotation.fingerprint ? rotation.cross : undefined)
      if (live.fingerprint === rotation.fingerprint && !rotation.moved.includes(NodeId.make(node))) {
        yield* options.record(Tls.factsOf(live.cert))
        yield* options.moved(rotation.fingerprint)
      }
      return
    }
    live.serveAfter(undefined)
    if (inForce === "" || live.fingerprint !== inForce || Tls.splitPem(live.ca).length <= 1) return
    const only = Tls.splitPem(live.ca)[0]!
    yield* Tls.writeTrust(options.dataDir, only, node)
    live.trust(only)
    yield* Effect.logInfo(`node ${node}: the CA rotation is finished: it trusts only the cluster CA ${inForce.slice(0, 16)}… now`)
  })
