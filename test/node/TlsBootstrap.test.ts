/**
 * The join-token side of the TLS bootstrap over real HTTPS on loopback: a member's `/v1/tls/join`
 * (with the token's consumption faked) and a joining node's `obtainWithTokenFrom`.
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { randomUUID, X509Certificate } from "node:crypto"
import * as https from "node:https"
import type { AddressInfo } from "node:net"
import * as Auth from "../../src/api/Auth.js"
import { JoinTokenUsed } from "../../src/domain/Errors.js"
import { JoinTokenId, JoinTokenInfo, presented } from "../../src/domain/JoinToken.js"
import type { NodeId } from "../../src/domain/NodeId.js"
import * as Tls from "../../src/net/Tls.js"
import * as TlsBootstrap from "../../src/node/TlsBootstrap.js"

const clusterSecret = "the-cluster-secret"
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

/** A member serving the bootstrap endpoints; `consume` plays the Raft consumption. */
const member = async (consume: (id: JoinTokenId, hash: string, node: NodeId) => Effect.Effect<JoinTokenInfo, JoinTokenUsed>) => {
  const tls = await memberTls()
  const seen: Array<string> = []
  const consumed: Array<[string, string, number]> = []
  const routes = TlsBootstrap.routes({
    tls,
    clusterSecret,
    authenticate: Auth.makeAuthenticate({}),
    consumeJoinToken: (id, hash, node) => {
      consumed.push([id, hash, node])
      return consume(id, hash, node)
    },
    run: (effect, then) => void Effect.runPromise(Effect.either(effect)).then(then)
  })
  const server = https.createServer({ cert: tls.cert, key: tls.key }, (request, response) => {
    seen.push(`${request.method} ${request.url}`)
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
  return { tls, seen, consumed, address: `127.0.0.1:${(server.address() as AddressInfo).port}` }
}

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
      TlsBootstrap.obtainWithTokenFrom(m.address, { node: 4, token: { ...token, fingerprint: m.tls.fingerprint }, names: ["127.0.0.1"], timeoutMs: 5_000 })
    )
    expect(admitted.clusterSecret).toBe(clusterSecret)
    expect(admitted.caKey).toBe(m.tls.caKey)
    expect(admitted.clusterId).toBe(m.tls.clusterId)
    expect(Tls.identityOf(new X509Certificate(admitted.cert).subjectAltName)).toEqual({ clusterId: m.tls.clusterId, node: 4 })
    // The member was shown <id>.<secret> and consumed it as its hash, for node 4.
    expect(m.consumed).toEqual([[token.id, Auth.sha256Hex(presented(token)), 4]])
  })

  it("a CA other than the token pins stops the joiner before it sends anything (BLX_JOIN_TOKEN_CA_MISMATCH)", async () => {
    const m = await member(used)
    const other = "0".repeat(64)
    const result = await Effect.runPromise(
      Effect.either(TlsBootstrap.obtainWithTokenFrom(m.address, { node: 4, token: { ...token, fingerprint: other }, names: [], timeoutMs: 5_000 }))
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
      Effect.either(TlsBootstrap.obtainWithTokenFrom(m.address, { node: 5, token: { ...token, fingerprint: m.tls.fingerprint }, names: [], timeoutMs: 5_000 }))
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
