/**
 * The peer endpoint's fuzzer (part of `npm run bench -- fuzz`): generated handshakes, raw bytes,
 * websocket frame headers and frames thrown at the `/raft` endpoint of a real `blixard node` on
 * loopback (a one-node cluster, so no election can change its term while the fuzzer runs).
 *
 * Inputs, each counted as one:
 * - `handshake`: an upgrade whose handshake is broken in one or more ways (wrong cluster secret or
 *   cluster id, addressed to another node, claiming to come from the node itself, stale or future timestamp, malformed or missing fields,
 *   a flipped MAC, another path), or a replay of a handshake the node accepted: must be refused.
 * - `raw`: bytes on a fresh TCP connection (garbage, broken HTTP, an upgrade without a key).
 * - `wsHeader`: an authenticated websocket whose first frame header is generated (lengths claiming
 *   up to 2^63 bytes, reserved bits, control frames of any size, unmasked frames).
 * - `frame`: one frame on an authenticated connection: random bytes, text, truncated or
 *   huge-length-claiming msgpack, msgpack of arbitrary JSON values, and valid-looking batches of
 *   Raft messages that must be dropped: claiming another sender than the connection's, addressed to
 *   another node, or failing the message schema, with any term; and well-formed ones from the
 *   connection's sender whose term is not above the node's (stale leaders, candidates and
 *   followers), which Raft ignores or answers without changing anything.
 *
 * Not generated: well-formed messages with a higher term from an authenticated sender. Holding the
 * cluster secret makes a node a member as far as the transport can tell, and a higher term from a
 * member makes a leader step down: that is Raft, not a bug (see the report in bench/RESULTS.md).
 *
 * Checked: the node never crashes; no broken handshake is accepted; after every `checkEvery` inputs
 * and at the end, its term, leader, members and cluster id are unchanged and its commit index has
 * not moved back; at the end it still takes a write (a VM create through the API).
 *
 * Every connection the fuzzer opens comes from `dial`: a plain TCP socket, or against a node serving
 * TLS (`PeerTarget.tls`) a TLS connection presenting a certificate of the cluster CA for the node
 * the connection claims to be, so every input reaches what lies behind mutual TLS. (TLS itself, and
 * the certificates a peer presents, are fuzzed by bench/tlsFuzz.ts.)
 */
import * as crypto from "node:crypto"
import * as net from "node:net"
import type { Duplex } from "node:stream"
import * as tls from "node:tls"
import fc from "fast-check"
import { Packr } from "msgpackr"
import { WebSocket } from "ws"
import { deriveKey, sign, toQuery } from "../src/net/PeerAuth.js"

/** A certificate and its key (PEM). */
export interface KeyPair {
  readonly cert: string
  readonly key: string
}

/**
 * Opens a connection to a node's peer port, as node `from`. The one place a connection is made (see
 * above); over TLS it presents `from`'s certificate (node 2's for a connection that claims no node).
 */
export const dial = (target: PeerTarget, from = 2): Duplex => {
  if (target.tls === undefined) return net.connect({ host: target.host, port: target.port })
  const pair = target.tls.certificates.get(from) ?? target.tls.certificates.get(2)!
  // The node's certificate names its node URI and address; the chain to the cluster CA is what counts here.
  return tls.connect({ host: target.host, port: target.port, ca: target.tls.ca, cert: pair.cert, key: pair.key, checkServerIdentity: () => undefined })
}

export interface PeerTarget {
  readonly host: string
  readonly port: number
  readonly self: number
  readonly clusterSecret: string
  readonly clusterId: string
  readonly alive: () => boolean
  /** term, commit, leader, members, cluster id as the node reports them (`GET /v1/cluster`). */
  readonly state: () => Promise<RaftState>
  /** Makes a write through the API; resolves true once it was taken, or with what the node answered. */
  readonly write: (name: string) => Promise<true | string>
  /** The node serves TLS: its CA, and certificates of that CA for the senders the fuzzer plays. */
  readonly tls?: { readonly ca: string; readonly certificates: ReadonlyMap<number, KeyPair> } | undefined
}

/** The ids of the authenticated senders the fuzzer plays (no member's). */
export const senderIds = [2, 3, 99, 2147483647] as const

export interface RaftState {
  readonly clusterId: string | undefined
  readonly term: number
  readonly commit: number
  readonly leader: number | undefined
  readonly members: string
}

