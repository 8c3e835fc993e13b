/**
 * `PeerTransport`: the network `Transport` between Blixard nodes — one websocket per (sender →
 * receiver) pair on the receiver's one HTTP port at `/raft`, carrying msgpack frames.
 *
 * Protocol (after the `PeerAuth` handshake in the upgrade request; `FrameAcks` has the details):
 *
 *   sender → receiver   [seq, [message, …]]                 a batch; seq counts 1, 2, … per connection
 *                       [seq, [message, …], [nonce, ack]]   the same, with an acknowledgement riding
 *                                                           for the connection the other way
 *   receiver → sender   seq                                 every batch up to seq is in the receiver's inbox
 *
 * Sending: `send` appends to a bounded per-peer `SendQueue` (drop-oldest, see there) and pumps that
 * peer at once: while fewer than `maxInFlight` batches await their acknowledgement, everything queued
 * (up to a batch limit) goes out as one frame; what queues while the window is full goes out together
 * when an acknowledgement opens it. A batch not acknowledged within `requestTimeoutMs`, a refused or
 * timed-out handshake, or a closed socket fails the connection: its unacknowledged batches are
 * dropped (Raft retransmits), the peer is reported through `unreachable`, and the sender reconnects
 * after a capped, jittered exponential back-off once there is something to send.
 *
 * Incarnations (`Transport`'s doc says why): the handshake names the sender's data-directory
 * incarnation and the receiver's answer (the upgrade response) names its own (`PeerAuth`). Each node
 * remembers, per peer id, the incarnation it last saw on either kind of connection. On seeing another
 * one it drops the peer's send queue and any connection of the earlier life (its frames still
 * arriving are dropped), hands `receive` a `PeerRestarted` (after every message received before) and
 * drops every message to the peer until `resume`. A sender checks the answer before its first frame
 * on a connection, so nothing queued for the earlier life reaches the new one.
 * The receiver does not also refuse frames "addressed to another incarnation": a connection reaches
 * one process, whose incarnation its sender read before sending anything, so every frame on it is
 * for that incarnation; only a sender that reads no incarnations (an older release) could deliver a
 * queue built for an earlier life, and such a sender names no addressee incarnation to refuse.
 *
 * Receiving: `PeerEndpoint` (mounted on the node's HTTP server by `Server.layerSharedPort`, or alone by
 * `layerStandalone`) refuses the upgrade with 401 (logged with the remote address) unless the
 * handshake proves the cluster secret and, with `tls`, the client certificate is from the cluster CA
 * and names the node the handshake claims; it then checks every frame against `Frame` and every message
 * in it against the `Message` schema, drops (and logs) any message that fails, is not addressed to
 * this node, or does not come from the authenticated sender, offers the rest to this node's bounded
 * inbox, and acknowledges the frame — cumulatively and lazily: at once when a second frame is
 * unacknowledged or the unacknowledged frames reach `AckEveryBytes`, else after `ackDelayMs`. A quiet
 * cluster's traffic is a heartbeat and its answer per round on each link; an acknowledgement per frame
 * doubled the frames on the wire (and the wake-ups of both ends), and was a fifth of an idle node's CPU
 * (bench/RESULTS.md). A sender's window of two or more batches never waits on a held-back
 * acknowledgement: its second batch in flight is acknowledged within the event loop's turn.
 *
 * Riding acknowledgements (`FrameAcks`): Raft's traffic is requests and their answers, so a node that
 * owes a peer an acknowledgement usually sends that peer a frame soon after, on its own connection the
 * other way; the acknowledgement rides on that frame (named by the acknowledged connection's handshake
 * nonce), and the node's receiving side hands it to its sending side, which applies it exactly as a
 * standalone one (`acknowledged`). Standalone acknowledgements stay for what nothing carries in time,
 * and for peers that did not announce the feature (older releases). A standalone acknowledgement was
 * a frame written (on loopback, the writer's system call also runs the reader's TCP path) and a read
 * and wake-up at the other end, per frame pair; a one-client write on a 3-node cluster paid two at
 * the leader and one at each follower.
 *
 * Why not `@effect/rpc` (which carried this traffic before): a Raft message sent alone cost ~130 µs of
 * CPU as an answered rpc call and ~120 µs as a fire-and-forget one (client and server together),
 * against ~50 µs through this transport with its acknowledgements and schema checks and ~12 µs for a
 * bare websocket frame (`npm run bench -- transport`, bench/RESULTS.md). On a 3-node cluster sharing
 * two cores that overhead was most of each node's CPU per write and a large part of a one-client
 * write's latency.
 * etcd made the same split for the same reason: gRPC for clients, its own streams between peers.
 * The sender and receiver are plain event handlers on the sockets — no fiber per batch; Effect owns
 * their lifetime (the layer's scope closes every socket and timer) and their logging.
 */
import { HttpServer, type HttpServerError } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Either, Layer, ParseResult, Queue, Runtime, Schema, type Scope } from "effect"
import { Packr } from "msgpackr"
import type { X509Certificate } from "node:crypto"
import * as http from "node:http"
import * as https from "node:https"
import type { Duplex } from "node:stream"
import * as tls from "node:tls"
import { WebSocket, WebSocketServer } from "ws"
import * as Metrics from "../metrics/Metrics.js"
import { Message } from "../raft/Message.js"
import { CertificateRevoked, PeerCertificateRefused } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import { answeredIncarnation, HandshakeVerifier, deriveKey, incarnationHeaders, isIncarnation, type Secrets, secretsOf, sign, toQuery } from "./PeerAuth.js"
import { AckEveryBytes, AckEveryFrames, decodeAck, decodeFrame, type Frame, InboundAcks, type RidingAck, ridingAcksHeader } from "./FrameAcks.js"
import { defaultSendQueueLimits, SendQueue, type SendQueueLimits } from "./SendQueue.js"
import { normalizeSerial, revokedAdvice } from "../domain/Certificate.js"
import { checkServerIdentity, identityOf, issuerIn, type RevokedCheck } from "./Tls.js"
import { type Received, Transport, type TransportShape } from "./Transport.js"

