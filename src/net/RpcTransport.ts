/**
 * `RpcTransport`: the network `Transport` between Blixard nodes, `@effect/rpc` over one websocket per
 * (sender → receiver) pair, msgpack-encoded, served on the node's one HTTP port at `/raft` beside the
 * REST API.
 *
 * Sending: `send` only appends to a bounded per-peer `SendQueue` (drop-oldest, see there) and wakes
 * that peer's one long-lived sender fiber. The sender takes everything queued (up to a batch limit)
 * and sends it as one `Raft.Deliver` request (per-request timeout); up to `maxInFlight` requests await
 * their answers at once, and messages queued while that window is full go out together in the next one.
 * A failed connection or request drops its batch (Raft retransmits), reports the peer through
 * `unreachable`, and the sender reconnects after a capped, jittered exponential back-off.
 *
 * Receiving: `layerServer` refuses the websocket upgrade (401, logged with the remote address) unless
 * the handshake proves the cluster secret (`PeerAuth`); it then decodes every message of a batch with
 * the `Message` schema, drops (and logs) any that fails, is not addressed to this node, or does not
 * come from the authenticated sender, and offers the rest to this node's bounded inbox.
 *
 * Why websocket + msgpack (`bench/transport.ts`, 2 vCPU shared with other work; read ratios): the
 * bare `Raft.Deliver` rpc answers a one-message request in ~0.12 ms p50 over a websocket against
 * ~0.7–2.4 ms over HTTP POST (the platform's HTTP client and server path per request; 1.2–15 ms under
 * heavy load), and moves ~3× more messages/s in sequential 256-message batches (265–420k vs 76–114k).
 * Over the websocket msgpack moved 15–40 % more than JSON at the rpc layer and needs no escaping of
 * entry payloads; through this whole transport (auth, queues, validation) the two are within noise
 * (65–92k vs 70–85k `app` messages/s one way; round trip p50 ~0.4–0.8 ms for both). JSON stays
 * selectable (`serialization: "json"`) for debugging. The largest per-message cost is validating every
 * received message with the `Message` schema (~5–13 µs each on this machine).
 *
 * Wiring (one HTTP server for the REST API and Raft, as in src/node/Daemon.ts and
 * test/net/mount.test.ts; the API's server hands the `/raft` requests and every upgrade to the
 * platform's router, see `layerSharedPort` in src/api/Server.ts):
 *
 *   const Net = layerTransport({ self, peers, clusterSecret, requestTimeoutMs: 5000 })
 *   const Http = Server.layerSharedPort(layerServer, { host, port, routePaths: ["/raft"] })
 *   const Node = Layer.mergeAll(Http, RaftNode.layer(config)).pipe(Layer.provide(ControlPlaneLive), Layer.provideMerge(Net))
 *
 * `RaftPeers` (from `Net`) changes peer addresses at runtime, e.g. when a `ConfChange` adding a node
 * with an address is applied.
 */
import { HttpLayerRouter, HttpServerRequest, HttpServerResponse, Socket } from "@effect/platform"
import * as Headers from "@effect/platform/Headers"
import { NodeSocket } from "@effect/platform-node"
import { type RpcGroup, RpcClient, RpcSerialization, RpcServer } from "@effect/rpc"
import type { RpcClientError } from "@effect/rpc/RpcClientError"
import { Context, Duration, Effect, Either, Exit, FiberMap, FiberSet, Layer, Option, ParseResult, Queue, Random, Schedule, Schema, Scope } from "effect"
import { Message } from "../raft/Message.js"
import { HandshakeVerifier, deriveKey, sign, toQuery } from "./PeerAuth.js"
import { RaftRpcs } from "./RaftRpc.js"
import { defaultSendQueueLimits, SendQueue, type SendQueueLimits } from "./SendQueue.js"
import { Transport, type TransportShape } from "./Transport.js"

