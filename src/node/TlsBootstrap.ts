/**
 * How a joining node gets its certificate from the cluster, on the members' one port beside the API:
 *
 *   GET  /v1/tls/ca           → { ca, proof }                       no token needed
 *   POST /v1/tls/certificate  { node, csr, names }                   Authorization: Bearer <credential>
 *                             → { clusterId, ca, caKey, certificate }
 *   POST /v1/tls/join         { token, node, csr, names }            a join token instead of the secret
 *                             → { clusterId, ca, caKey, certificate, clusterSecret, clusterKeyring }
 *   GET  /v1/tls/keyring       (a member's client certificate and its node credential)
 *                             → { secrets }                         the member's keyring, in order
 *
 * A node holding the cluster secret first fetches the CA without trusting the connection, and trusts
 * it only when `proof` = HMAC-SHA256(cluster secret, "blixard cluster CA\n" + the CA's SHA-256) is
 * right (during a CA rotation `ca` holds both CAs and the SHA-256 is `Tls.bundleFingerprint`'s): only a holder of the secret can make it, so a machine in the middle cannot hand out its own
 * CA. From then on it talks to the member over TLS verified against that CA, and only then sends its
 * node credential (`Auth.nodeCredential`), which must be node `node`'s own, with its certificate
 * request. Any member signs it (each holds the CA's key, `Tls.ts`). Every body is checked against
 * its schema on both sides; a refusal is JSON with its `BLX_` code, as the API's are. Both are raw
 * routes of the API server (`api/RawRoutes.ts`).
 *
 * A node holding a join token (`JoinToken.ts`) instead of the secret checks the offered CA against
 * the SHA-256 the token pins (a mismatch stops it: `BLX_JOIN_TOKEN_CA_MISMATCH`), then, over TLS
 * verified against that CA, presents `<id>.<secret>` with its certificate request. The member checks
 * the request's signature, then has the token consumed through Raft (`ConsumeJoinToken`: one node
 * per token, before its expiry) and only then answers the certificate, the CA's key and the cluster
 * secret (what peer handshakes and node credentials are made from): everything a member holds.
 * Whichever way a node joins, the member records the certificate it signed in the replicated state
 * before it answers (`CertRenewal.recordIssued`), so that removing the node revokes it.
 * The consumption records the SHA-256 of the request's public key: when the answer is lost after
 * the token was consumed, the same node asking again with the same request (it keeps its key and
 * request from before its first attempt) is answered again, until the token expires; anyone else
 * gets `BLX_JOIN_TOKEN_USED`. A member running on the public development secret answers no join
 * (`BLX_CLUSTER_SECRET_REQUIRED`): the joiner would receive a secret everyone knows.
 *
 * With a keyring (`ClusterKeyring.ts`, several secrets during a rotation) a member proves the CA
 * with its first secret and a node trusts a proof made with any of its own; a join token hands out
 * the whole keyring (`clusterKeyring`; `clusterSecret` is its first, for joiners of earlier
 * releases). `GET /v1/tls/keyring` is how a node that joined with a token keeps following the
 * members' keyring (`KeyringSync.ts`): only a caller with a client certificate from the cluster CA,
 * not revoked, and the node credential of the same node gets it, so a machine holding only an old
 * secret (it can make a credential, not a certificate) does not learn the new one.
 *
 * `obtain` tries a list of addresses in turn and is what `--peer` joining calls; discovery (e.g. a
 * tailnet's members) may call it with the addresses it found.
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import { createHash, createHmac, timingSafeEqual, X509Certificate } from "node:crypto"
import type * as http from "node:http"
import * as tls from "node:tls"
import * as https from "node:https"
import type { Authenticate } from "../api/Auth.js"
import { sha256Hex } from "../api/Auth.js"
import { errorResponse, type RawRoute } from "../api/RawRoutes.js"
import type { BlixardError } from "../domain/Errors.js"
import {
  ClusterSecretRequired,
  Forbidden,
  InvalidArgument,
  JoinTokenCaMismatch,
  JoinTokenExpired,
  JoinTokenInvalid,
  JoinTokenUsed,
  TlsInvalid,
  TlsUntrusted,
  Unauthorized,
  Unavailable
} from "../domain/Errors.js"
import { idOfPresented, type JoinTokenId, type JoinTokenInfo, type JoinTokenParts, presented, PresentedJoinToken } from "../domain/JoinToken.js"
import { NodeId } from "../domain/NodeId.js"
import { normalizeSerial } from "../domain/Certificate.js"
import * as Tls from "../net/Tls.js"
import { identityOf } from "../net/TlsIdentity.js"
import * as CertRenewal from "./CertRenewal.js"
import * as ClusterKeyring from "./ClusterKeyring.js"
import { clusterSecretRequired } from "./NodeControlPlane.js"

export const caPath = "/v1/tls/ca"
export const certificatePath = "/v1/tls/certificate"
export const joinPath = "/v1/tls/join"
export const keyringPath = "/v1/tls/keyring"

/** The largest body either endpoint reads. */
const maxBodyBytes = 64 * 1024

