/**
 * The Raft peer transport on loopback, and what it would cost to carry the same traffic over
 * `@effect/rpc` instead: the measurement behind `PeerTransport` leaving `@effect/rpc` for peer traffic.
 *
 * Two nodes in this one process, joined by each variant in turn:
 *
 *  - `PeerTransport`, the production transport: one authenticated websocket per direction, msgpack
 *    frames `[seq, messages]` acknowledged by `seq`, the per-peer send queue, every received message
 *    checked against the `Message` schema, the inbox a `Queue` taken by a fiber (as the Raft driver
 *    takes it). Twice: with acknowledgements riding on frames the other way (`FrameAcks`, the
 *    default), and with `ridingAcks: false` (every acknowledgement a frame of its own, as before).
 *  - bare `@effect/rpc`: a `Raft.Deliver` rpc (defined here) served by `RpcServer` on the platform's
 *    HTTP router over a websocket, msgpack serialization, called through the flat `RpcClient`, one
 *    client per direction; no auth, no queues, no validation of the messages. Once with answered calls
 *    (what the transport used to do), once with `{ discard: true }` calls (fire and forget, the least
 *    the rpc layer can do per call). Every call runs as its own fiber, as a transport would run it.
 *  - bare `ws` + `msgpackr`: one websocket, each batch one msgpack frame, no acknowledgement, no
 *    validation: the floor under any websocket transport in Node.
 *
 * Measured for each:
 *
 *  - one way (`messagesPerSecond`, `cpuUsPerMessage`): node 1 sends `app` messages with a 100-byte
 *    entry in `send` calls of 256, keeping up to 3,000 in flight (below `PeerTransport`'s 4,096-message
 *    queue bound), for `seconds`; the figures run until the last message sent has arrived.
 *  - round trip (`p50RoundTripMs`, `p99RoundTripMs`, `cpuUsPerRoundTrip`): a heartbeat from node 1,
 *    answered by node 2 with a heartbeatResp, one at a time, for half of `seconds`. Each message goes
 *    alone: this is the cost of a message on an idle cluster (a one-client write, a heartbeat), where
 *    nothing amortizes the per-frame or per-call overhead. For `PeerTransport`, `framesPerRoundTrip`
 *    counts the websocket frames both ways (batches and standalone acknowledgements) per round trip:
 *    2 when every acknowledgement rides on the frame going back (`FrameAcks`), 3 without.
 *  - pipelined round trips (`pipelinedPerSecond`, `cpuUsPerPipelined`, `framesPerPipelined`): the
 *    same, with 8 heartbeats out at once (each sent alone, a new one at every answer), for half of
 *    `seconds`: requests and answers cross, as Raft's appends and answers do under several clients,
 *    and frames arrive while one is unacknowledged (the two-frame rule).
 *
 * CPU is `process.cpuUsage()` (user + system, every thread: GC included) over the phase, divided by
 * the messages delivered or the round trips made. Both nodes run in this process, so it is the
 * sender's and the receiver's CPU together — what a cluster pays per message, spread over two nodes —
 * plus building the messages, the same in every variant. Each variant is warmed up (both phases)
 * before it is measured. The one-way figures are dominated by msgpack and, for `PeerTransport`, by
 * validating every message: batching amortizes the per-frame and per-call costs. The round trips show
 * those costs undiluted.
 */
import { HttpLayerRouter, HttpServer } from "@effect/platform"
import { NodeHttpServer, NodeSocket } from "@effect/platform-node"
import { Rpc, RpcClient, RpcGroup, RpcSerialization, RpcServer } from "@effect/rpc"
import { Cause, Context, Effect, Layer, Schema, type Scope } from "effect"
import { Packr } from "msgpackr"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { WebSocket, WebSocketServer } from "ws"
import { layerStandalone, layerTransport, RaftPeers } from "../src/net/PeerTransport.js"
import { Transport } from "../src/net/Transport.js"
import type { Message } from "../src/raft/Message.js"

