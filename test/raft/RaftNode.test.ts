/**
 * The Effect driver (`RaftNode`) over in-memory storage, an in-memory network and the KV state
 * machine, with time driven by `TestClock`.
 */
import { describe, expect, it } from "@effect/vitest"
import { tempDir } from "../support/TempDir.js"
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Logger, Scope, TestClock } from "effect"
import { MemoryNetwork } from "../../src/net/Transport.js"
import type { Message } from "../../src/raft/Message.js"
import type { Status } from "../../src/raft/Raft.js"
import * as RaftNode from "../../src/raft/RaftNode.js"
import { KvStore } from "../../src/sim/KvStore.js"
import { RaftCluster, tickMs, value } from "../support/RaftCluster.js"

const put = (key: string, value: string) => JSON.stringify({ op: "put", key, value })
const cas = (key: string, expected: string | null, value: string) => JSON.stringify({ op: "cas", key, expected, value })

class Cluster extends RaftCluster<KvStore> {
  constructor(voters: ReadonlyArray<number>, options: Partial<RaftNode.RaftNodeConfig> = {}) {
    super(voters, () => new KvStore(), (kv) => kv.layer(), options)
  }
}

describe("RaftNode", () => {
  it.scoped("a one-node cluster elects itself and applies writes, resolving with the state machine's result", () =>
    Effect.gen(function* () {
      const c = new Cluster([1])
      yield* c.start(1)
      expect(yield* c.leader()).toBe(1)
      expect(value(yield* c.drive(c.node(1).propose(put("a", "1"))))).toBe(null)
      expect(value(yield* c.drive(c.node(1).propose(cas("a", "1", "2"))))).toBe(true)
      expect(value(yield* c.drive(c.node(1).propose(cas("a", "1", "3"))))).toBe(false)
      expect(c.state(1).get("a")).toBe("2")
    })
  )

  it.scoped("a sole voter with a learner never sends a commit index beyond its own durable log", () =>
    Effect.gen(function* () {
      const c = new Cluster([1])
      const durable = () => c.members.get(1)!.store.lastIndex
      const beyond: Array<string> = []
      c.net.filter = (m) => {
        // Its appends leave while it saves them: what they carry as committed must already be on disk.
        if (m.from === 1 && (m.type === "app" || m.type === "heartbeat") && m.commit > durable()) beyond.push(`${m.type} commit ${m.commit}, durable ${durable()}`)
        return true
      }
      yield* c.start(1)
      yield* c.leader()
      yield* c.start(2, false)
      value(yield* c.drive(c.node(1).proposeConfChange({ type: "addLearner", nodeId: 2 })))
      for (let i = 0; i < 20; i++) value(yield* c.drive(c.node(1).propose(put(`k${i}`, `${i}`))))
      yield* c.until("the learner applied every write", () => Effect.succeed(c.state(2).get("k19") === "19"))
      expect(beyond).toEqual([])
    })
  )

  it.scoped("a member removed while down, then re-added empty, gets nothing its peers queued for its old log", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const lost = [1, 2, 3].find((id) => id !== leader)!
      for (let i = 0; i < 5; i++) value(yield* c.drive(c.node(leader).propose(put(`k${i}`, `${i}`))))
      yield* c.until("the member applied every write", () => Effect.succeed(c.state(lost).get("k4") === "4"))
      // It goes down: its peers queue for it (heartbeats carrying a commit index its log had)...
      c.net.markDown(lost)
      yield* c.crash(lost)
      for (let i = 5; i < 10; i++) value(yield* c.drive(c.node(leader).propose(put(`k${i}`, `${i}`))))
      yield* c.drive(Effect.sleep(`${20 * tickMs} millis`))
      // ...and it comes back with an empty data directory: removed, re-added as a learner, started.
      value(yield* c.drive(c.node(leader).proposeConfChange({ type: "remove", nodeId: lost })))
      c.members.delete(lost)
      value(yield* c.drive(c.node(leader).proposeConfChange({ type: "addLearner", nodeId: lost })))
      yield* c.start(lost, false)
      const driver = yield* Effect.fork(c.node(lost).await)
      c.net.markUp(lost)
      yield* c.until("the new learner applied every write", () =>
        Effect.map(driver.poll, (ended) => ended._tag === "Some" || c.state(lost).get("k9") === "9")
      )
      // Before the removal dropped the queue, the first queued heartbeat stopped it on an assertion.
      const ended = yield* driver.poll
      expect(ended._tag === "Some" ? Cause.pretty(Exit.isFailure(ended.value) ? ended.value.cause : Cause.empty) : "running").toBe("running")
      expect(c.state(lost).get("k9")).toBe("9")
    })
  )

  it.scoped("a member back empty as another incarnation, never removed: the leader learns it and starts its progress over instead of sending its old commit index", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      yield* c.start(4, false)
      value(yield* c.drive(c.node(leader).proposeConfChange({ type: "addLearner", nodeId: 4 })))
      for (let i = 0; i < 5; i++) value(yield* c.drive(c.node(leader).propose(put(`k${i}`, `${i}`))))
      yield* c.until("the learner applied every write", () => Effect.succeed(c.state(4).get("k4") === "4"))
      // What reaches the learner never says more is committed than its log holds.
      const beyond: Array<string> = []
      c.net.filter = (m) => {
        const held = c.members.get(4)?.store.lastIndex ?? 0
        if (m.to === 4 && m.type === "heartbeat" && m.commit > held) beyond.push(`heartbeat from ${m.from}: commit ${m.commit}, log ends at ${held}`)
        return true
      }
      // It goes down (its leader queues heartbeats for it) and comes back on an emptied data directory.
      c.net.markDown(4)
      yield* c.crash(4)
      for (let i = 5; i < 10; i++) value(yield* c.drive(c.node(leader).propose(put(`k${i}`, `${i}`))))
      yield* c.drive(Effect.sleep(`${20 * tickMs} millis`))
      c.members.delete(4)
      yield* c.start(4, false)
      const driver = yield* Effect.fork(c.node(4).await)
      c.net.markUp(4, "second-life")
      yield* c.until("the learner applied every write again", () =>
        Effect.map(driver.poll, (ended) => ended._tag === "Some" || c.state(4).get("k9") === "9")
      )
      const ended = yield* driver.poll
      expect(ended._tag === "Some" ? Cause.pretty(Exit.isFailure(ended.value) ? ended.value.cause : Cause.empty) : "running").toBe("running")
      expect(beyond).toEqual([])
      expect(c.state(4).get("k0")).toBe("0")
      const progress = (yield* c.node(leader).status).progress.find((p) => p.id === 4)
      expect(progress?.match).toBe(c.members.get(4)!.store.lastIndex)
    })
  )

  it.scoped("three nodes elect one leader; a write through it is applied on every node", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      value(yield* c.drive(c.node(leader).propose(put("k", "v"))))
      yield* c.until("every node applied the write", () =>
        Effect.succeed([...c.members.values()].every((m) => m.state.get("k") === "v"))
      )
    })
  )

  it.scoped("a follower refuses a proposal with BLX_NOT_LEADER naming the leader", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const follower = [1, 2, 3].find((id) => id !== leader)!
      const exit = yield* c.drive(c.node(follower).propose(put("k", "v")))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      expect(error).toMatchObject({ code: "BLX_NOT_LEADER", leader, node: follower })
    })
  )

  it.scoped("ReadIndex on a follower resolves only once it has applied what the leader committed", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const follower = [1, 2, 3].find((id) => id !== leader)!
      value(yield* c.drive(c.node(leader).propose(put("x", "1"))))
      value(yield* c.drive(c.node(follower).readIndex))
      expect(c.state(follower).get("x")).toBe("1")
    })
  )

  /** The contexts of a follower's ReadIndex requests before and after it restarts. */
  const readContextsAcrossRestart = (options: Partial<RaftNode.RaftNodeConfig> = {}) =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3], options)
      const contexts: Array<string> = []
      c.net.filter = (m) => {
        if (m.type === "readIndex") contexts.push(m.context)
        return true
      }
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const follower = [1, 2, 3].find((id) => id !== leader)!
      value(yield* c.drive(c.node(follower).readIndex))
      yield* c.crash(follower)
      yield* c.start(follower)
      yield* c.leader()
      value(yield* c.drive(c.node(follower).readIndex))
      return contexts
    })

  it.scoped("ReadIndex contexts are unique across restarts: a restarted node never reuses an earlier process's", () =>
    Effect.gen(function* () {
      const contexts = yield* readContextsAcrossRestart()
      expect(contexts.length).toBe(2)
      expect(contexts[0]).not.toBe(contexts[1])
    })
  )

  it.scoped("the unsafe switch (contexts restarting with the process) reuses them", () =>
    Effect.gen(function* () {
      const contexts = yield* readContextsAcrossRestart({ unsafeReuseReadContexts: true })
      expect(contexts.length).toBe(2)
      expect(contexts[0]).toBe(contexts[1])
    })
  )

  /**
   * Issue #13, finding 5, played out: follower F asks for a read point, and its process dies before
   * the answer arrives — either the leader's answer is still on its way (`late`: the leader queued
   * it for the dead process) or the leader is still confirming it (`pending`: its heartbeat round
   * is held up). A write "new" then completes. F restarts, learns the leader (the leader's appends
   * to it are held back meanwhile, so it has only "old"), and reads. Returns what the read saw
   * when it resolved (`x=…`), or the tag of its failure.
   */
  const readAfterRestart = (earlier: "late" | "pending", options: Partial<RaftNode.RaftNodeConfig> = {}) =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3], options)
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const f = [1, 2, 3].find((id) => id !== leader)!
      value(yield* c.drive(c.node(leader).propose(put("x", "old"))))
      yield* c.until("the follower applied x=old", () => Effect.succeed(c.state(f).get("x") === "old"))

      const held: Array<Message> = []
      let holdAnswers = earlier === "late"
      let holdRounds = earlier === "pending"
      let holdAppends = false
      let injecting = false
      c.net.filter = (m) => {
        if (injecting) return true
        if (holdAnswers && m.type === "readIndexResp" && m.to === f) return void held.push(m), false
        if (holdRounds && m.type === "heartbeatResp" && m.context !== undefined) return false
        if (holdAppends && (m.type === "app" || m.type === "snap") && m.to === f) return false
        return true
      }
      yield* Effect.fork(c.node(f).readIndex)
      yield* c.until("the leader took the follower's read", () =>
        Effect.succeed(earlier === "late" ? held.length === 1 : (c.net.delivered.get("readIndex") ?? 0) >= 1)
      )
      yield* c.crash(f)
      holdAnswers = false
      value(yield* c.drive(c.node(leader).propose(put("x", "new"))))

      holdAppends = true
      yield* c.start(f)
      yield* c.until("the restarted follower knows the leader and has re-applied x=old", () =>
        Effect.map(c.node(f).leader, (l) => l === leader && c.state(f).get("x") === "old")
      )
      // The new process's read goes out; the leader's answers to it are held until the earlier
      // process's answer has arrived.
      holdAnswers = true
      const asked = c.net.delivered.get("readIndex") ?? 0
      const read = yield* Effect.fork(
        Effect.zipRight(c.node(f).readIndex, Effect.sync(() => `x=${c.state(f).get("x")}`)).pipe(Effect.catchAll((e) => Effect.succeed(e._tag)))
      )
      yield* c.until("the leader took the new process's read", () => Effect.succeed((c.net.delivered.get("readIndex") ?? 0) > asked))
      const injector = yield* c.net.transport(0)
      /** Delivers held messages to the follower, past the holds. */
      const inject = (messages: ReadonlyArray<Message>) =>
        Effect.suspend(() => {
          injecting = true
          return Effect.ensuring(injector.send(messages), Effect.sync(() => (injecting = false)))
        })
      yield* inject(held.splice(0, 1))
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      holdAnswers = false
      holdRounds = false
      yield* inject(held.splice(0))
      // Answers flow; the appends to the follower are still held: a read resolved now was answered
      // with a read point older than "new".
      for (let i = 0; i < 20 && read.unsafePoll() === null; i++) {
        yield* TestClock.adjust(Duration.millis(tickMs))
        for (let j = 0; j < 5; j++) yield* Effect.yieldNow()
      }
      holdAppends = false
      const outcome = yield* c.drive(Fiber.join(read))
      return value(outcome)
    })

  it.scoped("a restarted follower's read sees a write completed before it began, whatever answers its earlier process left behind", () =>
    Effect.gen(function* () {
      expect(yield* readAfterRestart("late")).toBe("x=new")
      expect(yield* readAfterRestart("pending")).toBe("x=new")
    })
  )

  it.scoped("the unsafe switch (contexts restarting with the process) reads x=old: matched to the late answer to the earlier process's read", () =>
    Effect.gen(function* () {
      expect(yield* readAfterRestart("late", { unsafeReuseReadContexts: true })).toBe("x=old")
      // The core's defence: a context repeated while pending is answered to neither; the round is
      // asked again with the next context, and answered afresh.
      expect(yield* readAfterRestart("pending", { unsafeReuseReadContexts: true })).toBe("x=new")
    })
  )

  it.scoped("both unsafe switches read x=old: the leader answers the repeated context with the earlier request's read point", () =>
    Effect.gen(function* () {
      const both = { unsafeReuseReadContexts: true, raft: { unsafeMatchRepeatedReadContexts: true } }
      expect(yield* readAfterRestart("pending", both)).toBe("x=old")
    })
  )

  it.scoped("an isolated leader's write times out; the majority elects a new leader and keeps writing", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const old = yield* c.leader()
      c.net.isolate(old)
      const lost = yield* c.drive(c.node(old).propose(put("lost", "1")))
      expect(Exit.isFailure(lost)).toBe(true)
      const error = Exit.isFailure(lost) ? Cause.squash(lost.cause) : undefined
      expect(error).toMatchObject({ code: "BLX_TIMEOUT" })
      const others = [1, 2, 3].filter((id) => id !== old)
      let next = 0
      yield* c.until("a new leader among the majority", () =>
        Effect.map(Effect.forEach(others, (id) => c.node(id).role), (roles) => {
          const i = roles.indexOf("leader")
          next = i >= 0 ? others[i]! : 0
          return i >= 0
        })
      )
      value(yield* c.drive(c.node(next).propose(put("after", "1"))))
      c.net.heal()
      yield* c.until("the old leader steps down and catches up", () =>
        Effect.succeed(c.state(old).get("after") === "1")
      )
      // The write the isolated leader never committed was overwritten, never applied anywhere.
      expect([...c.members.values()].map((m) => m.state.get("lost"))).toEqual([null, null, null])
    })
  )

  it.scoped("a crashed node restarts from its durable log and catches up; nothing acknowledged is lost", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      for (let i = 0; i < 5; i++) value(yield* c.drive(c.node(leader).propose(put(`k${i}`, `${i}`))))
      const victim = [1, 2, 3].find((id) => id !== leader)!
      yield* c.crash(victim)
      for (let i = 5; i < 10; i++) value(yield* c.drive(c.node(leader).propose(put(`k${i}`, `${i}`))))
      yield* c.start(victim, false)
      yield* c.until("the restarted node has every write", () =>
        Effect.succeed(Array.from({ length: 10 }, (_, i) => c.state(victim).get(`k${i}`)).every((v, i) => v === `${i}`))
      )
    })
  )

  it.scoped("a snapshot waits until the log applied since the last one is snapshotRatio times that snapshot's size", () =>
    Effect.gen(function* () {
      const ratio = 2
      const c = new Cluster([1], { snapshotEvery: 5, snapshotRatio: ratio, snapshotRetain: 0 })
      yield* c.start(1)
      const store = c.members.get(1)!.store
      // Every write has the same size and adds a key, so the state (and each snapshot) keeps growing.
      const write = (i: number) => put(`k${String(i).padStart(4, "0")}`, "v".repeat(40))
      const size = write(0).length
      const taken: Array<{ index: number; bytes: number }> = []
      for (let i = 0; i < 200; i++) {
        value(yield* c.drive(c.node(1).propose(write(i))))
        const snap = store.snapshot
        if (snap !== undefined && snap.metadata.index !== taken.at(-1)?.index) taken.push({ index: snap.metadata.index, bytes: snap.data.length })
      }
      expect(taken.length).toBeGreaterThanOrEqual(3)
      for (let k = 1; k < taken.length; k++) {
        const since = taken[k]!.index - taken[k - 1]!.index
        // Taken once the writes since the last one outweigh `ratio` times its size (and number at least
        // `snapshotEvery`), and not much later.
        expect(since).toBeGreaterThanOrEqual(5)
        expect(since * size).toBeGreaterThanOrEqual(ratio * taken[k - 1]!.bytes)
        expect(since <= 5 || (since - 2) * size < ratio * taken[k - 1]!.bytes).toBe(true)
      }
      // By count alone (every 5 entries) the same writes take a snapshot every 5 entries.
      expect(taken.length).toBeLessThan(200 / 5 / 4)
    })
  )

  it.scoped("a restart logs where its time went: what recovery read, its own log applied again, the first read and what the leader sent", () =>
    Effect.gen(function* () {
      const c = new Cluster([1], { snapshotEvery: 10, snapshotRatio: 0, snapshotRetain: 0 })
      yield* c.start(1)
      for (let i = 0; i < 25; i++) value(yield* c.drive(c.node(1).propose(put(`k${i}`, "v"))))
      yield* c.crash(1)
      const lines: Array<string> = []
      const logger = Logger.make(({ message }) => {
        lines.push(Array.isArray(message) ? message.join(" ") : String(message))
      })
      yield* c.start(1).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      yield* c.leader()
      yield* c.drive(c.node(1).readIndex)
      const recovered = lines.find((l) => l.includes("recovered its Raft state"))
      // The snapshot taken at 20 or later, the entries after it in the log, those committed to apply again.
      expect(recovered).toMatch(/^node 1 recovered its Raft state in \d+ ms: storage opened in \d+ ms, snapshot at index (2\d) \(0\.0 MB, read in \d+ ms, state restored in \d+ ms\), log \[\d+, 2\d\] \(\d+ entries, read and verified in \d+ ms\); \d+ committed entries to apply again \(to index 2\d\)$/)
      const toApply = Number(/; (\d+) committed entries/.exec(recovered!)![1])
      expect(toApply).toBeGreaterThan(0)
      expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^node 1 applied the ${toApply} committed entries of its own log again, \\d+ ms after its Raft node started$`)))
      expect(lines).toContainEqual(expect.stringMatching(/^node 1 answered its first linearizable read \d+ ms after its Raft node started; from the leader until then: \d+ entries \(0\.0 MB\), 0 snapshots$/))
      // Each once.
      expect(lines.filter((l) => l.includes("answered its first linearizable read"))).toHaveLength(1)
    })
  )

  it.scoped("the log is compacted behind a snapshot, and a new member catches up from that snapshot", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3], { snapshotEvery: 20, snapshotRatio: 0, snapshotRetain: 5 })
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      for (let i = 0; i < 60; i++) value(yield* c.drive(c.node(leader).propose(put(`k${i % 7}`, `${i}`))))
      const store = c.members.get(leader)!.store
      expect(store.snapshot).toBeDefined()
      expect(store.firstIndex).toBeGreaterThan(30)
      // Node 4 joins: added as a learner, it cannot replay the log from 1 and must get the snapshot.
      yield* c.start(4, false)
      value(yield* c.drive(c.node(leader).proposeConfChange({ type: "addLearner", nodeId: 4 })))
      yield* c.until("the learner has the whole state", () =>
        Effect.succeed(c.state(4).snapshot().includes('"k6","55"') && c.state(4).get("k3") === "59")
      )
      value(yield* c.drive(c.node(leader).proposeConfChange({ type: "promote", nodeId: 4 })))
      const status = yield* c.node(leader).status
      expect(status.confState.voters).toEqual([1, 2, 3, 4])
    })
  )

  it.scoped("leadership transfer hands the lead to the chosen follower", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const target = [1, 2, 3].find((id) => id !== leader)!
      value(yield* c.drive(c.node(leader).transferLeader(target)))
      expect(yield* c.leader()).toBe(target)
    })
  )
})

/**
 * Node 1 is a real RaftNode; nodes 2 and 3 are played by the test through their transports, so the
 * messages node 1 receives are exactly the ones a scenario needs.
 */
const scripted = (options: Partial<RaftNode.RaftNodeConfig> = {}) =>
  Effect.gen(function* () {
    const c = new Cluster([1, 2, 3], { raft: { preVote: false, checkQuorum: false }, ...options })
    const peer2 = yield* c.net.transport(2)
    yield* c.net.transport(3)
    yield* c.start(1)
    const send = (m: Message) => peer2.send([m])
    const status = () => c.node(1).status
    const become = (what: string, f: (s: Status) => boolean) => c.until(what, () => Effect.map(status(), f))
    /** Node 1 campaigns and wins with node 2's vote. */
    const elect = Effect.gen(function* () {
      yield* c.node(1).campaign
      yield* become("node 1 campaigns", (s) => s.role === "candidate")
      const { term } = yield* status()
      yield* send({ type: "voteResp", term, from: 2, to: 1, reject: false })
      yield* become("node 1 leads", (s) => s.role === "leader")
      return term
    })
    return { c, send, status, become, elect }
  })

const settled = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) => Effect.map(fiber.poll, (o) => o._tag === "Some")

describe("RaftNode proposal waiters", () => {
  /**
   * Node 1 leads term 2 and proposes at 3, 4 and 5; node 2 leads term 3 and replaces index 3 on
   * node 1 (4 and 5 go with it); node 1 leads term 4 (its empty entry at 4) and proposes at 5 again.
   */
  const indexReused = (options: Partial<RaftNode.RaftNodeConfig> = {}) =>
    Effect.gen(function* () {
      const { c, send, status, become, elect } = yield* scripted(options)
      yield* elect
      const first = yield* Effect.forEach(["a", "b", "c"], (k) => Effect.fork(c.node(1).propose(put(k, "1"))))
      yield* become("node 1 appended three writes", (s) => s.lastIndex === 5)
      yield* send({ type: "vote", term: 3, from: 2, to: 1, index: 2, logTerm: 2, transfer: false })
      const empty3 = { index: 3, term: 3, kind: "empty" as const, data: "" }
      yield* send({ type: "app", term: 3, from: 2, to: 1, index: 2, logTerm: 2, entries: [empty3], commit: 3 })
      yield* c.until("the write at 3 fails", () => settled(first[0]!))
      expect(yield* status()).toMatchObject({ term: 3, lastIndex: 3, applied: 3 })
      yield* elect
      const again = yield* Effect.fork(c.node(1).propose(put("d", "1")))
      yield* become("node 1 proposed at 5 again", (s) => s.lastIndex === 5)
      return { c, first, again, send }
    })

  it.scoped("a proposal whose index a later term reuses fails with ProposalDropped; the new one completes", () =>
    Effect.gen(function* () {
      const { c, first, again, send } = yield* indexReused()
      const overwritten = yield* Fiber.await(first[2]!)
      expect(Exit.isFailure(overwritten) ? Cause.squash(overwritten.cause) : undefined).toMatchObject({ code: "BLX_PROPOSAL_DROPPED", node: 1 })
      yield* send({ type: "appResp", term: 4, from: 2, to: 1, index: 5, reject: false, rejectHint: 0, logTerm: 0 })
      yield* c.until("the new write completes", () => settled(again))
      expect(Exit.isSuccess(yield* Fiber.await(again))).toBe(true)
      const atFour = yield* Fiber.await(first[1]!)
      expect(Exit.isFailure(atFour) ? Cause.squash(atFour.cause) : undefined).toMatchObject({ code: "BLX_PROPOSAL_DROPPED" })
    })
  )

  it.scoped("the unsafe switch (overwriting the waiter) leaves the earlier proposal hanging past its deadline", () =>
    Effect.gen(function* () {
      const { c, first } = yield* indexReused({ unsafeOverwriteProposalWaiters: true })
      const hung = yield* Effect.exit(c.until("the overwritten write completes", () => settled(first[2]!), 3_000))
      expect(Exit.isFailure(hung)).toBe(true)
    })
  )
})

describe("RaftNode over SQLite", () => {
  it.scoped("a node restarted on its database file recovers its log and state (the state machine replays it)", () =>
    Effect.gen(function* () {
      const { layerFile } = yield* Effect.promise(() => import("../../src/storage/RaftStorage.js"))
      const path = yield* Effect.promise(() => import("node:path"))
      const filename = path.join(tempDir("raftnode"), "node.db")
      const boot = (kv: KvStore) =>
        Effect.gen(function* () {
          const scope = yield* Scope.make()
          const net = new MemoryNetwork()
          const layer = RaftNode.layer({ id: 1, tickMs, requestTimeoutMs: 2_000, bootstrap: [1] }).pipe(
            Layer.provide(Layer.mergeAll(layerFile({ filename }), net.layer(1), kv.layer()))
          )
          const node = Context.get(yield* Layer.buildWithScope(layer, scope), RaftNode.RaftNode)
          return { node, scope }
        })
      const c = new Cluster([1])
      const first = yield* boot(new KvStore())
      yield* c.until("leader", () => Effect.map(first.node.role, (r) => r === "leader"))
      for (let i = 0; i < 3; i++) value(yield* c.drive(first.node.propose(put(`k${i}`, `v${i}`))))
      yield* Scope.close(first.scope, Exit.void)

      const kv = new KvStore()
      const second = yield* boot(kv)
      yield* c.until("leader again", () => Effect.map(second.node.role, (r) => r === "leader"))
      value(yield* c.drive(second.node.readIndex))
      expect([kv.get("k0"), kv.get("k1"), kv.get("k2")]).toEqual(["v0", "v1", "v2"])
      const status = yield* second.node.status
      expect(status.term).toBeGreaterThanOrEqual(2)
      yield* Scope.close(second.scope, Exit.void)
    })
  )
})

/** The in-memory network, counting per node how often its driver asks for unreachable peers: once per tick handed to the loop. */
class CountingNetwork extends MemoryNetwork {
  readonly tickWakeups = new Map<number, number>()
  override transport(id: number) {
    return Effect.map(super.transport(id), (t) => ({
      ...t,
      unreachable: Effect.suspend(() => {
        this.tickWakeups.set(id, (this.tickWakeups.get(id) ?? 0) + 1)
        return t.unreachable
      })
    }))
  }
}

class CountingCluster extends Cluster {
  override readonly net = new CountingNetwork()
}

describe("RaftNode ticker", () => {
  it.scoped("a quiet cluster: the leader's loop is woken per heartbeat, a follower's only when its election timeout could be near", () =>
    Effect.gen(function* () {
      const c = new CountingCluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const term = (yield* c.node(leader).status).term
      c.net.tickWakeups.clear()
      let ticks = 0
      yield* c.until("200 ticks", () => Effect.succeed(++ticks > 200))
      // A heartbeat every 2 ticks (DefaultHeartbeatTick): about 100 wake-ups, not 200.
      expect(c.net.tickWakeups.get(leader) ?? 0).toBeGreaterThanOrEqual(90)
      expect(c.net.tickWakeups.get(leader) ?? 0).toBeLessThanOrEqual(110)
      // A follower hears a heartbeat every 2 ticks and times out after 10 to 19 without one: it
      // looks again no sooner than 8 ticks on. (Before, every tick: 200.)
      for (const id of [1, 2, 3].filter((id) => id !== leader)) expect(c.net.tickWakeups.get(id) ?? 0).toBeLessThanOrEqual(200 / 8 + 1)
      // And nothing else changed: the same leader in the same term, every follower following it.
      expect(yield* c.leader()).toBe(leader)
      for (const id of [1, 2, 3]) expect((yield* c.node(id).status).term).toBe(term)
    })
  )

  it.scoped("a follower cut off from its leader still campaigns within its election timeout: ticks count while it sleeps", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const term = (yield* c.node(leader).status).term
      c.net.isolate(leader)
      // Randomized election timeout: 10 to 19 ticks (DefaultElectionTick 10); with pre-vote one round trip more.
      let ticks = 0
      yield* c.until(
        "a follower campaigns",
        () =>
          Effect.map(
            Effect.forEach([1, 2, 3].filter((id) => id !== leader), (id) => c.node(id).status),
            (statuses) => (ticks++, statuses.some((s) => s.term > term))
          ),
        40 * tickMs
      )
      expect(ticks).toBeLessThanOrEqual(22)
    })
  )
})

describe("RaftNode read rounds", () => {
  /** Runs `n` linearizable reads on `node` at once; answers the ReadIndex contexts the network carried (heartbeats and forwarded requests). */
  const concurrentReads = (c: Cluster, node: number, n: number) =>
    Effect.gen(function* () {
      const rounds = new Set<string>()
      const forwarded = new Set<string>()
      c.net.filter = (m) => {
        if (m.type === "heartbeat" && m.context !== undefined) rounds.add(m.context)
        if (m.type === "readIndex") forwarded.add(m.context)
        return true
      }
      const reads = yield* Effect.forEach(Array.from({ length: n }, () => c.node(node).readIndex), (r) => Effect.fork(r))
      for (const read of reads) value(yield* c.drive(Fiber.join(read)))
      c.net.filter = undefined
      return { rounds: rounds.size, forwarded: forwarded.size }
    })

  it.scoped("reads issued together on the leader share one heartbeat round (at most two: one may be taken alone)", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const { rounds } = yield* concurrentReads(c, leader, 20)
      expect(rounds).toBeGreaterThanOrEqual(1)
      expect(rounds).toBeLessThanOrEqual(2)
    })
  )

  it.scoped("reads issued together on a follower send the leader one request (at most two)", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const follower = [1, 2, 3].find((id) => id !== leader)!
      const { rounds, forwarded } = yield* concurrentReads(c, follower, 20)
      expect(forwarded).toBeGreaterThanOrEqual(1)
      expect(forwarded).toBeLessThanOrEqual(2)
      expect(rounds).toBe(forwarded)
    })
  )

  it.scoped("a read issued while a round is in flight, after a write completed, waits for the next round and sees the write", () =>
    Effect.gen(function* () {
      const c = new Cluster([1, 2, 3])
      for (const id of [1, 2, 3]) yield* c.start(id)
      const leader = yield* c.leader()
      const f = [1, 2, 3].find((id) => id !== leader)!
      value(yield* c.drive(c.node(leader).propose(put("x", "old"))))
      yield* c.until("the follower applied x=old", () => Effect.succeed(c.state(f).get("x") === "old"))
      const held: Array<Message> = []
      let holdAnswers = true
      let holdAppends = false
      c.net.filter = (m) => {
        if (holdAnswers && m.type === "readIndexResp" && m.to === f) return void held.push(m), false
        if (holdAppends && (m.type === "app" || m.type === "snap") && m.to === f) return false
        return true
      }
      const readX = Effect.zipRight(c.node(f).readIndex, Effect.sync(() => c.state(f).get("x")))
      const first = yield* Effect.fork(readX)
      yield* c.until("the leader answered the first round", () => Effect.succeed(held.length === 1))
      // "new" completes while the first round's answer is on its way; the follower does not get it yet.
      holdAppends = true
      value(yield* c.drive(c.node(leader).propose(put("x", "new"))))
      const second = yield* Effect.fork(readX)
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      holdAnswers = false
      c.net.filter = (m) => !((m.type === "app" || m.type === "snap") && m.to === f && holdAppends)
      const injector = yield* c.net.transport(0)
      yield* injector.send(held)
      expect(value(yield* c.drive(Fiber.join(first)))).toBe("old")
      // The first round's read point predates "new": the second read must not resolve on it.
      for (let i = 0; i < 10; i++) {
        yield* TestClock.adjust(Duration.millis(tickMs))
        for (let j = 0; j < 5; j++) yield* Effect.yieldNow()
      }
      expect(second.unsafePoll()).toBe(null)
      holdAppends = false
      expect(value(yield* c.drive(Fiber.join(second)))).toBe("new")
    })
  )
})
