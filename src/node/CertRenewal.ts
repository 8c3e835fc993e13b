/**
 * Node certificates are renewed while the node runs, and reported to the cluster:
 *
 *   POST /v1/tls/renew   { csr, names, validityDays? }   over mutual TLS, the node's current certificate
 *                        → { certificate }                as client certificate (no token)
 *
 * A node renews its own certificate at two thirds of its lifetime (`Tls.renewalDue`), from a member
 * (another one first, itself last: any member holds the CA's key). The member signs only for the
 * node its client certificate names, only if that certificate is from the cluster CA, unexpired and
 * not revoked, and only for a current member; the new one lasts the shorter of what the node asks
 * (its `certValidityDays`) and the signer's own setting. The renewing node makes a new key, checks
 * the answer against the CA and its key, writes both atomically (`Tls.writeRenewed`), and swaps them
 * into its `LiveTls`: new connections, both ways, use the new certificate, open ones keep theirs;
 * the node's outgoing API calls (forwarding to the leader, its agent's reports, a VM's log) present
 * it from their next request on (`DaemonParts.outgoingTls`).
 *
 * During a CA rotation (`CaRotation.ts`) a renewal is kept only if it is of the CA the node signs
 * with at that moment: members move to the new CA one by one, and may answer with either.
 *
 * The signing member records the certificate in the replicated state before it answers
 * (`recordIssued`; a join's signer does the same), and each node reports the certificate it holds
 * (`RecordCertificate`) at start and after each renewal: so removing a node revokes every
 * certificate it was issued (`ClusterState`), reported or not. The certificate's expiry is
 * the gauge `blixard_tls_certificate_expiry_timestamp_seconds`, for alerting.
 */
import { Duration, Effect, Either, ParseResult, Schema } from "effect"
import type * as http from "node:http"
import { X509Certificate } from "node:crypto"
import * as https from "node:https"
import * as tls from "node:tls"
import type { RawRoute } from "../api/RawRoutes.js"
import { errorResponse } from "../api/RawRoutes.js"
import type { CertificateReport } from "../api/ControlPlane.js"
import type { IssuedCertificate } from "../api/Server.js"
import { CertificateSerial, type CertificateIssue, normalizeSerial, revokedAdvice } from "../domain/Certificate.js"
import type { BlixardError } from "../domain/Errors.js"
import { CertificateRevoked, Forbidden, InvalidArgument, TlsInvalid, TlsUntrusted, Unauthorized, Unavailable } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import * as Metrics from "../metrics/Metrics.js"
import * as Tls from "../net/Tls.js"

export const renewPath = "/v1/tls/renew"

const day = 24 * 60 * 60 * 1000
const maxBodyBytes = 64 * 1024

export const ValidityDays = Schema.Int.pipe(Schema.between(1, 3650))

export const RenewRequest = Schema.Struct({
  csr: Tls.CsrPem,
  names: Schema.Array(Tls.HostName).pipe(Schema.maxItems(64)),
  validityDays: Schema.optionalWith(ValidityDays, { exact: true })
})

export const RenewAnswer = Schema.Struct({ certificate: Tls.CertificatePem })

const decodeRequest = ParseResult.decodeUnknownEither(RenewRequest, { errors: "all", onExcessProperty: "error" })

type Refusal = Unauthorized | Forbidden | CertificateRevoked | InvalidArgument | TlsInvalid | Unavailable

const send = (response: http.ServerResponse, status: number, body: unknown): void => {
  if (response.headersSent || response.destroyed) return
  const text = JSON.stringify(body)
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  response.end(text)
}

const statusOf: Record<Refusal["_tag"], number> = {
  Unauthorized: 401,
  Forbidden: 403,
  CertificateRevoked: 403,
  InvalidArgument: 400,
  TlsInvalid: 400,
  Unavailable: 503
}

const refuse = (response: http.ServerResponse, error: Refusal): void =>
  send(response, statusOf[error._tag], { _tag: error._tag, code: error.code, message: error.message, ...(error.subject !== undefined ? { subject: error.subject } : {}) })

