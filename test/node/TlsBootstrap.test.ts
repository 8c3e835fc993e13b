/**
 * The join-token side of the TLS bootstrap over real HTTPS on loopback: a member's `/v1/tls/join`
 * (with the token's consumption faked, or applied to a real `ClusterState`) and a joining node's
 * `obtainWithTokenFrom` and start-up (`StartTls.prepare`).
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit, Schema } from "effect"
import { createHash, createPrivateKey, createPublicKey, randomUUID, X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import * as https from "node:https"
import * as path from "node:path"
import type { AddressInfo } from "node:net"
import * as Auth from "../../src/api/Auth.js"
import type { CertificateReport } from "../../src/api/ControlPlane.js"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import * as C from "../../src/domain/Command.js"
import type { BlixardError } from "../../src/domain/Errors.js"
import { JoinTokenUsed, NotLeader } from "../../src/domain/Errors.js"
import { JoinTokenId, JoinTokenInfo, presented } from "../../src/domain/JoinToken.js"
import type { NodeId } from "../../src/domain/NodeId.js"
import * as Tls from "../../src/net/Tls.js"
import { NodeConfig } from "../../src/node/Config.js"
import * as ClusterKeyring from "../../src/node/ClusterKeyring.js"
import * as StartTls from "../../src/node/StartTls.js"
import * as CertRenewal from "../../src/node/CertRenewal.js"
import * as TlsBootstrap from "../../src/node/TlsBootstrap.js"
import { tempDir } from "../support/TempDir.js"

const clusterSecret = "the-cluster-secret"
/** The member's keyring: in use, and the next one (a rotation under way): a join token hands out both. */
const keyring = [clusterSecret, "the-next-cluster-secret"]
const token = { id: JoinTokenId.make("0123456789abcdef"), secret: "s".repeat(43) }

/** A member's TLS: a new cluster CA and node 1's certificate from it. */
const memberTls = async (): Promise<Tls.NodeTls> => {
  const clusterId = randomUUID()
  const ca = await Effect.runPromise(Tls.createCa(clusterId))
  const request = await Effect.runPromise(Tls.createRequest(1))
  const cert = await Effect.runPromise(Tls.signRequest({ ...ca, clusterId, node: 1, csr: request.csr, names: ["127.0.0.1"] }))
  return { ...ca, cert, key: request.key, clusterId, node: 1, fingerprint: Tls.fingerprintOf(ca.ca) }
}

const servers: Array<https.Server> = []
afterEach(() => {
  for (const server of servers.splice(0)) server.close()
})

type Consume = (id: JoinTokenId, hash: string, node: NodeId, key: string) => Effect.Effect<JoinTokenInfo, BlixardError>

/**
 * A member serving the bootstrap endpoints; `consume` plays the Raft consumption. `dropAnswers`
 * join answers are lost after the token was consumed (the connection is cut instead).
 */
const member = async (
  consume: Consume,
  options: {
    readonly publicClusterSecret?: boolean
    readonly dropAnswers?: number
    readonly record?: CertRenewal.Recorder
    readonly authenticate?: Auth.Authenticate
    readonly rotatingTo?: (own: Tls.NodeTls) => string | undefined
  } = {}
) => {
  const tls = await memberTls()
  const seen: Array<string> = []
  const recorded: Array<CertificateReport> = []
  const consumed: Array<[string, string, number]> = []
  const keys: Array<string> = []
  let drops = options.dropAnswers ?? 0
  const routes = TlsBootstrap.routes({
    tls,
    ...(options.rotatingTo !== undefined ? { rotatingTo: () => options.rotatingTo!(tls) } : {}),
    keyring: new ClusterKeyring.LiveKeyring(keyring, undefined, "file"),
    publicClusterSecret: options.publicClusterSecret ?? false,
    authenticate: options.authenticate ?? Auth.makeAuthenticate({}),
    consumeJoinToken: (id, hash, node, key) => {
      consumed.push([id, hash, node])
      keys.push(key)
      return consume(id, hash, node, key)
    },
    record: options.record ?? ((report) => Effect.sync(() => recorded.push(report))),
    run: (effect, then) => void Effect.runPromise(Effect.either(effect)).then(then)
  })
  // Client certificates are asked for, not required (as the API server does): the keyring route checks them.
  const server = https.createServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: false }, (request, response) => {
    seen.push(`${request.method} ${request.url}`)
    if (request.url === TlsBootstrap.joinPath && drops > 0) {
      drops -= 1
      response.end = (() => {
        request.socket.destroy()
        return response
      }) as never
    }
    // The TLS routes take no path parameters and authenticate their callers themselves.
    const route = routes.find((r) => r.method === request.method && r.path === (request.url ?? "/").split("?")[0])
    if (route === undefined) {
      response.writeHead(404)
      response.end()
      return
    }
    route.handle(request, response, undefined as never)
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return { tls, seen, consumed, keys, recorded, address: `127.0.0.1:${(server.address() as AddressInfo).port}` }
}