export const CaAnswer = Schema.Struct({ ca: Tls.CertificatePem, proof: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/)) })

export const CertificateRequest = Schema.Struct({
  node: NodeId,
  csr: Tls.CsrPem,
  names: Schema.Array(Tls.HostName).pipe(Schema.maxItems(64))
})

export const CertificateAnswer = Schema.Struct({
  clusterId: Tls.ClusterIdText,
  ca: Tls.CertificatePem,
  caKey: Tls.PrivateKeyPem,
  certificate: Tls.CertificatePem
})

export const JoinRequest = Schema.Struct({
  token: PresentedJoinToken,
  node: NodeId,
  csr: Tls.CsrPem,
  names: Schema.Array(Tls.HostName).pipe(Schema.maxItems(64))
})

export const JoinAnswer = Schema.Struct({
  ...CertificateAnswer.fields,
  clusterSecret: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(4096)),
  /** The member's whole keyring, its first being `clusterSecret` (absent from members of earlier releases). */
  clusterKeyring: Schema.optionalWith(ClusterKeyring.Keyring, { exact: true })
})

export const KeyringAnswer = Schema.Struct({ secrets: ClusterKeyring.Keyring })

/** HMAC-SHA256 (hex) binding a cluster secret (a member proves with its first) to the CA with `fingerprint`. */
export const caProof = (clusterSecret: string, fingerprint: string): string =>
  createHmac("sha256", clusterSecret).update(`blixard cluster CA\n${fingerprint}`, "utf8").digest("hex")

const answer = (response: http.ServerResponse, status: number, body: unknown): void => {
  const text = JSON.stringify(body)
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  response.end(text)
}

interface Refusal {
  readonly _tag: string
  readonly code: string
  readonly message: string
  readonly subject?: string | undefined
}

const refuse = (response: http.ServerResponse, status: number, error: Refusal): void =>
  answer(response, status, { _tag: error._tag, code: error.code, message: error.message, ...(error.subject !== undefined ? { subject: error.subject } : {}) })

/** The HTTP status a refusal of the join endpoint answers with. */
const statusOf = (error: Refusal): number => {
  switch (error._tag) {
    case "JoinTokenInvalid":
    case "Unauthorized":
      return 401
    case "Forbidden":
      return 403
    case "JoinTokenUsed":
    case "ClusterSecretRequired":
      return 409
    case "JoinTokenExpired":
      return 410
    case "InvalidArgument":
    case "TlsInvalid":
      return 400
    default:
      return 503
  }
}

export interface HandlerOptions {
  readonly tls: Tls.NodeTls
  /** The SHA-256 of the CA a rotation in progress moves to (`CaRotation.fingerprint`); undefined when none runs. */
  readonly rotatingTo?: (() => string | undefined) | undefined
  /** This node's keyring, read at each request. */
  readonly keyring: ClusterKeyring.LiveKeyring
  /** The revocation list: a revoked client certificate gets no keyring. */
  readonly revoked?: Tls.RevokedCheck | undefined
  /** The keyring is the public development secret: no join is answered (it would hand it out). */
  readonly publicClusterSecret: boolean
  /** The API's authenticator: a node credential proves who asks. */
  readonly authenticate: Authenticate
  /** Uses up a join token through Raft for a node and its key's SHA-256 (the control plane's, which forwards to the leader). */
  readonly consumeJoinToken: (id: JoinTokenId, hash: string, node: NodeId, key: string) => Effect.Effect<JoinTokenInfo, BlixardError>
  /** Records what this node signs in the replicated state before it answers (`CertRenewal.recordIssued`). */
  readonly record: CertRenewal.Recorder
  /** Runs an Effect (signing, consuming) and answers through `then`. */
  readonly run: <A, E>(effect: Effect.Effect<A, E>, then: (result: Either.Either<A, E | TlsInvalid>) => void) => void
}

const decodeRequest = ParseResult.decodeUnknownEither(CertificateRequest, { errors: "all", onExcessProperty: "error" })
const decodeJoinRequest = ParseResult.decodeUnknownEither(JoinRequest, { errors: "all", onExcessProperty: "error" })

