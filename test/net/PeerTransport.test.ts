import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Option } from "effect"
import * as net from "node:net"
import type { Message } from "../../src/raft/Message.js"
import { append, connectAll, eventually, freePort, heartbeat, receiveN, receiveWithin, startNode, type TestNode } from "./harness.js"

describe("PeerTransport on loopback", () => {
  it.scopedLive("two nodes deliver both ways", () =>
    Effect.gen(function* () {
      const a = yield* startNode(1)
      const b = yield* startNode(2)
      yield* connectAll([a, b])
      yield* a.transport.send([heartbeat(1, 2, 7)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 7)])
      const resp: Message = { type: "heartbeatResp", from: 2, to: 1, term: 1, context: "read-1" }
      yield* b.transport.send([resp])
      expect(yield* receiveN(a.transport, 1)).toEqual([resp])
    })
  )

  it.scopedLive("three nodes: every node reaches every other", () =>
    Effect.gen(function* () {
      const nodes = [yield* startNode(1), yield* startNode(2), yield* startNode(3)]
      yield* connectAll(nodes)
      for (const n of nodes) {
        yield* n.transport.send(nodes.filter((m) => m.id !== n.id).map((m) => heartbeat(n.id, m.id, n.id * 10)))
      }
      for (const n of nodes) {
        const got = yield* receiveN(n.transport, 2)
        expect(got.map((m) => m.from).sort()).toEqual(nodes.filter((m) => m.id !== n.id).map((m) => m.id))
        for (const m of got) expect(m).toEqual(heartbeat(m.from, n.id, m.from * 10))
      }
    })
  )

  it.scopedLive("a batch, and batches sent while one is in flight, arrive in order", () =>
    Effect.gen(function* () {
      const a = yield* startNode(1)
      const b = yield* startNode(2)
      yield* connectAll([a, b])
      const batch = Array.from({ length: 500 }, (_, i) => append(1, 2, i))
      yield* a.transport.send(batch)
      // Many small sends in a row: once the window of unacknowledged frames is full they queue and go out together.
      for (let i = 500; i < 2000; i++) yield* a.transport.send([append(1, 2, i)])
      const got = yield* receiveN(b.transport, 2000)
      expect(got.map((m) => (m.type === "app" ? m.index : -1))).toEqual(Array.from({ length: 2000 }, (_, i) => i))
      expect(got[3]).toEqual(append(1, 2, 3))
      yield* eventually("the sender counts 2000 acknowledged", Effect.map(a.peers.stats, ([s]) => s?.delivered === 2000))
      expect((yield* a.peers.stats)[0]?.droppedQueueFull).toBe(0)
    })
  )

  it.scopedLive("a message to an unknown peer is dropped without error; so is one to a removed peer", () =>
    Effect.gen(function* () {
      const a = yield* startNode(1)
      const b = yield* startNode(2)
      yield* connectAll([a, b])
      yield* a.transport.send([heartbeat(1, 99), heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      expect((yield* a.peers.stats).map((s) => s.id)).toEqual([2])
      yield* a.peers.remove(2)
      yield* a.transport.send([heartbeat(1, 2, 2)])
      expect(yield* a.peers.stats).toEqual([])
      // Back again: delivery resumes, and the message sent while removed never arrives.
      yield* a.peers.set(2, b.address)
      yield* a.transport.send([heartbeat(1, 2, 3)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 3)])
    })
  )

  it.scopedLive("a dead peer: bounded queue, reported unreachable, delivery resumes when it comes up", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const a = yield* startNode(1, { backoffMaxMs: 200 })
      yield* a.peers.set(2, `127.0.0.1:${port}`)
      for (let i = 0; i < 100; i++) {
        yield* a.transport.send(Array.from({ length: 1000 }, (_, j) => heartbeat(1, 2, i * 1000 + j)))
      }
      const [stats] = yield* a.peers.stats
      expect(stats!.queued).toBeLessThanOrEqual(4096)
      expect(stats!.droppedQueueFull + stats!.droppedFailed + stats!.queued).toBe(100_000)
      for (let i = 0; i < 100; i++) {
        yield* a.transport.send(Array.from({ length: 1000 }, (_, j) => append(1, 2, i * 1000 + j)))
      }
      const full = (yield* a.peers.stats)[0]!
      expect(full.queued).toBeLessThanOrEqual(4096)
      expect(full.queuedBytes).toBeLessThanOrEqual(4096 * 256)
      expect(full.droppedQueueFull).toBeGreaterThanOrEqual(200_000 - 4096 - full.droppedFailed)

      let reported = false
      yield* eventually(
        "peer 2 reported unreachable",
        Effect.map(a.transport.unreachable, (ids) => (reported ||= ids.includes(2)))
      )
      const failed = (yield* a.peers.stats)[0]!
      expect(failed.failures).toBeGreaterThan(0)
      expect(failed.connected).toBe(false)

      // The peer comes up on that port: the sender reconnects and delivery resumes.
      const b = yield* startNode(2, { port })
      yield* a.transport.send([heartbeat(1, 2, 424242)])
      // What was still queued arrives first (oldest dropped, newest kept), then the new message.
      const until = Date.now() + 15_000
      let seen = 0
      while (true) {
        const m = yield* receiveWithin(b.transport, Math.max(0, until - Date.now()))
        if (Option.isNone(m)) return yield* Effect.fail(new Error(`the new message did not arrive (${seen} others did)`))
        if (m.value.type === "heartbeat" && m.value.commit === 424242) break
        seen++
      }
      expect(seen).toBeLessThanOrEqual(4096)
      // The receiver hands a batch to its inbox before it acknowledges it: the sender learns of the success a moment later.
      yield* eventually("the sender sees the peer connected again", Effect.map(a.peers.stats, ([s]) => s?.connected === true && s.failures === 0))
      expect((yield* a.peers.stats)[0]!.queued).toBeLessThanOrEqual(4096)
    })
  )

  it.scopedLive("discard: what was queued for a dead peer never reaches it; what is sent afterwards does", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const a = yield* startNode(1, { backoffMaxMs: 200 })
      yield* a.peers.set(2, `127.0.0.1:${port}`)
      // Written for the peer's old log (it left the configuration while down), then dropped.
      yield* a.transport.send(Array.from({ length: 10 }, (_, j) => heartbeat(1, 2, j + 1)))
      expect((yield* a.peers.stats)[0]!.queued).toBe(10)
      yield* a.transport.discard(2)
      expect((yield* a.peers.stats)[0]!.queued).toBe(0)
      const b = yield* startNode(2, { port })
      yield* a.transport.send([heartbeat(1, 2, 424242)])
      const [first] = yield* receiveN(b.transport, 1)
      expect(first!.type === "heartbeat" ? first!.commit : undefined).toBe(424242)
    })
  )

  it.scopedLive("a peer that accepts connections but never answers times out without holding up the others", () =>
    Effect.gen(function* () {
      // A TCP server that accepts and then says nothing: the handshake can never complete.
      const sockets = new Set<net.Socket>()
      const blackhole = net.createServer((socket) => void sockets.add(socket))
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void blackhole.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () =>
          Effect.async<void>((resume) => {
            for (const socket of sockets) socket.destroy()
            blackhole.close(() => resume(Effect.void))
          })
      )
      const port = (blackhole.address() as net.AddressInfo).port
      const a = yield* startNode(1, { requestTimeoutMs: 300 })
      const b = yield* startNode(2)
      yield* connectAll([a, b])
      yield* a.peers.set(3, `127.0.0.1:${port}`)
      yield* a.transport.send([heartbeat(1, 3, 1), heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      let reported = false
      yield* eventually("the silent peer is reported unreachable", Effect.map(a.transport.unreachable, (ids) => (reported ||= ids.includes(3))))
      const silent = (yield* a.peers.stats).find((s) => s.id === 3)!
      expect(silent.failures).toBeGreaterThan(0)
      expect(silent.delivered).toBe(0)
      // Meanwhile traffic to the live peer keeps flowing.
      yield* a.transport.send([heartbeat(1, 3, 2), heartbeat(1, 2, 2)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 2)])
    })
  )

  it.scopedLive("a peer address the websocket client cannot parse is a failed attempt, not a crash", () =>
    Effect.gen(function* () {
      const a = yield* startNode(1, { backoffMaxMs: 100 })
      const b = yield* startNode(2)
      yield* connectAll([a, b])
      yield* a.peers.set(3, "not a host:port at all")
      yield* a.transport.send([heartbeat(1, 3, 1), heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      let reported = false
      yield* eventually("the bad address is reported unreachable", Effect.map(a.transport.unreachable, (ids) => (reported ||= ids.includes(3))))
      const bad = (yield* a.peers.stats).find((s) => s.id === 3)!
      expect(bad.failures).toBeGreaterThan(0)
      expect(bad.lastError).toMatch(/URL/i)
    })
  )

  it.scopedLive("a peer that restarts on a new address is reached after set()", () =>
    Effect.gen(function* () {
      const a = yield* startNode(1)
      const b = yield* startNode(2)
      yield* connectAll([a, b])
      yield* a.transport.send([heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      yield* b.stop
      const b2 = yield* startNode(2)
      yield* a.peers.set(2, b2.address)
      yield* a.transport.send([heartbeat(1, 2, 2)])
      expect(yield* receiveN(b2.transport, 1)).toEqual([heartbeat(1, 2, 2)])
    })
  )
})

describe("PeerTransport acknowledgements", () => {
  it.scopedLive("heartbeat rounds: one acknowledgement frame on the wire covers two batches", () =>
    Effect.gen(function* () {
      // The receiver would hold a lone frame's acknowledgement for a minute: every one counted
      // here was sent because a second frame arrived.
      const a = yield* startNode(1, { requestTimeoutMs: 120_000 })
      const b = yield* startNode(2, { ackDelayMs: 60_000 })
      yield* connectAll([a, b])
      for (let i = 1; i <= 20; i++) {
        yield* a.transport.send([heartbeat(1, 2, i)])
        expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, i)])
      }
      yield* eventually("the sender counts 20 acknowledged", Effect.map(a.peers.stats, ([s]) => s?.delivered === 20))
      const stats = (yield* a.peers.stats)[0]!
      expect(stats.frames).toBe(20)
      // One acknowledgement per frame before: 20 frames back for 20 frames out.
      expect(stats.acks).toBe(10)
    })
  )

  it.scopedLive("a batch its peer never acknowledges fails the connection at its deadline: the watchdog is armed by the batch, not a 250 ms poll", () =>
    Effect.gen(function* () {
      // The receiver holds a lone frame's acknowledgement for a minute: to the sender, a peer that
      // took the frame and hung.
      const a = yield* startNode(1, { requestTimeoutMs: 400 })
      const b = yield* startNode(2, { ackDelayMs: 60_000 })
      yield* connectAll([a, b])
      const sentAt = Date.now()
      yield* a.transport.send([heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      yield* eventually("the connection fails", Effect.map(a.peers.stats, ([s]) => (s?.failuresTotal ?? 0) > 0), 10_000)
      expect(Date.now() - sentAt).toBeGreaterThanOrEqual(400)
      expect((yield* a.peers.stats)[0]!.lastError).toMatch(/did not acknowledge within 400 ms/)
    })
  )

  it.scopedLive("a lone batch is acknowledged after ackDelayMs: nothing stays in flight", () =>
    Effect.gen(function* () {
      // A sender that would wait a minute before failing the connection: only the receiver's timer
      // can account for the batch within the test's deadline.
      const a = yield* startNode(1, { requestTimeoutMs: 60_000 })
      const b = yield* startNode(2, { ackDelayMs: 50 })
      yield* connectAll([a, b])
      for (let i = 1; i <= 3; i++) {
        yield* a.transport.send([heartbeat(1, 2, i)])
        expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, i)])
        yield* eventually(`batch ${i} acknowledged`, Effect.map(a.peers.stats, ([s]) => s?.delivered === i), 10_000)
      }
      const stats = (yield* a.peers.stats)[0]!
      expect(stats.frames).toBe(3)
      expect(stats.connected).toBe(true)
      expect(stats.failures).toBe(0)
    })
  )

  it.scopedLive("a window of two never waits for a held-back acknowledgement", () =>
    Effect.gen(function* () {
      const a = yield* startNode(1, { requestTimeoutMs: 120_000, maxInFlight: 2 })
      const b = yield* startNode(2, { ackDelayMs: 60_000 })
      yield* connectAll([a, b])
      // Small batches one at a time: the window is full after every second one, and a batch behind a
      // held-back acknowledgement would wait a minute.
      for (let i = 1; i <= 20; i++) {
        yield* a.transport.send([heartbeat(1, 2, i)])
        expect(yield* receiveN(b.transport, 1, 10_000)).toEqual([heartbeat(1, 2, i)])
      }
      const stats = (yield* a.peers.stats)[0]!
      expect(stats.droppedQueueFull + stats.droppedFailed).toBe(0)
      expect(stats.frames).toBe(20)
    })
  )
})

