/**
 * Authentication and validation at the receiving end: rogue processes (real child processes on
 * loopback, without the cluster secret) are refused before any message is read, replayed handshakes
 * are refused, and malformed input from an authenticated peer is dropped while the server keeps serving.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Packr } from "msgpackr"
import { execFile } from "node:child_process"
import * as path from "node:path"
import { WebSocket } from "ws"
import { deriveKey, sign, toQuery } from "../../src/net/PeerAuth.js"
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

/** Plain msgpack, as a peer writes it. */
const packr = new Packr({ useRecords: false })

interface RawPeer {
  readonly socket: WebSocket
  /** The acknowledgements received so far, decoded. */
  readonly acks: Array<unknown>
}

/** A websocket to `port` opened with the given handshake query, closed with the scope. */
const rawPeer = (port: number, query: string) =>
  Effect.acquireRelease(
    Effect.async<RawPeer, Error>((resume) => {
      const socket = new WebSocket(`ws://127.0.0.1:${port}/raft?${query}`)
      const acks: Array<unknown> = []
      socket.on("message", (data) => acks.push(packr.unpack(data as Buffer)))
      socket.once("open", () => resume(Effect.succeed({ socket, acks })))
      socket.once("error", (e) => resume(Effect.fail(e)))
    }),
    (peer) => Effect.sync(() => peer.socket.terminate())
  )

describe("PeerTransport authentication", () => {
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

      yield* Effect.scoped(
        Effect.gen(function* () {
          const peer = yield* rawPeer(b.port, handshake(1, 2))
          // Garbage frames: not msgpack, a text frame, msgpack of the wrong shape.
          peer.socket.send(Buffer.from([0xc1, 0xff, 0x00, 0x13, 0x37]))
          peer.socket.send("{ this is not json")
          peer.socket.send(packr.pack({ seq: 1, messages: [] }))
          peer.socket.send(packr.pack([0, [heartbeat(1, 2, 0)]]))
          // A well-framed batch with bad messages in it: only the good one gets through.
          peer.socket.send(
            packr.pack([
              1,
              [
                "garbage",
                null,
                { type: "nope", from: 1, to: 2, term: 1 },
                { type: "vote", from: 1, to: 2, term: -1, index: 1, logTerm: 1, transfer: false },
                { type: "app", from: 1, to: 2, term: 1, index: 0, logTerm: 0, commit: 0, entries: [{ index: "x" }] },
                heartbeat(1, 3, 1),
                heartbeat(3, 2, 1),
                heartbeat(1, 2, 1)
              ]
            ])
          )
          // Messages claiming another sender than the authenticated one are dropped.
          peer.socket.send(packr.pack([2, [heartbeat(3, 2, 2)]]))
          // Only the well-formed frames count, and one cumulative acknowledgement covers both.
          const until = Date.now() + 15_000
          while (!peer.acks.includes(2) && Date.now() < until) yield* Effect.sleep("10 millis")
          expect(peer.acks).toEqual([2])
        })
      )
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])

      // Still serving: the real peer gets through, and nothing else arrived in between.
      yield* a.transport.send([heartbeat(1, 2, 3)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 3)])
    })
  )
})