/** Reads a JSON body of at most `maxBodyBytes` and hands it to `then`; a bad body is answered 400 or 413. */
const readJson = (request: http.IncomingMessage, response: http.ServerResponse, where: string, then: (body: unknown) => void): void => {
  const chunks: Array<Buffer> = []
  let size = 0
  request.on("data", (chunk: Buffer) => {
    size += chunk.length
    if (size <= maxBodyBytes) chunks.push(chunk)
  })
  request.on("end", () => {
    if (size > maxBodyBytes) return refuse(response, 413, new InvalidArgument({ subject: "body", message: `${where}: the body is larger than ${maxBodyBytes} bytes` }))
    let body: unknown
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"))
    } catch {
      return refuse(response, 400, new InvalidArgument({ subject: "body", message: `${where}: the body is not valid JSON` }))
    }
    then(body)
  })
  request.on("error", () => response.destroy())
}

const noCaKey = (node: number) => ({
  _tag: "Unavailable",
  code: "BLX_UNAVAILABLE",
  message: `this node holds no CA key (it runs with operator-supplied certificates): issue node ${node}'s certificate with the cluster's CA and give it tlsCaFile, tlsCertFile and tlsKeyFile`
})

/**
 * While a CA rotation runs, a member that has not moved to the new CA yet signs no joining node's
 * certificate: it would be of the old CA, which the rotation drops, and the node (holding no copy of
 * the new CA's key) could never move, so the rotation could not finish. The joiner asks the next
 * member (`obtain`); a moved one signs with the new CA, and the node reports itself moved.
 */
const notMovedYet = (options: HandlerOptions, node: number) => {
  const target = options.rotatingTo?.()
  if (target === undefined || options.tls.fingerprint === target) return undefined
  return {
    _tag: "Unavailable",
    code: "BLX_UNAVAILABLE",
    message: `node ${options.tls.node} has not moved to the new cluster CA of the rotation in progress yet (a running member does within seconds), so it signs no certificate for node ${node} now: ask another member, or again shortly`
  }
}

/** The SHA-256 (hex) of a certificate's public key, SubjectPublicKeyInfo DER: who a consumed join token admits again. */
export const publicKeyHashOf = (certificatePem: string): string =>
  createHash("sha256").update(new X509Certificate(certificatePem).publicKey.export({ type: "spki", format: "der" })).digest("hex")

/**
 * `POST /v1/tls/join`: the request's signature is checked (by signing it) before the token is
 * consumed, so a bad request does not use a token up; nothing is answered until it is consumed.
 * The consumption names the request's key, so a retry with the same request is answered again.
 */
const handleJoin = (options: HandlerOptions, request: http.IncomingMessage, response: http.ServerResponse): void => {
  const where = `POST ${joinPath}`
  readJson(request, response, where, (body) => {
    const decoded = decodeJoinRequest(body)
    if (Either.isLeft(decoded)) {
      return refuse(response, 400, new InvalidArgument({ subject: "body", message: `${where}: ${ParseResult.TreeFormatter.formatIssueSync(decoded.left)}` }))
    }
    const asked = decoded.right
    const caKey = options.tls.caKey
    if (caKey === undefined) return answer(response, 503, noCaKey(asked.node))
    const moving = notMovedYet(options, asked.node)
    if (moving !== undefined) return answer(response, 503, moving)
    if (options.publicClusterSecret) return refuse(response, 409, clusterSecretRequired(options.tls.node, `admit node ${asked.node} with a join token`))
    const id = idOfPresented(asked.token)
    const granted = Effect.gen(function* () {
      const certificate = yield* Tls.signRequest({ ca: options.tls.ca, caKey, clusterId: options.tls.clusterId, node: asked.node, csr: asked.csr, names: asked.names })
      yield* options.consumeJoinToken(id, sha256Hex(asked.token), asked.node, publicKeyHashOf(certificate))
      yield* CertRenewal.recordIssued(options.record, certificate, asked.node, "join")
      return certificate
    })
    options.run(granted, (result) =>
      Either.isLeft(result)
        ? refuse(response, statusOf(result.left), result.left)
        : answer(response, 200, { clusterId: options.tls.clusterId, ca: options.tls.ca, caKey, certificate: result.right, clusterSecret: options.keyring.primary, clusterKeyring: options.keyring.secrets })
    )
  })
}

const json = (description: string) => ({ description, content: { "application/json": { schema: { type: "object" } } } })