/** The token's consumption applied to a real replicated state (as every replica applies it). */
const replicated = (ttlMs = 60_000) => {
  const state = new ClusterState()
  let index = 0
  const apply = (command: C.Command) => state.apply(++index, new C.CommandEnvelope({ command, proposedAt: Date.now() }))
  apply(new C.CreateJoinToken({ id: token.id, hash: Auth.sha256Hex(presented(token)), ttlMs }))
  const consume: Consume = (id, hash, node, key) => {
    const result = apply(new C.ConsumeJoinToken({ id, hash, node, key }))
    return Either.isRight(result) ? Effect.succeed(result.right.joinToken!) : Effect.fail(result.left)
  }
  return { state, consume }
}

const newRequest = (node: number) => Effect.runPromise(Tls.createRequest(node))

const used = (id: JoinTokenId, _hash: string, node: NodeId) =>
  Effect.succeed(new JoinTokenInfo({ id, createdAt: 0, expiresAt: 1, usedBy: node, usedAt: 0 }))

const post = (address: string, ca: string, body: unknown): Promise<{ status: number; text: string }> =>
  new Promise((resolve, reject) => {
    const text = JSON.stringify(body)
    const request = https.request(
      `https://${address}${TlsBootstrap.joinPath}`,
      { method: "POST", ca, checkServerIdentity: () => undefined, headers: { "content-type": "application/json" } },
      (response) => {
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("end", () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }))
      }
    )
    request.on("error", reject)
    request.end(text)
  })