export interface PeerFuzzResult {
  readonly name: string
  readonly seed: number
  readonly inputs: number
  readonly byKind: Record<string, number>
  /** Broken handshakes the node refused, and those it accepted (must be 0). */
  readonly refusedHandshakes: number
  readonly acceptedBadHandshakes: number
  /** Frames the node acknowledged (valid frames; what it drops it still acknowledges as a frame). */
  readonly framesAcknowledged: number
  /** Authenticated connections the node closed (protocol errors, oversized frames). */
  readonly connectionsClosedByNode: number
  /** State checks that found the term, leader, members or cluster id changed, or the commit moved back. */
  readonly stateChanges: number
  readonly nodeAlive: boolean
  readonly servesWrites: boolean
  readonly seconds: number
  readonly inputsPerSecond: number
  readonly failures: ReadonlyArray<string>
}

const packr = new Packr({ useRecords: false })

// --- inputs ------------------------------------------------------------------------------------

type HandshakeBreak =
  | { readonly kind: "secret"; readonly secret: string }
  | { readonly kind: "clusterId"; readonly clusterId: string }
  | { readonly kind: "to"; readonly to: number }
  | { readonly kind: "fromSelf" }
  | { readonly kind: "skew"; readonly ms: number }
  | { readonly kind: "field"; readonly field: "from" | "to" | "ts" | "nonce" | "mac"; readonly value: string | undefined }
  | { readonly kind: "flipMac"; readonly at: number }
  | { readonly kind: "path"; readonly path: string }
  | { readonly kind: "query"; readonly query: string }

type PeerInput =
  | { readonly kind: "handshake"; readonly from: number; readonly breaks: ReadonlyArray<HandshakeBreak>; readonly junk: string }
  | { readonly kind: "replay" }
  | { readonly kind: "raw"; readonly bytes: Uint8Array }
  | { readonly kind: "wsHeader"; readonly from: number; readonly bytes: Uint8Array }
  | { readonly kind: "frame"; readonly from: number; readonly data: Uint8Array | string; readonly what: string }

/** Authenticated senders (ids of no member). */
const senders = fc.constantFrom(...senderIds)

const breakArb: fc.Arbitrary<HandshakeBreak> = fc.oneof(
  fc.record({ kind: fc.constant("secret" as const), secret: fc.string({ minLength: 1, maxLength: 40 }) }),
  fc.record({ kind: fc.constant("clusterId" as const), clusterId: fc.oneof(fc.uuid(), fc.string({ minLength: 1, maxLength: 20 })) }),
  fc.constant({ kind: "fromSelf" as const }),
  fc.record({ kind: fc.constant("to" as const), to: fc.oneof(fc.constantFrom(0, 2, 3, 99), fc.integer({ min: 2, max: 2 ** 31 })) }),
  fc.record({
    kind: fc.constant("skew" as const),
    // Beyond the node's 30 s window, with room for the time the request takes.
    ms: fc.oneof(fc.integer({ min: 60_000, max: 10 ** 9 }), fc.integer({ min: -(10 ** 12), max: -30_001 }))
  }),
  fc.record({
    kind: fc.constant("field" as const),
    field: fc.constantFrom("from" as const, "to" as const, "ts" as const, "nonce" as const, "mac" as const),
    value: fc.option(fc.oneof(fc.string({ maxLength: 50 }), fc.constantFrom("0", "-1", "1e3", "00001", "9".repeat(20), "", "%00")), { nil: undefined })
  }),
  fc.record({ kind: fc.constant("flipMac" as const), at: fc.nat(42) }),
  fc.record({ kind: fc.constant("path" as const), path: fc.constantFrom("/raft/", "/raft/x", "/Raft", "/raftx", "//raft", "/v1/health", "/", "/%72aft") }),
  fc.record({ kind: fc.constant("query" as const), query: fc.oneof(fc.string({ maxLength: 200 }), fc.webQueryParameters()) })
)

/** A msgpack value claiming far more data than follows (array32, map32, str32, bin32, ext32). */
const hugeClaim = fc
  .tuple(fc.constantFrom(0xdd, 0xdf, 0xdb, 0xc6, 0xc9), fc.integer({ min: 2 ** 20, max: 2 ** 32 - 1 }), fc.uint8Array({ maxLength: 16 }))
  .map(([tag, length, rest]) => {
    const head = Buffer.alloc(5)
    head[0] = tag
    head.writeUInt32BE(length, 1)
    return new Uint8Array(Buffer.concat([head, rest]))
  })