/** The two endpoints, as routes of the API server. */
export const routes = (options: HandlerOptions): ReadonlyArray<RawRoute> => {
  const ca: RawRoute = {
    method: "GET",
    path: caPath,
    access: undefined,
    operation: {
      tags: ["tls"],
      operationId: "tls.ca",
      description:
        "The cluster's CA certificate and its proof, HMAC-SHA256(cluster secret, 'blixard cluster CA' + newline + the CA's SHA-256): a joining node trusts the CA only if the proof is right. No token.",
      responses: { "200": json("{ ca, proof }") }
    },
    // The CA is read at each request: a CA rotation changes it (both CAs, a bundle, while it lasts).
    handle: (_request, response) => answer(response, 200, { ca: options.tls.ca, proof: caProof(options.keyring.primary, Tls.bundleFingerprint(options.tls.ca)) })
  }
  const certificate: RawRoute = {
    method: "POST",
    path: certificatePath,
    // Authenticated here, not by the server: the credential must be the node's own that the body names.
    access: undefined,
    operation: {
      tags: ["tls"],
      operationId: "tls.certificate",
      description:
        "A joining node's certificate: the body { node, csr, names } is signed by the cluster's CA. Only with that node's own node credential (Bearer blxn_…); answers { clusterId, ca, caKey, certificate }.",
      security: [{ bearer: [] }],
      requestBody: { required: true, content: { "application/json": { schema: { type: "object", required: ["node", "csr", "names"] } } } },
      responses: {
        "200": json("{ clusterId, ca, caKey, certificate }"),
        "400": errorResponse("InvalidArgument, TlsInvalid: the body is malformed or the request cannot be signed", "InvalidArgument"),
        "401": errorResponse("Unauthorized: no valid node credential", "Unauthorized"),
        "403": errorResponse("Forbidden: the credential is not the node's own", "Forbidden"),
        "413": errorResponse(`InvalidArgument: the body is larger than ${maxBodyBytes} bytes`, "InvalidArgument"),
        "503": errorResponse("Unavailable: this node holds no CA key, or the signed certificate could not be recorded in the cluster (it is not handed out)", "Unavailable")
      }
    },
    handle: (request, response) => sign(options, request, response)
  }
  const join: RawRoute = {
    method: "POST",
    path: joinPath,
    // The join token in the body is the credential: checked and consumed through Raft here.
    access: undefined,
    operation: {
      tags: ["tls"],
      operationId: "tls.join",
      description:
        "A new node joins with a join token (blixard cluster token create): the body { token, node, csr, names } presents <id>.<secret>. The certificate request is signed first, then the token is consumed through Raft (single use, before its expiry); only then the answer { clusterId, ca, caKey, certificate, clusterSecret }.",
      requestBody: { required: true, content: { "application/json": { schema: { type: "object", required: ["token", "node", "csr", "names"] } } } },
      responses: {
        "200": json("{ clusterId, ca, caKey, certificate, clusterSecret }"),
        "400": errorResponse("InvalidArgument, TlsInvalid: the body is malformed or the request cannot be signed", "InvalidArgument"),
        "401": errorResponse("JoinTokenInvalid: no such token, or a wrong secret", "JoinTokenInvalid"),
        "409": errorResponse("JoinTokenUsed: the token was used already", "JoinTokenUsed"),
        "410": errorResponse("JoinTokenExpired: the token expired", "JoinTokenExpired"),
        "413": errorResponse(`InvalidArgument: the body is larger than ${maxBodyBytes} bytes`, "InvalidArgument"),
        "503": errorResponse("Unavailable: this node holds no CA key, or the token could not be consumed or the certificate recorded now", "Unavailable")
      }
    },
    handle: (request, response) => handleJoin(options, request, response)
  }
  const keyring: RawRoute = {
    method: "GET",
    path: keyringPath,
    // Authenticated here: the node credential and a client certificate of the same node.
    access: undefined,
    operation: {
      tags: ["tls"],
      operationId: "tls.keyring",
      description:
        "This member's cluster secret keyring, in order (the first in use): how a node that joined with a join token follows a rotation of the cluster secret. Only over mutual TLS with a node's certificate from the cluster CA, not revoked, and that node's own node credential.",
      security: [{ bearer: [] }],
      responses: {
        "200": json("{ secrets }"),
        "401": errorResponse("Unauthorized: no valid node credential", "Unauthorized"),
        "403": errorResponse("Forbidden: no client certificate of the credential's node", "Forbidden")
      }
    },
    handle: (request, response) => handleKeyring(options, request, response)
  }
  return [ca, certificate, join, keyring]
}