export interface RpcTransportOptions {
  /** This node's Raft id. */
  readonly self: number
  /** Initial peer addresses, id → "host:port". Change them at runtime with `RaftPeers`. */
  readonly peers?: ReadonlyMap<number, string> | undefined
  /** The cluster secret (the contents of the node's secret file). Required, non-empty. */
  readonly clusterSecret: string
  /** Optional cluster id, bound into every handshake: nodes of another cluster cannot connect. */
  readonly clusterId?: string | undefined
  /** Timeout of one `Raft.Deliver` request and of opening a connection (default 5000 ms). */
  readonly requestTimeoutMs?: number | undefined
  /** Per-peer send queue bounds (default 4096 messages, 64 MiB). */
  readonly queue?: Partial<SendQueueLimits> | undefined
  /** Requests to one peer awaiting their answer at once (default 4). */
  readonly maxInFlight?: number | undefined
  /** Largest batch in one request (default 1024 messages, 4 MiB). */
  readonly maxBatchMessages?: number | undefined
  readonly maxBatchBytes?: number | undefined
  /** Reconnect back-off: first delay and cap (default 50 ms, 2000 ms), each delay jittered to 50–100 %. */
  readonly backoffInitialMs?: number | undefined
  readonly backoffMaxMs?: number | undefined
  /** Messages received but not yet taken by `receive`; beyond this new ones are dropped (default 65536). */
  readonly inboxCapacity?: number | undefined
  /** Largest accepted clock difference in a handshake (default 30 s); also how long nonces are remembered. */
  readonly maxClockSkewMs?: number | undefined
  /** The rpc path (default "/raft"). */
  readonly path?: `/${string}` | undefined
  /**
   * Wire encoding, the same on every node (default "msgpack"; "json" exists to measure the choice and
   * to read traffic while debugging).
   */
  readonly serialization?: "msgpack" | "json" | undefined
}

export interface PeerStats {
  readonly id: number
  readonly address: string
  /** Messages waiting in the send queue, and their estimated bytes. */
  readonly queued: number
  readonly queuedBytes: number
  /** Messages dropped by the full queue, and in failed requests. */
  readonly droppedQueueFull: number
  readonly droppedFailed: number
  /** Messages acknowledged by the peer. */
  readonly delivered: number
  readonly connected: boolean
  /** Consecutive failed attempts (0 when the last request succeeded), and the last failure. */
  readonly failures: number
  readonly lastError: string | undefined
}

/** Runtime control of the peer set: membership changes add, move and remove peers. */
export interface RaftPeersShape {
  /** Adds a peer or changes its address (an open connection to the old address is closed). */
  readonly set: (id: number, address: string) => Effect.Effect<void>
  /** Forgets a peer: its sender stops and its queue is discarded. */
  readonly remove: (id: number) => Effect.Effect<void>
  readonly addresses: Effect.Effect<ReadonlyMap<number, string>>
  readonly stats: Effect.Effect<ReadonlyArray<PeerStats>>
}

export class RaftPeers extends Context.Tag("blixard/net/RaftPeers")<RaftPeers, RaftPeersShape>() {}

/** What `layerServer` needs from this node's transport: who we are, how to authenticate, where messages go. */
export interface RaftInboxShape {
  readonly self: number
  readonly path: `/${string}`
  readonly serialization: RpcSerialization.RpcSerialization["Type"]
  readonly verifier: HandshakeVerifier
  /** Hands validated messages to `Transport.receive`; returns how many were dropped because the inbox is full. */
  readonly offer: (messages: ReadonlyArray<Message>) => number
}

export class RaftInbox extends Context.Tag("blixard/net/RaftInbox")<RaftInbox, RaftInboxShape>() {}

const peerHeader = "x-blixard-raft-peer"

/** A one-line description of a failed request, including the cause (e.g. "Unexpected server response: 401"). */
const describe = (error: unknown): string => {
  if (typeof error === "string") return error
  const parts: Array<string> = []
  let current: unknown = error
  for (let depth = 0; depth < 4 && current !== undefined && current !== null; depth++) {
    if (typeof current === "object" && "message" in current && typeof current.message === "string" && current.message !== "") {
      parts.push(current.message)
    }
    current = typeof current === "object" && "cause" in current ? current.cause : undefined
  }
  return parts.length > 0 ? parts.join(": ") : String(error)
}

interface Peer {
  readonly id: number
  address: string
  readonly queue: SendQueue
  readonly wake: Effect.Latch
  droppedFailed: number
  delivered: number
  connected: boolean
  failures: number
  lastError: string | undefined
}

type Client = RpcClient.RpcClient.Flat<RpcGroup.Rpcs<typeof RaftRpcs>, RpcClientError>

/**
 * The transport of node `self`: `Transport` for the Raft driver, `RaftPeers` to change peer addresses,
 * and `RaftInbox` for `layerServer`.
 */