export interface TransportResult {
  readonly name: string
  /** One way, `send` calls of 256 messages, up to 3,000 in flight: messages delivered per second. */
  readonly messagesPerSecond: number
  /** CPU (µs, sender and receiver together) per message delivered one way. */
  readonly cpuUsPerMessage: number
  /** Heartbeat → heartbeatResp, one at a time. */
  readonly p50RoundTripMs: number
  readonly p99RoundTripMs: number
  /** CPU (µs, both nodes together) per round trip: two messages, each alone in its frame or call. */
  readonly cpuUsPerRoundTrip: number
  /** Websocket frames both ways per round trip, and how many of them standalone acknowledgements (`PeerTransport` only). */
  readonly framesPerRoundTrip?: number | undefined
  readonly acksPerRoundTrip?: number | undefined
  /** Heartbeat → heartbeatResp, 8 out at once: round trips per second, CPU and frames per round trip. */
  readonly pipelinedPerSecond: number
  readonly cpuUsPerPipelined: number
  readonly framesPerPipelined?: number | undefined
  readonly acksPerPipelined?: number | undefined
}

/** The rpc peer traffic used before `PeerTransport`: a batch of Raft messages from one sender (validated by the receiver). */
class BenchRpcs extends RpcGroup.make(
  Rpc.make("Raft.Deliver", {
    payload: { from: Schema.Number, messages: Schema.Array(Schema.Unknown) },
    success: Schema.Void
  })
) {}

type Side = 1 | 2

/** Two nodes joined by one variant. */
interface Pair {
  /** Hands `messages` from node `from` to the other node; never waits. */
  readonly send: (from: Side, messages: ReadonlyArray<Message>) => void
  /** What node `at` does with each message it receives. */
  readonly onReceive: (at: Side, handler: (message: Message) => void) => void
  /** Websocket frames written so far, both ways: batches and standalone acknowledgements (where counted). */
  readonly frames?: () => { readonly batches: number; readonly acks: number }
}

const host = "127.0.0.1"

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

const cpuSince = (start: NodeJS.CpuUsage): number => {
  const used = process.cpuUsage(start)
  return used.user + used.system
}

const ignore = (): void => {}

/** Lets the event loop run the sockets (a resolved promise would not: microtasks starve I/O). */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

const oneWay = async (pair: Pair, seconds: number) => {
  let sent = 0
  let received = 0
  let wake: (() => void) | undefined
  pair.onReceive(1, ignore)
  pair.onReceive(2, () => {
    received++
    if (wake !== undefined && sent - received <= 1500) {
      const resume = wake
      wake = undefined
      resume()
    }
  })
  const cpu = process.cpuUsage()
  const started = performance.now()
  while (performance.now() - started < seconds * 1000) {
    if (sent - received >= 3000) {
      await new Promise<void>((resolve) => (wake = resolve))
      continue
    }
    const chunk: Array<Message> = []
    for (let i = 0; i < 256; i++) chunk.push(app(sent + i))
    sent += chunk.length
    pair.send(1, chunk)
    await turn()
  }
  while (received < sent) await new Promise<void>((resolve) => (wake = resolve))
  const elapsed = (performance.now() - started) / 1000
  return {
    messagesPerSecond: Math.round(received / elapsed),
    cpuUsPerMessage: Number((cpuSince(cpu) / received).toFixed(2))
  }
}

const roundTrips = async (pair: Pair, seconds: number) => {
  let answered: (() => void) | undefined
  pair.onReceive(2, (m) => pair.send(2, [{ type: "heartbeatResp", from: 2, to: 1, term: m.term }]))
  pair.onReceive(1, () => {
    const resume = answered
    answered = undefined
    resume?.()
  })
  const latencies: Array<number> = []
  const frames = pair.frames?.()
  const cpu = process.cpuUsage()
  const started = performance.now()
  while (performance.now() - started < seconds * 1000) {
    const t0 = performance.now()
    const answer = new Promise<void>((resolve) => (answered = resolve))
    pair.send(1, [{ type: "heartbeat", from: 1, to: 2, term: 1, commit: latencies.length }])
    await answer
    latencies.push(performance.now() - t0)
  }
  const cpuUs = cpuSince(cpu)
  latencies.sort((x, y) => x - y)
  return {
    p50RoundTripMs: quantile(latencies, 0.5),
    p99RoundTripMs: quantile(latencies, 0.99),
    cpuUsPerRoundTrip: Number((cpuUs / latencies.length).toFixed(1)),
    ...framesPer(pair, frames, latencies.length, "RoundTrip")
  }
}

/** Frames written since `before`, and standalone acknowledgements among them, per round trip (nothing where the pair does not count them). */
const framesPer = <K extends string>(pair: Pair, before: { readonly batches: number; readonly acks: number } | undefined, trips: number, key: K) => {
  const now = pair.frames?.()
  if (before === undefined || now === undefined) return {}
  const per = (n: number) => Number((n / trips).toFixed(2))
  return { [`framesPer${key}`]: per(now.batches + now.acks - before.batches - before.acks), [`acksPer${key}`]: per(now.acks - before.acks) } as Record<`framesPer${K}` | `acksPer${K}`, number>
}