/** `GET /v1/tls/keyring`: see the module comment. */
const handleKeyring = (options: HandlerOptions, request: http.IncomingMessage, response: http.ServerResponse): void => {
  const where = `GET ${keyringPath}`
  const principal = options.authenticate(request.headers.authorization, request.socket.remoteAddress)
  if (Either.isLeft(principal)) return refuse(response, 401, principal.left)
  const who = principal.right
  const socket = request.socket
  const cert = socket instanceof tls.TLSSocket && socket.authorized ? socket.getPeerCertificate() : undefined
  const identity = cert === undefined ? undefined : identityOf(cert.subjectaltname)
  const forbid = (why: string) => refuse(response, 403, new Forbidden({ subject: where, message: `${where}: ${why}; a node that joined with a join token asks with its own certificate and node credential` }))
  if (who.kind !== "node") return forbid(`${who.who} is not a node`)
  if (cert === undefined || identity === undefined) return forbid(`node ${who.node} presented no client certificate from this cluster's CA`)
  if (identity.clusterId !== options.tls.clusterId || identity.node !== who.node) return forbid(`the client certificate is node ${identity.node}'s of cluster ${identity.clusterId}, not node ${who.node}'s of ${options.tls.clusterId}`)
  const reason = options.revoked?.(normalizeSerial(cert.serialNumber))
  if (reason !== undefined) return forbid(`node ${who.node}'s certificate is revoked (${reason})`)
  answer(response, 200, { secrets: options.keyring.secrets })
}

const sign = (options: HandlerOptions, request: http.IncomingMessage, response: http.ServerResponse): void => {
  const where = `POST ${certificatePath}`
  const principal = options.authenticate(request.headers.authorization, request.socket.remoteAddress)
  if (Either.isLeft(principal)) return refuse(response, 401, principal.left)
  readJson(request, response, where, (body) => {
    const decoded = decodeRequest(body)
    if (Either.isLeft(decoded)) {
      return refuse(response, 400, new InvalidArgument({ subject: "body", message: `${where}: ${ParseResult.TreeFormatter.formatIssueSync(decoded.left)}` }))
    }
    const asked = decoded.right
    const who = principal.right
    if (who.kind !== "node" || who.node !== asked.node) {
      const caller = who.kind === "node" ? `node ${who.node}` : who.who
      return refuse(response, 403, new Forbidden({ subject: where, message: `${where}: ${caller} may not get node ${asked.node}'s certificate; a node asks for its own, with its node credential` }))
    }
    const caKey = options.tls.caKey
    if (caKey === undefined) return answer(response, 503, noCaKey(asked.node))
    const moving = notMovedYet(options, asked.node)
    if (moving !== undefined) return answer(response, 503, moving)
    options.run(
      Effect.tap(Tls.signRequest({ ca: options.tls.ca, caKey, clusterId: options.tls.clusterId, node: asked.node, csr: asked.csr, names: asked.names }), (certificate) =>
        CertRenewal.recordIssued(options.record, certificate, asked.node, "join")
      ),
      (signed) =>
        Either.isLeft(signed)
          ? refuse(response, statusOf(signed.left), signed.left)
          : answer(response, 200, { clusterId: options.tls.clusterId, ca: options.tls.ca, caKey, certificate: signed.right })
    )
  })
}

// ---------------------------------------------------------------------------------------------
// The joining side
// ---------------------------------------------------------------------------------------------

interface Reply {
  readonly status: number
  readonly body: unknown
}

/** One JSON request over HTTPS; `ca` undefined: the server's certificate is not checked (only for `GET /v1/tls/ca`). */
const requestJson = (
  address: string,
  path: string,
  options: {
    readonly method: "GET" | "POST"
    readonly body?: unknown
    readonly authorization?: string
    readonly ca?: string
    readonly clusterId?: string
    /** A client certificate and its key (PEM), for mutual TLS. */
    readonly client?: { readonly cert: string; readonly key: string }
    readonly timeoutMs: number
  }
): Promise<Reply> =>
  new Promise((resolve, reject) => {
    const body = options.body === undefined ? undefined : JSON.stringify(options.body)
    const request = https.request(
      `https://${address}${path}`,
      {
        method: options.method,
        timeout: options.timeoutMs,
        headers: {
          ...(body !== undefined ? { "content-type": "application/json", "content-length": Buffer.byteLength(body) } : {}),
          ...(options.authorization !== undefined ? { authorization: options.authorization } : {})
        },
        ...(options.ca === undefined
          ? { rejectUnauthorized: false }
          : { ca: options.ca, checkServerIdentity: Tls.checkServerIdentity(options.clusterId ?? "") as never }),
        ...(options.client === undefined ? {} : { cert: options.client.cert, key: options.client.key })
      },
      (response) => {
        const chunks: Array<Buffer> = []
        let size = 0
        response.on("data", (chunk: Buffer) => {
          size += chunk.length
          if (size > maxBodyBytes) return void request.destroy(new Error(`the answer is larger than ${maxBodyBytes} bytes`))
          chunks.push(chunk)
        })
        response.on("end", () => {
          try {
            resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) })
          } catch {
            reject(new Error(`answered HTTP ${response.statusCode ?? "?"} without JSON`))
          }
        })
        response.on("error", reject)
      }
    )
    request.on("timeout", () => request.destroy(new Error(`no answer within ${options.timeoutMs} ms`)))
    request.on("error", reject)
    request.end(body)
  })

