/**
 * The node's composition: the REST API and the peers' Raft endpoint (`PeerTransport`) on one port, as
 * the daemon builds them (`layerSharedPort`).
 */
import { HttpServer } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { ApiClient } from "../../src/api/Client.js"
import { ControlPlane } from "../../src/api/ControlPlane.js"
import { makeMemory } from "../../src/api/ControlPlaneMemory.js"
import { layerServer, layerSharedPort } from "../../src/api/Server.js"
import { Unauthorized } from "../../src/domain/Errors.js"
import { layerTransport } from "../../src/net/PeerTransport.js"
import { Transport } from "../../src/net/Transport.js"
import { heartbeat, receiveN, secret, startNode } from "../net/harness.js"
import { spec } from "./harness.js"

describe("mounting beside the peers' endpoint", () => {
  it.scopedLive("the API, /openapi.json and Raft traffic share one port", () =>
    Effect.gen(function* () {
      const plane = makeMemory({ node: 2 as never })
      const context = yield* Layer.build(
        layerSharedPort({ port: 0, host: "127.0.0.1", auth: { adminTokens: ["t0ken"] } }).pipe(
          Layer.provide(Layer.succeed(ControlPlane, plane)),
          Layer.provideMerge(layerTransport({ self: 2, clusterSecret: secret, requestTimeoutMs: 2000 }))
        )
      )
      const address = Context.get(context, HttpServer.HttpServer).address
      if (address._tag !== "TcpAddress") return yield* Effect.die("expected a TCP address")
      const addr = `127.0.0.1:${address.port}`

      const api = yield* Effect.provide(ApiClient, ApiClient.layerFetch({ addr, token: "t0ken" }))
      expect((yield* api.createVm(spec("web"))).revision).toBe(1)
      expect((yield* api.health()).status).toBe("ok")
      const anonymous = yield* Effect.provide(ApiClient, ApiClient.layerFetch({ addr }))
      expect(yield* Effect.flip(anonymous.listVms())).toBeInstanceOf(Unauthorized)
      const openapi = yield* Effect.promise(() => fetch(`http://${addr}/openapi.json`, { headers: { authorization: "Bearer t0ken" } }))
      expect(openapi.status).toBe(200)

      // A peer's Raft messages reach this node's transport through the same port.
      const peer = yield* startNode(1)
      yield* peer.peers.set(2, addr)
      yield* peer.transport.send([heartbeat(1, 2, 9)])
      expect(yield* receiveN(Context.get(context, Transport), 1)).toEqual([heartbeat(1, 2, 9)])
      // A plain request to the peers' path without a handshake is refused; the API still answers.
      expect((yield* Effect.promise(() => fetch(`http://${addr}/raft`))).status).toBe(401)
      expect((yield* api.listVms()).map((vm) => vm.spec.name)).toEqual(["web"])
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