const term = (current: number) => fc.integer({ min: 0, max: current })
const anyTerm = fc.oneof(fc.nat(), fc.constantFrom(0, 2 ** 53 - 1))
const index = fc.oneof(fc.nat(1000), fc.constantFrom(0, 2 ** 31, 2 ** 53 - 1))
const entry = fc.record({
  index,
  term: fc.nat(100),
  kind: fc.constantFrom("normal", "confChange", "empty"),
  data: fc.oneof(fc.string({ maxLength: 100 }), fc.json({ maxDepth: 2 }))
})
const confState = fc.record({ voters: fc.array(fc.integer({ min: 1, max: 5 }), { maxLength: 3 }), learners: fc.array(fc.integer({ min: 1, max: 5 }), { maxLength: 2 }) })

/** A Raft message of any type with the given header. */
const messageWith = (header: fc.Arbitrary<{ from: number; to: number; term: number }>) =>
  fc.tuple(
    header,
    fc.oneof(
      fc.record({ type: fc.constant("app"), index, logTerm: fc.nat(100), entries: fc.array(entry, { maxLength: 4 }), commit: index }),
      fc.record({ type: fc.constant("appResp"), index, reject: fc.boolean(), rejectHint: index, logTerm: fc.nat(100) }),
      fc.record({ type: fc.constantFrom("vote", "preVote"), index, logTerm: fc.nat(100), transfer: fc.boolean() }),
      fc.record({ type: fc.constantFrom("voteResp", "preVoteResp"), reject: fc.boolean() }),
      fc.record({ type: fc.constant("heartbeat"), commit: index, context: fc.option(fc.string({ maxLength: 20 }), { nil: undefined }) }, { requiredKeys: ["type", "commit"] }),
      fc.record({ type: fc.constant("heartbeatResp"), context: fc.option(fc.string({ maxLength: 20 }), { nil: undefined }) }, { requiredKeys: ["type"] }),
      fc.record({
        type: fc.constant("snap"),
        metadata: fc.record({ index, term: fc.nat(100), confState }),
        offset: index,
        totalSize: index,
        data: fc.string({ maxLength: 200 })
      }),
      fc.record({ type: fc.constant("snapAck"), index, received: index }),
      fc.record({ type: fc.constant("timeoutNow") }),
      fc.record({ type: fc.constant("readIndex"), context: fc.string({ maxLength: 20 }) }),
      fc.record({ type: fc.constant("readIndexResp"), index, context: fc.string({ maxLength: 20 }) }),
      fc.record({ type: fc.constant("transferLeader"), transferee: fc.integer({ min: 1, max: 5 }) })
    )
  ).map(([h, body]) => ({ ...body, ...h }))