export interface ObtainOptions {
  readonly node: number
  /** Members to ask, in turn (`HOST:PORT`). */
  readonly addresses: ReadonlyArray<string>
  /** The node's keyring (`ClusterKeyring.ts`): a CA proof made with any of them is trusted. */
  readonly clusterSecret: ReadonlyArray<string>
  /** The node credential `Auth.nodeCredential(clusterSecret[0], node)`. */
  readonly credential: string
  /** The IP addresses and DNS names the certificate should carry (`Tls.namesFor`). */
  readonly names: ReadonlyArray<string>
  readonly timeoutMs: number
}

export type ObtainError =
  | Unavailable
  | TlsUntrusted
  | TlsInvalid
  | Unauthorized
  | Forbidden
  | InvalidArgument
  | JoinTokenInvalid
  | JoinTokenUsed
  | JoinTokenExpired
  | JoinTokenCaMismatch
  | ClusterSecretRequired

const RefusalBody = Schema.Struct({ code: Schema.String, message: Schema.String })

/** A member's refusal, as the error it names. */
const refusalOf = (address: string, reply: Reply): ObtainError => {
  const decoded = Schema.decodeUnknownOption(RefusalBody)(reply.body)
  const message = decoded._tag === "Some" ? `${address}: ${decoded.value.message}` : `${address} answered HTTP ${reply.status}`
  switch (decoded._tag === "Some" ? decoded.value.code : "") {
    case "BLX_UNAUTHORIZED":
      return new Unauthorized({ subject: address, message })
    case "BLX_FORBIDDEN":
      return new Forbidden({ subject: address, message })
    case "BLX_TLS_INVALID":
      return new TlsInvalid({ subject: address, message })
    case "BLX_INVALID_ARGUMENT":
      return new InvalidArgument({ subject: address, message })
    case "BLX_JOIN_TOKEN_INVALID":
      return new JoinTokenInvalid({ subject: address, message })
    case "BLX_JOIN_TOKEN_USED":
      return new JoinTokenUsed({ subject: address, message })
    case "BLX_JOIN_TOKEN_EXPIRED":
      return new JoinTokenExpired({ subject: address, message })
    case "BLX_CLUSTER_SECRET_REQUIRED":
      return new ClusterSecretRequired({ subject: address, message })
    default:
      return new Unavailable({ subject: address, message })
  }
}

/** How a request to `address` failed: untrusted TLS, or the member unreachable. */
const callFailed = (address: string, e: unknown): Unavailable | TlsUntrusted => {
  const message = e instanceof Error ? e.message : String(e)
  return message.startsWith("BLX_TLS_UNTRUSTED: ")
    ? new TlsUntrusted({ subject: address, message: `${address}: ${message.slice(19)}` })
    : new Unavailable({ subject: address, message: `cannot reach ${address} for a certificate: ${message}` })
}

/** One request to the member at `address`; a failure to reach it is `Unavailable`, a wrong certificate `TlsUntrusted`. */
const callOf = (address: string) => (path: string, request: Parameters<typeof requestJson>[2]) =>
  Effect.tryPromise({ try: () => requestJson(address, path, request), catch: (e) => callFailed(address, e) })

/** The CA the member at `address` offers, unchecked (each caller decides how to trust it). */
const offeredCa = (address: string, timeoutMs: number) =>
  Effect.gen(function* () {
    const offered = yield* callOf(address)(caPath, { method: "GET", timeoutMs })
    if (offered.status !== 200) return yield* refusalOf(address, offered)
    return yield* Schema.decodeUnknown(CaAnswer)(offered.body).pipe(
      Effect.mapError((e) => new TlsUntrusted({ subject: address, message: `${address} offered no usable CA: ${ParseResult.TreeFormatter.formatErrorSync(e)}` }))
    )
  })

