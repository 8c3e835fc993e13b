/**
 * `GET /v1/events` served by the API server: a real HTTP client reading the SSE framing. The
 * events are published to the node's `EventLog` directly here (Derive.test.ts covers what the state
 * machine publishes; test/e2e/events.test.ts covers the whole path on real nodes).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as http from "node:http"
import { replicatedToken, sha256Hex } from "../../src/api/Auth.js"
import { ApiTokenRecord, TokenId } from "../../src/domain/ApiToken.js"
import { EventBatch, Resync } from "../../src/domain/ClusterEvent.js"
import { VmName } from "../../src/domain/VmName.js"
import { EventLog } from "../../src/events/EventLog.js"
import { raw, serve } from "../api/harness.js"
import { connect, type SseMessage, until } from "../support/SseClient.js"

const admin = "s3cret-token"
const readOnly = replicatedToken("0123456789abcdef", "A".repeat(43))
const tokens = new Map([["0123456789abcdef", new ApiTokenRecord({ id: TokenId.make("0123456789abcdef"), role: "read-only", hash: sha256Hex(readOnly), createdAt: 0 })]])
const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

const created = (name: string) => [{ type: "vm.created" as const, vm: VmName.make(name), revision: 1 }]
const batch = (message: SseMessage) => Schema.decodeUnknownSync(Schema.parseJson(EventBatch))(message.data)
const resync = (message: SseMessage) => Schema.decodeUnknownSync(Schema.parseJson(Resync))(message.data)

/** A server whose event log is `log`, and a promise-based connect to its stream. */
const served = (log: EventLog, heartbeatMs = 60_000) =>
  Effect.map(serve({ auth: { adminTokens: [admin], tokens: (id) => tokens.get(id) }, events: { log, heartbeatMs } }), ({ url }) => ({
    url,
    open: (query = "", headers: Record<string, string> = bearer(readOnly)) =>
      Effect.acquireRelease(Effect.promise(() => connect(`${url}/v1/events${query}`, headers)), (c) => Effect.sync(() => c.close()))
  }))

const wait = (what: string, check: () => boolean) => Effect.promise(() => until(what, check))