/** Frames for a connection authenticated as `from`, to node `self` at term `current`. */
const frameArb = (from: number, self: number, current: number): fc.Arbitrary<{ data: Uint8Array | string; what: string }> => {
  const seq = fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.constantFrom(2 ** 31, 2 ** 53 - 1))
  const other = fc.integer({ min: 1, max: 2 ** 31 - 1 }).filter((id) => id !== from)
  const notSelf = fc.integer({ min: 1, max: 2 ** 31 - 1 }).filter((id) => id !== self)
  // Must be dropped by the transport whatever their term: wrong sender, or not for this node.
  const misaddressed = messageWith(
    fc.oneof(
      fc.record({ from: other, to: fc.constant(self), term: anyTerm }),
      fc.record({ from: fc.constant(from), to: notSelf, term: anyTerm })
    )
  )
  // From the connection's sender, at a term the node has reached already.
  const stale = messageWith(fc.record({ from: fc.constant(from), to: fc.constant(self), term: term(current) }))
  const invalid = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    stale.chain((m) => fc.constantFrom(...Object.keys(m)).map((key) => ({ ...m, [key]: -1 }))),
    stale.chain((m) => fc.constantFrom(...Object.keys(m)).map((key) => Object.fromEntries(Object.entries(m).filter(([k]) => k !== key)))),
    stale.map((m) => ({ ...m, type: "hup" }))
  )
  const batch = (messages: fc.Arbitrary<unknown>, what: string) =>
    fc.tuple(seq, fc.array(messages, { minLength: 1, maxLength: 8 })).map(([s, ms]) => ({ data: new Uint8Array(packr.pack([s, ms])), what }))
  return fc.oneof(
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 4096 }).map((data) => ({ data, what: "random bytes" })) },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }).map((data) => ({ data, what: "text frame" })) },
    {
      weight: 2,
      arbitrary: fc.tuple(batch(stale, "truncated"), fc.nat()).map(([f, cut]) => ({ data: f.data.subarray(0, cut % Math.max(1, f.data.length)), what: "truncated msgpack" }))
    },
    { weight: 1, arbitrary: hugeClaim.map((data) => ({ data, what: "msgpack claiming a huge length" })) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => ({ data: new Uint8Array(packr.pack(v)), what: "msgpack of a JSON value" })) },
    { weight: 1, arbitrary: fc.tuple(fc.oneof(fc.integer({ max: 0 }), fc.double(), fc.string()), fc.array(stale, { maxLength: 2 })).map((f) => ({ data: new Uint8Array(packr.pack(f)), what: "bad sequence number" })) },
    { weight: 4, arbitrary: batch(misaddressed, "misaddressed messages") },
    { weight: 3, arbitrary: batch(invalid, "invalid messages") },
    { weight: 4, arbitrary: batch(stale, "stale messages") },
    { weight: 1, arbitrary: fc.tuple(seq, fc.integer({ min: 1024 * 1024, max: 3 * 1024 * 1024 })).map(([s, size]) => ({ data: new Uint8Array(packr.pack([s, [{ type: "app", from, to: self, term: 0, index: 0, logTerm: 0, commit: 0, entries: [{ index: 1, term: 0, kind: "normal", data: "x".repeat(size) }] }]])), what: "large frame" })) }
  )
}

/** A websocket frame header: what the node must survive as the first frame of an accepted connection. */
const wsHeaderArb = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 14 }),
  fc.tuple(fc.constantFrom(0x82, 0x81, 0x02, 0x88, 0x89, 0x8a, 0xc2, 0xf2, 0x83), fc.bigInt({ min: 126n, max: 2n ** 64n - 1n }), fc.boolean()).map(([op, length, masked]) => {
    const head = Buffer.alloc(10)
    head[0] = op
    head[1] = (masked ? 0x80 : 0) | 127
    head.writeBigUInt64BE(length, 2)
    return new Uint8Array(Buffer.concat([head, masked ? Buffer.alloc(4) : Buffer.alloc(0), Buffer.alloc(8)]))
  })
)

const rawArb = fc.oneof(
  fc.uint8Array({ maxLength: 2048 }),
  fc.constantFrom(
    "GET /raft HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "GET /raft?from=2&to=1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\n\r\n",
    "GET /raft HTTP/1.0\r\n\r\n",
    "POST /raft HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    "GET /raft HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n",
    "\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003"
  ).map((text) => new Uint8Array(Buffer.from(text, "latin1"))),
  fc.tuple(fc.constantFrom("GET", "POST", "PUT", "CONNECT", "PRI"), fc.string({ maxLength: 100 }), fc.array(fc.tuple(fc.string({ maxLength: 20 }), fc.string({ maxLength: 60 })), { maxLength: 6 })).map(([m, p, hs]) =>
    new Uint8Array(Buffer.from(`${m} /raft${p} HTTP/1.1\r\n${hs.map(([k, v]) => `${k}: ${v}`).join("\r\n")}\r\n\r\n`, "utf8"))
  )
)

const inputArb = (self: number, current: number): fc.Arbitrary<PeerInput> =>
  fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant("handshake" as const), from: senders, breaks: fc.array(breakArb, { minLength: 1, maxLength: 3 }), junk: fc.oneof(fc.constant(""), fc.webQueryParameters()) }) },
    { weight: 1, arbitrary: fc.constant({ kind: "replay" as const }) },
    { weight: 2, arbitrary: rawArb.map((bytes) => ({ kind: "raw" as const, bytes })) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("wsHeader" as const), from: senders, bytes: wsHeaderArb }) },
    {
      weight: 12,
      arbitrary: senders.chain((from) => frameArb(from, self, current).map((f) => ({ kind: "frame" as const, from, ...f })))
    }
  )

// --- talking to the node -------------------------------------------------------------------------