/**
 * The cluster CA the member at `address` offers, trusted only when its proof binds it to one of
 * `secrets` (see the module comment), and the cluster it names. No key: what a host that is not a
 * member needs to verify the members.
 */
export const trustedCa = (address: string, secrets: ReadonlyArray<string>, timeoutMs: number): Effect.Effect<{ readonly ca: string; readonly clusterId: string }, ObtainError> =>
  Effect.gen(function* () {
    const ca = yield* offeredCa(address, timeoutMs)
    const offered = Buffer.from(ca.proof, "hex")
    let proven = false
    for (const secret of secrets) {
      const expected = Buffer.from(caProof(secret, Tls.bundleFingerprint(ca.ca)), "hex")
      proven = (expected.length === offered.length && timingSafeEqual(expected, offered)) || proven
    }
    if (!proven) {
      return yield* new TlsUntrusted({
        subject: address,
        message: `${address} offered a CA that its proof does not bind to this node's cluster secret: it is a member of another cluster (another secret), or not a Blixard member; check --peer and the cluster secret file`
      })
    }
    const clusterId = Tls.clusterOfCa(ca.ca)
    if (clusterId === undefined) return yield* new TlsUntrusted({ subject: address, message: `${address} offered a CA that names no Blixard cluster` })
    return { ca: ca.ca, clusterId }
  })

/** Node `node`'s TLS files from the member at `address` (see the module comment). */
export const obtainFrom = (address: string, options: Omit<ObtainOptions, "addresses">): Effect.Effect<Obtained, ObtainError> =>
  Effect.gen(function* () {
    const call = callOf(address)
    const ca = yield* trustedCa(address, options.clusterSecret, options.timeoutMs)
    const clusterId = ca.clusterId
    const request = yield* Tls.createRequest(options.node)
    const signed = yield* call(certificatePath, {
      method: "POST",
      body: { node: options.node, csr: request.csr, names: options.names },
      authorization: `Bearer ${options.credential}`,
      ca: ca.ca,
      clusterId,
      timeoutMs: options.timeoutMs
    })
    if (signed.status !== 200) return yield* refusalOf(address, signed)
    const files = yield* Schema.decodeUnknown(CertificateAnswer)(signed.body).pipe(
      Effect.mapError((e) => new TlsInvalid({ subject: address, message: `${address} answered an unusable certificate: ${ParseResult.TreeFormatter.formatErrorSync(e)}` }))
    )
    if (files.ca !== ca.ca) return yield* new TlsUntrusted({ subject: address, message: `${address} answered with another CA than it offered` })
    const checked = yield* Tls.checkNodeTls({ ca: files.ca, caKey: files.caKey, cert: files.certificate, key: request.key }, options.node, `the certificate from ${address}`)
    return { ...checked, caKey: files.caKey }
  })

/** A joining node's TLS files, the CA's key included (every member keeps it). */
export type Obtained = Tls.NodeTls & { readonly caKey: string }

export interface TokenObtainOptions extends Omit<ObtainOptions, "clusterSecret" | "credential"> {
  readonly token: JoinTokenParts
  /**
   * The node's key and certificate request, made and kept before its first attempt and sent at
   * every attempt: a retry after a lost answer is admitted again only with the same key.
   */
  readonly request: Tls.KeyAndRequest
}

/** What a join token gets a node: its TLS files and the cluster's keyring (its first secret in use). */
export type Admitted = Obtained & { readonly clusterKeyring: ReadonlyArray<string> }