export interface RouteOptions {
  /** This node's CA, and its key (absent with operator-supplied files: nothing can be signed). */
  readonly ca: string
  readonly caKey: string | undefined
  readonly clusterId: string
  /** The longest a certificate this node signs may last (`certValidityDays`). */
  readonly validityMs: number
  readonly isMember: (node: number) => boolean
  readonly revoked: Tls.RevokedCheck
  /** Records what this node signs in the replicated state (`recordIssued`), before it answers. */
  readonly record: Recorder
  /** Runs the signing and answers through `then`. */
  readonly run: <A, E>(effect: Effect.Effect<A, E>, then: (result: Either.Either<A, E>) => void) => void
}

/** The node the caller's client certificate proves, or why it proves none that may renew. */
export const callerOf = (request: http.IncomingMessage, options: Pick<RouteOptions, "clusterId" | "isMember" | "revoked">): Either.Either<number, Refusal> => {
  const socket = request.socket
  const unauthorized = (message: string) =>
    Either.left(new Unauthorized({ subject: renewPath, message: `POST ${renewPath}: ${message}; a node renews with its current certificate as client certificate` }))
  if (!(socket instanceof tls.TLSSocket)) return unauthorized("the connection is not TLS")
  const cert = socket.getPeerCertificate()
  if (cert === null || Object.keys(cert).length === 0) return unauthorized("no client certificate")
  if (!socket.authorized) return unauthorized(`the client certificate is not valid for this cluster (${String(socket.authorizationError)})`)
  const identity = Tls.identityOf(cert.subjectaltname)
  if (identity === undefined || identity.clusterId !== options.clusterId) return unauthorized("the client certificate names no node of this cluster")
  const serial = normalizeSerial(cert.serialNumber)
  const reason = options.revoked(serial)
  if (reason !== undefined) {
    return Either.left(
      new CertificateRevoked({
        node: NodeId.make(identity.node),
        subject: serial,
        message: `node ${identity.node}'s certificate ${serial} is revoked (${reason}): it is not renewed; ${revokedAdvice(identity.node)}`
      })
    )
  }
  if (!options.isMember(identity.node)) {
    return Either.left(
      new Forbidden({
        node: NodeId.make(identity.node),
        subject: renewPath,
        message: `node ${identity.node} is not a member of the cluster: its certificate is not renewed; ${revokedAdvice(identity.node)}`
      })
    )
  }
  return Either.right(identity.node)
}

const handle = (options: RouteOptions, request: http.IncomingMessage, response: http.ServerResponse): void => {
  const caller = callerOf(request, options)
  if (Either.isLeft(caller)) {
    request.resume()
    return refuse(response, caller.left)
  }
  const node = caller.right
  const chunks: Array<Buffer> = []
  let size = 0
  request.on("data", (chunk: Buffer) => {
    size += chunk.length
    if (size <= maxBodyBytes) chunks.push(chunk)
  })
  request.on("error", () => response.destroy())
  request.on("end", () => {
    const where = `POST ${renewPath}`
    if (size > maxBodyBytes) return refuse(response, new InvalidArgument({ subject: "body", message: `${where}: the body is larger than ${maxBodyBytes} bytes` }))
    let body: unknown
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"))
    } catch {
      return refuse(response, new InvalidArgument({ subject: "body", message: `${where}: the body is not valid JSON` }))
    }
    const decoded = decodeRequest(body)
    if (Either.isLeft(decoded)) return refuse(response, new InvalidArgument({ subject: "body", message: `${where}: ${ParseResult.TreeFormatter.formatIssueSync(decoded.left)}` }))
    const caKey = options.caKey
    if (caKey === undefined) {
      return refuse(
        response,
        new Unavailable({ subject: renewPath, message: `this node holds no CA key (it runs with operator-supplied certificates): renew node ${node}'s certificate with the cluster's CA by hand` })
      )
    }
    const asked = decoded.right
    const validityMs = Math.min(options.validityMs, (asked.validityDays ?? Infinity) * day)
    const signing = Tls.signRequest({ ca: options.ca, caKey, clusterId: options.clusterId, node, csr: asked.csr, names: asked.names, validityMs })
    options.run(Effect.tap(signing, (certificate) => recordIssued(options.record, certificate, node, "renewal")), (signed) =>
      Either.isLeft(signed) ? refuse(response, signed.left) : send(response, 200, { certificate: signed.right })
    )
  })
}