export const layerTransport = (
  options: RpcTransportOptions
): Layer.Layer<Transport | RaftPeers | RaftInbox> =>
  Layer.scopedContext(
    Effect.gen(function* () {
      if (options.clusterSecret.length === 0) return yield* Effect.dieMessage("RpcTransport: the cluster secret is empty")
      const self = options.self
      const path = options.path ?? "/raft"
      const clusterId = options.clusterId ?? ""
      const timeoutMs = options.requestTimeoutMs ?? 5000
      const limits: SendQueueLimits = { ...defaultSendQueueLimits, ...options.queue }
      const maxBatchMessages = options.maxBatchMessages ?? 1024
      const maxBatchBytes = options.maxBatchBytes ?? 4 * 1024 * 1024
      const maxInFlight = Math.max(1, options.maxInFlight ?? 4)
      const backoffInitialMs = options.backoffInitialMs ?? 50
      const backoffMaxMs = options.backoffMaxMs ?? 2000
      const maxClockSkewMs = options.maxClockSkewMs ?? 30_000
      const key = deriveKey(options.clusterSecret)
      const serialization = options.serialization === "json" ? RpcSerialization.json : RpcSerialization.msgPack

      const inbox = yield* Queue.dropping<Message>(options.inboxCapacity ?? 65_536)
      yield* Effect.addFinalizer(() => Queue.shutdown(inbox))
      const peers = new Map<number, Peer>()
      const unreachable = new Set<number>()
      const senders = yield* FiberMap.make<number>()

      const protocolFor = (peer: Peer, address: string) =>
        RpcClient.layerProtocolSocket({ retrySchedule: Schedule.stop }).pipe(
          Layer.provide(
            Layer.scoped(
              Socket.Socket,
              Socket.makeWebSocket(
                // Evaluated per connection attempt: every handshake has a fresh timestamp and nonce.
                Effect.sync(() => `ws://${address}${path}?${toQuery(sign(key, clusterId, self, peer.id, Date.now()))}`),
                { openTimeout: Duration.millis(timeoutMs) }
              )
            )
          ),
          Layer.provide(NodeSocket.layerWebSocketConstructor),
          Layer.provide(Layer.succeed(RpcSerialization.RpcSerialization, serialization))
        )

      const connect = (peer: Peer, address: string) =>
        Effect.gen(function* () {
          const scope = yield* Scope.make()
          const context = yield* Layer.buildWithScope(protocolFor(peer, address), scope)
          const client: Client = yield* RpcClient.make(RaftRpcs, { disableTracing: true, flatten: true }).pipe(
            Effect.provide(context),
            Scope.extend(scope)
          )
          return { client, scope }
        })

      const backoff = (failures: number) =>
        Effect.flatMap(Random.next, (r) => {
          const capped = Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(failures - 1, 30))
          return Effect.sleep(Duration.millis(capped * (0.5 + r / 2)))
        })

      /**
       * One long-lived fiber per peer: connect lazily, send batches with up to `maxInFlight` requests
       * awaiting their answer (so an append never waits behind a heartbeat's round trip), back off
       * on failure. Requests go out in order on one connection, and the receiver hands each batch
       * to its inbox before answering.
       */
      const runSender = (peer: Peer) =>
        Effect.gen(function* () {
          let connection: { client: Client; scope: Scope.CloseableScope } | undefined
          let failed = false
          const permits = yield* Effect.makeSemaphore(maxInFlight)
          const requests = yield* FiberSet.make()
          const disconnect = (which: typeof connection) =>
            Effect.suspend(() => {
              if (which === undefined || connection !== which) return Effect.void
              connection = undefined
              peer.connected = false
              return Scope.close(which.scope, Exit.void)
            })
          yield* Effect.addFinalizer(() => disconnect(connection))
          const deliver = (conn: NonNullable<typeof connection>, batch: ReadonlyArray<Message>) =>
            Effect.gen(function* () {
              const result = yield* conn.client("Raft.Deliver", { from: self, messages: batch }).pipe(
                Effect.timeoutFail({
                  duration: Duration.millis(timeoutMs),
                  onTimeout: () => `node ${peer.id} (${peer.address}) did not answer within ${timeoutMs} ms`
                }),
                Effect.either
              )
              if (Either.isRight(result)) {
                peer.connected = true
                peer.failures = 0
                peer.delivered += batch.length
                return
              }
              peer.droppedFailed += batch.length
              // Requests in flight on a connection that failed fail together: count the failure once.
              if (connection !== conn) return
              peer.failures++
              peer.lastError = describe(result.left)
              unreachable.add(peer.id)
              failed = true
              yield* disconnect(conn)
              if (peer.failures === 1 || peer.failures % 20 === 0) {
                yield* Effect.logWarning(`raft transport: cannot deliver to node ${peer.id} at ${peer.address}`).pipe(
                  Effect.annotateLogs({ failures: peer.failures, error: peer.lastError })
                )
              }
              peer.wake.unsafeOpen()
            }).pipe(Effect.ensuring(permits.release(1)))
          while (true) {
            yield* peer.wake.await
            peer.wake.unsafeClose()
            if (failed) {
              failed = false
              yield* backoff(peer.failures)
            }
            if (peer.queue.length === 0) continue
            if (connection === undefined) connection = yield* Effect.uninterruptible(connect(peer, peer.address))
            yield* permits.take(1)
            // A request that failed while the window was full closed the connection: back off first.
            const conn = connection
            if (conn === undefined || failed) {
              yield* permits.release(1)
              peer.wake.unsafeOpen()
              continue
            }
            // Take the batch only now: what queued while the window was full goes out together.
            const batch = peer.queue.take(maxBatchMessages, maxBatchBytes)
            if (peer.queue.length > 0) peer.wake.unsafeOpen()
            if (batch.length === 0) {
              yield* permits.release(1)
              continue
            }
            yield* FiberSet.run(requests, deliver(conn, batch))
          }
        }).pipe(
          Effect.scoped,
          // Never let a bug silence a peer for good: log, pause, start over (interruption still ends it).
          Effect.catchAllCause((cause) =>
            Effect.logError(`raft transport: sender to node ${peer.id} failed; restarting it`, cause).pipe(
              Effect.zipRight(Effect.sleep(Duration.millis(backoffMaxMs)))
            )
          ),
          Effect.forever,
          Effect.annotateLogs({ peer: peer.id })
        )

      const setPeer = (id: number, address: string): Effect.Effect<void> =>
        Effect.suspend(() => {
          if (id === self) return Effect.void
          const existing = peers.get(id)
          if (existing !== undefined && existing.address === address) return Effect.void
          const peer: Peer = existing ?? {
            id,
            address,
            queue: new SendQueue(limits),
            wake: Effect.unsafeMakeLatch(false),
            droppedFailed: 0,
            delivered: 0,
            connected: false,
            failures: 0,
            lastError: undefined
          }
          peer.address = address
          peer.connected = false
          peer.failures = 0
          peers.set(id, peer)
          if (peer.queue.length > 0) peer.wake.unsafeOpen()
          // Replaces (interrupts) a sender still connected to the old address.
          return Effect.asVoid(FiberMap.run(senders, id, runSender(peer)))
        })

      const removePeer = (id: number): Effect.Effect<void> =>
        Effect.suspend(() => {
          const peer = peers.get(id)
          if (peer === undefined) return Effect.void
          peers.delete(id)
          peer.queue.clear()
          unreachable.delete(id)
          return FiberMap.remove(senders, id)
        })

      for (const [id, address] of options.peers ?? []) yield* setPeer(id, address)

      const transport: TransportShape = {
        send: (messages) =>
          Effect.sync(() => {
            for (const m of messages) {
              const peer = peers.get(m.to)
              if (peer === undefined) continue
              peer.queue.push(m)
              peer.wake.unsafeOpen()
            }
          }),
        receive: Queue.take(inbox),
        unreachable: Effect.sync(() => {
          if (unreachable.size === 0) return []
          const ids = [...unreachable]
          unreachable.clear()
          return ids
        })
      }

      const control: RaftPeersShape = {
        set: setPeer,
        remove: removePeer,
        addresses: Effect.sync(() => new Map([...peers.values()].map((p) => [p.id, p.address] as const))),
        stats: Effect.sync(() =>
          [...peers.values()].map((p) => ({
            id: p.id,
            address: p.address,
            queued: p.queue.length,
            queuedBytes: p.queue.bytes,
            droppedQueueFull: p.queue.dropped,
            droppedFailed: p.droppedFailed,
            delivered: p.delivered,
            connected: p.connected,
            failures: p.failures,
            lastError: p.lastError
          }))
        )
      }

      const receiver: RaftInboxShape = {
        self,
        path,
        serialization,
        verifier: new HandshakeVerifier(options.clusterSecret, clusterId, self, maxClockSkewMs),
        offer: (messages) => {
          let dropped = 0
          for (const m of messages) if (!inbox.unsafeOffer(m)) dropped++
          return dropped
        }
      }

      return Context.make(Transport, transport).pipe(Context.add(RaftPeers, control), Context.add(RaftInbox, receiver))
    })
  )

