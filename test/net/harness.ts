/** Real nodes' transports on loopback for the transport tests: each one an HTTP server on an ephemeral port. */
import { HttpServer } from "@effect/platform"
import { Context, Duration, Effect, ExecutionStrategy, Exit, Layer, Option, Scope } from "effect"
import { layerStandalone, layerTransport, type PeerTransportOptions, RaftPeers, type RaftPeersShape } from "../../src/net/PeerTransport.js"
import { Transport, type TransportShape } from "../../src/net/Transport.js"
import type { Message } from "../../src/raft/Message.js"

export const secret = "test cluster secret: 3f7c2a9e41d0b6a8"

export interface TestNode {
  readonly id: number
  readonly port: number
  readonly address: string
  readonly transport: TransportShape
  readonly peers: RaftPeersShape
  /** Stops the node's server and transport (a crash, as far as its peers can tell). */
  readonly stop: Effect.Effect<void>
}

/** Starts node `id` (transport + server) on `port` (0: ephemeral). Stopped with the enclosing scope or `stop`. */
export const startNode = (
  id: number,
  options: Partial<PeerTransportOptions> & { readonly port?: number } = {}
): Effect.Effect<TestNode, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const outer = yield* Effect.scope
    const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    const net = layerTransport({ self: id, clusterSecret: secret, requestTimeoutMs: 2000, ...options })
    const server = layerStandalone({ port: options.port ?? 0, host: "127.0.0.1", ...(options.tls !== undefined ? { tls: options.tls } : {}) })
    const context = yield* Layer.buildWithScope(Layer.provideMerge(server, net), scope)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return {
      id,
      port: address.port,
      address: `127.0.0.1:${address.port}`,
      transport: Context.get(context, Transport),
      peers: Context.get(context, RaftPeers),
      stop: Scope.close(scope, Exit.void)
    }
  })

/** Tells every node where every other one is. */
export const connectAll = (nodes: ReadonlyArray<TestNode>): Effect.Effect<void> =>
  Effect.forEach(nodes, (a) => Effect.forEach(nodes, (b) => (a.id === b.id ? Effect.void : a.peers.set(b.id, b.address))), {
    discard: true
  })

export { freePort } from "../../src/node/FreePort.js"

/** The next message, passing over `PeerRestarted` notices (tests of those take `receive` itself). */
export const nextMessage = (transport: TransportShape): Effect.Effect<Message> =>
  Effect.flatMap(transport.receive, (r) => (r.type === "peerRestarted" ? nextMessage(transport) : Effect.succeed(r)))

/** Takes `n` messages, failing if they do not all arrive before the deadline. */
export const receiveN = (transport: TransportShape, n: number, deadlineMs = 15_000): Effect.Effect<Array<Message>, Error> =>
  Effect.gen(function* () {
    const out: Array<Message> = []
    while (out.length < n) out.push(yield* nextMessage(transport))
    return out
  }).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(deadlineMs),
      onTimeout: () => new Error(`fewer than ${n} messages arrived within ${deadlineMs} ms`)
    })
  )

/** The next message, if one arrives before the deadline. */
export const receiveWithin = (transport: TransportShape, ms: number): Effect.Effect<Option.Option<Message>> =>
  Effect.timeoutOption(nextMessage(transport), Duration.millis(ms))

/** Polls `check` until it holds, failing after the deadline. */
export const eventually = <E, R>(
  what: string,
  check: Effect.Effect<boolean, E, R>,
  deadlineMs = 15_000
): Effect.Effect<void, E | Error, R> =>
  Effect.gen(function* () {
    const until = Date.now() + deadlineMs
    while (!(yield* check)) {
      if (Date.now() > until) return yield* Effect.fail(new Error(`timed out after ${deadlineMs} ms waiting for: ${what}`))
      yield* Effect.sleep(Duration.millis(10))
    }
  })

export const heartbeat = (from: number, to: number, commit = 0): Message => ({ type: "heartbeat", from, to, term: 1, commit })

export const append = (from: number, to: number, index: number): Message => ({
  type: "app",
  from,
  to,
  term: 2,
  index,
  logTerm: 2,
  commit: index,
  entries: [{ index: index + 1, term: 2, kind: "normal", data: `{"op":"put","key":"k${index}"}` }]
})