/** Records a certificate in the replicated state (the control plane's `recordCertificate`, which forwards to the leader). */
export type Recorder = (report: CertificateReport) => Effect.Effect<unknown, BlixardError>

/**
 * Records a certificate this member just signed for `node` (`RecordCertificate` with `issued`; the
 * certificate goes along as proof for the leader's API, `Server.reportRefusal`), before it is handed
 * out: so every certificate the CA issues to a node is known, and removing the node revokes it even
 * if the node never reported it. When it cannot be recorded, nothing is handed out: the node asks again.
 */
export const recordIssued = (
  record: Recorder,
  certificate: string,
  node: number,
  issued: CertificateIssue
): Effect.Effect<void, Forbidden | CertificateRevoked | Unavailable> => {
  const facts = Tls.factsOf(certificate)
  const report = { node: NodeId.make(node), serial: CertificateSerial.make(facts.serial), fingerprint: facts.fingerprint, notAfter: facts.notAfter, issued, certificate }
  return record(report).pipe(
    Effect.asVoid,
    Effect.mapError((e) =>
      e._tag === "Forbidden" || e._tag === "CertificateRevoked"
        ? e
        : new Unavailable({
            node: NodeId.make(node),
            subject: facts.serial,
            message: `the certificate signed for node ${node} (${issued}) could not be recorded in the cluster, so it is not handed out (${e.code}: ${e.message}); node ${node} asks again, which works once the cluster has a leader`
          })
    )
  )
}

/**
 * `Server.ApiOptions.issuedCertificate`: the facts of a certificate the CA `ca()` (one PEM or
 * several) issued to a node of cluster `clusterId`, or why it is not one.
 */
export const issuedBy =
  (ca: () => string, clusterId: string) =>
  (pem: string): Either.Either<IssuedCertificate, string> => {
    let cert: X509Certificate
    try {
      cert = new X509Certificate(pem)
    } catch {
      return Either.left("it is not a PEM certificate")
    }
    const authorities = ca().match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
    if (!authorities.some((authority) => verifies(cert, authority))) return Either.left("it was not issued by the cluster's CA")
    const identity = Tls.identityOf(cert.subjectAltName)
    if (identity === undefined || identity.clusterId !== clusterId) return Either.left("it names no node of this cluster")
    const facts = Tls.factsOf(pem)
    return Either.right({ node: identity.node, serial: facts.serial, fingerprint: facts.fingerprint, notAfter: facts.notAfter })
  }

const verifies = (cert: X509Certificate, authorityPem: string): boolean => {
  try {
    const authority = new X509Certificate(authorityPem)
    return cert.checkIssued(authority) && cert.verify(authority.publicKey)
  } catch {
    return false
  }
}

/** `POST /v1/tls/renew`, as a route of the API server. */
export const route = (options: RouteOptions): RawRoute => ({
  method: "POST",
  path: renewPath,
  // The client certificate is the credential: checked by the handler.
  access: undefined,
  operation: {
    tags: ["tls"],
    operationId: "tls.renew",
    description:
      "A member renews its own certificate: over mutual TLS with its current certificate (from the cluster CA, unexpired, not revoked, of a current member) as client certificate, the body { csr, names, validityDays? } is signed for the node that certificate names and recorded in the cluster's state. Answers { certificate }.",
    security: [],
    requestBody: { required: true, content: { "application/json": { schema: { type: "object", required: ["csr", "names"] } } } },
    responses: {
      "200": { description: "{ certificate }", content: { "application/json": { schema: { type: "object" } } } },
      "400": errorResponse("InvalidArgument, TlsInvalid: the body is malformed or the request cannot be signed", "InvalidArgument"),
      "401": errorResponse("Unauthorized: no client certificate of a node of this cluster, or an expired one", "Unauthorized"),
      "403": errorResponse("CertificateRevoked, Forbidden: the certificate is revoked, or its node is not a member", "CertificateRevoked"),
      "413": errorResponse(`InvalidArgument: the body is larger than ${maxBodyBytes} bytes`, "InvalidArgument"),
      "503": errorResponse("Unavailable: this node holds no CA key, or the signed certificate could not be recorded in the cluster (it is not handed out)", "Unavailable")
    }
  },
  handle: (request, response) => handle(options, request, response)
})

