/**
 * TLS itself, fuzzed (part of `npm run bench -- fuzz`): generated inputs thrown at the one port of a
 * real `blixard node` serving TLS (its default), one at a time:
 *
 * - `clientHello`: raw bytes where a TLS ClientHello belongs: garbage, a TLS record header claiming
 *   any length over any body, and a real ClientHello (recorded from Node's own client) truncated
 *   anywhere or with bytes overwritten.
 * - `plaintext`: plain HTTP (generated method, path, headers, body; upgrades to `/raft` too) sent
 *   to the TLS port: the node must not answer it as HTTP.
 * - `peerCertificate`: a websocket upgrade to `/raft` whose handshake is valid (signed with the
 *   cluster secret, from a sender to the node), over TLS that presents no client certificate, a
 *   certificate from another CA (naming this cluster's id or another), one of this cluster's CA for
 *   another node than the handshake claims, or a self-signed one: all must be refused.
 *
 * Checked: the node never crashes; no bad certificate is accepted; no plaintext request is
 * answered as HTTP; every `checkEvery` inputs and at the end the node's term, leader, members and
 * cluster id are unchanged and its commit index has not moved back; at the end it still takes a
 * write. Frames behind a valid mutual TLS connection and the API over HTTPS are fuzzed by
 * bench/peerFuzz.ts and bench/fuzz.ts run against the same kind of node (`startFuzzNode` with `tls`).
 */
import { Effect } from "effect"
import * as net from "node:net"
import * as tls from "node:tls"
import fc from "fast-check"
import { WebSocket } from "ws"
import { deriveKey, sign, toQuery } from "../src/net/PeerAuth.js"
import * as Tls from "../src/net/Tls.js"
import { type KeyPair, type PeerTarget, sameState, senderIds } from "./peerFuzz.js"

export interface TlsFuzzResult {
  readonly name: string
  readonly seed: number
  readonly inputs: number
  readonly byKind: Record<string, number>
  /** Upgrades with a bad certificate the node refused, and those it accepted (must be 0). */
  readonly refusedCertificates: number
  readonly acceptedBadCertificates: number
  /** Plaintext requests the node answered as HTTP (must be 0). */
  readonly plaintextAnswered: number
  readonly stateChanges: number
  readonly nodeAlive: boolean
  readonly servesWrites: boolean
  readonly seconds: number
  readonly inputsPerSecond: number
  readonly failures: ReadonlyArray<string>
}

/** The certificates a connection may present that must not get it through to the peer endpoint. */
export interface BadCertificates {
  /** Of another CA, naming this cluster's id. */
  readonly otherCaSameCluster: KeyPair
  /** Of another CA and cluster. */
  readonly otherCluster: KeyPair
  /** Self-signed (a CA certificate presented as a client certificate). */
  readonly selfSigned: KeyPair
}

type CertificateCase = "none" | "otherCaSameCluster" | "otherCluster" | "selfSigned" | "otherNode"

type TlsInput =
  | { readonly kind: "clientHello"; readonly what: string; readonly bytes: Uint8Array }
  | { readonly kind: "plaintext"; readonly text: string }
  | { readonly kind: "peerCertificate"; readonly certificate: CertificateCase; readonly from: number; readonly presented: number }

/** A node certificate of a new CA for `clusterId` (another CA than the node's). */
const foreignCertificate = (clusterId: string, node: number) =>
  Effect.gen(function* () {
    const ca = yield* Tls.createCa(clusterId)
    const request = yield* Tls.createRequest(node)
    const cert = yield* Tls.signRequest({ ...ca, clusterId, node, csr: request.csr, names: ["127.0.0.1"] })
    return { cert, key: request.key, ca }
  })

/** Certificates no member holds: see `BadCertificates`. */
export const badCertificates = (clusterId: string): Promise<BadCertificates> =>
  Effect.runPromise(
    Effect.gen(function* () {
      const sameCluster = yield* foreignCertificate(clusterId, 2)
      const otherCluster = yield* foreignCertificate("00000000-0000-4000-8000-000000000000", 2)
      return {
        otherCaSameCluster: { cert: sameCluster.cert, key: sameCluster.key },
        otherCluster: { cert: otherCluster.cert, key: otherCluster.key },
        selfSigned: { cert: sameCluster.ca.ca, key: sameCluster.ca.caKey }
      }
    })
  )

/** Certificates of the cluster CA for the fuzzers' senders (`PeerTarget.tls`). */
export const senderCertificates = (ca: { readonly ca: string; readonly caKey: string; readonly clusterId: string }): Promise<ReadonlyMap<number, KeyPair>> =>
  Effect.runPromise(
    Effect.forEach(senderIds, (node) =>
      Effect.gen(function* () {
        const request = yield* Tls.createRequest(node)
        const cert = yield* Tls.signRequest({ ...ca, node, csr: request.csr, names: ["127.0.0.1"] })
        return [node, { cert, key: request.key }] as const
      })
    ).pipe(Effect.map((pairs) => new Map(pairs)))
  )