describe("PeerTransport incarnations", () => {
  /** The next thing `receive` hands out, failing after the deadline. */
  const nextReceived = (transport: TestNode["transport"], deadlineMs = 15_000) =>
    transport.receive.pipe(Effect.timeoutFail({ duration: Duration.millis(deadlineMs), onTimeout: () => new Error(`nothing received within ${deadlineMs} ms`) }))

  /** `b` stops and `a` has noticed (its connection failed): what `a` sends now waits in its queue. */
  const stopNoticed = (a: TestNode, b: TestNode) =>
    Effect.gen(function* () {
      yield* eventually("the sender is connected", Effect.map(a.peers.stats, (all) => all.find((s) => s.id === b.id)?.connected === true))
      yield* b.stop
      yield* eventually("the sender saw the connection fail", Effect.map(a.peers.stats, (all) => all.some((s) => s.id === b.id && !s.connected && s.failures > 0)))
    })

  it.scopedLive("a peer back as another incarnation gets none of what was queued for its earlier one; the sender is told, and sends again once resumed", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const a = yield* startNode(1, { incarnation: "a-first", backoffMaxMs: 200 })
      const b = yield* startNode(2, { port, incarnation: "b-first" })
      yield* a.peers.set(2, b.address)
      yield* a.transport.send([heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      expect((yield* a.peers.stats)[0]!.incarnation).toBe("b-first")
      yield* stopNoticed(a, b)
      // Written for its earlier life: heartbeats carrying a commit index that life's log acknowledged.
      yield* a.transport.send(Array.from({ length: 10 }, (_, j) => heartbeat(1, 2, 100 + j)))
      expect((yield* a.peers.stats)[0]!.queued).toBe(10)
      // Back on an emptied data directory: the sender reconnects and reads the new incarnation in the answer.
      const b2 = yield* startNode(2, { port, incarnation: "b-second" })
      expect(yield* nextReceived(a.transport)).toEqual({ type: "peerRestarted", peer: 2, incarnation: "b-second" })
      // Until resumed, what is sent was built before the Raft driver reset the peer's progress: dropped too.
      yield* a.transport.send([heartbeat(1, 2, 200)])
      yield* a.transport.resume(2)
      yield* a.transport.send([heartbeat(1, 2, 300)])
      // One connection delivers in order: anything queued for the earlier life would have come first.
      expect(yield* receiveN(b2.transport, 1)).toEqual([heartbeat(1, 2, 300)])
      expect((yield* a.peers.stats)[0]).toMatchObject({ queued: 0, droppedRestarted: 11, incarnation: "b-second" })
    })
  )

  it.scopedLive("a peer restarted on its own data directory (the same incarnation) gets what was queued for it", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const a = yield* startNode(1, { incarnation: "a-first", backoffMaxMs: 200 })
      const b = yield* startNode(2, { port, incarnation: "b-first" })
      yield* a.peers.set(2, b.address)
      yield* a.transport.send([heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      yield* stopNoticed(a, b)
      const queued = Array.from({ length: 10 }, (_, j) => heartbeat(1, 2, 100 + j))
      yield* a.transport.send(queued)
      const b2 = yield* startNode(2, { port, incarnation: "b-first" })
      expect(yield* receiveN(b2.transport, 10)).toEqual(queued)
      expect((yield* a.peers.stats)[0]).toMatchObject({ droppedRestarted: 0, incarnation: "b-first" })
    })
  )

  it.scopedLive("a peer that names no incarnation (an older release) is treated as before: its queue is delivered across a restart", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const a = yield* startNode(1, { incarnation: "a-first", backoffMaxMs: 200 })
      const b = yield* startNode(2, { port })
      yield* a.peers.set(2, b.address)
      yield* a.transport.send([heartbeat(1, 2, 1)])
      expect(yield* receiveN(b.transport, 1)).toEqual([heartbeat(1, 2, 1)])
      yield* stopNoticed(a, b)
      const queued = Array.from({ length: 10 }, (_, j) => heartbeat(1, 2, 100 + j))
      yield* a.transport.send(queued)
      const b2 = yield* startNode(2, { port })
      expect(yield* receiveN(b2.transport, 10)).toEqual(queued)
      expect((yield* a.peers.stats)[0]).toMatchObject({ droppedRestarted: 0, incarnation: undefined })
    })
  )

  it.scopedLive("a peer's new incarnation learned from its own connection: the queue for it is dropped, the node told before its messages, its earlier life's connection closed", () =>
    Effect.gen(function* () {
      const dead = yield* Effect.promise(freePort)
      // A's own attempts to reach node 2 fail and back off for seconds: it learns only from node 2's connections.
      const a = yield* startNode(1, { incarnation: "a-first", backoffInitialMs: 10_000, backoffMaxMs: 10_000 })
      const b = yield* startNode(2, { incarnation: "b-first" })
      yield* b.peers.set(1, a.address)
      const resp = (context: string): Message => ({ type: "heartbeatResp", from: 2, to: 1, term: 1, context })
      yield* b.transport.send([resp("first")])
      expect(yield* nextReceived(a.transport)).toEqual(resp("first"))
      yield* a.peers.set(2, `127.0.0.1:${dead}`)
      yield* a.transport.send(Array.from({ length: 5 }, (_, j) => heartbeat(1, 2, 100 + j)))
      expect((yield* a.peers.stats)[0]!.queued).toBe(5)
      // Node 2 back as another incarnation (here while the earlier process still runs), talking first.
      const b2 = yield* startNode(2, { incarnation: "b-second" })
      yield* b2.peers.set(1, a.address)
      yield* b2.transport.send([resp("second")])
      expect(yield* nextReceived(a.transport)).toEqual({ type: "peerRestarted", peer: 2, incarnation: "b-second" })
      expect(yield* nextReceived(a.transport)).toEqual(resp("second"))
      expect((yield* a.peers.stats)[0]).toMatchObject({ queued: 0, droppedRestarted: 5, incarnation: "b-second" })
      yield* eventually("the earlier life's connection is closed", Effect.map(b.peers.stats, ([s]) => s !== undefined && s.failures > 0))
    })
  )
})