// ---------------------------------------------------------------------------------------------
// The renewing side
// ---------------------------------------------------------------------------------------------

const RefusalBody = Schema.Struct({ code: Schema.String, message: Schema.String })

/** One renewal request to the member at `address`, over mutual TLS with `current`'s certificate. */
const ask = (address: string, current: Tls.LiveTls, body: typeof RenewRequest.Encoded, timeoutMs: number) =>
  Effect.async<{ readonly status: number; readonly body: unknown }, Unavailable | TlsUntrusted>((resume) => {
    const text = JSON.stringify(body)
    const request = https.request(
      `https://${address}${renewPath}`,
      {
        method: "POST",
        timeout: timeoutMs,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(text) },
        ca: current.ca,
        cert: current.cert,
        key: current.key,
        checkServerIdentity: Tls.checkServerIdentity(current.clusterId) as never
      },
      (response) => {
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("end", () => {
          try {
            resume(Effect.succeed({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) }))
          } catch {
            resume(Effect.fail(new Unavailable({ subject: address, message: `${address} answered HTTP ${response.statusCode ?? "?"} without JSON` })))
          }
        })
        response.on("error", (e) => resume(Effect.fail(new Unavailable({ subject: address, message: `${address}: ${e.message}` }))))
      }
    )
    request.on("timeout", () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)))
    request.on("error", (e) =>
      resume(
        Effect.fail(
          e.message.startsWith("BLX_TLS_UNTRUSTED") ? new TlsUntrusted({ subject: address, message: `${address}: ${e.message}` }) : new Unavailable({ subject: address, message: `${address}: ${e.message}` })
        )
      )
    )
    request.end(text)
    return Effect.sync(() => request.destroy())
  })

export interface RenewOptions {
  readonly node: number
  readonly current: Tls.LiveTls
  readonly names: ReadonlyArray<string>
  readonly validityMs: number
  readonly timeoutMs: number
}

/** A renewed certificate and its new key from the member at `address`, checked against the CA. */
export const renewFrom = (address: string, options: RenewOptions): Effect.Effect<{ readonly cert: string; readonly key: string }, BlixardError | TlsInvalid> =>
  Effect.gen(function* () {
    const request = yield* Tls.createRequest(options.node)
    const reply = yield* ask(
      address,
      options.current,
      { csr: request.csr, names: [...options.names], validityDays: Math.max(1, Math.floor(options.validityMs / day)) },
      options.timeoutMs
    )
    if (reply.status !== 200) {
      const refusal = Schema.decodeUnknownOption(RefusalBody)(reply.body)
      const message = refusal._tag === "Some" ? `${address}: ${refusal.value.message}` : `${address} answered HTTP ${reply.status}`
      if (refusal._tag === "Some" && refusal.value.code === "BLX_CERT_REVOKED") return yield* new CertificateRevoked({ node: NodeId.make(options.node), subject: address, message })
      if (reply.status === 403) return yield* new Forbidden({ node: NodeId.make(options.node), subject: address, message })
      return yield* new Unavailable({ node: NodeId.make(options.node), subject: address, message })
    }
    const answer = yield* Schema.decodeUnknown(RenewAnswer)(reply.body).pipe(
      Effect.mapError((e) => new TlsInvalid({ node: NodeId.make(options.node), subject: address, message: `${address} answered an unusable certificate: ${ParseResult.TreeFormatter.formatErrorSync(e)}` }))
    )
    const checked = yield* Tls.checkNodeTls({ ca: options.current.ca, cert: answer.certificate, key: request.key }, options.node, `the renewed certificate from ${address}`)
    return { cert: checked.cert, key: checked.key }
  })

export interface MaintainOptions extends RenewOptions {
  readonly dataDir: string
  /** Members to renew from, best first (the node itself may be last). */
  readonly addresses: Effect.Effect<ReadonlyArray<string>>
  /** Reports the certificate this node holds (`RecordCertificate`, through the leader). */
  readonly record: (facts: Tls.CertificateFacts) => Effect.Effect<unknown, BlixardError>
  /** How long to wait before trying again after a failed renewal or report (default a minute). */
  readonly retryMs?: number | undefined
}