describe("joining with a join token", () => {
  it("the member answers the certificate, the CA's key and the cluster secret once the token is consumed", async () => {
    const m = await member(used)
    const admitted = await Effect.runPromise(
      TlsBootstrap.obtainWithTokenFrom(m.address, { node: 4, token: { ...token, fingerprint: m.tls.fingerprint }, request: await newRequest(4), names: ["127.0.0.1"], timeoutMs: 5_000 })
    )
    expect(admitted.clusterKeyring).toEqual(keyring)
    expect(admitted.caKey).toBe(m.tls.caKey)
    expect(admitted.clusterId).toBe(m.tls.clusterId)
    expect(Tls.identityOf(new X509Certificate(admitted.cert).subjectAltName)).toEqual({ clusterId: m.tls.clusterId, node: 4 })
    // The member was shown <id>.<secret> and consumed it as its hash, for node 4.
    expect(m.consumed).toEqual([[token.id, Auth.sha256Hex(presented(token)), 4]])
    expect(m.keys).toEqual([TlsBootstrap.publicKeyHashOf(admitted.cert)])
    // Recorded by the member as part of signing, with the certificate as proof, before it answered.
    const facts = Tls.factsOf(admitted.cert)
    expect(m.recorded).toEqual([{ node: 4, serial: facts.serial, fingerprint: facts.fingerprint, notAfter: facts.notAfter, issued: "join", certificate: admitted.cert }])
  })

  it("a certificate the member cannot record is not handed out (503): the joiner asks again", async () => {
    const m = await member(used, { record: () => Effect.fail(new NotLeader({ message: "no leader yet" })) })
    const request = await Effect.runPromise(Tls.createRequest(6))
    const answer = await post(m.address, m.tls.ca, { token: presented(token), node: 6, csr: request.csr, names: [] })
    expect(answer.status).toBe(503)
    expect(JSON.parse(answer.text)).toMatchObject({ code: "BLX_UNAVAILABLE", message: expect.stringMatching(/signed for node 6 \(join\) could not be recorded in the cluster, so it is not handed out \(BLX_NOT_LEADER: no leader yet\)/) })
    expect(answer.text).not.toContain("CERTIFICATE")
    expect(answer.text).not.toContain(clusterSecret)
  })

  it("a CA other than the token pins stops the joiner before it sends anything (BLX_JOIN_TOKEN_CA_MISMATCH)", async () => {
    const m = await member(used)
    const other = "0".repeat(64)
    const result = await Effect.runPromise(
      Effect.either(TlsBootstrap.obtainWithTokenFrom(m.address, { node: 4, token: { ...token, fingerprint: other }, request: await newRequest(4), names: [], timeoutMs: 5_000 }))
    )
    expect(Either.isLeft(result) && result.left).toMatchObject({ code: "BLX_JOIN_TOKEN_CA_MISMATCH" })
    expect(Either.isLeft(result) && result.left.message).toContain(m.tls.fingerprint)
    expect(m.seen).toEqual([`GET ${TlsBootstrap.caPath}`])
    expect(m.consumed).toEqual([])
  })

  it("a refused consumption answers its code and nothing else: no certificate, no key, no secret", async () => {
    const m = await member((id) => Effect.fail(new JoinTokenUsed({ subject: id, message: `join token ${id} was already used by node 2` })))
    const request = await Effect.runPromise(Tls.createRequest(5))
    const answer = await post(m.address, m.tls.ca, { token: presented(token), node: 5, csr: request.csr, names: [] })
    expect(answer.status).toBe(409)
    expect(JSON.parse(answer.text)).toEqual({ _tag: "JoinTokenUsed", code: "BLX_JOIN_TOKEN_USED", message: `join token ${token.id} was already used by node 2`, subject: token.id })
    expect(answer.text).not.toContain(clusterSecret)
    expect(answer.text).not.toContain("PRIVATE KEY")
    expect(answer.text).not.toContain("CERTIFICATE")
    // The joiner sees the same refusal, by its code.
    const result = await Effect.runPromise(
      Effect.either(TlsBootstrap.obtainWithTokenFrom(m.address, { node: 5, token: { ...token, fingerprint: m.tls.fingerprint }, request, names: [], timeoutMs: 5_000 }))
    )
    expect(Either.isLeft(result) && result.left).toMatchObject({ code: "BLX_JOIN_TOKEN_USED" })
  })

  it("a malformed request is refused (400) without consuming the token", async () => {
    const m = await member(used)
    for (const body of [
      { token: "K10abc", node: 5, csr: "x", names: [] },
      { token: presented(token), node: 0, csr: "x", names: [] },
      { token: presented(token), node: 5, csr: "not a request", names: [] },
      { token: presented(token), node: 5, csr: "x", names: [], extra: true }
    ]) {
      const answer = await post(m.address, m.tls.ca, body)
      expect(answer.status).toBe(400)
      expect(JSON.parse(answer.text)).toMatchObject({ code: "BLX_INVALID_ARGUMENT" })
    }
    expect(m.consumed).toEqual([])
  })
})

/** The SHA-256 of a request's public key (SubjectPublicKeyInfo DER), from its private key. */
const keyOf = (request: Tls.KeyAndRequest): string =>
  createHash("sha256").update(createPublicKey(createPrivateKey(request.key)).export({ type: "spki", format: "der" })).digest("hex")

describe("joining while a CA rotation runs", () => {
  it("a member not yet on the new CA signs nothing (503) and consumes nothing; one on it answers", async () => {
    const join = async (m: Awaited<ReturnType<typeof member>>) =>
      Effect.runPromise(
        Effect.either(
          TlsBootstrap.obtainWithTokenFrom(m.address, { node: 4, token: { ...token, fingerprint: m.tls.fingerprint }, request: await newRequest(4), names: ["127.0.0.1"], timeoutMs: 5_000 })
        )
      )
    const behind = await member(used, { rotatingTo: () => "f1".repeat(32) })
    const refused = await join(behind)
    expect(Either.isLeft(refused) && `${refused.left.code}: ${refused.left.message}`).toMatch(
      /^BLX_UNAVAILABLE: .*node 1 has not moved to the new cluster CA of the rotation in progress yet .* signs no certificate for node 4 now: ask another member/
    )
    expect([behind.consumed, behind.recorded]).toEqual([[], []])
    // A member whose CA is the rotation's new one signs.
    const moved = await member(used, { rotatingTo: (own) => own.fingerprint })
    expect(Either.isRight(await join(moved))).toBe(true)
    expect(moved.consumed).toHaveLength(1)
  })
})