const pipelined = async (pair: Pair, seconds: number, depth = 8) => {
  let trips = 0
  let out = 0
  let done: (() => void) | undefined
  const started = performance.now()
  const ask = () => {
    out++
    pair.send(1, [{ type: "heartbeat", from: 1, to: 2, term: 1, commit: trips }])
  }
  pair.onReceive(2, (m) => pair.send(2, [{ type: "heartbeatResp", from: 2, to: 1, term: m.term }]))
  pair.onReceive(1, () => {
    trips++
    out--
    if (performance.now() - started < seconds * 1000) ask()
    else if (out === 0) done?.()
  })
  const frames = pair.frames?.()
  const cpu = process.cpuUsage()
  const finished = new Promise<void>((resolve) => (done = resolve))
  for (let i = 0; i < depth; i++) ask()
  await finished
  const elapsed = (performance.now() - started) / 1000
  return {
    pipelinedPerSecond: Math.round(trips / elapsed),
    cpuUsPerPipelined: Number((cpuSince(cpu) / trips).toFixed(1)),
    ...framesPer(pair, frames, trips, "Pipelined")
  }
}

const portOf = (server: HttpServer.HttpServer): number => (server.address._tag === "TcpAddress" ? server.address.port : 0)

/** The production transport: each node's `layerTransport` served alone on a loopback port. */
const peerTransportPair = (ridingAcks: boolean) => Effect.gen(function* () {
  const node = (self: Side) =>
    Effect.gen(function* () {
      const context = yield* Layer.build(
        layerStandalone({ host, port: 0 }).pipe(Layer.provideMerge(layerTransport({ self, clusterSecret: "bench secret", ridingAcks })))
      )
      return {
        address: `${host}:${portOf(Context.get(context, HttpServer.HttpServer))}`,
        transport: Context.get(context, Transport),
        peers: Context.get(context, RaftPeers)
      }
    })
  const nodes = { 1: yield* node(1), 2: yield* node(2) }
  yield* nodes[1].peers.set(2, nodes[2].address)
  yield* nodes[2].peers.set(1, nodes[1].address)
  const handlers: Record<Side, (m: Message) => void> = { 1: ignore, 2: ignore }
  for (const at of [1, 2] as const) {
    yield* Effect.forkScoped(
      Effect.forever(Effect.flatMap(nodes[at].transport.receive, (m) => Effect.sync(() => void (m.type === "peerRestarted" ? undefined : handlers[at](m)))))
    )
  }
  // Each node's batches to the other, and the standalone acknowledgements it received for them.
  const written = (at: Side) => Effect.runSync(nodes[at].peers.stats).reduce((n, s) => ({ batches: n.batches + s.frames, acks: n.acks + s.acks }), { batches: 0, acks: 0 })
  return {
    send: (from, messages) => Effect.runSync(nodes[from].transport.send(messages)),
    onReceive: (at, handler) => void (handlers[at] = handler),
    frames: () => {
      const [one, two] = [written(1), written(2)]
      return { batches: one.batches + two.batches, acks: one.acks + two.acks }
    }
  } satisfies Pair
})