/**
 * Mutual TLS between peers: each side presents its node certificate from the cluster CA, and checks
 * that the other's is from the same CA and names the node it expects (`Tls.ts`).
 */
export interface PeerTls {
  /** PEM: the cluster CA, this node's certificate and its key. */
  readonly ca: string
  readonly cert: string
  readonly key: string
  /** The cluster the certificates belong to (the node URIs' `CLUSTER_ID`). */
  readonly clusterId: string
}

/** What a server listens with: `onChange` (a `Tls.LiveTls`'s) says when `cert` and `key` were renewed. */
export interface ServerTls {
  readonly ca: string
  readonly cert: string
  /** What the server presents, when more than `cert`: `cert` and the certificates after it (`Tls.LiveTls.chain`). */
  readonly chain?: string | undefined
  readonly key: string
  readonly onChange?: ((listener: () => void) => () => void) | undefined
}

export interface PeerTransportOptions {
  /** This node's Raft id. */
  readonly self: number
  /**
   * This node's data-directory incarnation (`NodeMeta.claim`), named to peers at every connection,
   * both ways. Absent: none named (as by a release without incarnations).
   */
  readonly incarnation?: string | undefined
  /** Initial peer addresses, id → "host:port". Change them at runtime with `RaftPeers`. */
  readonly peers?: ReadonlyMap<number, string> | undefined
  /**
   * The cluster secret, or the node's keyring as it is now (asked at each connection, the first
   * secret signs, every one is accepted: `PeerAuth`). Required, non-empty.
   */
  readonly clusterSecret: Secrets
  /** Optional cluster id, bound into every handshake: nodes of another cluster cannot connect. */
  readonly clusterId?: string | undefined
  /** How long a batch may wait for its acknowledgement, and a connection for its handshake (default 5000 ms). */
  readonly requestTimeoutMs?: number | undefined
  /** Per-peer send queue bounds (default 4096 messages, 64 MiB). */
  readonly queue?: Partial<SendQueueLimits> | undefined
  /** Batches to one peer awaiting their acknowledgement at once (default 4, at least 2: see `ackDelayMs`). */
  readonly maxInFlight?: number | undefined
  /**
   * How long a receiver may hold back the acknowledgement of a lone frame, hoping to cover the next
   * one too (default the smaller of 250 ms and an eighth of `requestTimeoutMs`: peers share their
   * timing settings, so a held-back acknowledgement stays far inside the sender's timeout).
   */
  readonly ackDelayMs?: number | undefined
  /**
   * Acknowledgements ride on frames the other way, with peers that announce it (default true). False:
   * this node neither announces nor sends them, as a release without them (tests, benchmarks).
   */
  readonly ridingAcks?: boolean | undefined
  /** Largest batch in one frame (default 1024 messages, 4 MiB; a single larger message goes alone). */
  readonly maxBatchMessages?: number | undefined
  readonly maxBatchBytes?: number | undefined
  /** Largest frame a receiver accepts (default 256 MiB; snapshots travel in paced chunks of 1 MiB). */
  readonly maxFrameBytes?: number | undefined
  /** Reconnect back-off: first delay and cap (default 50 ms, 2000 ms), each delay jittered to 50–100 %. */
  readonly backoffInitialMs?: number | undefined
  readonly backoffMaxMs?: number | undefined
  /** Messages received but not yet taken by `receive`; beyond this new ones are dropped (default 65536). */
  readonly inboxCapacity?: number | undefined
  /** Largest accepted clock difference in a handshake (default 30 s); also how long nonces are remembered. */
  readonly maxClockSkewMs?: number | undefined
  /** The endpoint's path (default "/raft"). */
  readonly path?: `/${string}` | undefined
  /** Mutual TLS (`wss://`); absent: plain websockets, for tests and `--insecure-plaintext`. */
  readonly tls?: PeerTls | undefined
  /** Why a peer's certificate is revoked, if it is (`Tls.RevokedCheck`): checked at every handshake, both ways. */
  readonly revoked?: RevokedCheck | undefined
}

export interface PeerStats {
  readonly id: number
  readonly address: string
  /** Messages waiting in the send queue, and their estimated bytes. */
  readonly queued: number
  readonly queuedBytes: number
  /** Messages dropped by the full queue, in failed connections, and built for an earlier incarnation of the peer. */
  readonly droppedQueueFull: number
  readonly droppedFailed: number
  readonly droppedRestarted: number
  /** The peer's incarnation as last seen (undefined until a connection named one). */
  readonly incarnation: string | undefined
  /** Messages acknowledged by the peer. */
  readonly delivered: number
  /** Messages written to the peer's connection. */
  readonly sent: number
  /**
   * Frames (batches) written to the peer's connections, standalone acknowledgement frames received
   * from it, and acknowledgements received riding on its frames (`FrameAcks`).
   */
  readonly frames: number
  readonly acks: number
  readonly ridingAcks: number
  readonly connected: boolean
  /** Consecutive failed attempts (0 when the last batch was acknowledged), and the last failure. */
  readonly failures: number
  /** Failed attempts and lost connections since the peer was added. */
  readonly failuresTotal: number
  readonly lastError: string | undefined
}

/** Runtime control of the peer set: membership changes add, move and remove peers. */
export interface RaftPeersShape {
  /** Adds a peer or changes its address (an open connection to the old address is closed). */
  readonly set: (id: number, address: string) => Effect.Effect<void>
  /** Forgets a peer: its connection closes and its queue is discarded. */
  readonly remove: (id: number) => Effect.Effect<void>
  readonly addresses: Effect.Effect<ReadonlyMap<number, string>>
  readonly stats: Effect.Effect<ReadonlyArray<PeerStats>>
}

export class RaftPeers extends Context.Tag("blixard/net/RaftPeers")<RaftPeers, RaftPeersShape>() {}

