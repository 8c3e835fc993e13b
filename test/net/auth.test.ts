/**
 * Authentication and validation at the receiving end: rogue processes (real child processes on
 * loopback, without the cluster secret) are refused before any message is read, replayed handshakes
 * are refused, and malformed input from an authenticated peer is dropped while the server keeps serving.
 */
import { Socket } from "@effect/platform"
import { NodeSocket } from "@effect/platform-node"
import { RpcClient, RpcSerialization } from "@effect/rpc"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { execFile } from "node:child_process"
import * as path from "node:path"
import { deriveKey, sign, toQuery } from "../../src/net/PeerAuth.js"
import { RaftRpcs } from "../../src/net/RaftRpc.js"
import { connectAll, heartbeat, receiveN, secret, startNode } from "./harness.js"

const fixture = path.resolve(import.meta.dirname, "..", "fixtures", "raft-rogue.mjs")

const rogue = (...args: ReadonlyArray<string>): Effect.Effect<Array<Record<string, unknown>>, Error> =>
  Effect.async((resume) => {
    const child = execFile(process.execPath, [fixture, ...args], { timeout: 45_000 }, (error, stdout, stderr) => {
      if (error !== null) return resume(Effect.fail(new Error(`rogue ${args.join(" ")} failed: ${error.message}\n${stderr}`)))
      resume(Effect.succeed(stdout.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>)))
    })
    return Effect.sync(() => child.kill())
  })

const handshake = (from: number, to: number, now = Date.now()) => toQuery(sign(deriveKey(secret), "", from, to, now))

/** An rpc client speaking to `port` over a websocket opened with the given handshake query. */
const rawClient = (port: number, query: string) =>
  Effect.gen(function* () {
    const protocol = yield* Layer.build(
      RpcClient.layerProtocolSocket({ retrySchedule: Schedule.stop }).pipe(
        Layer.provide(Layer.scoped(Socket.Socket, Socket.makeWebSocket(`ws://127.0.0.1:${port}/raft?${query}`))),
        Layer.provide(NodeSocket.layerWebSocketConstructor),
        Layer.provide(RpcSerialization.layerMsgPack)
      )
    )
    return yield* Effect.provide(RpcClient.make(RaftRpcs, { disableTracing: true, flatten: true }), protocol)
  })

describe("RpcTransport authentication", () => {
  it.scopedLive("a rogue process without the secret cannot deliver a vote or an append", () =>
    Effect.gen(function* () {
      const a = yield* startNode(1)
      const b = yield* startNode(2)
      yield* connectAll([a, b])
      const port = String(b.port)

      expect(yield* rogue(port, "raw", "not the cluster secret")).toEqual([{ status: 401, body: "unauthorized" }])
      expect(yield* rogue(port, "raw", "-")).toEqual([{ status: 401, body: "unauthorized" }])
      // The real transport, compiled, with a wrong secret: its vote and append never get in.
      const [dist] = yield* rogue(port, "dist", "not the cluster secret")
      expect(dist).toMatchObject({ delivered: 0 })
      expect(String(dist?.error)).toContain("401")

      // Nothing reached node 2's inbox: the first message it receives is the real peer's.
      yield* a.transport.send([heartbeat(1, 2, 555)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 555)])
    })
  )

  it.scopedLive("a replayed or stale handshake is refused", () =>
    Effect.gen(function* () {
      const b = yield* startNode(2)
      const port = String(b.port)
      // A handshake captured on the wire works once; replaying it is refused.
      expect(yield* rogue(port, "query", handshake(1, 2))).toEqual([{ status: 101 }, { status: 401, body: "unauthorized" }])
      // A correctly signed but old handshake (ten minutes ago) is refused.
      expect(yield* rogue(port, "query", handshake(1, 2, Date.now() - 600_000))).toEqual([
        { status: 401, body: "unauthorized" },
        { status: 401, body: "unauthorized" }
      ])
      // A handshake made for another node is refused here.
      expect(yield* rogue(port, "query", handshake(1, 3))).toEqual([
        { status: 401, body: "unauthorized" },
        { status: 401, body: "unauthorized" }
      ])
    })
  )

  it.scopedLive("malformed frames and messages are dropped and the server keeps serving", () =>
    Effect.gen(function* () {
      const a = yield* startNode(1)
      const b = yield* startNode(2)
      yield* connectAll([a, b])

      // Garbage frames on an authenticated socket.
      yield* Effect.scoped(
        Effect.gen(function* () {
          const socket = yield* Socket.makeWebSocket(`ws://127.0.0.1:${b.port}/raft?${handshake(1, 2)}`)
          const write = yield* socket.writer
          yield* Effect.forkScoped(Effect.ignore(socket.runRaw(() => Effect.void)))
          yield* Effect.ignore(write(new Uint8Array([0xc1, 0xff, 0x00, 0x13, 0x37])))
          yield* Effect.ignore(write("{ this is not json"))
        }).pipe(Effect.provide(NodeSocket.layerWebSocketConstructor))
      )

      // Well-framed batches with bad messages in them, from an authenticated peer.
      yield* Effect.scoped(
        Effect.gen(function* () {
          const client = yield* rawClient(b.port, handshake(1, 2))
          yield* client("Raft.Deliver", {
            from: 1,
            messages: [
              "garbage",
              null,
              { type: "nope", from: 1, to: 2, term: 1 },
              { type: "vote", from: 1, to: 2, term: -1, index: 1, logTerm: 1, transfer: false },
              { type: "app", from: 1, to: 2, term: 1, index: 0, logTerm: 0, commit: 0, entries: [{ index: "x" }] },
              heartbeat(1, 3, 1),
              heartbeat(3, 2, 1),
              heartbeat(1, 2, 1)
            ]
          })
          // A batch whose sender differs from the authenticated one is dropped whole.
          yield* client("Raft.Deliver", { from: 3, messages: [heartbeat(3, 2, 2)] })
        })
      )
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])

      // Still serving: the real peer gets through, and nothing else arrived in between.
      yield* a.transport.send([heartbeat(1, 2, 3)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 3)])
    })
  )
})