/** Node `node`'s TLS files and the cluster secret from the member at `address`, for a join token (see the module comment). */
export const obtainWithTokenFrom = (address: string, options: Omit<TokenObtainOptions, "addresses">): Effect.Effect<Admitted, ObtainError> =>
  Effect.gen(function* () {
    const ca = yield* offeredCa(address, options.timeoutMs)
    const fingerprint = Tls.fingerprintOf(ca.ca)
    if (fingerprint !== options.token.fingerprint) {
      return yield* new JoinTokenCaMismatch({
        node: NodeId.make(options.node),
        subject: address,
        message: `${address} offered a cluster CA with SHA-256 ${fingerprint}, but the join token pins ${options.token.fingerprint}: either something between this node and ${address} is impersonating the cluster, or the token is of another cluster (or --join names a member of another one). Nothing was sent; check --join and the token (blixard cluster token create prints it against the right cluster)`
      })
    }
    const clusterId = Tls.clusterOfCa(ca.ca)
    if (clusterId === undefined) return yield* new TlsUntrusted({ subject: address, message: `${address} offered a CA that names no Blixard cluster` })
    const request = options.request
    const granted = yield* callOf(address)(joinPath, {
      method: "POST",
      body: { token: presented(options.token), node: options.node, csr: request.csr, names: options.names },
      ca: ca.ca,
      clusterId,
      timeoutMs: options.timeoutMs
    })
    if (granted.status !== 200) return yield* refusalOf(address, granted)
    const files = yield* Schema.decodeUnknown(JoinAnswer)(granted.body).pipe(
      Effect.mapError((e) => new TlsInvalid({ subject: address, message: `${address} answered an unusable certificate: ${ParseResult.TreeFormatter.formatErrorSync(e)}` }))
    )
    if (files.ca !== ca.ca) return yield* new TlsUntrusted({ subject: address, message: `${address} answered with another CA than it offered` })
    const checked = yield* Tls.checkNodeTls({ ca: files.ca, caKey: files.caKey, cert: files.certificate, key: request.key }, options.node, `the certificate from ${address}`)
    return { ...checked, caKey: files.caKey, clusterKeyring: files.clusterKeyring ?? [files.clusterSecret] }
  })

/**
 * The keyring of the member at `address` (`GET /v1/tls/keyring`), asked over mutual TLS with
 * `tls` (this node's certificate, verified against its CA) and the node credential `credential`.
 */
export const fetchKeyring = (
  address: string,
  options: { readonly tls: Pick<Tls.NodeTls, "ca" | "cert" | "key" | "clusterId">; readonly credential: string; readonly timeoutMs: number }
): Effect.Effect<ReadonlyArray<string>, ObtainError> =>
  Effect.gen(function* () {
    const reply = yield* callOf(address)(keyringPath, {
      method: "GET",
      authorization: `Bearer ${options.credential}`,
      ca: options.tls.ca,
      clusterId: options.tls.clusterId,
      client: { cert: options.tls.cert, key: options.tls.key },
      timeoutMs: options.timeoutMs
    })
    if (reply.status !== 200) return yield* refusalOf(address, reply)
    const answered = yield* Schema.decodeUnknown(KeyringAnswer)(reply.body).pipe(
      Effect.mapError((e) => new TlsInvalid({ subject: address, message: `${address} answered an unusable keyring: ${ParseResult.TreeFormatter.formatErrorSync(e)}` }))
    )
    return answered.secrets
  })

/**
 * What `from` gets from the first of `addresses` that gives it. A refusal (wrong secret or token,
 * another cluster) ends the search with that refusal; if none answers, `Unavailable`.
 */
const firstAnswer = <A>(node: number, addresses: ReadonlyArray<string>, from: (address: string) => Effect.Effect<A, ObtainError>): Effect.Effect<A, ObtainError> =>
  Effect.gen(function* () {
    let last: ObtainError = new Unavailable({ subject: "peers", message: `node ${node} has no member to ask for its certificate (give --join or --peer)` })
    for (const address of addresses) {
      const result = yield* Effect.either(from(address))
      if (Either.isRight(result)) return result.right
      if (result.left._tag !== "Unavailable") return yield* result.left
      last = result.left
    }
    return yield* last
  })

/** Node `node`'s TLS files, with the cluster secret (see `obtainFrom`). */
export const obtain = (options: ObtainOptions): Effect.Effect<Obtained, ObtainError> =>
  firstAnswer(options.node, options.addresses, (address) => obtainFrom(address, options))

/** Node `node`'s TLS files and the cluster secret, with a join token (see `obtainWithTokenFrom`). */
export const obtainWithToken = (options: TokenObtainOptions): Effect.Effect<Admitted, ObtainError> =>
  firstAnswer(options.node, options.addresses, (address) => obtainWithTokenFrom(address, options))

/**
 * The cluster whose CA the member at `address` offers, unverified: only to tell a node pointed at
 * another cluster's members what is wrong (it trusts nothing it learns here).
 */
export const offeredCluster = (address: string, timeoutMs: number): Effect.Effect<string | undefined> =>
  Effect.tryPromise(() => requestJson(address, caPath, { method: "GET", timeoutMs })).pipe(
    Effect.map((reply) => {
      const decoded = Schema.decodeUnknownOption(CaAnswer)(reply.body)
      return decoded._tag === "Some" ? Tls.clusterOfCa(decoded.value.ca) : undefined
    }),
    Effect.orElseSucceed(() => undefined)
  )