const decodeMessage = ParseResult.decodeUnknownEither(Message)

const memberByType = new Map<unknown, Schema.Schema.AnyNoContext>(
  Message.members.map((member) => [member.fields.type.literals[0], member] as const)
)

/** A short reason for a message that failed the schema: the first problem, against its own `type`'s schema. */
const explainInvalid = (raw: unknown): string => {
  const type = typeof raw === "object" && raw !== null && "type" in raw ? raw.type : undefined
  const member = memberByType.get(type)
  if (member === undefined) {
    return type === undefined ? `invalid message (${raw === null ? "null" : typeof raw} without a type)` : `invalid message (unknown type ${JSON.stringify(type)})`
  }
  const result = ParseResult.decodeUnknownEither(member)(raw)
  if (Either.isRight(result)) return `invalid ${String(type)} message`
  const [first] = ParseResult.ArrayFormatter.formatIssueSync(result.left)
  return `invalid ${String(type)} message: ${first === undefined ? "?" : `${first.path.join(".") || "(root)"}: ${first.message}`}`
}

/** The `Raft.Deliver` handler: validate every message, keep those from the authenticated sender to us. */
const handlersLayer = RaftRpcs.toLayer(
  Effect.gen(function* () {
    const inbox = yield* RaftInbox
    return {
      "Raft.Deliver": (payload, { headers }) =>
        Effect.suspend(() => {
          const authenticated = Number(headers[peerHeader])
          if (payload.from !== authenticated) {
            return Effect.logWarning(
              `raft transport: dropped a batch claiming to come from node ${payload.from} on a connection authenticated as node ${authenticated}`
            )
          }
          const valid: Array<Message> = []
          const problems: Array<string> = []
          for (const raw of payload.messages) {
            const decoded = decodeMessage(raw)
            if (Either.isLeft(decoded)) {
              problems.push(explainInvalid(raw))
              continue
            }
            const m = decoded.right
            if (m.to !== inbox.self) problems.push(`message ${m.type} addressed to node ${m.to}`)
            else if (m.from !== authenticated) problems.push(`message ${m.type} claims to come from node ${m.from}`)
            else valid.push(m)
          }
          const full = inbox.offer(valid)
          if (problems.length === 0 && full === 0) return Effect.void
          return Effect.logWarning(`raft transport: dropped ${problems.length + full} message(s) from node ${authenticated}`).pipe(
            Effect.annotateLogs({
              problems: problems.slice(0, 3).join("; "),
              inboxFull: full
            })
          )
        })
    }
  })
)