/** The handshake query (and path) of an input, built at send time (its timestamp is the clock's). */
const handshakeOf = (target: PeerTarget, claimed: number, breaks: ReadonlyArray<HandshakeBreak>, junk: string): { path: string; query: string } => {
  let from = claimed
  let secret = target.clusterSecret
  let clusterId = target.clusterId
  let to = target.self
  if (breaks.some((b) => b.kind === "fromSelf")) from = target.self
  let skew = 0
  let path = "/raft"
  for (const b of breaks) {
    if (b.kind === "secret") secret = b.secret === target.clusterSecret ? `${b.secret}x` : b.secret
    if (b.kind === "clusterId") clusterId = b.clusterId === target.clusterId ? `${b.clusterId}x` : b.clusterId
    if (b.kind === "to") to = b.to === target.self ? target.self + 1 : b.to
    if (b.kind === "skew") skew = b.ms
    if (b.kind === "path") path = b.path
  }
  const signed = sign(deriveKey(secret), clusterId, from, to, Date.now() + skew)
  const params = new URLSearchParams(toQuery(signed))
  for (const b of breaks) {
    if (b.kind === "field") {
      const original = params.get(b.field)
      if (b.value === undefined || b.value === original) params.delete(b.field)
      else params.set(b.field, b.value)
    }
    if (b.kind === "flipMac") {
      const mac = params.get("mac") ?? ""
      const at = b.at % Math.max(1, mac.length)
      params.set("mac", `${mac.slice(0, at)}${mac[at] === "A" ? "B" : "A"}${mac.slice(at + 1)}`)
    }
  }
  const query = breaks.find((b): b is Extract<HandshakeBreak, { kind: "query" }> => b.kind === "query")?.query ?? params.toString()
  // Extra parameters, never a second copy of the handshake's own (which could restore a broken one).
  const extra = new URLSearchParams(junk)
  for (const key of ["from", "to", "ts", "nonce", "mac"]) extra.delete(key)
  const tail = extra.toString()
  return { path, query: tail === "" ? query : `${query}&${tail}` }
}

/** Tries a websocket upgrade; resolves "open" (then closed at once), or "refused". */
const tryUpgrade = (target: PeerTarget, path: string, query: string, from: number): Promise<"open" | "refused"> =>
  new Promise((resolve) => {
    let socket: WebSocket
    try {
      socket = new WebSocket(`ws://${target.host}:${target.port}${path}?${query}`, {
        perMessageDeflate: false,
        handshakeTimeout: 15_000,
        createConnection: () => dial(target, from) as net.Socket
      })
    } catch {
      return resolve("refused")
    }
    socket.on("open", () => {
      socket.terminate()
      resolve("open")
    })
    socket.on("unexpected-response", (_request, response) => {
      response.resume()
      socket.terminate()
      resolve("refused")
    })
    socket.on("error", () => resolve("refused"))
  })

/** An authenticated connection, as node `from`, with its frames' acknowledgements. */
class PeerConnection {
  readonly acks = new Set<number>()
  closed = false
  private waiters: Array<() => void> = []

  private constructor(readonly socket: WebSocket) {
    socket.on("message", (data, isBinary) => {
      if (isBinary) {
        try {
          const seq = packr.unpack(data as Buffer) as unknown
          if (typeof seq === "number") this.acks.add(seq)
        } catch {
          // Not an acknowledgement: the check below fails by timing out.
        }
      }
      this.wake()
    })
    socket.on("close", () => {
      this.closed = true
      this.wake()
    })
    socket.on("error", () => {
      this.closed = true
      this.wake()
    })
  }

  private wake(): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  static open(target: PeerTarget, from: number): Promise<PeerConnection> {
    const query = toQuery(sign(deriveKey(target.clusterSecret), target.clusterId, from, target.self, Date.now()))
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(`ws://${target.host}:${target.port}/raft?${query}`, {
        perMessageDeflate: false,
        handshakeTimeout: 15_000,
        maxPayload: 1024 * 1024,
        createConnection: () => dial(target, from) as net.Socket
      })
      socket.once("open", () => resolve(new PeerConnection(socket)))
      socket.once("unexpected-response", (_request, response) => reject(new Error(`a valid handshake as node ${from} was refused with ${response.statusCode}`)))
      socket.once("error", reject)
    })
  }

  /** Resolves true once one of `seqs` is acknowledged, false if the connection closes or `ms` pass first. */
  awaitAck(seqs: ReadonlyArray<number>, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms
    return new Promise((resolve) => {
      const check = () => {
        if (seqs.some((seq) => this.acks.has(seq))) return resolve(true)
        if (this.closed || Date.now() > deadline) return resolve(false)
        this.waiters.push(check)
        setTimeout(check, Math.max(0, deadline - Date.now()) + 1).unref()
      }
      check()
    })
  }

  close(): void {
    this.socket.terminate()
  }
}