describe("a join whose answer is lost after the token was consumed", () => {
  it("is answered again when the same node retries with the same token and key; another key or node is BLX_JOIN_TOKEN_USED", async () => {
    const r = replicated()
    const m = await member(r.consume, { dropAnswers: 1 })
    const request = await newRequest(4)
    const options = { node: 4, token: { ...token, fingerprint: m.tls.fingerprint }, request, names: ["127.0.0.1"], timeoutMs: 5_000 }
    const lost = await Effect.runPromise(Effect.either(TlsBootstrap.obtainWithTokenFrom(m.address, options)))
    // The joiner saw the connection cut (what it retries), but the token is used, for node 4 and its key.
    expect(Either.isLeft(lost) && lost.left).toMatchObject({ code: "BLX_UNAVAILABLE" })
    const used = r.state.joinTokens.get(token.id)
    expect(used).toMatchObject({ usedBy: 4, usedKey: keyOf(request) })
    expect(m.keys).toEqual([keyOf(request)])

    // Another key (a joiner that made a new one, or anyone else holding the token) gets nothing.
    for (const other of [{ ...options, request: await newRequest(4) }, { ...options, node: 5 }]) {
      const refused = await Effect.runPromise(Effect.either(TlsBootstrap.obtainWithTokenFrom(m.address, other)))
      expect(Either.isLeft(refused) && refused.left).toMatchObject({ code: "BLX_JOIN_TOKEN_USED" })
    }

    // The same node with the same request is answered, and the token's record is unchanged.
    const admitted = await Effect.runPromise(TlsBootstrap.obtainWithTokenFrom(m.address, options))
    expect(admitted.clusterKeyring).toEqual(keyring)
    expect(admitted.key).toBe(request.key)
    expect(Tls.identityOf(new X509Certificate(admitted.cert).subjectAltName)).toEqual({ clusterId: m.tls.clusterId, node: 4 })
    expect(r.state.joinTokens.get(token.id)).toEqual(used)
  })

  it("a joiner killed after its token was consumed starts again with the key it kept, and joins", async () => {
    const r = replicated()
    const m = await member(r.consume, { dropAnswers: 1 })
    const dataDir = tempDir("join-retry")
    const config = Schema.decodeUnknownSync(NodeConfig)({ id: 4, bind: "127.0.0.1:7004", dataDir })
    const start = (peers: StartTls.StartOptions["peers"]) =>
      Effect.runPromiseExit(
        StartTls.prepare({ config, fresh: true, founding: false, knownCluster: undefined, clusterSecret: ["unused"], peers, joinToken: { ...token, fingerprint: m.tls.fingerprint } })
      )
    // The first start asks once (its answer is lost) and is killed before its retry.
    let asked = 0
    const killed = await start(Effect.suspend(() => (++asked === 1 ? Effect.succeed([{ address: m.address }]) : Effect.interrupt)))
    expect(Exit.isInterrupted(killed)).toBe(true)
    const kept = path.join(dataDir, StartTls.joinRequestFileName)
    expect(fs.statSync(kept).mode & 0o777).toBe(0o600)
    const keptKey = JSON.parse(fs.readFileSync(kept, "utf8")).key as string
    expect(r.state.joinTokens.get(token.id)).toMatchObject({ usedBy: 4, usedKey: keyOf({ key: keptKey, csr: "" }) })
    expect(Tls.hasTlsFiles(dataDir)).toBe(false)

    // Started again with the same token, it is admitted: its certificate is for the key it kept.
    const joined = await start(Effect.succeed([{ address: m.address }]))
    expect(Exit.isSuccess(joined) && joined.value?.key).toBe(keptKey)
    expect(fs.readFileSync(path.join(dataDir, ClusterKeyring.receivedFileName), "utf8")).toBe(keyring.map((s) => `${s}\n`).join(""))
    expect(fs.readFileSync(path.join(Tls.tlsDir(dataDir), Tls.keyFileName), "utf8")).toBe(keptKey)
    // The key lives in the tls directory now; the kept request is gone.
    expect(fs.existsSync(kept)).toBe(false)
    expect(m.consumed.length).toBe(2)
  })
})

