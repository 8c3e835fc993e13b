/** Wire messages are validated before they reach the core. */
import { Either, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Message } from "../../src/raft/Message.js"

const decode = Schema.decodeUnknownEither(Message)

describe("Message schema", () => {
  it("decodes every well-formed message and round-trips through JSON", () => {
    const msgs: Array<Message> = [
      { type: "app", term: 2, from: 1, to: 2, index: 4, logTerm: 1, commit: 3, entries: [{ index: 5, term: 2, kind: "normal", data: "x" }] },
      { type: "appResp", term: 2, from: 2, to: 1, index: 4, reject: true, rejectHint: 3, logTerm: 1 },
      { type: "vote", term: 3, from: 1, to: 2, index: 9, logTerm: 2, transfer: false },
      { type: "preVote", term: 3, from: 1, to: 2, index: 9, logTerm: 2, transfer: true },
      { type: "voteResp", term: 3, from: 2, to: 1, reject: false },
      { type: "preVoteResp", term: 3, from: 2, to: 1, reject: true },
      { type: "heartbeat", term: 3, from: 1, to: 2, commit: 7 },
      { type: "heartbeat", term: 3, from: 1, to: 2, commit: 7, context: "r1" },
      { type: "heartbeatResp", term: 3, from: 2, to: 1, context: "r1" },
      {
        type: "snap",
        term: 3,
        from: 1,
        to: 2,
        metadata: { index: 10, term: 2, confState: { voters: [1, 2, 3], learners: [4] } },
        offset: 0,
        totalSize: 3,
        data: "abc"
      },
      { type: "timeoutNow", term: 3, from: 1, to: 2 },
      { type: "readIndex", term: 0, from: 2, to: 1, context: "r2" },
      { type: "readIndexResp", term: 3, from: 1, to: 2, index: 7, context: "r2" },
      { type: "transferLeader", term: 0, from: 3, to: 1, transferee: 2 }
    ]
    for (const m of msgs) {
      const back = decode(JSON.parse(JSON.stringify(m)))
      expect(Either.isRight(back) ? back.right : back.left.message).toEqual(m)
    }
  })

  it("rejects malformed input from the network", () => {
    const bad: Array<unknown> = [
      { type: "nope", term: 1, from: 1, to: 2 },
      { type: "vote", term: -1, from: 1, to: 2, index: 0, logTerm: 0, transfer: false },
      { type: "vote", term: 1, from: 0, to: 2, index: 0, logTerm: 0, transfer: false },
      { type: "vote", term: 1.5, from: 1, to: 2, index: 0, logTerm: 0, transfer: false },
      { type: "voteResp", term: 1, from: 1, to: 2 },
      { type: "app", term: 1, from: 1, to: 2, index: 0, logTerm: 0, commit: 0, entries: [{ index: 1, term: 1, kind: "weird", data: "" }] },
      { type: "heartbeat", term: 1, from: 1, to: 2, commit: "3" },
      null,
      "app"
    ]
    for (const b of bad) expect(Either.isLeft(decode(b))).toBe(true)
  })
})