/** Writes `bytes` on a raw connection, half-closes it and waits (bounded) for the node to close it. */
const sendRaw = (target: PeerTarget, bytes: Uint8Array, before?: string, from?: number): Promise<void> =>
  new Promise((resolve) => {
    const socket = dial(target, from)
    const timer = setTimeout(() => socket.destroy(), 5_000)
    socket.on("error", () => {})
    socket.on("close", () => {
      clearTimeout(timer)
      resolve()
    })
    socket.on("data", () => {})
    if (before !== undefined) socket.write(before)
    socket.end(bytes)
  })

/** An upgrade done by hand (so the first frame header can be anything), then `bytes`. */
const sendAfterUpgrade = (target: PeerTarget, from: number, bytes: Uint8Array): Promise<void> => {
  const query = toQuery(sign(deriveKey(target.clusterSecret), target.clusterId, from, target.self, Date.now()))
  const key = crypto.randomBytes(16).toString("base64")
  const request = `GET /raft?${query} HTTP/1.1\r\nHost: ${target.host}:${target.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`
  return sendRaw(target, bytes, request, from)
}

// --- the run -------------------------------------------------------------------------------------

const describeInput = (input: PeerInput): string => {
  const bytes = (b: Uint8Array | string) => (typeof b === "string" ? JSON.stringify(b.slice(0, 80)) : Buffer.from(b.subarray(0, 60)).toString("hex"))
  switch (input.kind) {
    case "handshake":
      return `handshake from ${input.from} broken by ${JSON.stringify(input.breaks).slice(0, 300)}`
    case "replay":
      return "replayed handshake"
    case "raw":
      return `raw ${bytes(input.bytes)}`
    case "wsHeader":
      return `websocket header ${bytes(input.bytes)} as ${input.from}`
    case "frame":
      return `frame (${input.what}) as ${input.from}: ${bytes(input.data)}`
  }
}

export const sameState = (before: RaftState, after: RaftState): boolean =>
  before.clusterId === after.clusterId && before.term === after.term && before.leader === after.leader && before.members === after.members && after.commit >= before.commit

/** One run's connections and counts; each input goes through `throw`. */
class PeerFuzzRun {
  readonly byKind: Record<string, number> = {}
  readonly failures: Array<string> = []
  readonly recent: Array<string> = []
  refusedHandshakes = 0
  acceptedBadHandshakes = 0
  framesAcknowledged = 0
  connectionsClosedByNode = 0
  private readonly connections = new Map<number, PeerConnection>()
  private readonly seqs = new Map<number, number>()
  private lastAccepted: { path: string; query: string } | undefined

  constructor(private readonly target: PeerTarget) {}

  fail(message: string): void {
    if (this.failures.length < 10) this.failures.push(message)
  }

  private async connection(from: number): Promise<PeerConnection> {
    const open = this.connections.get(from)
    if (open !== undefined && !open.closed) return open
    const fresh = await PeerConnection.open(this.target, from)
    this.connections.set(from, fresh)
    this.seqs.set(from, 0)
    return fresh
  }

  private async handshake(input: Extract<PeerInput, { kind: "handshake" | "replay" }>): Promise<void> {
    const target = this.target
    let attempt = input.kind === "handshake" ? handshakeOf(target, input.from, input.breaks, input.junk) : this.lastAccepted
    if (attempt === undefined) {
      // Nothing to replay yet: open (and remember) a valid handshake first.
      const valid = { path: "/raft", query: toQuery(sign(deriveKey(target.clusterSecret), target.clusterId, 2, target.self, Date.now())) }
      if ((await tryUpgrade(target, valid.path, valid.query, 2)) !== "open") this.fail("a valid handshake was refused")
      attempt = this.lastAccepted = valid
    }
    if ((await tryUpgrade(target, attempt.path, attempt.query, input.kind === "handshake" ? input.from : 2)) === "refused") {
      this.refusedHandshakes++
      return
    }
    this.acceptedBadHandshakes++
    this.fail(`accepted a broken handshake: ${describeInput(input)} (${attempt.path}?${attempt.query})`)
  }

