/**
 * How a joining node gets its certificate from the cluster, on the members' one port beside the API:
 *
 *   GET  /v1/tls/ca           → { ca, proof }                       no token needed
 *   POST /v1/tls/certificate  { node, csr, names }                   Authorization: Bearer <credential>
 *                             → { clusterId, ca, caKey, certificate }
 *
 * A node holding the cluster secret first fetches the CA without trusting the connection, and trusts
 * it only when `proof` = HMAC-SHA256(cluster secret, "blixard cluster CA\n" + the CA's SHA-256) is
 * right: only a holder of the secret can make it, so a machine in the middle cannot hand out its own
 * CA. From then on it talks to the member over TLS verified against that CA, and only then sends its
 * node credential (`Auth.nodeCredential`), which must be node `node`'s own, with its certificate
 * request. Any member signs it (each holds the CA's key, `Tls.ts`). Every body is checked against
 * its schema on both sides; a refusal is JSON with its `BLX_` code, as the API's are.
 *
 * `obtain` tries a list of addresses in turn and is what `--peer` joining calls; discovery (e.g. a
 * tailnet's members) may call it with the addresses it found.
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import { createHmac, timingSafeEqual } from "node:crypto"
import type * as http from "node:http"
import * as https from "node:https"
import type { Authenticate } from "../api/Auth.js"
import { Forbidden, InvalidArgument, TlsInvalid, TlsUntrusted, Unauthorized, Unavailable } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import * as Tls from "../net/Tls.js"

export const caPath = "/v1/tls/ca"
export const certificatePath = "/v1/tls/certificate"

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

/** HMAC-SHA256 (hex) binding the cluster secret to the CA with `fingerprint`. */
export const caProof = (clusterSecret: string, fingerprint: string): string =>
  createHmac("sha256", clusterSecret).update(`blixard cluster CA\n${fingerprint}`, "utf8").digest("hex")

const answer = (response: http.ServerResponse, status: number, body: unknown): void => {
  const text = JSON.stringify(body)
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  response.end(text)
}

const refuse = (response: http.ServerResponse, status: number, error: InvalidArgument | Unauthorized | Forbidden | TlsInvalid): void =>
  answer(response, status, { _tag: error._tag, code: error.code, message: error.message, ...(error.subject !== undefined ? { subject: error.subject } : {}) })

export interface HandlerOptions {
  readonly tls: Tls.NodeTls
  readonly clusterSecret: string
  /** The API's authenticator: a node credential proves who asks. */
  readonly authenticate: Authenticate
  /** Runs the signing (an Effect) and answers through `then`. */
  readonly run: <A>(effect: Effect.Effect<A, TlsInvalid>, then: (result: Either.Either<A, TlsInvalid>) => void) => void
}

const decodeRequest = ParseResult.decodeUnknownEither(CertificateRequest, { errors: "all", onExcessProperty: "error" })

/** The endpoints' handler: true when it answered the request (its path is one of them). */
export const makeHandler = (options: HandlerOptions) => {
  const proof = caProof(options.clusterSecret, options.tls.fingerprint)
  return (request: http.IncomingMessage, response: http.ServerResponse): boolean => {
    const url = request.url ?? "/"
    const path = url.split("?")[0]
    if (path === caPath && request.method === "GET") {
      answer(response, 200, { ca: options.tls.ca, proof })
      return true
    }
    if (path !== certificatePath) return false
    const where = `${request.method ?? "?"} ${certificatePath}`
    if (request.method !== "POST") {
      refuse(response, 404, new InvalidArgument({ subject: where, message: `${where}: no such endpoint (POST it)` }))
      return true
    }
    const principal = options.authenticate(request.headers.authorization, request.socket.remoteAddress)
    if (Either.isLeft(principal)) {
      refuse(response, 401, principal.left)
      return true
    }
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
      if (caKey === undefined) {
        return answer(response, 503, {
          _tag: "Unavailable",
          code: "BLX_UNAVAILABLE",
          message: `this node holds no CA key (it runs with operator-supplied certificates): issue node ${asked.node}'s certificate with the cluster's CA and give it tlsCaFile, tlsCertFile and tlsKeyFile`
        })
      }
      options.run(
        Tls.signRequest({ ca: options.tls.ca, caKey, clusterId: options.tls.clusterId, node: asked.node, csr: asked.csr, names: asked.names }),
        (signed) =>
          Either.isLeft(signed)
            ? refuse(response, 400, signed.left)
            : answer(response, 200, { clusterId: options.tls.clusterId, ca: options.tls.ca, caKey, certificate: signed.right })
      )
    })
    request.on("error", () => response.destroy())
    return true
  }
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
          : { ca: options.ca, checkServerIdentity: Tls.checkServerIdentity(options.clusterId ?? "") as never })
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
  readonly clusterSecret: string
  /** The node credential `Auth.nodeCredential(clusterSecret, node)`. */
  readonly credential: string
  /** The IP addresses and DNS names the certificate should carry (`Tls.namesFor`). */
  readonly names: ReadonlyArray<string>
  readonly timeoutMs: number
}

export type ObtainError = Unavailable | TlsUntrusted | TlsInvalid | Unauthorized | Forbidden | InvalidArgument

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

/**
 * The cluster CA the member at `address` offers, trusted only when its proof binds it to
 * `clusterSecret` (see the module comment), and the cluster it names. No key: what a host that is
 * not a member needs to verify the members.
 */
export const trustedCa = (address: string, clusterSecret: string, timeoutMs: number): Effect.Effect<{ readonly ca: string; readonly clusterId: string }, ObtainError> =>
  Effect.gen(function* () {
    const offered = yield* Effect.tryPromise({ try: () => requestJson(address, caPath, { method: "GET", timeoutMs }), catch: (e) => callFailed(address, e) })
    if (offered.status !== 200) return yield* refusalOf(address, offered)
    const ca = yield* Schema.decodeUnknown(CaAnswer)(offered.body).pipe(
      Effect.mapError((e) => new TlsUntrusted({ subject: address, message: `${address} offered no usable CA: ${ParseResult.TreeFormatter.formatErrorSync(e)}` }))
    )
    const expected = Buffer.from(caProof(clusterSecret, Tls.fingerprintOf(ca.ca)), "hex")
    if (!timingSafeEqual(expected, Buffer.from(ca.proof, "hex"))) {
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
    const call = (path: string, request: Parameters<typeof requestJson>[2]) =>
      Effect.tryPromise({ try: () => requestJson(address, path, request), catch: (e) => callFailed(address, e) })
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

/**
 * Node `node`'s TLS files from the first of `addresses` that gives them. A refusal (wrong secret,
 * another cluster) ends the search with that refusal; if none answers, `Unavailable`.
 */
export const obtain = (options: ObtainOptions): Effect.Effect<Obtained, ObtainError> =>
  Effect.gen(function* () {
    let last: ObtainError = new Unavailable({ subject: "peers", message: `node ${options.node} has no member to ask for its certificate (give --peer)` })
    for (const address of options.addresses) {
      const result = yield* Effect.either(obtainFrom(address, options))
      if (Either.isRight(result)) return result.right
      if (result.left._tag !== "Unavailable") return yield* result.left
      last = result.left
    }
    return yield* last
  })

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
