/**
 * The node's composition: the API and peer RPC routes (served by the platform's router) on one port.
 */
import { FetchHttpClient, HttpServer } from "@effect/platform"
import { Rpc, RpcClient, RpcGroup, RpcSerialization, RpcServer } from "@effect/rpc"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import { ApiClient } from "../../src/api/Client.js"
import { ControlPlane } from "../../src/api/ControlPlane.js"
import { makeMemory } from "../../src/api/ControlPlaneMemory.js"
import { layerServer, layerSharedPort } from "../../src/api/Server.js"
import { Unauthorized } from "../../src/domain/Errors.js"
import { spec } from "./harness.js"

class Peer extends RpcGroup.make(Rpc.make("Ping", { payload: { n: Schema.Number }, success: Schema.String })) {}

const PeerLive = Peer.toLayer({ Ping: ({ n }) => Effect.succeed(`pong ${n}`) })

describe("mounting beside peer RPC", () => {
  it.scopedLive("the API, /openapi.json and an RpcServer share one port", () =>
    Effect.gen(function* () {
      const plane = makeMemory()
      const routes = RpcServer.layerHttpRouter({ group: Peer, path: "/raft", protocol: "http" }).pipe(
        Layer.provide(PeerLive),
        Layer.provide(RpcSerialization.layerNdjson)
      )
      const context = yield* Layer.build(
        layerSharedPort(routes, { port: 0, host: "127.0.0.1", apiToken: "t0ken", routePaths: ["/raft"] }).pipe(
          Layer.provide(Layer.succeed(ControlPlane, plane))
        )
      )
      const address = Context.get(context, HttpServer.HttpServer).address
      if (address._tag !== "TcpAddress") return yield* Effect.die("expected a TCP address")
      const addr = `127.0.0.1:${address.port}`

      const peer = yield* RpcClient.make(Peer).pipe(
        Effect.provide(
          RpcClient.layerProtocolHttp({ url: `http://${addr}/raft` }).pipe(
            Layer.provide([RpcSerialization.layerNdjson, FetchHttpClient.layer])
          )
        )
      )
      expect(yield* peer.Ping({ n: 7 })).toBe("pong 7")

      const api = yield* Effect.provide(ApiClient, ApiClient.layerFetch({ addr, token: "t0ken" }))
      expect((yield* api.createVm(spec("web"))).revision).toBe(1)
      expect((yield* api.health()).status).toBe("ok")
      const anonymous = yield* Effect.provide(ApiClient, ApiClient.layerFetch({ addr }))
      expect(yield* Effect.flip(anonymous.listVms())).toBeInstanceOf(Unauthorized)
      expect(yield* peer.Ping({ n: 8 })).toBe("pong 8")
    })
  )

  it.scopedLive("two APIs built in one layer graph each serve their own ControlPlane (handlers are not shared)", () =>
    Effect.gen(function* () {
      class PortA extends Context.Tag("test/PortA")<PortA, number>() {}
      class PortB extends Context.Tag("test/PortB")<PortB, number>() {}
      const portOf = Effect.map(HttpServer.HttpServer, (server) => (server.address._tag === "TcpAddress" ? server.address.port : 0))
      const node = <I>(tag: Context.Tag<I, number>, plane: ReturnType<typeof makeMemory>) =>
        Layer.effect(tag, portOf).pipe(
          Layer.provide(layerServer({ port: 0, host: "127.0.0.1" })),
          Layer.provide(Layer.succeed(ControlPlane, plane))
        )
      const a = makeMemory({ node: 1 as never })
      const b = makeMemory({ node: 2 as never })
      const context = yield* Layer.build(Layer.mergeAll(node(PortA, a), node(PortB, b)))
      const clientA = yield* Effect.provide(ApiClient, ApiClient.layerFetch({ addr: `127.0.0.1:${Context.get(context, PortA)}` }))
      const clientB = yield* Effect.provide(ApiClient, ApiClient.layerFetch({ addr: `127.0.0.1:${Context.get(context, PortB)}` }))

      yield* clientA.createVm(spec("only-on-a"))
      expect((yield* clientA.listVms()).map((vm) => vm.spec.name)).toEqual(["only-on-a"])
      expect(yield* clientB.listVms()).toEqual([])
      expect((yield* clientA.health()).node).toBe(1)
      expect((yield* clientB.health()).node).toBe(2)
    })
  )
})
