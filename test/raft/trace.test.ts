/** Scenario scripts whose expected output is the message trace (etcd style). */
import { describe, expect, it } from "vitest"
import type { Message } from "../../src/raft/Message.js"
import { Network } from "./network.js"

const show = (m: Message): string => {
  const head = `${m.from}->${m.to} ${m.type} t${m.term}`
  switch (m.type) {
    case "vote":
    case "preVote":
      return `${head} last=${m.index}/${m.logTerm}`
    case "voteResp":
    case "preVoteResp":
      return `${head}${m.reject ? " reject" : ""}`
    case "app":
      return `${head} prev=${m.index}/${m.logTerm} [${m.entries.map((e) => `${e.index}/${e.term}`).join(",")}] commit=${m.commit}`
    case "appResp":
      return `${head} index=${m.index}${m.reject ? ` reject hint=${m.rejectHint}/${m.logTerm}` : ""}`
    case "heartbeat":
      return `${head} commit=${m.commit}${m.context === undefined ? "" : ` ctx=${m.context}`}`
    default:
      return head
  }
}

describe("message traces", () => {
  it("election, the new leader's empty entry, and one replicated proposal", () => {
    const net = new Network([1, 2, 3])
    net.campaign(1)
    net.node(1).propose("x")
    net.stabilize()
    expect(net.delivered.map(show)).toEqual([
      "1->2 vote t2 last=1/1",
      "1->3 vote t2 last=1/1",
      "2->1 voteResp t2",
      "3->1 voteResp t2",
      // probes after the election carry the empty entry of term 2
      "1->2 app t2 prev=1/1 [2/2] commit=1",
      "1->3 app t2 prev=1/1 [2/2] commit=1",
      "2->1 appResp t2 index=2",
      "3->1 appResp t2 index=2",
      // the commit advanced: one (empty) append per follower carries it
      "1->2 app t2 prev=2/2 [] commit=2",
      "1->3 app t2 prev=2/2 [] commit=2",
      "2->1 appResp t2 index=2",
      "3->1 appResp t2 index=2",
      // the proposal
      "1->2 app t2 prev=2/2 [3/2] commit=2",
      "1->3 app t2 prev=2/2 [3/2] commit=2",
      "2->1 appResp t2 index=3",
      "3->1 appResp t2 index=3",
      "1->2 app t2 prev=3/2 [] commit=3",
      "1->3 app t2 prev=3/2 [] commit=3",
      "2->1 appResp t2 index=3",
      "3->1 appResp t2 index=3"
    ])
  })

  it("PreVote round, then the real election", () => {
    const net = new Network([1, 2, 3], { electionTick: 10, heartbeatTick: 1, preVote: true, checkQuorum: true })
    net.node(1).campaign()
    net.drop = (m) => m.type === "app" || m.type === "appResp"
    net.stabilize()
    expect(net.delivered.map(show)).toEqual([
      "1->2 preVote t2 last=1/1",
      "1->3 preVote t2 last=1/1",
      "2->1 preVoteResp t2",
      "3->1 preVoteResp t2",
      // the pre-vote is won: only now is the term incremented
      "1->2 vote t2 last=1/1",
      "1->3 vote t2 last=1/1",
      "2->1 voteResp t2",
      "3->1 voteResp t2"
    ])
  })
})