/** The receiving side, for the node's HTTP server: requests and upgrades for `path` go here. */
export interface PeerEndpointShape {
  readonly path: `/${string}`
  /** A websocket upgrade for `path`: authenticated, then served; refused with 401 otherwise. */
  readonly upgrade: (request: http.IncomingMessage, socket: Duplex, head: Buffer) => void
  /** A plain request for `path`: 401 without a valid handshake, 426 (use a websocket) with one. */
  readonly request: (request: http.IncomingMessage, response: http.ServerResponse) => void
  /** Closes every peer connection and refuses new ones (the server is shutting down). */
  readonly close: () => void
}

export class PeerEndpoint extends Context.Tag("blixard/net/PeerEndpoint")<PeerEndpoint, PeerEndpointShape>() {}

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

/** Plain msgpack maps (no msgpackr records): every frame stands alone, readable by any msgpack decoder. */
const packr = new Packr({ useRecords: false })

/** The path of a request URL (without its query). */
export const pathOf = (url: string): string => {
  const q = url.indexOf("?")
  return q < 0 ? url : url.slice(0, q)
}

/** Writes a complete HTTP response on a socket whose upgrade we refuse, then closes it. */
const refuseUpgrade = (socket: Duplex, status: number, reason: string, body: string): void => {
  if (!socket.writable) return void socket.destroy()
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
}

interface Connection {
  readonly socket: WebSocket
  /** Sequence number of the last batch sent on this connection. */
  seq: number
  /** Batches awaiting their acknowledgement, oldest first: seq → message count, frame bytes, deadline, and when sent (`performance.now()`). */
  readonly inFlight: Map<number, { readonly count: number; readonly bytes: number; readonly deadline: number; readonly sentAt: number }>
  /** With TLS: the serial of the certificate the peer's server presented (`normalizeSerial`). */
  serial?: string | undefined
  /** With TLS: that certificate, checked again when this node's trust narrows (`sweep`). */
  certificate?: X509Certificate | undefined
  /** The key of the secret this node's handshake was made with (`sweepSecrets`). */
  readonly key: Buffer
  /** The handshake's nonce: what names this connection in acknowledgements riding the other way. */
  readonly nonce: string
  /** The peer announced that it reads acknowledgements riding on frames (`FrameAcks`). */
  ridingAcks: boolean
  /** The incarnation the peer answered with (undefined until it answered, or if it named none). */
  incarnation?: string | undefined
}

interface Peer {
  readonly id: number
  address: string
  readonly queue: SendQueue
  connection: Connection | undefined
  /** A pending reconnect (back-off) timer. */
  retry: NodeJS.Timeout | undefined
  droppedFailed: number
  droppedRestarted: number
  delivered: number
  sent: number
  frames: number
  acks: number
  ridingAcks: number
  connected: boolean
  failures: number
  failuresTotal: number
  lastError: string | undefined
  /** The `peer` tag of this peer's metrics. */
  readonly tags: ReturnType<typeof Metrics.tags>
}

/**
 * Per peer id: the incarnation this node last saw it at, on a connection either way (what its queue
 * and Raft progress are built for), and the `PeerRestarted`s handed out and not yet resumed, while
 * which messages to it are dropped.
 */
class PeerLives {
  private readonly seen = new Map<number, string>()
  private readonly resetting = new Map<number, number>()

  current(id: number): string | undefined {
    return this.seen.get(id)
  }

  /** Records what a connection named; returns the incarnation before if this is another (the earlier life is over here). */
  learn(id: number, incarnation: string | undefined): string | undefined {
    if (incarnation === undefined) return undefined
    const before = this.seen.get(id)
    this.seen.set(id, incarnation)
    if (before === undefined || before === incarnation) return undefined
    this.resetting.set(id, (this.resetting.get(id) ?? 0) + 1)
    return before
  }

  muted(id: number): boolean {
    return this.resetting.has(id)
  }

  resume(id: number): void {
    const n = (this.resetting.get(id) ?? 0) - 1
    if (n > 0) this.resetting.set(id, n)
    else this.resetting.delete(id)
  }
}

const newPeer = (id: number, address: string, limits: SendQueueLimits): Peer => ({
  id,
  address,
  queue: new SendQueue(limits),
  connection: undefined,
  retry: undefined,
  droppedFailed: 0,
  droppedRestarted: 0,
  delivered: 0,
  sent: 0,
  frames: 0,
  acks: 0,
  ridingAcks: 0,
  failuresTotal: 0,
  tags: Metrics.tags(["peer", String(id)]),
  connected: false,
  failures: 0,
  lastError: undefined
})

const statsOf = (p: Peer, incarnation: string | undefined): PeerStats => ({
  id: p.id,
  address: p.address,
  queued: p.queue.length,
  queuedBytes: p.queue.bytes,
  droppedQueueFull: p.queue.dropped,
  droppedFailed: p.droppedFailed,
  droppedRestarted: p.droppedRestarted,
  incarnation,
  delivered: p.delivered,
  sent: p.sent,
  frames: p.frames,
  acks: p.acks,
  ridingAcks: p.ridingAcks,
  connected: p.connected,
  failures: p.failures,
  failuresTotal: p.failuresTotal,
  lastError: p.lastError
})

/** With TLS: why the connection's client certificate does not prove it is node `from`, if it does not. */
const certificateProblem = (
  options: Pick<PeerTransportOptions, "tls" | "revoked">,
  request: http.IncomingMessage,
  from: number
): PeerCertificateRefused | CertificateRevoked | undefined => {
  const peerTls = options.tls
  if (peerTls === undefined) return undefined
  const refuse = (message: string) => new PeerCertificateRefused({ subject: request.socket.remoteAddress ?? "unknown", message })
  const socket = request.socket
  if (!(socket instanceof tls.TLSSocket)) return refuse("the connection is not TLS")
  const cert = socket.getPeerCertificate()
  if (cert === null || Object.keys(cert).length === 0) return refuse(`node ${from} presented no client certificate`)
  if (!socket.authorized) return refuse(`node ${from}'s certificate is not from this cluster's CA (${String(socket.authorizationError)})`)
  const identity = identityOf(cert.subjectaltname)
  if (identity === undefined) return refuse(`node ${from}'s certificate names no Blixard node`)
  if (identity.clusterId !== peerTls.clusterId) return refuse(`node ${from}'s certificate is of cluster ${identity.clusterId}, not ${peerTls.clusterId}`)
  if (identity.node !== from) return refuse(`a connection claiming to be node ${from} presented node ${identity.node}'s certificate`)
  const serial = normalizeSerial(cert.serialNumber)
  const reason = options.revoked?.(serial)
  if (reason !== undefined) {
    return new CertificateRevoked({
      node: NodeId.make(from),
      subject: serial,
      message: `node ${from}'s certificate ${serial} is revoked (${reason}); its connection is refused: ${revokedAdvice(from)}`
    })
  }
  return undefined
}