/** Renews the certificate once, from the first member that signs it; writes it and swaps it in. */
export const renewNow = (options: MaintainOptions): Effect.Effect<Tls.CertificateFacts, BlixardError | TlsInvalid> =>
  Effect.gen(function* () {
    const addresses = yield* options.addresses
    let last: BlixardError | TlsInvalid = new Unavailable({ node: NodeId.make(options.node), message: `node ${options.node} knows no member to renew its certificate from` })
    for (const address of addresses) {
      const renewed = yield* Effect.either(renewFrom(address, options))
      if (Either.isLeft(renewed)) {
        last = renewed.left
        // A revoked certificate is revoked everywhere: asking the next member changes nothing.
        if (last._tag === "CertificateRevoked") break
        continue
      }
      // During a CA rotation a member may sign with the other CA: only a certificate of the CA this
      // node signs with now is kept (one of the old CA would be cut off when the rotation finishes).
      const signer = Tls.splitPem(options.current.ca)[0] ?? options.current.ca
      if (Tls.issuerIn(new X509Certificate(renewed.right.cert), signer) === undefined) {
        last = new Unavailable({
          node: NodeId.make(options.node),
          subject: address,
          message: `${address} signed node ${options.node}'s renewal with another CA than the one it uses now (a CA rotation is under way); asking again later`
        })
        continue
      }
      yield* Tls.writeRenewed(options.dataDir, renewed.right, options.node)
      options.current.replace(renewed.right.cert, renewed.right.key)
      const facts = Tls.factsOf(renewed.right.cert)
      yield* Effect.logInfo(
        `node ${options.node}: renewed its certificate from ${address}: serial ${facts.serial}, valid until ${new Date(facts.notAfter).toISOString()} (${Tls.tlsDir(options.dataDir)}); new connections use it`
      )
      return facts
    }
    return yield* Effect.fail(last)
  })

/**
 * Runs for the node's lifetime: reports its certificate, renews it when due (retrying every
 * `retryMs` until it succeeds), and keeps the expiry gauge current.
 */
export const maintain = (options: MaintainOptions): Effect.Effect<never> =>
  Effect.gen(function* () {
    const retry = Duration.millis(options.retryMs ?? 60_000)
    let facts = Tls.factsOf(options.current.cert)
    let recorded: string | undefined
    for (;;) {
      // A CA rotation may have replaced the certificate meanwhile (`CaRotation.ts`).
      facts = Tls.factsOf(options.current.cert)
      Metrics.tlsCertificateExpiry.unsafeUpdate(facts.notAfter / 1000, Metrics.noTags)
      if (recorded !== facts.serial) {
        const reported = yield* Effect.either(options.record(facts))
        if (Either.isRight(reported)) recorded = facts.serial
        else yield* Effect.logWarning(`node ${options.node} could not report its certificate ${facts.serial} to the cluster yet: ${reported.left.message}; retrying`)
      }
      const now = Date.now()
      const due = Tls.renewalDue(facts, options.validityMs)
      if (now < due) {
        // Woken at least hourly: a clock that jumps, or a report to retry, is noticed.
        const wait = recorded === facts.serial ? Math.min(due - now, 60 * 60 * 1000) : Math.min(due - now, Duration.toMillis(retry))
        yield* Effect.sleep(Duration.millis(wait))
        continue
      }
      const renewed = yield* Effect.either(renewNow(options))
      if (Either.isRight(renewed)) {
        Metrics.tlsRenewals.unsafeUpdate(1, Metrics.tags(["result", "ok"]))
        facts = renewed.right
        continue
      }
      Metrics.tlsRenewals.unsafeUpdate(1, Metrics.tags(["result", "failed"]))
      const left = Math.max(0, facts.notAfter - Date.now())
      yield* Effect.logWarning(
        `node ${options.node} could not renew its certificate (serial ${facts.serial}, expires ${new Date(facts.notAfter).toISOString()}, in ${Math.floor(left / 3_600_000)} h): ${renewed.left.code}: ${renewed.left.message}; retrying in ${Duration.format(retry)}`
      )
      yield* Effect.sleep(retry)
    }
  })