  private async frame(input: Extract<PeerInput, { kind: "frame" }>): Promise<void> {
    const conn = await this.connection(input.from)
    conn.socket.send(input.data, { binary: typeof input.data !== "string" })
    // Two empty batches after it: an acknowledgement of either says the node has read everything
    // before. (Two: a node holds back the acknowledgement of a lone frame for a while, and sends one
    // at once when a second frame is unacknowledged; so one of the two is acknowledged at once.)
    const seq = (this.seqs.get(input.from) ?? 0) + 2
    this.seqs.set(input.from, seq)
    const sync = 2 ** 40 + seq
    conn.socket.send(packr.pack([sync - 1, []]), { binary: true })
    conn.socket.send(packr.pack([sync, []]), { binary: true })
    if (await conn.awaitAck([sync - 1, sync], 15_000)) this.framesAcknowledged++
    else if (conn.closed) this.connectionsClosedByNode++
    else this.fail(`no acknowledgement within 15 s after: ${describeInput(input)}`)
  }

  async throw(input: PeerInput, keep: number): Promise<void> {
    this.byKind[input.kind] = (this.byKind[input.kind] ?? 0) + 1
    this.recent.push(describeInput(input))
    if (this.recent.length > keep) this.recent.shift()
    if (input.kind === "handshake" || input.kind === "replay") return this.handshake(input)
    if (input.kind === "raw") return sendRaw(this.target, input.bytes)
    if (input.kind === "wsHeader") return sendAfterUpgrade(this.target, input.from, input.bytes)
    return this.frame(input)
  }

  close(): void {
    for (const conn of this.connections.values()) conn.close()
  }
}

/** Throws `runs` generated inputs at `target`'s peer endpoint, one at a time. */
export const fuzzPeers = async (target: PeerTarget, runs: number, seed: number, checkEvery = 250): Promise<PeerFuzzResult> => {
  const run = new PeerFuzzRun(target)
  let stateChanges = 0
  let inputs = 0
  const initial = await target.state()
  let before = initial
  const started = performance.now()
  const chunk = 500
  try {
    for (let offset = 0; offset < runs && target.alive(); offset += chunk) {
      for (const input of fc.sample(inputArb(target.self, initial.term), { numRuns: Math.min(chunk, runs - offset), seed: seed + offset })) {
        if (!target.alive()) break
        inputs++
        await run.throw(input, checkEvery)
        if (inputs % checkEvery !== 0) continue
        const after = await target.state()
        if (!sameState(before, after)) {
          stateChanges++
          run.fail(`state changed from ${JSON.stringify(before)} to ${JSON.stringify(after)} within these inputs: ${run.recent.join(" | ").slice(0, 4000)}`)
        }
        before = after
      }
    }
  } finally {
    run.close()
  }
  const seconds = (performance.now() - started) / 1000
  const alive = target.alive()
  if (alive) {
    const after = await target.state()
    if (!sameState(before, after) || !sameState(initial, after)) {
      stateChanges++
      run.fail(`state changed from ${JSON.stringify(initial)} to ${JSON.stringify(after)} by the end`)
    }
  } else {
    run.failures.push(`the node died; the last inputs: ${run.recent.slice(-5).join(" | ")}`)
  }
  const written = alive ? await target.write(`after-peer-fuzz-${seed}`) : "the node is down"
  if (written !== true) run.failures.push(`the node took no write after the fuzz: ${written}`)
  return {
    name: `peer fuzz: generated handshakes, bytes and frames against the /raft endpoint of one real node on loopback${target.tls !== undefined ? ", behind mutual TLS" : ""}`,
    seed,
    inputs,
    byKind: run.byKind,
    refusedHandshakes: run.refusedHandshakes,
    acceptedBadHandshakes: run.acceptedBadHandshakes,
    framesAcknowledged: run.framesAcknowledged,
    connectionsClosedByNode: run.connectionsClosedByNode,
    stateChanges,
    nodeAlive: alive,
    servesWrites: written === true,
    seconds: Math.round(seconds * 10) / 10,
    inputsPerSecond: Math.round(inputs / seconds),
    failures: run.failures
  }
}