/**
 * The transport of node `self`: `Transport` for the Raft driver, `RaftPeers` to change peer addresses,
 * and `PeerEndpoint` for the node's HTTP server.
 */
export const layerTransport = (options: PeerTransportOptions): Layer.Layer<Transport | RaftPeers | PeerEndpoint> =>
  Layer.scopedContext(
    Effect.gen(function* () {
      if (secretsOf(options.clusterSecret).some((s) => s.length === 0) || secretsOf(options.clusterSecret).length === 0) {
        return yield* Effect.dieMessage("PeerTransport: the cluster secret is empty")
      }
      if (options.incarnation !== undefined && !isIncarnation(options.incarnation)) {
        return yield* Effect.dieMessage(`PeerTransport: node ${options.self}'s incarnation ${JSON.stringify(options.incarnation)} cannot be sent (1 to 64 letters, digits, - or _)`)
      }
      const self = options.self
      const path = options.path ?? "/raft"
      const clusterId = options.clusterId ?? ""
      const timeoutMs = options.requestTimeoutMs ?? 5000
      const limits: SendQueueLimits = { ...defaultSendQueueLimits, ...options.queue }
      const maxBatchMessages = options.maxBatchMessages ?? 1024
      const maxBatchBytes = options.maxBatchBytes ?? 4 * 1024 * 1024
      // Two at least: a receiver holds back the acknowledgement of a lone frame (`ackDelayMs`).
      const maxInFlight = Math.max(2, options.maxInFlight ?? 4)
      const ackDelayMs = Math.max(0, options.ackDelayMs ?? Math.min(250, Math.floor(timeoutMs / 8)))
      const backoffInitialMs = options.backoffInitialMs ?? 50
      const backoffMaxMs = options.backoffMaxMs ?? 2000
      const maxClockSkewMs = options.maxClockSkewMs ?? 30_000
      /** The key this node signs with: its first secret's, as its keyring is now. */
      let signing: { secret: string; key: Buffer } = { secret: "", key: Buffer.alloc(0) }
      const signingKey = (): Buffer => {
        const primary = secretsOf(options.clusterSecret)[0]!
        if (primary !== signing.secret) signing = { secret: primary, key: deriveKey(primary) }
        return signing.key
      }
      const runFork = Runtime.runFork(yield* Effect.runtime<never>())
      const log = (effect: Effect.Effect<void>) => void runFork(effect)

      // Unbounded, so a `PeerRestarted` is never lost; messages are bounded by hand (`offerMessage`).
      const inbox = yield* Queue.unbounded<Received>()
      const inboxCapacity = options.inboxCapacity ?? 65_536
      /** Offers a received message to the inbox; false (dropped) if `inboxCapacity` are waiting. */
      const offerMessage = (m: Message): boolean => {
        const size = inbox.unsafeSize()
        return (size._tag === "Some" && size.value >= inboxCapacity) ? false : inbox.unsafeOffer(m)
      }
      const peers = new Map<number, Peer>()
      const unreachable = new Set<number>()
      let closed = false
      const lives = new PeerLives()
      /** Accepted connections, by socket: the node that opened it and the incarnation it named. */
      const accepted = new Map<WebSocket, { readonly from: number; readonly incarnation: string | undefined; readonly key: Buffer }>()
      const ridingAcks = options.ridingAcks !== false
      /** Per peer id: what this node owes for the newest connection it accepted from the peer (`FrameAcks`). */
      const owed = new Map<number, InboundAcks>()

      // --- Sending ------------------------------------------------------------------------------

      /** Sends what is queued while the window has room; connects first if need be. */
      const pump = (peer: Peer): void => {
        const conn = peer.connection
        if (conn === undefined) {
          if (peer.retry === undefined && peer.queue.length > 0) connect(peer)
          return
        }
        if (conn.socket.readyState !== WebSocket.OPEN) return
        while (conn.inFlight.size < maxInFlight && peer.queue.length > 0) {
          const batch = peer.queue.take(maxBatchMessages, maxBatchBytes)
          const seq = ++conn.seq
          const sentAt = performance.now()
          const ack = conn.ridingAcks ? owed.get(peer.id)?.take() : undefined
          const frame = packr.pack(ack === undefined ? [seq, batch] : [seq, batch, ack])
          const deadline = Date.now() + timeoutMs
          conn.inFlight.set(seq, { count: batch.length, bytes: frame.length, deadline, sentAt })
          armWatchdog(deadline)
          peer.sent += batch.length
          peer.frames++
          conn.socket.send(frame)
        }
      }

      /** Closes a connection without counting a failure (the peer moved, was removed, or we stop). */
      const dropConnection = (peer: Peer): void => {
        const conn = peer.connection
        if (conn === undefined) return
        peer.connection = undefined
        peer.connected = false
        for (const batch of conn.inFlight.values()) peer.droppedFailed += batch.count
        conn.inFlight.clear()
        conn.socket.removeAllListeners()
        conn.socket.on("error", () => {})
        conn.socket.terminate()
        owed.get(peer.id)?.resend()
      }

      /** Counts a failed attempt: reported unreachable, logged (the first and every 20th), retried after a back-off. */
      const failed = (peer: Peer, reason: string): void => {
        peer.failures++
        peer.failuresTotal++
        peer.lastError = reason
        unreachable.add(peer.id)
        if (peer.failures === 1 || peer.failures % 20 === 0) {
          log(
            Effect.logWarning(`raft transport: cannot deliver to node ${peer.id} at ${peer.address}`).pipe(
              Effect.annotateLogs({ peer: peer.id, failures: peer.failures, error: reason })
            )
          )
        }
        if (closed) return
        const capped = Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(peer.failures - 1, 30))
        peer.retry = setTimeout(() => {
          peer.retry = undefined
          pump(peer)
        }, capped * (0.5 + Math.random() / 2))
      }

      const fail = (peer: Peer, conn: Connection, reason: string): void => {
        // Events of a connection already replaced or failed (a close after an error) count once.
        if (peer.connection !== conn) return
        dropConnection(peer)
        failed(peer, reason)
      }

      /**
       * A connection (`via`) named `id`'s incarnation: if it is another than last seen, the earlier
       * life is over here — its queue and connections go, `receive` hands out a `PeerRestarted`, and
       * messages to it are dropped until `resume`.
       */
      const learn = (id: number, incarnation: string | undefined, via: string): void => {
        const before = lives.learn(id, incarnation)
        if (before === undefined || incarnation === undefined) return
        const peer = peers.get(id)
        const dropped = peer?.queue.length ?? 0
        if (peer !== undefined) {
          peer.queue.clear()
          peer.droppedRestarted += dropped
          const conn = peer.connection
          if (conn?.incarnation !== undefined && conn.incarnation !== incarnation) dropConnection(peer)
        }
        // Its earlier life's connections to this node (their "close" forgets them).
        for (const [socket, c] of accepted) if (c.from === id && c.incarnation !== undefined && c.incarnation !== incarnation) socket.terminate()
        inbox.unsafeOffer({ type: "peerRestarted", peer: id, incarnation })
        log(
          Effect.logWarning(
            `raft transport: node ${id} is back as another incarnation (${before} → ${incarnation}: its data directory was replaced); dropped ${dropped} message(s) queued for its earlier life, and its Raft progress starts over`
          ).pipe(Effect.annotateLogs({ peer: id, via }))
        )
      }

      const connect = (peer: Peer): void => {
        if (closed) return
        // A fresh timestamp and nonce per attempt.
        const key = signingKey()
        const signed = sign(key, clusterId, self, peer.id, Date.now(), options.incarnation)
        let socket: WebSocket
        try {
          socket = new WebSocket(`${options.tls === undefined ? "ws" : "wss"}://${peer.address}${path}?${toQuery(signed)}`, {
            ...(options.tls === undefined
              ? {}
              : {
                  ca: options.tls.ca,
                  cert: options.tls.cert,
                  key: options.tls.key,
                  // `ws` hands this to `tls.connect` (which wants an Error or undefined); its typing says boolean.
                  checkServerIdentity: checkServerIdentity(options.tls.clusterId, peer.id, options.revoked) as never
                }),
            perMessageDeflate: false,
            handshakeTimeout: timeoutMs,
            maxPayload: 1024 * 1024,
            // An all-zero mask: `ws` then neither masks nor copies a frame's payload. Masking protects
            // proxies from scripts in browsers (RFC 6455 §10.3); between two nodes there are neither.
            generateMask: (mask) => void mask.fill(0)
          })
        } catch (error) {
          // An address the websocket client cannot even parse: a failed attempt like any other.
          return failed(peer, error instanceof Error ? error.message : String(error))
        }
        const conn: Connection = { socket, seq: 0, inFlight: new Map(), key, nonce: signed.nonce, ridingAcks: false }
        peer.connection = conn
        socket.on("upgrade", (response) => {
          if (response.socket instanceof tls.TLSSocket) {
            conn.serial = normalizeSerial(response.socket.getPeerCertificate().serialNumber)
            conn.certificate = response.socket.getPeerX509Certificate()
          }
          // Before "open", so before the first frame: a queue built for an earlier life is dropped here.
          const answer = answeredIncarnation(key, clusterId, signed, response.headers)
          if (!answer.ok) return fail(peer, conn, answer.reason)
          conn.incarnation = answer.incarnation
          conn.ridingAcks = ridingAcks && response.headers[ridingAcksHeader] === "1"
          learn(peer.id, answer.incarnation, "its answer to this node's connection")
        })
        socket.on("open", () => pump(peer))
        socket.on("message", (data, isBinary) => {
          let ack: Either.Either<number, unknown>
          try {
            ack = isBinary ? decodeAck(packr.unpack(data as Buffer)) : Either.left("text frame")
          } catch (e) {
            ack = Either.left(e)
          }
          if (Either.isLeft(ack)) return fail(peer, conn, `node ${peer.id} sent a malformed acknowledgement`)
          peer.acks++
          if (!acknowledged(peer, conn, ack.right, false)) fail(peer, conn, `node ${peer.id} acknowledged batch ${ack.right}, beyond the last sent (${conn.seq})`)
        })
        socket.on("error", (error) => fail(peer, conn, error.message))
        socket.on("close", (code) => fail(peer, conn, `connection closed (${code})`))
      }

      /**
       * Applies an acknowledgement of every batch up to `upTo` on `conn`, standalone or riding (then
       * counted by the caller); false if it names a batch never sent. One round trip per
       * acknowledgement, from the newest batch it covers; not from a lone small batch's standalone
       * acknowledgement, which the receiver may have held back (`ackDelayMs`). A riding one left with
       * the receiver's first frame back, when it had something to say: for Raft's request and answer,
       * the round trip Raft sees.
       */
      const acknowledged = (peer: Peer, conn: Connection, upTo: number, riding: boolean): boolean => {
        if (upTo > conn.seq) return false
        let newest: { readonly bytes: number; readonly sentAt: number } | undefined
        let covered = 0
        for (const [seq, batch] of conn.inFlight) {
          if (seq > upTo) break
          conn.inFlight.delete(seq)
          peer.delivered += batch.count
          newest = batch
          covered++
        }
        if (newest !== undefined && (riding || covered >= AckEveryFrames || newest.bytes >= AckEveryBytes)) {
          Metrics.peerRoundTrip.unsafeUpdate((performance.now() - newest.sentAt) / 1000, peer.tags)
        }
        peer.connected = true
        peer.failures = 0
        pump(peer)
        return true
      }

      /** An acknowledgement that rode on a frame from `from`: applied if it names this node's current connection to it. */
      const rodeIn = (from: number, [nonce, upTo]: RidingAck): void => {
        const peer = peers.get(from)
        const conn = peer?.connection
        // For an earlier connection (failed or replaced since): its batches are gone already.
        if (peer === undefined || conn === undefined || conn.nonce !== nonce) return
        if (acknowledged(peer, conn, upTo, true)) peer.ridingAcks++
        else log(Effect.logWarning(`raft transport: ignored node ${from}'s acknowledgement of batch ${upTo}, beyond the last sent to it (${conn.seq})`))
      }

      // Batches overdue for their acknowledgement fail their connection: a peer that accepts but never
      // answers (hung, or a half-open TCP connection) is found out at its oldest batch's deadline. One
      // timer, set for the earliest deadline of any connection's oldest batch, and only while a batch
      // is in flight: a quiet cluster's batches are acknowledged long before, so it wakes about once
      // per timeout, where a check every 250 ms woke it four times a second (bench/RESULTS.md).
      let watchdog: ReturnType<typeof setTimeout> | undefined
      let watchdogAt = Number.POSITIVE_INFINITY
      const armWatchdog = (at: number): void => {
        if (closed || (watchdog !== undefined && watchdogAt <= at)) return
        clearTimeout(watchdog)
        watchdogAt = at
        watchdog = setTimeout(checkOverdue, Math.max(0, at - Date.now()))
        watchdog.unref()
      }
      const checkOverdue = (): void => {
        watchdog = undefined
        watchdogAt = Number.POSITIVE_INFINITY
        const now = Date.now()
        let next = Number.POSITIVE_INFINITY
        for (const peer of peers.values()) {
          const conn = peer.connection
          if (conn === undefined) continue
          const oldest = conn.inFlight.values().next()
          if (oldest.done) continue
          if (oldest.value.deadline <= now) fail(peer, conn, `node ${peer.id} (${peer.address}) did not acknowledge within ${timeoutMs} ms`)
          else if (oldest.value.deadline < next) next = oldest.value.deadline
        }
        if (next < Number.POSITIVE_INFINITY) armWatchdog(next)
      }

      const setPeer = (id: number, address: string): Effect.Effect<void> =>
        Effect.sync(() => {
          if (id === self || closed) return
          const existing = peers.get(id)
          if (existing !== undefined && existing.address === address) return
          const peer = existing ?? newPeer(id, address, limits)
          dropConnection(peer)
          clearTimeout(peer.retry)
          peer.retry = undefined
          peer.address = address
          peer.failures = 0
          peers.set(id, peer)
          pump(peer)
        })

      const removePeer = (id: number): Effect.Effect<void> =>
        Effect.sync(() => {
          const peer = peers.get(id)
          if (peer === undefined) return
          peers.delete(id)
          dropConnection(peer)
          clearTimeout(peer.retry)
          peer.queue.clear()
          unreachable.delete(id)
        })

      for (const [id, address] of options.peers ?? []) yield* setPeer(id, address)

      // --- Receiving ----------------------------------------------------------------------------

      const verifier = new HandshakeVerifier(options.clusterSecret, clusterId, self, maxClockSkewMs)
      const server = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: options.maxFrameBytes ?? 256 * 1024 * 1024 })
      /** Per upgrade request being accepted: the headers of the answer (this node's incarnation, `ridingAcksHeader`). */
      const answers = new WeakMap<http.IncomingMessage, ReadonlyArray<string>>()
      server.on("headers", (headers, request) => void headers.push(...(answers.get(request) ?? [])))
      /** With TLS: each accepted connection's client certificate serial, and the node it is. */
      const acceptedCertificates = new Map<WebSocket, { readonly serial: string; readonly from: number }>()

      // A certificate revoked while its connections are open: they are closed too, both ways, so a
      // revocation cuts a node off now rather than at its next reconnection. So are this node's own
      // connections to a server whose certificate it no longer trusts: once a CA rotation finishes
      // (the old CA dropped from `tls.ca`), none opened to an old-CA certificate outlives it (the
      // server side closes accepted ones at once: `listen`).
      const closeAccepted = (socket: WebSocket, from: number, why: string): void => {
        log(Effect.logWarning(`raft transport: closed node ${from}'s connection: ${why}`))
        acceptedCertificates.delete(socket)
        socket.terminate()
      }
      const sweepRevoked = (revoked: RevokedCheck): void => {
        for (const [socket, { serial, from }] of acceptedCertificates) {
          const reason = revoked(serial)
          if (reason !== undefined) closeAccepted(socket, from, `its certificate ${serial} was revoked (${reason})`)
        }
        for (const peer of peers.values()) {
          const conn = peer.connection
          const reason = conn?.serial === undefined ? undefined : revoked(conn.serial)
          if (conn !== undefined && reason !== undefined) fail(peer, conn, `BLX_CERT_REVOKED: node ${peer.id}'s certificate ${conn.serial} is revoked (${reason})`)
        }
      }
      let trustSwept = options.tls?.ca
      const sweepUntrusted = (trust: string): void => {
        if (trust === trustSwept) return
        trustSwept = trust
        for (const peer of peers.values()) {
          const conn = peer.connection
          if (conn?.certificate !== undefined && issuerIn(conn.certificate, trust) === undefined) {
            fail(peer, conn, `BLX_PEER_CERT_REFUSED: node ${peer.id}'s certificate is of a CA this node no longer trusts (a CA rotation finished); it reconnects with the new one`)
          }
        }
      }
      // Connections whose handshake was made with a secret no longer in this node's keyring (a
      // rotation's last step removed it) are closed both ways, as a revoked certificate's are: a
      // removed secret admits no connection, old or new. Those made with a secret still held stay.
      let secretsSwept = secretsOf(options.clusterSecret).join("\n")
      const sweepSecrets = (): void => {
        const secrets = secretsOf(options.clusterSecret)
        if (secrets.join("\n") === secretsSwept) return
        secretsSwept = secrets.join("\n")
        const held = secrets.map(deriveKey)
        const removed = (key: Buffer) => !held.some((k) => k.equals(key))
        for (const [socket, { from, key }] of accepted) {
          if (!removed(key)) continue
          log(Effect.logWarning(`raft transport: closed node ${from}'s connection: its handshake was made with a cluster secret this node's keyring no longer holds`))
          socket.terminate()
        }
        for (const peer of peers.values()) {
          const conn = peer.connection
          if (conn !== undefined && removed(conn.key)) fail(peer, conn, `its handshake was made with a cluster secret this node's keyring no longer holds; it reconnects with the one in use`)
        }
      }
      const sweep = setInterval(() => {
        if (options.revoked !== undefined) sweepRevoked(options.revoked)
        if (options.tls !== undefined) sweepUntrusted(options.tls.ca)
        sweepSecrets()
      }, 1000)
      sweep.unref()

      /** A received frame, checked against `Frame`; undefined (logged) if malformed. */
      const readFrame = (from: number, data: unknown, isBinary: boolean): Frame | undefined => {
        let frame: Either.Either<Frame, unknown>
        try {
          frame = isBinary ? decodeFrame(packr.unpack(data as Buffer)) : Either.left("text frame")
        } catch (e) {
          frame = Either.left(e)
        }
        if (Either.isRight(frame)) return frame.right
        log(Effect.logWarning(`raft transport: dropped a malformed frame from node ${from}`))
        return undefined
      }

      /** Offers a frame's messages to the inbox: those that pass the schema, are for this node and come from `from`; logs the others. */
      const deliver = (from: number, raws: ReadonlyArray<unknown>): void => {
        const valid: Array<Message> = []
        const problems: Array<string> = []
        for (const raw of raws) {
          const decoded = decodeMessage(raw)
          if (Either.isLeft(decoded)) {
            problems.push(explainInvalid(raw))
            continue
          }
          const m = decoded.right
          if (m.to !== self) problems.push(`message ${m.type} addressed to node ${m.to}`)
          else if (m.from !== from) problems.push(`message ${m.type} claims to come from node ${m.from}`)
          else valid.push(m)
        }
        let full = 0
        for (const m of valid) if (!offerMessage(m)) full++
        if (problems.length > 0 || full > 0) {
          log(
            Effect.logWarning(`raft transport: dropped ${problems.length + full} message(s) from node ${from}`).pipe(
              Effect.annotateLogs({ problems: problems.slice(0, 3).join("; "), inboxFull: full })
            )
          )
        }
      }

      /** Whether `acks` could ride on a frame to `from` now: they are for its newest connection, and this node's own to it reads them. */
      const canRide = (from: number, acks: InboundAcks): boolean => {
        const conn = peers.get(from)?.connection
        return owed.get(from) === acks && conn?.ridingAcks === true && conn.socket.readyState === WebSocket.OPEN
      }

      const serve = (socket: WebSocket, from: number, serial: string | undefined, incarnation: string | undefined, key: Buffer, nonce: string): void => {
        const acks: InboundAcks = new InboundAcks(
          nonce,
          ackDelayMs,
          (seq) => void (socket.readyState === WebSocket.OPEN && socket.send(packr.pack(seq))),
          () => canRide(from, acks)
        )
        owed.set(from, acks)
        accepted.set(socket, { from, incarnation, key })
        if (serial !== undefined) acceptedCertificates.set(socket, { serial, from })
        socket.on("close", () => {
          acks.close()
          if (owed.get(from) === acks) owed.delete(from)
          accepted.delete(socket)
          acceptedCertificates.delete(socket)
        })
        socket.on("error", () => socket.terminate())
        socket.on("message", (data, isBinary) => {
          const frame = readFrame(from, data, isBinary)
          if (frame === undefined) return
          // From an earlier life of the sender, still arriving after a newer one connected (`learn`).
          if (incarnation !== undefined && lives.current(from) !== incarnation) return void socket.terminate()
          const [seq, raws, riding] = frame
          deliver(from, raws)
          acks.received(seq, (data as Buffer).length)
          if (riding !== undefined) rodeIn(from, riding)
        })
      }

      const refused = (request: http.IncomingMessage, reason: string, from: number | undefined) =>
        log(
          Effect.logWarning(`raft transport: refused a connection from ${request.socket.remoteAddress ?? "unknown"}: ${reason}`).pipe(
            Effect.annotateLogs({ remote: request.socket.remoteAddress ?? "unknown", claimedFrom: from ?? "none" })
          )
        )

      const endpoint: PeerEndpointShape = {
        path,
        upgrade: (request, socket, head) => {
          if (closed) return void socket.destroy()
          if (pathOf(request.url ?? "/") !== path) return refuseUpgrade(socket, 404, "Not Found", "not found")
          const verdict = verifier.verify(request.url ?? "", Date.now())
          if (!verdict.ok) {
            refused(request, verdict.reason, verdict.from)
            return refuseUpgrade(socket, 401, "Unauthorized", "unauthorized")
          }
          const certificate = certificateProblem(options, request, verdict.from)
          if (certificate !== undefined) {
            refused(request, `${certificate.code}: ${certificate.message}`, verdict.from)
            return refuseUpgrade(socket, 401, "Unauthorized", certificate.code)
          }
          const peerCertificate = request.socket instanceof tls.TLSSocket && options.tls !== undefined ? request.socket.getPeerCertificate() : undefined
          const serial = peerCertificate?.serialNumber === undefined ? undefined : normalizeSerial(peerCertificate.serialNumber)
          answers.set(request, [
            ...(options.incarnation === undefined ? [] : incarnationHeaders(verdict.key, clusterId, { from: verdict.from, to: self, nonce: verdict.nonce }, options.incarnation)),
            ...(ridingAcks ? [`${ridingAcksHeader}: 1`] : [])
          ])
          learn(verdict.from, verdict.incarnation, "its connection to this node")
          server.handleUpgrade(request, socket, head, (ws) => serve(ws, verdict.from, serial, verdict.incarnation, verdict.key, verdict.nonce))
        },
        request: (request, response) => {
          const verdict = verifier.verify(request.url ?? "", Date.now())
          if (!verdict.ok) refused(request, verdict.reason, verdict.from)
          response.writeHead(verdict.ok ? 426 : 401, { "content-type": "text/plain", connection: "close" })
          response.end(verdict.ok ? "use a websocket" : "unauthorized")
        },
        close: () => {
          for (const socket of accepted.keys()) socket.terminate()
          accepted.clear()
        }
      }

      yield* Effect.addFinalizer(() =>
        Effect.gen(function* () {
          closed = true
          clearTimeout(watchdog)
          clearInterval(sweep)
          for (const peer of peers.values()) {
            dropConnection(peer)
            clearTimeout(peer.retry)
          }
          endpoint.close()
          server.close()
          yield* Queue.shutdown(inbox)
        })
      )

      const transport: TransportShape = {
        send: (messages) =>
          Effect.sync(() => {
            // Queue everything first, then pump each peer once: one call's messages to a peer share a frame.
            const touched = new Set<Peer>()
            for (const m of messages) {
              const peer = peers.get(m.to)
              if (peer === undefined) continue
              if (lives.muted(m.to)) {
                // Built before the Raft driver took in the peer's new incarnation.
                peer.droppedRestarted++
                continue
              }
              peer.queue.push(m)
              touched.add(peer)
            }
            for (const peer of touched) pump(peer)
          }),
        receive: Queue.take(inbox),
        unreachable: Effect.sync(() => {
          if (unreachable.size === 0) return []
          const ids = [...unreachable]
          unreachable.clear()
          return ids
        }),
        discard: (id) =>
          Effect.sync(() => {
            peers.get(id)?.queue.clear()
          }),
        resume: (id) => Effect.sync(() => lives.resume(id))
      }

      const control: RaftPeersShape = {
        set: setPeer,
        remove: removePeer,
        addresses: Effect.sync(() => new Map([...peers.values()].map((p) => [p.id, p.address] as const))),
        stats: Effect.sync(() => [...peers.values()].map((p) => statsOf(p, lives.current(p.id))))
      }

      return Context.make(Transport, transport).pipe(Context.add(RaftPeers, control), Context.add(PeerEndpoint, endpoint))
    })
  )