describe("GET /v1/events", () => {
  it.scopedLive("streams each applied entry's batch with its index as the SSE id; an entry with no events sends nothing", () =>
    Effect.gen(function* () {
      const log = new EventLog(100)
      const { open } = yield* served(log)
      const c = yield* open()
      expect(c.status).toBe(200)
      expect(c.headers["content-type"]).toBe("text/event-stream; charset=utf-8")
      expect(c.headers["cache-control"]).toBe("no-cache")
      log.publish(1, 1, 1000, created("a"))
      log.publish(2, 1, 1001, [])
      log.publish(3, 2, undefined, [{ type: "leader.changed", term: 2 }])
      yield* wait("two messages", () => c.messages.length === 2)
      expect(c.messages.map((m) => [m.id, m.event])).toEqual([["1", "message"], ["3", "message"]])
      expect(batch(c.messages[0]!)).toEqual({ index: 1, term: 1, at: 1000, events: [{ type: "vm.created", vm: "a", revision: 1 }] })
      expect(batch(c.messages[1]!)).toEqual({ index: 3, term: 2, events: [{ type: "leader.changed", term: 2 }] })
    })
  )

  it.scopedLive("resumes after Last-Event-ID (which wins over ?since=), replaying what the log holds, then goes on live", () =>
    Effect.gen(function* () {
      const log = new EventLog(100)
      const { open } = yield* served(log)
      for (let i = 1; i <= 5; i++) log.publish(i, 1, i, created(`vm-${i}`))
      const fromHeader = yield* open("?since=1", { ...bearer(readOnly), "last-event-id": "3" })
      const fromQuery = yield* open("?since=1")
      const fromNow = yield* open()
      yield* wait("the replays", () => fromHeader.messages.length === 2 && fromQuery.messages.length === 4)
      // A stream from now on says where it starts, so a client that reconnects before any event loses none.
      yield* wait("the starting id", () => fromNow.lastId === "5")
      expect(fromNow.messages).toEqual([])
      log.publish(6, 1, 6, created("vm-6"))
      yield* wait("the live batch on every stream", () => [fromHeader, fromQuery, fromNow].every((c) => c.messages.at(-1)?.id === "6"))
      expect(fromHeader.messages.map((m) => m.id)).toEqual(["4", "5", "6"])
      expect(fromQuery.messages.map((m) => m.id)).toEqual(["2", "3", "4", "5", "6"])
      expect(fromNow.messages.map((m) => m.id)).toEqual(["6"])
    })
  )

  it.scopedLive("an index older than the log holds begins the stream with a resync; so does a state replaced by a snapshot", () =>
    Effect.gen(function* () {
      const log = new EventLog(4)
      const { open } = yield* served(log)
      for (let i = 1; i <= 10; i++) log.publish(i, 1, i, created(`vm-${i}`))
      const old = yield* open("?since=2")
      const held = yield* open("?since=6")
      yield* wait("the resync and the replay", () => old.messages.length === 1 && held.messages.length === 4)
      expect(old.messages[0]!.event).toBe("resync")
      expect(old.messages[0]!.id).toBe("10")
      expect(resync(old.messages[0]!)).toMatchObject({ index: 10, reason: "compacted", message: expect.stringContaining("list the VMs") })
      expect(held.messages.map((m) => m.id)).toEqual(["7", "8", "9", "10"])
      log.publish(11, 1, 11, created("vm-11"))
      yield* wait("the live batch after the resync", () => old.messages.length === 2)
      expect(old.messages[1]!.id).toBe("11")

      log.reset(50)
      log.publish(51, 3, 51, created("vm-51"))
      yield* wait("the restored resync", () => held.messages.some((m) => m.id === "51"))
      expect(held.messages.slice(-2).map((m) => [m.id, m.event])).toEqual([["50", "resync"], ["51", "message"]])
      expect(resync(held.messages.at(-2)!).reason).toBe("restored")
      expect(held.ended).toBe(false)
    })
  )

  it.scopedLive("a new cluster's founding snapshot (index 1) loses nothing: a client from index 0 gets every batch", () =>
    Effect.gen(function* () {
      const log = new EventLog(10)
      const { open } = yield* served(log)
      log.reset(1)
      log.publish(2, 2, 2, [{ type: "leader.changed", term: 2 }])
      const c = yield* open("?since=0")
      yield* wait("the replay", () => c.messages.length === 1)
      expect(c.messages.map((m) => [m.id, m.event])).toEqual([["2", "message"]])
    })
  )

  it.scopedLive("needs a token with read access; a bad Last-Event-ID or since is a 400; other methods a 405", () =>
    Effect.gen(function* () {
      const log = new EventLog(10)
      const { url, open } = yield* served(log)
      const anonymous = yield* open("", {})
      expect(anonymous.status).toBe(401)
      expect(JSON.parse(anonymous.body)).toMatchObject({ code: "BLX_UNAUTHORIZED" })
      expect((yield* open("", bearer(admin))).status).toBe(200)
      for (const [query, headers, subject] of [
        ["", { "last-event-id": "abc" }, "Last-Event-ID"],
        ["?since=-1", {}, "since"],
        ["?since=1.5", {}, "since"]
      ] as const) {
        const bad = yield* open(query, { ...bearer(readOnly), ...headers })
        expect(bad.status).toBe(400)
        expect(JSON.parse(bad.body)).toMatchObject({ code: "BLX_INVALID_ARGUMENT", subject })
      }
      const post = yield* raw(url, { method: "POST", path: "/v1/events" })
      expect(post.status).toBe(405)
      expect(post.allow).toBe("GET, HEAD")
      expect(post.json).toMatchObject({ code: "BLX_INVALID_ARGUMENT" })
    })
  )

  it.scopedLive("an idle stream gets heartbeat comments", () =>
    Effect.gen(function* () {
      const { open } = yield* served(new EventLog(10), 100)
      const c = yield* open()
      yield* wait("three heartbeats", () => c.comments >= 3)
      expect(c.messages).toEqual([])
      expect(c.ended).toBe(false)
    })
  )

  it.scopedLive("a client that stops reading is dropped once the log moves past it, and publishing never waits for it", () =>
    Effect.gen(function* () {
      const log = new EventLog(50)
      const { url } = yield* served(log, 100)
      let ended = false
      let received = 0
      const paused = yield* Effect.acquireRelease(
        Effect.async<http.IncomingMessage>((resume) => {
          http.get(`${url}/v1/events`, { headers: bearer(readOnly), agent: false }, (response) => {
            response.pause()
            response.on("data", (chunk: Buffer) => void (received += chunk.length))
            response.on("close", () => void (ended = true))
            resume(Effect.succeed(response))
          })
        }),
        (response) => Effect.sync(() => response.destroy())
      )
      // ~20 MB of events against a client that reads nothing: far beyond the socket buffers.
      const big = "x".repeat(2000)
      const started = performance.now()
      for (let i = 1; i <= 10_000; i++) {
        log.publish(i, 1, i, [{ type: "vm.pending", vm: VmName.make("web"), reason: big, revision: i }])
        if (i % 500 === 0) yield* Effect.sleep("5 millis")
      }
      const publishing = performance.now() - started
      paused.resume()
      yield* wait("the server to drop the paused client", () => ended)
      // It got a part of the stream at most, not 20 MB.
      expect(received).toBeLessThan(10_000_000)
      expect(publishing).toBeLessThan(10_000)
    })
  )
})

describe("the event ring", () => {
  const events = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ type: "vm.created" as const, vm: VmName.make(`vm-${from + i}`), revision: 1 }))

  it("is bounded in events as well as in batches: large batches push the oldest out, never the newest; a cursor before them resyncs", () => {
    const log = new EventLog(100, 50)
    for (let index = 1; index <= 10; index++) log.publish(index, 1, undefined, events(1, index))
    expect(log.after(0, 1000)?.map((b) => b.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    // 20 events each: with the ten single ones, 50 events fit up to index 12; index 13 pushes out all before 12.
    log.publish(11, 1, undefined, events(20))
    log.publish(12, 1, undefined, events(20))
    expect(log.after(0, 1000)?.map((b) => b.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    log.publish(13, 1, undefined, events(20))
    expect(log.floor).toBe(11)
    expect(log.after(0, 1000)).toBeUndefined()
    expect(log.after(10, 1000)).toBeUndefined()
    expect(log.after(11, 1000)?.map((b) => b.index)).toEqual([12, 13])
    // A batch larger than the bound alone is kept: the newest always is.
    log.publish(14, 1, undefined, events(80))
    expect(log.floor).toBe(13)
    expect(log.after(13, 1000)?.map((b) => [b.index, b.events.length])).toEqual([[14, 80]])
    // And the count bound still holds after a reset.
    log.reset(20)
    for (let index = 21; index <= 30; index++) log.publish(index, 1, undefined, events(10))
    expect(log.after(20, 1000)).toBeUndefined()
    expect(log.after(log.floor, 1000)?.map((b) => b.index)).toEqual([26, 27, 28, 29, 30])
  })
})
