/** The Raft rpc and the REST API share one HTTP server and port, composed as the daemon does (`layerSharedPort`). */
import { HttpServer } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { ControlPlane } from "../../src/api/ControlPlane.js"
import { makeMemory } from "../../src/api/ControlPlaneMemory.js"
import { layerSharedPort } from "../../src/api/Server.js"
import type { NodeId } from "../../src/domain/NodeId.js"
import { layerServer, layerTransport, RaftPeers } from "../../src/net/RpcTransport.js"
import { Transport } from "../../src/net/Transport.js"
import { heartbeat, receiveN, secret } from "./harness.js"

/** One node as the daemon composes it: REST API + Raft rpc on one port. */
const node = (self: number) =>
  Effect.gen(function* () {
    const Net = layerTransport({ self, clusterSecret: secret, requestTimeoutMs: 2000 })
    const Http = layerSharedPort(layerServer, { port: 0, host: "127.0.0.1", routePaths: ["/raft"] }).pipe(
      Layer.provide(Layer.succeed(ControlPlane, makeMemory({ node: self as NodeId })))
    )
    const context = yield* Layer.build(Http.pipe(Layer.provideMerge(Net)))
    const address = Context.get(context, HttpServer.HttpServer).address
    const port = address._tag === "TcpAddress" ? address.port : 0
    return { port, transport: Context.get(context, Transport), peers: Context.get(context, RaftPeers) }
  })

describe("mounting beside the REST API", () => {
  it.scopedLive("REST and Raft traffic share the node's one port", () =>
    Effect.gen(function* () {
      const a = yield* node(1)
      const b = yield* node(2)
      yield* a.peers.set(2, `127.0.0.1:${b.port}`)
      const response = yield* Effect.promise(() => fetch(`http://127.0.0.1:${b.port}/v1/health`))
      expect(response.status).toBe(200)
      expect(yield* Effect.promise(() => response.json())).toMatchObject({ status: "ok", node: 2 })
      yield* a.transport.send([heartbeat(1, 2, 9)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 9)])
      // A plain HTTP request to the rpc path without a handshake is refused.
      expect((yield* Effect.promise(() => fetch(`http://127.0.0.1:${b.port}/raft`))).status).toBe(401)
    })
  )
})