/**
 * An HTTP server on `host:port` for the node: requests for the endpoint's path and every websocket
 * upgrade go to the peers' endpoint, every other request to `others` (404 without it: the endpoint
 * alone, for tests and benchmarks). The daemon's is `Server.layerSharedPort`, with the REST API as
 * `others`. The endpoint's connections close first when the scope ends: the server's own release
 * waits for every open connection to end.
 */
export const listen = (
  options: { readonly host: string; readonly port: number; readonly tls?: ServerTls | undefined },
  others?: http.RequestListener
): Effect.Effect<HttpServer.HttpServer, HttpServerError.ServeError, PeerEndpoint | Scope.Scope> =>
  Effect.gen(function* () {
    const endpoint = yield* PeerEndpoint
    const server = yield* NodeHttpServer.make(
      () => {
        const route: http.RequestListener = (request, response) => {
          if (pathOf(request.url ?? "/") === endpoint.path) return endpoint.request(request, response)
          if (others !== undefined) return others(request, response)
          response.writeHead(404, { "content-type": "text/plain" })
          response.end("not found")
        }
        // A client certificate is asked for but not required by the handshake: API clients have none;
        // the peers' endpoint refuses a connection without one (`certificateProblem`).
        const serverTls = options.tls
        if (serverTls === undefined) {
          const server = http.createServer(route)
          server.on("upgrade", endpoint.upgrade)
          return server
        }
        const server = https.createServer({ ca: serverTls.ca, cert: serverTls.chain ?? serverTls.cert, key: serverTls.key, requestCert: true, rejectUnauthorized: false }, route)
        server.on("upgrade", endpoint.upgrade)
        // Open connections whose client certificate chained to the trust of their handshake (peers on
        // /raft, nodes calling the API), so their certificate can be checked again when it changes.
        const clients = new Set<tls.TLSSocket>()
        server.on("secureConnection", (socket: tls.TLSSocket) => {
          if (!socket.authorized) return
          clients.add(socket)
          socket.once("close", () => clients.delete(socket))
        })
        // A renewed certificate serves the next connections; those open keep the one they began with.
        // A narrower trust (a CA rotation finished: the old CA dropped) closes the open connections of
        // clients whose certificate it no longer covers, so none outlives the rotation.
        const stop = serverTls.onChange?.(() => {
          server.setSecureContext({ ca: serverTls.ca, cert: serverTls.chain ?? serverTls.cert, key: serverTls.key })
          for (const socket of clients) {
            const certificate = socket.getPeerX509Certificate()
            if (certificate !== undefined && issuerIn(certificate, serverTls.ca) === undefined) socket.destroy()
          }
        })
        if (stop !== undefined) server.on("close", stop)
        return server
      },
      { port: options.port, host: options.host }
    )
    yield* Effect.addFinalizer(() => Effect.sync(endpoint.close))
    return server
  })

/** The endpoint alone on `host:port` (tests, benchmarks). */
export const layerStandalone = (options: {
  readonly host: string
  readonly port: number
  readonly tls?: ServerTls | undefined
}): Layer.Layer<HttpServer.HttpServer, HttpServerError.ServeError, PeerEndpoint> => Layer.scoped(HttpServer.HttpServer, listen(options))
