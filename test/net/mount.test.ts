/** The Raft rpc and a REST API (`HttpApi`) share one HTTP server and port, mounted on one `HttpLayerRouter`. */
import { HttpApi, HttpApiBuilder, HttpApiEndpoint, HttpApiGroup, HttpLayerRouter, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import { createServer } from "node:http"
import { layerServer, layerTransport, RaftPeers } from "../../src/net/RpcTransport.js"
import { Transport } from "../../src/net/Transport.js"
import { heartbeat, receiveN, secret } from "./harness.js"

class Health extends HttpApiGroup.make("health").add(HttpApiEndpoint.get("ping", "/ping").addSuccess(Schema.Struct({ ok: Schema.Boolean }))) {}
class Api extends HttpApi.make("test").add(Health) {}
const HealthLive = HttpApiBuilder.group(Api, "health", (handlers) => handlers.handle("ping", () => Effect.succeed({ ok: true })))

/** One node as the daemon would compose it: REST API + Raft rpc on one router and port. */
const node = (self: number) =>
  Effect.gen(function* () {
    const Net = layerTransport({ self, clusterSecret: secret, requestTimeoutMs: 2000 })
    const Routes = Layer.mergeAll(HttpLayerRouter.addHttpApi(Api).pipe(Layer.provide(HealthLive)), layerServer)
    const Http = HttpLayerRouter.serve(Routes, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
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
      const response = yield* Effect.promise(() => fetch(`http://127.0.0.1:${b.port}/ping`))
      expect(response.status).toBe(200)
      expect(yield* Effect.promise(() => response.json())).toEqual({ ok: true })
      yield* a.transport.send([heartbeat(1, 2, 9)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 9)])
      // A plain HTTP request to the rpc path without a handshake is refused.
      expect((yield* Effect.promise(() => fetch(`http://127.0.0.1:${b.port}/raft`))).status).toBe(401)
    })
  )
})
