/**
 * Raft transport on loopback: messages/s one way between two nodes' transports (the sender keeps up
 * to 3,000 messages in flight, in `send` calls of 256 `app` messages with a 100-byte entry each, so
 * the transport batches them) and the p50/p99 of one round trip (a heartbeat out, its response back),
 * for the production transport (websocket, msgpack, authenticated) and, as the measurement behind that
 * choice, the same rpc served without the transport's queues and auth over each protocol and encoding
 * `@effect/rpc` offers on our HTTP router (sequential `Raft.Deliver` calls).
 */
import { HttpLayerRouter, HttpServer } from "@effect/platform"
import { NodeHttpClient, NodeHttpServer, NodeSocket } from "@effect/platform-node"
import { RpcClient, RpcSerialization, RpcServer } from "@effect/rpc"
import { Context, Effect, Fiber, Layer } from "effect"
import { createServer } from "node:http"
import { RaftRpcs } from "../src/net/RaftRpc.js"
import { layerServer, layerTransport, RaftPeers } from "../src/net/RpcTransport.js"
import { Transport, type TransportShape } from "../src/net/Transport.js"
import type { Message } from "../src/raft/Message.js"

export interface TransportResult {
  readonly name: string
  readonly messagesPerSecond: number
  readonly p50RoundTripMs: number
  readonly p99RoundTripMs: number
}

const app = (index: number): Message => ({
  type: "app",
  from: 1,
  to: 2,
  term: 3,
  index,
  logTerm: 3,
  commit: index,
  entries: [{ index: index + 1, term: 3, kind: "normal", data: "x".repeat(100) }]
})

const quantile = (sorted: ReadonlyArray<number>, q: number): number =>
  Number((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN).toFixed(3))

const startNode = (self: number, serialization: "msgpack" | "json") =>
  Effect.gen(function* () {
    const net = layerTransport({ self, clusterSecret: "bench secret", serialization })
    const server = HttpLayerRouter.serve(layerServer, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
    )
    const context = yield* Layer.build(Layer.provideMerge(server, net))
    const address = Context.get(context, HttpServer.HttpServer).address
    return {
      address: address._tag === "TcpAddress" ? `127.0.0.1:${address.port}` : "",
      transport: Context.get(context, Transport),
      peers: Context.get(context, RaftPeers)
    }
  })

const oneWay = (from: TransportShape, to: TransportShape, seconds: number) =>
  Effect.gen(function* () {
    let received = 0
    let sent = 0
    // The producer sleeps on this latch while 3,000 messages are in flight (below the 4,096 queue bound).
    const room = yield* Effect.makeLatch(true)
    const consumer = yield* Effect.fork(
      Effect.forever(
        Effect.tap(to.receive, () =>
          Effect.sync(() => {
            received++
            if (sent - received <= 1500) room.unsafeOpen()
          })
        )
      )
    )
    const started = performance.now()
    while (performance.now() - started < seconds * 1000) {
      if (sent - received >= 3000) {
        room.unsafeClose()
        yield* room.await
        continue
      }
      const chunk: Array<Message> = []
      for (let i = 0; i < 256; i++) chunk.push(app(sent + i))
      sent += chunk.length
      yield* from.send(chunk)
      yield* Effect.yieldNow()
    }
    const rate = Math.round(received / ((performance.now() - started) / 1000))
    // Drain what is still in flight before the round-trip measurement.
    while (received < sent) {
      room.unsafeClose()
      if (received < sent) yield* room.await
    }
    yield* Fiber.interrupt(consumer)
    return rate
  })

const roundTrips = (a: TransportShape, b: TransportShape, seconds: number) =>
  Effect.gen(function* () {
    const echo = yield* Effect.fork(
      Effect.forever(
        Effect.flatMap(b.receive, (m) => b.send([{ type: "heartbeatResp", from: 2, to: 1, term: m.term }]))
      )
    )
    const latencies: Array<number> = []
    const started = performance.now()
    while (performance.now() - started < seconds * 1000) {
      const t0 = performance.now()
      yield* a.send([{ type: "heartbeat", from: 1, to: 2, term: 1, commit: latencies.length }])
      yield* a.receive
      latencies.push(performance.now() - t0)
    }
    yield* Fiber.interrupt(echo)
    return latencies.sort((x, y) => x - y)
  })