/** The first bytes Node's TLS client sends: a real ClientHello, to truncate and mutate. */
export const recordClientHello = (): Promise<Uint8Array> =>
  new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.once("data", (chunk: Buffer) => {
        resolve(new Uint8Array(chunk))
        socket.destroy()
        server.close()
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const client = tls.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port, rejectUnauthorized: false })
      client.on("error", () => {})
    })
    server.on("error", reject)
  })

const clientHelloArb = (hello: Uint8Array): fc.Arbitrary<TlsInput> =>
  fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 512 }).map((bytes) => ({ kind: "clientHello" as const, what: "garbage", bytes })),
    fc
      .tuple(fc.constantFrom(0x14, 0x15, 0x16, 0x17, 0x18, 0x00, 0xff), fc.constantFrom(0x0300, 0x0301, 0x0303, 0x0304, 0xffff), fc.integer({ min: 0, max: 0xffff }), fc.uint8Array({ maxLength: 512 }))
      .map(([type, version, length, body]) => {
        const head = Buffer.alloc(5)
        head[0] = type
        head.writeUInt16BE(version, 1)
        head.writeUInt16BE(length, 3)
        return { kind: "clientHello" as const, what: `record type ${type} claiming ${length} bytes`, bytes: new Uint8Array(Buffer.concat([head, body])) }
      }),
    fc.integer({ min: 1, max: hello.length - 1 }).map((at) => ({ kind: "clientHello" as const, what: `ClientHello cut at ${at}`, bytes: hello.subarray(0, at) })),
    fc.array(fc.tuple(fc.nat(hello.length - 1), fc.nat(255)), { minLength: 1, maxLength: 8 }).map((changes) => {
      const bytes = new Uint8Array(hello)
      for (const [at, value] of changes) bytes[at] = value
      return { kind: "clientHello" as const, what: `ClientHello with bytes ${JSON.stringify(changes)}`, bytes }
    })
  )

const headerLine = fc.tuple(fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/), fc.stringMatching(/^[\x20-\x7e]{0,40}$/)).map(([name, value]) => `${name}: ${value}\r\n`)

const plaintextArb: fc.Arbitrary<TlsInput> = fc
  .record({
    method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PRI", "CONNECT"),
    path: fc.oneof(fc.constantFrom("/v1/health", "/v1/vms", "/v1/tls/ca", "/v1/tls/join", "/raft", "/openapi.json", "*"), fc.webPath()),
    upgrade: fc.boolean(),
    headers: fc.array(headerLine, { maxLength: 4 }),
    body: fc.oneof(fc.constant(""), fc.json(), fc.string({ maxLength: 100 }))
  })
  .map(({ method, path, upgrade, headers, body }) => {
    const upgrading = upgrade ? "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" : ""
    return { kind: "plaintext" as const, text: `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${upgrading}${headers.join("")}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}` }
  })

const certificateArb: fc.Arbitrary<TlsInput> = fc
  .tuple(fc.constantFrom<CertificateCase>("none", "otherCaSameCluster", "otherCluster", "selfSigned", "otherNode"), fc.constantFrom(...senderIds), fc.constantFrom(...senderIds))
  .filter(([certificate, from, presented]) => certificate !== "otherNode" || from !== presented)
  .map(([certificate, from, presented]) => ({ kind: "peerCertificate" as const, certificate, from, presented }))

export const tlsInputArb = (hello: Uint8Array): fc.Arbitrary<TlsInput> =>
  fc.oneof({ weight: 4, arbitrary: clientHelloArb(hello) }, { weight: 2, arbitrary: plaintextArb }, { weight: 3, arbitrary: certificateArb })

const describeInput = (input: TlsInput): string => {
  switch (input.kind) {
    case "clientHello":
      return `${input.what}: ${Buffer.from(input.bytes.subarray(0, 48)).toString("hex")}`
    case "plaintext":
      return `plaintext ${JSON.stringify(input.text.slice(0, 160))}`
    case "peerCertificate":
      return `upgrade as node ${input.from} presenting ${input.certificate === "otherNode" ? `node ${input.presented}'s certificate` : input.certificate}`
  }
}

/** Writes `bytes` on a raw TCP connection, half-closes it and collects what the node answers until it closes (bounded). */
const exchangeRaw = (target: PeerTarget, bytes: Uint8Array | string): Promise<Buffer> =>
  new Promise((resolve) => {
    const socket = net.connect({ host: target.host, port: target.port })
    const chunks: Array<Buffer> = []
    const timer = setTimeout(() => socket.destroy(), 5_000)
    socket.on("error", () => {})
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.on("close", () => {
      clearTimeout(timer)
      resolve(Buffer.concat(chunks))
    })
    socket.end(bytes)
  })