/** Bare `@effect/rpc`: each node serves `Raft.Deliver` and calls the other's. */
const rpcPair = (discard: boolean) =>
  Effect.gen(function* () {
    const handlers: Record<Side, (m: Message) => void> = { 1: ignore, 2: ignore }
    const serve = (at: Side) =>
      Effect.gen(function* () {
        const route = RpcServer.layerHttpRouter({ group: BenchRpcs, path: "/raft", protocol: "websocket", disableTracing: true }).pipe(
          Layer.provide(
            BenchRpcs.toLayer({
              // Unvalidated: the floor of what the rpc layer costs.
              "Raft.Deliver": ({ messages }) => Effect.sync(() => messages.forEach((m) => handlers[at](m as Message)))
            })
          ),
          Layer.provide(RpcSerialization.layerMsgPack)
        )
        const context = yield* Layer.build(
          HttpLayerRouter.serve(route, { disableLogger: true, disableListenLog: true }).pipe(
            Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host }))
          )
        )
        return portOf(Context.get(context, HttpServer.HttpServer))
      })
    const connect = (port: number) =>
      Effect.gen(function* () {
        const context = yield* Layer.build(
          RpcClient.layerProtocolSocket().pipe(
            Layer.provide(NodeSocket.layerWebSocket(`ws://${host}:${port}/raft`)),
            Layer.provide(RpcSerialization.layerMsgPack)
          )
        )
        return yield* Effect.provide(RpcClient.make(BenchRpcs, { disableTracing: true, flatten: true }), context)
      })
    const ports = { 1: yield* serve(1), 2: yield* serve(2) }
    const clients = { 1: yield* connect(ports[2]), 2: yield* connect(ports[1]) }
    return {
      send: (from, messages) =>
        void Effect.runFork(
          clients[from]("Raft.Deliver", { from, messages }, { discard }).pipe(
            // Calls still out when the pair closes are interrupted; anything else is reported.
            Effect.catchAllCause((cause) =>
              Cause.isInterruptedOnly(cause) ? Effect.void : Effect.sync(() => console.error(Cause.pretty(cause)))
            )
          )
        ),
      onReceive: (at, handler) => void (handlers[at] = handler)
    } satisfies Pair
  })

/** Plain msgpack maps, as `PeerTransport` frames them. */
const packr = new Packr({ useRecords: false })

/** The floor: one `ws` websocket, node 1 its client end and node 2 its server end, a msgpack frame per batch. */
const wsPair = Effect.gen(function* () {
  const handlers: Record<Side, (m: Message) => void> = { 1: ignore, 2: ignore }
  const server = yield* Effect.acquireRelease(
    Effect.async<WebSocketServer>((resume) => {
      const server: WebSocketServer = new WebSocketServer({ host, port: 0, perMessageDeflate: false }, () =>
        resume(Effect.succeed(server))
      )
    }),
    (server) => Effect.async<void>((resume) => server.close(() => resume(Effect.void)))
  )
  const port = (server.address() as AddressInfo).port
  const sockets = yield* Effect.acquireRelease(
    Effect.promise(() => {
      const accepted = new Promise<WebSocket>((resolve) => server.once("connection", resolve))
      const client = new WebSocket(`ws://${host}:${port}`, { perMessageDeflate: false })
      const opened = new Promise<void>((resolve, reject) => {
        client.once("open", resolve)
        client.once("error", reject)
      })
      return Promise.all([accepted, opened]).then(([accepted]) => ({ 1: client, 2: accepted }))
    }),
    (sockets) =>
      Effect.sync(() => {
        sockets[1].terminate()
        sockets[2].terminate()
      })
  )
  for (const at of [1, 2] as const) {
    sockets[at].on("message", (data) => {
      for (const m of packr.unpack(data as Buffer) as ReadonlyArray<Message>) handlers[at](m)
    })
  }
  return {
    send: (from, messages) => sockets[from].send(packr.pack(messages)),
    onReceive: (at, handler) => void (handlers[at] = handler)
  } satisfies Pair
})

const measure = <E>(name: string, pair: Effect.Effect<Pair, E, Scope.Scope>, seconds: number) =>
  Effect.scoped(
    Effect.flatMap(pair, (pair) =>
      Effect.promise(async (): Promise<TransportResult> => {
        // Warm-up: connections, JIT (the rpc variants need over a second of round trips to settle).
        await roundTrips(pair, 1.5)
        await oneWay(pair, 1)
        await pipelined(pair, 0.5)
        const trips = await roundTrips(pair, seconds / 2)
        const crossing = await pipelined(pair, seconds / 2)
        const flow = await oneWay(pair, seconds)
        return { name, ...flow, ...trips, ...crossing }
      })
    )
  )

export const benchTransport = (seconds = 3): Promise<ReadonlyArray<TransportResult>> =>
  Effect.runPromise(
    Effect.all(
      [
        measure("PeerTransport (websocket, msgpack frames, auth, acks, queues, validation)", peerTransportPair(true), seconds),
        measure("PeerTransport, acknowledgements standalone (ridingAcks: false, as before)", peerTransportPair(false), seconds),
        measure("bare @effect/rpc websocket msgpack, answered calls", rpcPair(false), seconds),
        measure("bare @effect/rpc websocket msgpack, discard calls", rpcPair(true), seconds),
        measure("bare ws + msgpackr, one frame per batch (the floor)", wsPair, seconds)
      ],
      { concurrency: 1 }
    )
  )