describe("a member running on the public development secret", () => {
  it("answers no join (BLX_CLUSTER_SECRET_REQUIRED, 409), consumes nothing, and the joiner stops instead of retrying", async () => {
    const m = await member(used, { publicClusterSecret: true })
    const request = await newRequest(4)
    const answer = await post(m.address, m.tls.ca, { token: presented(token), node: 4, csr: request.csr, names: [] })
    expect(answer.status).toBe(409)
    const body = JSON.parse(answer.text)
    expect(body).toMatchObject({ _tag: "ClusterSecretRequired", code: "BLX_CLUSTER_SECRET_REQUIRED", subject: "clusterSecretFile" })
    expect(body.message).toMatch(/public development cluster secret.*--cluster-secret-file/)
    expect(answer.text).not.toContain(clusterSecret)
    expect(answer.text).not.toContain("PRIVATE KEY")
    expect(m.consumed).toEqual([])
    const result = await Effect.runPromise(
      Effect.either(TlsBootstrap.obtainWithTokenFrom(m.address, { node: 4, token: { ...token, fingerprint: m.tls.fingerprint }, request, names: [], timeoutMs: 5_000 }))
    )
    expect(Either.isLeft(result) && result.left).toMatchObject({ code: "BLX_CLUSTER_SECRET_REQUIRED" })
  })
})

describe("keyrings (a rotation of the cluster secret under way)", () => {
  const next = keyring[1]!
  it("the member proves the CA with its first secret; a node trusts a proof made with any of its own", async () => {
    const m = await member(used)
    for (const secrets of [[clusterSecret], ["some-other-cluster-secret", clusterSecret]]) {
      expect((await Effect.runPromise(TlsBootstrap.trustedCa(m.address, secrets, 5_000))).clusterId).toBe(m.tls.clusterId)
    }
    // A node holding only the member's second secret: the proof is not made with it.
    const refused = await Effect.runPromise(Effect.either(TlsBootstrap.trustedCa(m.address, [next], 5_000)))
    expect(Either.isLeft(refused) && refused.left).toMatchObject({ code: "BLX_TLS_UNTRUSTED" })
  })

  it("GET /v1/tls/keyring answers the keyring only to a node's own certificate with its own node credential", async () => {
    const m = await member(used, { authenticate: Auth.makeAuthenticate({ clusterSecret: () => keyring }) })
    const request = await newRequest(4)
    const cert = await Effect.runPromise(Tls.signRequest({ ca: m.tls.ca, caKey: m.tls.caKey!, clusterId: m.tls.clusterId, node: 4, csr: request.csr, names: ["127.0.0.1"] }))
    const four = { ca: m.tls.ca, cert, key: request.key, clusterId: m.tls.clusterId }
    const fetch = (tls: typeof four, credential: string) => Effect.runPromise(Effect.either(TlsBootstrap.fetchKeyring(m.address, { tls, credential, timeoutMs: 5_000 })))
    // With either secret's credential (a node still on the old one learns the new keyring).
    expect(await fetch(four, Auth.nodeCredential(clusterSecret, 4))).toEqual(Either.right(keyring))
    expect(await fetch(four, Auth.nodeCredential(next, 4))).toEqual(Either.right(keyring))
    // A credential of a secret the member does not hold; another node's credential; no certificate of that node.
    expect(await fetch(four, Auth.nodeCredential("not-the-cluster-secret", 4))).toMatchObject(Either.left({ code: "BLX_UNAUTHORIZED" }))
    expect(await fetch(four, Auth.nodeCredential(clusterSecret, 5))).toMatchObject(Either.left({ code: "BLX_FORBIDDEN" }))
    const selfSigned = await Effect.runPromise(Tls.createCa(m.tls.clusterId))
    const foreign = await Effect.runPromise(Tls.signRequest({ ...selfSigned, clusterId: m.tls.clusterId, node: 4, csr: request.csr, names: [] }))
    const refused = await fetch({ ...four, cert: foreign }, Auth.nodeCredential(clusterSecret, 4))
    expect(refused).toMatchObject(Either.left({ code: "BLX_FORBIDDEN" }))
    expect(JSON.stringify(refused)).not.toContain(next)
  })
})