/** A valid handshake as `from` over TLS presenting `pair` (or nothing): "open" or "refused". */
const upgradeWith = (target: PeerTarget, ca: string, from: number, pair: KeyPair | undefined): Promise<"open" | "refused"> =>
  new Promise((resolve) => {
    const query = toQuery(sign(deriveKey(target.clusterSecret), target.clusterId, from, target.self, Date.now()))
    const socket = new WebSocket(`ws://${target.host}:${target.port}/raft?${query}`, {
      perMessageDeflate: false,
      handshakeTimeout: 15_000,
      createConnection: () =>
        tls.connect({ host: target.host, port: target.port, ca, ...(pair !== undefined ? { cert: pair.cert, key: pair.key } : {}), checkServerIdentity: () => undefined }) as net.Socket
    })
    socket.on("open", () => {
      socket.terminate()
      resolve("open")
    })
    socket.on("unexpected-response", (_request, response) => {
      response.resume()
      socket.terminate()
      resolve("refused")
    })
    socket.on("error", () => resolve("refused"))
  })

/** Throws `runs` generated inputs at `target`'s TLS port (which must have `tls`), one at a time. */
export const fuzzTls = async (target: PeerTarget, bad: BadCertificates, runs: number, seed: number, checkEvery = 100): Promise<TlsFuzzResult> => {
  const peerTls = target.tls
  if (peerTls === undefined) throw new Error("fuzzTls: the target serves no TLS")
  const hello = await recordClientHello()
  const byKind: Record<string, number> = {}
  const failures: Array<string> = []
  const recent: Array<string> = []
  const fail = (message: string) => void (failures.length < 10 && failures.push(message))
  let refusedCertificates = 0
  let acceptedBadCertificates = 0
  let plaintextAnswered = 0
  let stateChanges = 0
  let inputs = 0
  const initial = await target.state()
  let before = initial
  const started = performance.now()
  const chunk = 500
  for (let offset = 0; offset < runs && target.alive(); offset += chunk) {
    for (const input of fc.sample(tlsInputArb(hello), { numRuns: Math.min(chunk, runs - offset), seed: seed + offset })) {
      if (!target.alive()) break
      inputs++
      byKind[input.kind] = (byKind[input.kind] ?? 0) + 1
      recent.push(describeInput(input))
      if (recent.length > checkEvery) recent.shift()
      if (input.kind === "clientHello") {
        await exchangeRaw(target, input.bytes)
      } else if (input.kind === "plaintext") {
        const answer = (await exchangeRaw(target, input.text)).toString("latin1")
        if (answer.startsWith("HTTP/")) {
          plaintextAnswered++
          fail(`answered plaintext as HTTP (${JSON.stringify(answer.slice(0, 80))}): ${describeInput(input)}`)
        }
      } else {
        const pair = input.certificate === "none" ? undefined : input.certificate === "otherNode" ? peerTls.certificates.get(input.presented) : bad[input.certificate]
        if ((await upgradeWith(target, peerTls.ca, input.from, pair)) === "refused") refusedCertificates++
        else {
          acceptedBadCertificates++
          fail(`accepted a peer connection: ${describeInput(input)}`)
        }
      }
      if (inputs % checkEvery !== 0) continue
      const after = await target.state()
      if (!sameState(before, after)) {
        stateChanges++
        fail(`state changed from ${JSON.stringify(before)} to ${JSON.stringify(after)} within these inputs: ${recent.join(" | ").slice(0, 4000)}`)
      }
      before = after
    }
  }
  const seconds = (performance.now() - started) / 1000
  const alive = target.alive()
  // The checks above must be able to fail: the same upgrade with the sender's own certificate is taken.
  if (alive && (await upgradeWith(target, peerTls.ca, 2, peerTls.certificates.get(2))) !== "open") fail("a valid peer connection (node 2's own certificate) was refused")
  if (alive) {
    const after = await target.state()
    if (!sameState(before, after) || !sameState(initial, after)) {
      stateChanges++
      fail(`state changed from ${JSON.stringify(initial)} to ${JSON.stringify(after)} by the end`)
    }
  } else {
    failures.push(`the node died; the last inputs: ${recent.slice(-5).join(" | ")}`)
  }
  const written = alive ? await target.write(`after-tls-fuzz-${seed}`) : "the node is down"
  if (written !== true) failures.push(`the node took no write after the fuzz: ${written}`)
  return {
    name: "TLS fuzz: ClientHellos, plaintext and peer certificates against the TLS port of one real node on loopback",
    seed,
    inputs,
    byKind,
    refusedCertificates,
    acceptedBadCertificates,
    plaintextAnswered,
    stateChanges,
    nodeAlive: alive,
    servesWrites: written === true,
    seconds: Math.round(seconds * 10) / 10,
    inputsPerSecond: Math.round(inputs / seconds),
    failures
  }
}