const benchOurs = (serialization: "msgpack" | "json", seconds: number) =>
  Effect.scoped(
    Effect.gen(function* () {
      const n1 = yield* startNode(1, serialization)
      const n2 = yield* startNode(2, serialization)
      yield* n1.peers.set(2, n2.address)
      yield* n2.peers.set(1, n1.address)
      yield* roundTrips(n1.transport, n2.transport, 1) // warm up: connections, JIT
      const latencies = yield* roundTrips(n1.transport, n2.transport, seconds / 2)
      const messagesPerSecond = yield* oneWay(n1.transport, n2.transport, seconds)
      return {
        name: `RpcTransport websocket ${serialization} (auth, queues)`,
        messagesPerSecond,
        p50RoundTripMs: quantile(latencies, 0.5),
        p99RoundTripMs: quantile(latencies, 0.99)
      } satisfies TransportResult
    })
  )

/** The bare rpc (no auth, no queues) over one protocol and encoding: sequential batches of 256, then single messages. */
const benchBareRpc = (protocol: "http" | "websocket", serialization: "msgpack" | "json", seconds: number) =>
  Effect.scoped(
    Effect.gen(function* () {
      let received = 0
      const handlers = RaftRpcs.toLayer({
        "Raft.Deliver": ({ messages }) => Effect.sync(() => void (received += messages.length))
      })
      const serializationLayer = serialization === "json" ? RpcSerialization.layerJson : RpcSerialization.layerMsgPack
      const route = RpcServer.layerHttpRouter({ group: RaftRpcs, path: "/raft", protocol, disableTracing: true }).pipe(
        Layer.provide(handlers),
        Layer.provide(serializationLayer)
      )
      const server = yield* Layer.build(
        HttpLayerRouter.serve(route, { disableLogger: true, disableListenLog: true }).pipe(
          Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
        )
      )
      const address = Context.get(server, HttpServer.HttpServer).address
      const port = address._tag === "TcpAddress" ? address.port : 0
      const clientProtocol =
        protocol === "http"
          ? RpcClient.layerProtocolHttp({ url: `http://127.0.0.1:${port}/raft` }).pipe(Layer.provide(NodeHttpClient.layerUndici))
          : RpcClient.layerProtocolSocket().pipe(Layer.provide(NodeSocket.layerWebSocket(`ws://127.0.0.1:${port}/raft`)))
      const context = yield* Layer.build(Layer.provide(clientProtocol, serializationLayer))
      const client = yield* Effect.provide(RpcClient.make(RaftRpcs, { disableTracing: true, flatten: true }), context)
      const batch = Array.from({ length: 256 }, (_, i) => app(i))
      for (let i = 0; i < 100; i++) yield* client("Raft.Deliver", { from: 1, messages: [app(i)] })
      received = 0
      let started = performance.now()
      while (performance.now() - started < seconds * 1000) yield* client("Raft.Deliver", { from: 1, messages: batch })
      const messagesPerSecond = Math.round(received / ((performance.now() - started) / 1000))
      const latencies: Array<number> = []
      started = performance.now()
      while (performance.now() - started < (seconds / 2) * 1000) {
        const t0 = performance.now()
        yield* client("Raft.Deliver", { from: 1, messages: [app(1)] })
        latencies.push(performance.now() - t0)
      }
      latencies.sort((x, y) => x - y)
      return {
        name: `bare rpc ${protocol} ${serialization}`,
        messagesPerSecond,
        p50RoundTripMs: quantile(latencies, 0.5),
        p99RoundTripMs: quantile(latencies, 0.99)
      } satisfies TransportResult
    })
  )

export const benchTransport = (seconds = 3): Promise<ReadonlyArray<TransportResult>> =>
  Effect.runPromise(
    // A discarded first pass warms the process (JIT, sockets): otherwise whichever case runs first looks slower.
    Effect.zipRight(
      benchOurs("json", 1),
      Effect.all(
        [
          benchOurs("msgpack", seconds),
          benchOurs("json", seconds),
          benchBareRpc("websocket", "msgpack", seconds / 2),
          benchBareRpc("websocket", "json", seconds / 2),
          benchBareRpc("http", "msgpack", seconds / 2),
          benchBareRpc("http", "json", seconds / 2)
        ],
        { concurrency: 1 }
      )
    )
  )
