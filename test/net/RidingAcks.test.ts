/**
 * Acknowledgements riding on frames the other way (`FrameAcks`): between two transports, and with a
 * stand-in peer on raw websockets that plays a new release (to send acknowledgements naming a
 * connection of its choice) or an older one (which reads only two-element frames).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, ParseResult, Schema, type Scope } from "effect"
import { Packr } from "msgpackr"
import type { AddressInfo } from "node:net"
import { WebSocket, WebSocketServer } from "ws"
import { deriveKey, sign, toQuery } from "../../src/net/PeerAuth.js"
import type { Message } from "../../src/raft/Message.js"
import { connectAll, eventually, heartbeat, receiveN, secret, startNode, type TestNode } from "./harness.js"

const packr = new Packr({ useRecords: false })
const resp = (i: number): Message => ({ type: "heartbeatResp", from: 2, to: 1, term: 1, context: `r${i}` })
/** The frame schema of a release without riding acknowledgements. */
const decodeOldFrame = ParseResult.decodeUnknownEither(Schema.Tuple(Schema.Int.pipe(Schema.positive()), Schema.Array(Schema.Unknown)))

const statsOf = (node: TestNode, peer: number) => Effect.map(node.peers.stats, (all) => all.find((s) => s.id === peer)!)

/** The stand-in's own connection to node 1: the standalone acknowledgements it received, and its handshake's nonce. */
interface Dialed {
  readonly socket: WebSocket
  readonly acks: Array<unknown>
  readonly nonce: string
}

/**
 * Node 2 on raw websockets: a server that takes node 1's connections (answering with `headers`),
 * records each one's handshake nonce and frames, and acknowledges every frame standalone if `ackEach`;
 * and `dial`, its own connection to node 1.
 */
const standIn = (options: { readonly headers: ReadonlyArray<string>; readonly ackEach: boolean }) =>
  Effect.gen(function* () {
    const server = yield* Effect.acquireRelease(
      Effect.async<WebSocketServer>((resume) => {
        const s: WebSocketServer = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false }, () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.async<void>((resume) => {
          for (const c of s.clients) c.terminate()
          s.close(() => resume(Effect.void))
        })
    )
    server.on("headers", (headers) => void headers.push(...options.headers))
    const state = { nonces: [] as Array<string>, frames: [] as Array<unknown>, sockets: [] as Array<WebSocket> }
    server.on("connection", (socket, request) => {
      state.nonces.push(new URLSearchParams((request.url ?? "").split("?")[1] ?? "").get("nonce") ?? "")
      state.sockets.push(socket)
      socket.on("message", (data) => {
        const frame = packr.unpack(data as Buffer) as [number, unknown]
        state.frames.push(frame)
        if (options.ackEach) socket.send(packr.pack(frame[0]))
      })
    })
    const dial = (to: TestNode): Effect.Effect<Dialed, unknown, Scope.Scope> =>
      Effect.acquireRelease(
        Effect.async<Dialed, Error>((resume) => {
          const handshake = sign(deriveKey(secret), "", 2, 1, Date.now())
          const socket = new WebSocket(`ws://${to.address}/raft?${toQuery(handshake)}`, { perMessageDeflate: false })
          const acks: Array<unknown> = []
          socket.on("message", (data) => void acks.push(packr.unpack(data as Buffer)))
          socket.once("open", () => resume(Effect.succeed({ socket, acks, nonce: handshake.nonce })))
          socket.once("error", (e) => resume(Effect.fail(e)))
        }),
        ({ socket }) => Effect.sync(() => socket.terminate())
      )
    return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, state, dial }
  })

