import { describe, expect, it } from "vitest"
import { messageBytes, SendQueue } from "../../src/net/SendQueue.js"
import type { Message } from "../../src/raft/Message.js"

const hb = (commit: number): Message => ({ type: "heartbeat", from: 1, to: 2, term: 1, commit })
const app = (index: number, size: number): Message => ({
  type: "app",
  from: 1,
  to: 2,
  term: 1,
  index,
  logTerm: 1,
  commit: 0,
  entries: [{ index: index + 1, term: 1, kind: "normal", data: "x".repeat(size) }]
})

describe("SendQueue", () => {
  it("keeps the newest messages when the count bound is reached (drops the oldest)", () => {
    const q = new SendQueue({ maxMessages: 4, maxBytes: 1 << 30 })
    for (let i = 0; i < 10; i++) q.push(hb(i))
    expect(q.length).toBe(4)
    expect(q.dropped).toBe(6)
    expect(q.take(100, 1 << 30)).toEqual([hb(6), hb(7), hb(8), hb(9)])
    expect(q.length).toBe(0)
    expect(q.bytes).toBe(0)
  })

  it("stays within the byte bound, but always keeps the newest message", () => {
    const q = new SendQueue({ maxMessages: 1000, maxBytes: 10_000 })
    for (let i = 0; i < 100; i++) q.push(app(i, 1000))
    expect(q.bytes).toBeLessThanOrEqual(10_000)
    expect(q.length).toBe(Math.floor(10_000 / messageBytes(app(0, 1000))))
    q.push(app(100, 50_000))
    expect(q.length).toBe(1)
    expect(q.take(10, 10)).toEqual([app(100, 50_000)])
  })

  it("takes batches oldest first, limited by count and bytes, at least one message", () => {
    const q = new SendQueue({ maxMessages: 100, maxBytes: 1 << 30 })
    for (let i = 0; i < 10; i++) q.push(app(i, 100))
    expect(q.take(3, 1 << 30).map((m) => (m.type === "app" ? m.index : -1))).toEqual([0, 1, 2])
    expect(q.take(100, 1).map((m) => (m.type === "app" ? m.index : -1))).toEqual([3])
    expect(q.take(100, 2 * messageBytes(app(0, 100))).length).toBe(2)
    expect(q.length).toBe(4)
  })

  it("100,000 pushes to a queue nobody drains stay within the bound", () => {
    const q = new SendQueue()
    for (let i = 0; i < 100_000; i++) q.push(hb(i))
    expect(q.length).toBe(4096)
    expect(q.dropped).toBe(100_000 - 4096)
    expect(q.take(1, 1 << 30)).toEqual([hb(100_000 - 4096)])
  })
})
