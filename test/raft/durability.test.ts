/**
 * What a node sends never runs ahead of what it has on disk — even a leader that sends its appends
 * while it saves them (the driver's production order, thesis §10.2.1), even with a single voter.
 */
import { describe, expect, it } from "vitest"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import type { Message } from "../../src/raft/Message.js"
import type { NodeOptions } from "./network.js"
import { Network, plain } from "./network.js"

/**
 * A founder (node 1, the only voter) and a learner (node 2) catching up. Node 1 campaigns and takes
 * a write in one batch (as the driver's loop does), keeps writing, and crashes during its
 * `crashAt`-th save; restarted, it campaigns again and writes on. Returns what went wrong: a
 * commit index sent beyond the sender's durable log, or an entry applied differently on the two.
 */
const founderAndLearner = (crashAt: number, options: NodeOptions = plain): Array<string> => {
  const cs = { voters: [1], learners: [2] }
  const storages = new Map([1, 2].map((id) => [id, MemoryStorage.bootstrap(cs, "[]")]))
  const net = new Network([1, 2], options, 1, storages)
  const problems: Array<string> = []
  let saves = 0
  net.crashDuringSave = (id) => id === 1 && ++saves === crashAt
  const durable = storages.get(1)!
  net.rewrite = (m: Message) => {
    if (m.from === 1 && (m.type === "app" || m.type === "heartbeat") && m.commit > durable.lastIndex()) {
      problems.push(`node 1 sent commit ${m.commit} with only ${durable.lastIndex()} on disk`)
    }
    return m
  }
  const write = (data: string) => {
    if (net.isDown(1)) return
    net.node(1).propose(data)
    net.stabilize()
  }
  try {
    net.node(1).campaign()
    net.node(1).propose("a")
    net.stabilize()
    for (let i = 0; i < 3; i++) write(`w${i}`)
    if (net.isDown(1)) {
      net.restart(1)
      net.campaign(1)
      for (let i = 0; i < 3; i++) write(`after${i}`)
    }
    net.tickAll(3)
  } catch (e) {
    problems.push(`a core stopped: ${(e as Error).message}`)
  }
  return [...problems, ...net.safetyViolations()]
}

describe("durability before sending (single voter)", () => {
  it("a sole voter becomes leader only once its new term and vote are durable", () => {
    const net = new Network([1], plain, 1, new Map([[1, MemoryStorage.bootstrap({ voters: [1], learners: [] }, "[]")]]))
    net.node(1).campaign()
    expect(net.node(1).role).toBe("candidate")
    expect(net.storages.get(1)!.hardState.term).toBe(1)
    net.processReady(1)
    expect(net.storages.get(1)!.hardState).toMatchObject({ term: 2, vote: 1 })
    expect(net.node(1).role).toBe("leader")
  })

  it("a leader counts its own entries toward commit only once they are durable", () => {
    const net = new Network([1], plain, 1, new Map([[1, MemoryStorage.bootstrap({ voters: [1], learners: [] }, "[]")]]))
    net.campaign(1)
    net.node(1).propose("x")
    const rd = net.node(1).ready()
    expect(rd.entries.map((e) => e.data)).toEqual(["x"])
    expect(net.node(1).commitIndex).toBe(2)
    net.storages.get(1)!.append(rd.entries)
    net.node(1).advance(rd)
    expect(net.node(1).commitIndex).toBe(3)
  })

  it("a crash during any save of a founder with a learner loses nothing the learner has, nor sends a commit beyond the disk", () => {
    for (let crashAt = 1; crashAt <= 8; crashAt++) {
      expect({ crashAt, problems: founderAndLearner(crashAt) }).toEqual({ crashAt, problems: [] })
    }
  })

  it("the unsafe switch (counting the leader's own entries and vote before they are durable) breaks it", () => {
    const broken = Array.from({ length: 8 }, (_, i) => founderAndLearner(i + 1, { ...plain, unsafeCountSelfBeforeDurable: true }))
    expect(broken.some((problems) => problems.length > 0)).toBe(true)
  })
})