describe("PeerTransport riding acknowledgements", () => {
  it.scopedLive("requests and answers: every acknowledgement rides, none is a frame of its own; one-way traffic is still acknowledged standalone", () =>
    Effect.gen(function* () {
      // Lone frames' acknowledgements held back for a minute: every one counted was carried or sent by the two-frame rule.
      const a = yield* startNode(1, { requestTimeoutMs: 120_000, ackDelayMs: 60_000 })
      const b = yield* startNode(2, { requestTimeoutMs: 120_000, ackDelayMs: 60_000 })
      yield* connectAll([a, b])
      for (let i = 1; i <= 20; i++) {
        yield* a.transport.send([heartbeat(1, 2, i)])
        expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, i)])
        yield* b.transport.send([resp(i)])
        expect(yield* receiveN(a.transport, 1)).toEqual([resp(i)])
      }
      yield* eventually("node 1's 20 batches acknowledged", Effect.map(statsOf(a, 2), (s) => s.delivered === 20))
      expect(yield* statsOf(a, 2)).toMatchObject({ frames: 20, acks: 0, ridingAcks: 20 })
      // Node 2's last answer: nothing went back after it, so its acknowledgement is still held.
      expect(yield* statsOf(b, 1)).toMatchObject({ frames: 20, delivered: 19, acks: 0, ridingAcks: 19 })

      // One way only: nothing to ride on, so the two-frame rule sends standalone acknowledgements.
      for (let i = 21; i <= 40; i++) {
        yield* a.transport.send([heartbeat(1, 2, i)])
        expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, i)])
      }
      yield* eventually("node 1's 40 batches acknowledged", Effect.map(statsOf(a, 2), (s) => s.delivered === 40))
      expect(yield* statsOf(a, 2)).toMatchObject({ frames: 40, acks: 10, ridingAcks: 20 })
    })
  )

  it.scopedLive("a peer that turned them off gets, and sends, standalone acknowledgements", () =>
    Effect.gen(function* () {
      const a = yield* startNode(1, { requestTimeoutMs: 120_000, ackDelayMs: 60_000 })
      const b = yield* startNode(2, { requestTimeoutMs: 120_000, ackDelayMs: 60_000, ridingAcks: false })
      yield* connectAll([a, b])
      for (let i = 1; i <= 20; i++) {
        yield* a.transport.send([heartbeat(1, 2, i)])
        expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, i)])
        yield* b.transport.send([resp(i)])
        expect(yield* receiveN(a.transport, 1)).toEqual([resp(i)])
      }
      yield* eventually("node 1's 20 batches acknowledged", Effect.map(statsOf(a, 2), (s) => s.delivered === 20))
      expect(yield* statsOf(a, 2)).toMatchObject({ acks: 10, ridingAcks: 0 })
      yield* eventually("node 2's 20 batches acknowledged", Effect.map(statsOf(b, 1), (s) => s.delivered === 20))
      expect(yield* statsOf(b, 1)).toMatchObject({ acks: 10, ridingAcks: 0 })
    })
  )

  it.scopedLive("an acknowledgement naming an earlier connection, or a batch never sent, acknowledges nothing", () =>
    Effect.gen(function* () {
      const peer = yield* standIn({ headers: ["x-blixard-riding-acks: 1"], ackEach: false })
      const a = yield* startNode(1, { requestTimeoutMs: 120_000, backoffInitialMs: 10, backoffMaxMs: 20 })
      yield* a.peers.set(2, peer.address)
      yield* a.transport.send([heartbeat(1, 2, 1)])
      yield* eventually("the first connection's batch arrived", Effect.sync(() => peer.state.frames.length === 1))
      // That connection ends before it is acknowledged; node 1 reconnects and sends batch 1 of the next.
      peer.state.sockets[0]!.terminate()
      yield* eventually("node 1 saw the connection fail", Effect.map(statsOf(a, 2), (s) => s.failuresTotal > 0))
      yield* a.transport.send([heartbeat(1, 2, 2)])
      yield* eventually("the second connection's batch arrived", Effect.sync(() => peer.state.frames.length === 2 && peer.state.nonces.length === 2))
      const [first, second] = peer.state.nonces
      expect(first).not.toEqual(second)
      const back = yield* peer.dial(a)
      // Node 2 acknowledges batch 1 of the first connection, then batch 5 of the current one (never sent).
      back.socket.send(packr.pack([1, [resp(1)], [first, 1]]))
      back.socket.send(packr.pack([2, [resp(2)], [second, 5]]))
      expect(yield* receiveN(a.transport, 2)).toEqual([resp(1), resp(2)])
      expect(yield* statsOf(a, 2)).toMatchObject({ delivered: 0, ridingAcks: 0 })
      // The current connection's batch 1: acknowledged.
      back.socket.send(packr.pack([3, [resp(3)], [second, 1]]))
      expect(yield* receiveN(a.transport, 1)).toEqual([resp(3)])
      expect(yield* statsOf(a, 2)).toMatchObject({ delivered: 1, ridingAcks: 1, failures: 0 })
    })
  )

  it.scopedLive("an acknowledgement that rode on a connection which then failed is sent again standalone", () =>
    Effect.gen(function* () {
      const peer = yield* standIn({ headers: ["x-blixard-riding-acks: 1"], ackEach: true })
      // Node 1 would hold a lone frame's acknowledgement for a minute.
      const a = yield* startNode(1, { requestTimeoutMs: 120_000, ackDelayMs: 60_000, backoffInitialMs: 10_000, backoffMaxMs: 10_000 })
      yield* a.peers.set(2, peer.address)
      const back = yield* peer.dial(a)
      back.socket.send(packr.pack([1, [resp(1)]]))
      expect(yield* receiveN(a.transport, 1)).toEqual([resp(1)])
      // Node 1's next frame to node 2 carries the acknowledgement; node 2's connection loses it.
      yield* a.transport.send([heartbeat(1, 2, 1)])
      yield* eventually("node 2 got the frame with the acknowledgement", Effect.sync(() => peer.state.frames.length === 1))
      expect(peer.state.frames[0]).toEqual([1, [heartbeat(1, 2, 1)], [back.nonce, 1]])
      expect(back.acks).toEqual([])
      peer.state.sockets[0]!.terminate()
      yield* eventually("node 1 acknowledged again, standalone", Effect.sync(() => back.acks.includes(1)))
    })
  )

  it.scopedLive("a peer that does not announce them (an older release) gets two-element frames and standalone acknowledgements", () =>
    Effect.gen(function* () {
      const peer = yield* standIn({ headers: [], ackEach: true })
      const a = yield* startNode(1, { requestTimeoutMs: 120_000, ackDelayMs: 30 })
      yield* a.peers.set(2, peer.address)
      const back = yield* peer.dial(a)
      for (let i = 1; i <= 10; i++) {
        yield* a.transport.send([heartbeat(1, 2, i)])
        yield* eventually(`node 2 got batch ${i}`, Effect.sync(() => peer.state.frames.length === i))
        back.socket.send(packr.pack([i, [resp(i)]]))
        expect(yield* receiveN(a.transport, 1)).toEqual([resp(i)])
      }
      expect(peer.state.frames.filter((f) => Either.isLeft(decodeOldFrame(f)))).toEqual([])
      yield* eventually("node 1 acknowledged all 10 of node 2's batches, standalone", Effect.sync(() => back.acks.at(-1) === 10))
      expect(back.acks.every((ack) => typeof ack === "number")).toBe(true)
      yield* eventually("node 1's 10 batches acknowledged", Effect.map(statsOf(a, 2), (s) => s.delivered === 10))
    })
  )
})