/**
 * Serves `Raft.Deliver` on this node's `HttpLayerRouter` (websocket at `/raft`), next to whatever
 * else the router serves. Needs `RaftInbox` from `layerTransport`. Build each node in its own
 * `Layer.build` (layers are memoised by reference within one build, the router included).
 */
export const layerServer: Layer.Layer<never, never, HttpLayerRouter.HttpRouter | RaftInbox> = Layer.scopedDiscard(
  Effect.gen(function* () {
    const router = yield* HttpLayerRouter.HttpRouter
    const inbox = yield* RaftInbox
    const { httpApp, protocol } = yield* RpcServer.makeProtocolWithHttpAppWebsocket.pipe(
      Effect.provideService(RpcSerialization.RpcSerialization, inbox.serialization)
    )
    yield* router.add("GET", inbox.path, (request) => {
      const verdict = inbox.verifier.verify(request.url, Date.now())
      if (!verdict.ok) {
        const remote = Option.getOrElse(request.remoteAddress, () => "unknown")
        return Effect.logWarning(`raft transport: refused a connection from ${remote}: ${verdict.reason}`).pipe(
          Effect.annotateLogs({ remote, claimedFrom: verdict.from ?? "none" }),
          Effect.as(HttpServerResponse.text("unauthorized", { status: 401 }))
        )
      }
      // Bind the connection to the authenticated sender: the handler checks every message against it.
      const authenticated = request.modify({ headers: Headers.set(request.headers, peerHeader, String(verdict.from)) })
      return Effect.provideService(httpApp, HttpServerRequest.HttpServerRequest, authenticated)
    })
    yield* RpcServer.make(RaftRpcs, { disableTracing: true }).pipe(
      Effect.provideService(RpcServer.Protocol, protocol),
      Effect.interruptible,
      Effect.forkScoped
    )
  })
).pipe(Layer.provide(handlersLayer))
