/**
 * Mutual TLS between peers over real TCP on loopback: a connection is accepted only with a client
 * certificate from the cluster's CA naming the node the handshake claims, and a sender talks only
 * to a server whose certificate names the node it meant to reach.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { randomUUID } from "node:crypto"
import { WebSocket } from "ws"
import { deriveKey, sign, toQuery } from "../../src/net/PeerAuth.js"
import type { PeerTls } from "../../src/net/PeerTransport.js"
import * as Tls from "../../src/net/Tls.js"
import { connectAll, eventually, heartbeat, receiveN, receiveWithin, secret, startNode } from "./harness.js"

const cluster = randomUUID()
const other = randomUUID()

/** A CA for `clusterId` and the certificates of `nodes`. */
const pki = (clusterId: string, nodes: ReadonlyArray<number>) =>
  Effect.gen(function* () {
    const ca = yield* Tls.createCa(clusterId)
    const byNode = new Map<number, PeerTls>()
    for (const node of nodes) {
      const request = yield* Tls.createRequest(node)
      const cert = yield* Tls.signRequest({ ...ca, clusterId, node, csr: request.csr, names: ["127.0.0.1"] })
      byNode.set(node, { ca: ca.ca, cert, key: request.key, clusterId })
    }
    return byNode
  })

/** Opens `/raft` on `address` as node `from` (a valid handshake) with `clientTls`; answers the HTTP status and body, or "open". */
const attempt = (address: string, from: number, to: number, serverCa: string, clientTls?: { cert: string; key: string }) =>
  Effect.async<{ status: number | "open"; body: string }>((resume) => {
    const query = toQuery(sign(deriveKey(secret), "", from, to, Date.now()))
    const socket = new WebSocket(`wss://${address}/raft?${query}`, {
      ca: serverCa,
      checkServerIdentity: (() => undefined) as never,
      ...(clientTls ?? {})
    })
    socket.on("open", () => {
      socket.close()
      resume(Effect.succeed({ status: "open", body: "" }))
    })
    socket.on("unexpected-response", (_request, response) => {
      let body = ""
      response.on("data", (chunk: Buffer) => (body += chunk.toString()))
      response.on("end", () => resume(Effect.succeed({ status: response.statusCode ?? 0, body })))
    })
    socket.on("error", (error) => resume(Effect.succeed({ status: 0, body: error.message })))
  })

describe("peer connections are mutual TLS bound to the cluster and node id", () => {
  it.scopedLive("two nodes with certificates from the cluster CA deliver both ways over wss", () =>
    Effect.gen(function* () {
      const certs = yield* pki(cluster, [1, 2])
      const a = yield* startNode(1, { tls: certs.get(1)! })
      const b = yield* startNode(2, { tls: certs.get(2)! })
      yield* connectAll([a, b])
      yield* a.transport.send([heartbeat(1, 2, 7)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 7)])
      yield* b.transport.send([heartbeat(2, 1, 8)])
      expect(yield* receiveN(a.transport, 1)).toEqual([heartbeat(2, 1, 8)])
    })
  )

  it.scopedLive("the right node's certificate is accepted; none, another CA's, or another node's is refused (401 BLX_PEER_CERT_REFUSED)", () =>
    Effect.gen(function* () {
      const certs = yield* pki(cluster, [1, 2, 3])
      const foreign = yield* pki(other, [2])
      const b = yield* startNode(2, { tls: certs.get(2)! })
      const ca = certs.get(2)!.ca
      const own = certs.get(1)!
      expect(yield* attempt(b.address, 1, 2, ca, { cert: own.cert, key: own.key })).toEqual({ status: "open", body: "" })
      expect(yield* attempt(b.address, 1, 2, ca)).toEqual({ status: 401, body: "BLX_PEER_CERT_REFUSED" })
      const stranger = foreign.get(2)!
      expect(yield* attempt(b.address, 1, 2, ca, { cert: stranger.cert, key: stranger.key })).toEqual({ status: 401, body: "BLX_PEER_CERT_REFUSED" })
      const three = certs.get(3)!
      expect(yield* attempt(b.address, 1, 2, ca, { cert: three.cert, key: three.key })).toEqual({ status: 401, body: "BLX_PEER_CERT_REFUSED" })
    })
  )

  it.scopedLive("a node with another cluster's certificate delivers nothing; neither does a sender reaching the wrong node", () =>
    Effect.gen(function* () {
      const certs = yield* pki(cluster, [1, 2, 3])
      const foreign = yield* pki(other, [1])
      // Node 1 of another cluster (same secret) sends to node 2: its connection is refused.
      const intruder = yield* startNode(1, { tls: foreign.get(1)!, backoffMaxMs: 100 })
      const b = yield* startNode(2, { tls: certs.get(2)! })
      yield* intruder.peers.set(2, b.address)
      yield* intruder.transport.send([heartbeat(1, 2, 1)])
      yield* eventually("the intruder's connection to fail", Effect.map(intruder.peers.stats, ([s]) => (s?.failures ?? 0) > 0))
      expect(Option.isNone(yield* receiveWithin(b.transport, 300))).toBe(true)
      // Node 1 of this cluster is told node 2 is where node 3 serves: it refuses node 3's certificate.
      const a = yield* startNode(1, { tls: certs.get(1)!, backoffMaxMs: 100 })
      const c = yield* startNode(3, { tls: certs.get(3)! })
      yield* a.peers.set(2, c.address)
      yield* a.transport.send([heartbeat(1, 2, 2)])
      yield* eventually("the connection to the wrong node to fail", Effect.map(a.peers.stats, ([s]) => (s?.lastError ?? "").includes("BLX_TLS_UNTRUSTED")))
      expect(Option.isNone(yield* receiveWithin(c.transport, 300))).toBe(true)
    })
  )
})
