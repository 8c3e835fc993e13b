import { describe, expect, it } from "vitest"
import { EventQueue } from "../../src/sim/EventQueue.js"
import {
  applyFault,
  type Delivery,
  faultSchedule,
  type LinkFaultRanges,
  Network,
  type NetworkOptions,
  reliableLinks,
  type ScheduledFault
} from "../../src/sim/Network.js"
import { Prng } from "../../src/sim/Prng.js"

const NODES = [1, 2, 3, 4, 5]

/** A network wired to an event queue, and a driver that delivers everything queued. */
const setup = (
  seed: number,
  links: LinkFaultRanges = reliableLinks,
  nodes: ReadonlyArray<number> = NODES,
  extra: Pick<NetworkOptions<string>, "queue" | "lateAfterCrash" | "restarted"> = {}
) => {
  const queue = new EventQueue<Delivery<string>>()
  const net = new Network<string>({ nodes, prng: Prng.fromSeed(seed).fork("network"), schedule: (t, d) => queue.push(t, d), links, ...extra })
  const run = (): Array<{ time: number; from: number; to: number; msg: string }> => {
    const got: Array<{ time: number; from: number; to: number; msg: string }> = []
    for (let e = queue.pop(); e !== undefined; e = queue.pop()) {
      if (net.accept(e.event)) got.push({ time: e.time, from: e.event.from, to: e.event.to, msg: e.event.msg })
    }
    return got
  }
  return { queue, net, run }
}

/** Which of the 20 directed links between NODES deliver right now. */
const reachability = (seed: number, f: (net: Network<string>) => void): Array<string> => {
  const { net, run } = setup(seed)
  f(net)
  for (const a of NODES) for (const b of NODES) if (a !== b) net.send(a, b, "m", 0)
  return run().map((d) => `${d.from}>${d.to}`).sort()
}
const allLinks = NODES.flatMap((a) => NODES.filter((b) => b !== a).map((b) => `${a}>${b}`)).sort()
const without = (...cut: Array<string>) => allLinks.filter((l) => !cut.includes(l))

describe("Network: delivery and noise", () => {
  it("a reliable network delivers every message once, 1 ms later", () => {
    const { net, run } = setup(1)
    net.send(1, 2, "hello", 100)
    net.send(2, 1, "back", 100)
    expect(run()).toEqual([
      { time: 101, from: 1, to: 2, msg: "hello" },
      { time: 101, from: 2, to: 1, msg: "back" }
    ])
    expect(net.stats).toEqual({ sent: 2, dropped: 0, duplicated: 0, delivered: 2, queued: 0, late: 0, restartsSeen: 0 })
  })

  it("the same seed and sends give the same deliveries; another seed does not", () => {
    const trace = (seed: number) => {
      const { net, run } = setup(seed, { drop: [0.1, 0.3], duplicate: [0.05, 0.1], delay: [1, 50], slow: [0, 0.05], slowDelay: 300 })
      for (let i = 0; i < 500; i++) net.send(1 + (i % 5), 1 + ((i * 3 + 1) % 5), `m${i}`, i)
      return JSON.stringify(run())
    }
    expect(trace(7)).toBe(trace(7))
    expect(trace(7)).not.toBe(trace(8))
  })

  it("per-link profiles come from the seed, whatever order links are first used in", () => {
    const ranges: LinkFaultRanges = { drop: [0, 0.5], duplicate: [0, 0.5], delay: [1, 100], slow: [0, 0.1], slowDelay: 50 }
    const a = setup(3, ranges).net
    const b = setup(3, ranges).net
    a.send(1, 2, "x", 0)
    const p12 = a.profile(1, 2)
    const p21 = b.profile(2, 1)
    expect(b.profile(1, 2)).toEqual(p12)
    expect(a.profile(2, 1)).toEqual(p21)
    expect(p12).not.toEqual(p21)
    for (const p of [p12, p21]) {
      expect(p.drop >= 0 && p.drop <= 0.5).toBe(true)
      expect(p.minDelay >= 1 && p.minDelay <= p.maxDelay && p.maxDelay <= 100).toBe(true)
    }
  })

  it("drops at the link's rate, duplicates, and delays within the link's range (reordering)", () => {
    const { net, run } = setup(5, { drop: [0.3, 0.3], duplicate: [0, 0], delay: [5, 60], slow: [0, 0], slowDelay: 0 })
    for (let i = 0; i < 4000; i++) net.send(1, 2, String(i), i)
    const got = run()
    expect(got.length / 4000).toBeGreaterThan(0.65)
    expect(got.length / 4000).toBeLessThan(0.75)
    const { minDelay, maxDelay } = net.profile(1, 2)
    for (const d of got) {
      const delay = d.time - Number(d.msg)
      expect(delay >= minDelay && delay <= maxDelay).toBe(true)
    }
    if (maxDelay > minDelay + 1) {
      const order = got.map((d) => Number(d.msg))
      expect(order).not.toEqual([...order].sort((a, b) => a - b))
    }
    const dup = setup(6, { drop: [0, 0], duplicate: [1, 1], delay: [1, 3], slow: [0, 0], slowDelay: 0 })
    dup.net.send(1, 2, "twice", 0)
    expect(dup.run().map((d) => d.msg)).toEqual(["twice", "twice"])
    expect(dup.net.stats.duplicated).toBe(1)
  })

  it("slow messages arrive up to slowDelay later than the link's range", () => {
    const { net, run } = setup(9, { drop: [0, 0], duplicate: [0, 0], delay: [1, 1], slow: [0.5, 0.5], slowDelay: 100 })
    for (let i = 0; i < 400; i++) net.send(1, 2, String(i), 0)
    const delays = run().map((d) => d.time)
    expect(delays.filter((t) => t === 1).length).toBeGreaterThan(150)
    expect(delays.filter((t) => t > 1).length).toBeGreaterThan(150)
    expect(Math.max(...delays)).toBeLessThanOrEqual(101)
  })

  it("healAll turns loss and duplication off; setLossless(false) turns them back on", () => {
    const { net, run } = setup(2, { drop: [0.99, 0.99], duplicate: [0.99, 0.99], delay: [1, 1], slow: [0, 0], slowDelay: 0 })
    net.partition([[1], [2]])
    net.healAll()
    for (let i = 0; i < 100; i++) net.send(1, 2, "m", 0)
    expect(run().length).toBe(100)
    net.setLossless(false)
    for (let i = 0; i < 100; i++) net.send(1, 2, "m", 0)
    expect(run().length).toBeLessThan(20)
  })

  it("rejects unknown or invalid node ids", () => {
    const { net } = setup(1)
    expect(() => net.send(1, 9, "x", 0)).toThrow(/unknown node 9/)
    expect(() => new Network<string>({ nodes: [1, 1], prng: Prng.fromSeed(1), schedule: () => {} })).toThrow(/twice/)
    expect(() => new Network<string>({ nodes: [-1], prng: Prng.fromSeed(1), schedule: () => {} })).toThrow(RangeError)
    expect(() => new Network<string>({ nodes: [1.5], prng: Prng.fromSeed(1), schedule: () => {} })).toThrow(RangeError)
  })
})

describe("Network: partitions", () => {
  it("symmetric partition cuts both ways between groups, heal restores everything", () => {
    expect(reachability(1, (n) => n.partition([[1, 2], [3, 4, 5]]))).toEqual(["1>2", "2>1", "3>4", "3>5", "4>3", "4>5", "5>3", "5>4"])
    expect(reachability(1, (n) => n.isolate(3))).toEqual(without("3>1", "3>2", "3>4", "3>5", "1>3", "2>3", "4>3", "5>3"))
    expect(
      reachability(1, (n) => {
        n.partition([[1, 2], [3, 4, 5]])
        n.heal()
      })
    ).toEqual(allLinks)
  })

  it("one-way partition cuts one direction only", () => {
    expect(reachability(1, (n) => n.cutOneWay(1, 2))).toEqual(without("1>2"))
    expect(reachability(1, (n) => n.canSend(1, 2) && n.cutOneWay(2, 1))).toEqual(without("2>1"))
  })

  it("bridge: two halves cannot talk, the bridge node talks to both", () => {
    const r = reachability(1, (n) => n.bridge([1, 2], [4, 5], 3))
    expect(r).toEqual(without("1>4", "1>5", "2>4", "2>5", "4>1", "4>2", "5>1", "5>2"))
    expect(r).toContain("1>3")
    expect(r).toContain("3>4")
    const { net } = setup(1)
    expect(() => net.bridge([1, 3], [4], 3)).toThrow(/inside a half/)
  })

  it("a message in flight across a link cut before it arrives is dropped", () => {
    const { net, run } = setup(1)
    net.send(1, 2, "lost", 0)
    net.send(2, 1, "lost too", 0)
    net.send(1, 3, "arrives", 0)
    net.partition([[1], [2]])
    expect(run().map((d) => d.msg)).toEqual(["arrives"])
  })
})

describe("Network: crashes", () => {
  it("a crashed node sends nothing; what was in flight to it is lost, what is sent to it while down is queued and arrives after its restart", () => {
    const { net, run } = setup(1)
    net.send(1, 2, "before crash", 0)
    net.crash(2, 0)
    net.send(1, 2, "to crashed", 1)
    net.send(3, 2, "to crashed from 3", 1)
    net.send(2, 1, "from crashed", 1)
    expect(net.isUp(2)).toBe(false)
    expect(run()).toEqual([])
    net.restart(2, 500)
    expect(net.incarnation(2)).toBe(1)
    net.send(1, 2, "after restart", 501)
    const got = run()
    // The queued messages come first from each sender (one connection, in order), after its reconnect.
    expect(got.map((d) => d.msg).sort()).toEqual(["after restart", "to crashed", "to crashed from 3"])
    expect(got.filter((d) => d.from === 1).map((d) => d.msg)).toEqual(["to crashed", "after restart"])
    for (const d of got) expect(d.time).toBeGreaterThan(500)
    expect(net.stats).toEqual({ sent: 5, dropped: 2, duplicated: 0, delivered: 3, queued: 2, late: 0, restartsSeen: 0 })
  })

  it("senders reconnect on the transport's back-off schedule: 50 ms doubling to 2 s, jittered to 50–100 %", () => {
    // The first attempt after the restart connects; then a handshake round trip and the batch (1 ms each here).
    const arrival = (seed: number, downMs: number) => {
      const { net, run } = setup(seed)
      net.crash(2, 1000)
      net.send(1, 2, "queued", 1000)
      net.restart(2, 1000 + downMs)
      return run()[0]!.time - (1000 + downMs)
    }
    for (let seed = 1; seed <= 50; seed++) {
      // Down 10 ms: the first attempt (25–50 ms after the failure) connects.
      const soon = arrival(seed, 10)
      expect(soon).toBeGreaterThanOrEqual(25 - 10 + 3)
      expect(soon).toBeLessThanOrEqual(50 - 10 + 3)
      // Down 10 s: the attempts are 1–2 s apart by then.
      const later = arrival(seed, 10_000)
      expect(later).toBeGreaterThanOrEqual(3)
      expect(later).toBeLessThanOrEqual(2000 + 3)
    }
  })

  it("a sender's queue for a down peer keeps the newest messages within its bounds, and dies with the sender", () => {
    const { net, run } = setup(1, reliableLinks, NODES, { queue: { limits: { maxMessages: 3, maxBytes: 1 << 30 } } })
    net.crash(2, 0)
    for (let i = 0; i < 10; i++) net.send(1, 2, `m${i}`, i)
    net.send(3, 2, "from 3", 10)
    net.crash(3, 20)
    net.restart(2, 100)
    expect(run().map((d) => d.msg)).toEqual(["m7", "m8", "m9"])
    expect(net.stats.dropped).toBe(7)
    // By size too: each message counts its length against maxBytes.
    const sized = setup(1, reliableLinks, NODES, { queue: { limits: { maxMessages: 100, maxBytes: 10 }, sizeOf: (m) => m.length } })
    sized.net.crash(2, 0)
    for (const m of ["aaaa", "bbbb", "cccc", "dd"]) sized.net.send(1, 2, m, 1)
    sized.net.restart(2, 100)
    expect(sized.run().map((d) => d.msg)).toEqual(["bbbb", "cccc", "dd"])
  })

  it("a sender that crashes before it reconnects never sends its queue", () => {
    const { net, run } = setup(1)
    net.crash(2, 0)
    net.send(1, 2, "queued", 1)
    net.restart(2, 5) // node 1 reconnects 25–50 ms after the failure
    net.crash(1, 10)
    expect(run()).toEqual([])
  })

  it("messages a node sent before it crashed still arrive; with lateAfterCrash some arrive late, after it restarted, or twice", () => {
    const plain = setup(1)
    plain.net.send(1, 2, "on the wire", 0)
    plain.net.crash(1, 0)
    expect(plain.run().map((d) => d.msg)).toEqual(["on the wire"])

    const { net, run } = setup(4, reliableLinks, NODES, { lateAfterCrash: { chance: 0.5, duplicate: 0.5, maxMs: 1000 } })
    for (let i = 0; i < 400; i++) net.send(1, 2, `m${i}`, 0)
    net.crash(1, 0)
    net.restart(1, 300)
    const got = run()
    const times = got.map((d) => d.time)
    expect(times.filter((t) => t === 1).length).toBeGreaterThan(120)
    expect(times.filter((t) => t > 300).length).toBeGreaterThan(40)
    expect(Math.max(...times)).toBeLessThanOrEqual(1 + 1000)
    // Every message arrives at least once, some twice, none more.
    const counts = new Map<string, number>()
    for (const d of got) counts.set(d.msg, (counts.get(d.msg) ?? 0) + 1)
    expect(counts.size).toBe(400)
    expect([...counts.values()].filter((c) => c === 2).length).toBeGreaterThan(20)
    expect(Math.max(...counts.values())).toBe(2)
    // Messages to a crashed destination are not revived: the late rule is about the sender.
    expect(net.stats.late).toBeGreaterThan(100)
  })

  it("crashing a crashed node or restarting a running one is a driver bug and throws", () => {
    const { net } = setup(1)
    expect(() => net.restart(1, 0)).toThrow(/is up/)
    net.crash(1, 0)
    expect(() => net.crash(1, 0)).toThrow(/already down/)
  })
})

describe("Network: data incarnations", () => {
  it("a peer back on an emptied data directory: its senders drop what they queued for it, are told at their reconnection, and send again once resumed", () => {
    const told: Array<{ observer: number; subject: number; at: number }> = []
    const { net, run } = setup(1, reliableLinks, NODES, { restarted: (observer, subject, at) => told.push({ observer, subject, at }) })
    net.send(1, 2, "first life", 0)
    expect(run().map((d) => d.msg)).toEqual(["first life"])
    net.crash(2, 10)
    net.send(1, 2, "queued for the first life", 11)
    net.empty(2)
    expect(net.dataIncarnation(2)).toBe(1)
    net.restart(2, 100)
    // Told at the reconnection's handshake (after the back-off), not at the restart.
    expect(told.map(({ observer, subject }) => `${observer} learns ${subject}`)).toEqual(["1 learns 2"])
    expect(told[0]!.at).toBeGreaterThan(100)
    net.send(1, 2, "built before the reset", 101)
    net.resume(1, 2)
    net.send(1, 2, "after the reset", 500)
    expect(run().map((d) => d.msg)).toEqual(["after the reset"])
    expect(net.stats.restartsSeen).toBe(1)
    // A restart on its own data directory is no news.
    net.crash(2, 600)
    net.send(1, 2, "queued", 601)
    net.restart(2, 700)
    expect(run().map((d) => d.msg)).toEqual(["queued"])
    expect(told).toHaveLength(1)
  })

  it("a receiver learns a sender's new data incarnation from its first message, and drops what still arrives from the earlier one", () => {
    const told: Array<string> = []
    const { net, run } = setup(1, reliableLinks, NODES, { restarted: (observer, subject) => told.push(`${observer} learns ${subject}`) })
    net.send(2, 1, "first life", 0)
    expect(run().map((d) => d.msg)).toEqual(["first life"])
    // On the wire when node 2 went down (its kernel still delivers it), arriving after the next life spoke.
    net.send(2, 1, "earlier life, on the wire", 10)
    net.crash(2, 10)
    net.empty(2)
    net.restart(2, 10)
    net.send(2, 1, "next life", 10)
    expect(told).toEqual(["1 learns 2"])
    expect(run().map((d) => d.msg)).toEqual(["next life"])
    // Until node 1 resumes, what it sends to node 2 was built for the earlier life.
    net.send(1, 2, "built before the reset", 20)
    net.resume(1, 2)
    net.send(1, 2, "after the reset", 30)
    expect(run().map((d) => d.msg)).toEqual(["after the reset"])
  })

  it("emptying a running node is a driver bug and throws", () => {
    const { net } = setup(1)
    expect(() => net.empty(2)).toThrow(/is up/)
  })
})

describe("fault schedules", () => {
  const opts = { nodes: NODES, duration: 60_000, intensity: 0.7, maxSkewMs: 500 }

  it("are determined by the seed", () => {
    expect(faultSchedule(Prng.fromSeed(1).fork("faults"), opts)).toEqual(faultSchedule(Prng.fromSeed(1).fork("faults"), opts))
    expect(faultSchedule(Prng.fromSeed(1).fork("faults"), opts)).not.toEqual(faultSchedule(Prng.fromSeed(2).fork("faults"), opts))
  })

  it("are sorted, valid to apply, keep at most maxCrashed nodes down, and end healed", () => {
    const kinds = new Set<string>()
    for (let seed = 1; seed <= 30; seed++) {
      const schedule = faultSchedule(Prng.fromSeed(seed), { ...opts, maxCrashed: 2 })
      const { net } = setup(seed)
      let last = 0
      const skews = new Map<number, number>()
      for (const { at, action } of schedule) {
        expect(at).toBeGreaterThanOrEqual(last)
        expect(at).toBeLessThanOrEqual(opts.duration)
        last = at
        kinds.add(action._tag)
        if (action._tag === "ClockSkew") {
          expect(Math.abs(action.skewMs)).toBeLessThanOrEqual(500)
          skews.set(action.node, action.skewMs)
          expect(applyFault(net, action, at)).toBe(false)
        } else {
          expect(applyFault(net, action, at)).toBe(true) // throws on an invalid crash/restart
        }
        expect(NODES.filter((x) => !net.isUp(x)).length).toBeLessThanOrEqual(2)
      }
      for (const a of NODES) for (const b of NODES) expect(net.canSend(a, b)).toBe(true)
      for (const s of skews.values()) expect(s).toBe(0)
    }
    expect([...kinds].sort()).toEqual(["Bridge", "ClockSkew", "Crash", "Heal", "OneWay", "Partition", "Restart"])
  })

  it("intensity sets how many faults there are; 0 means none; no skew unless asked", () => {
    const count = (intensity: number) => faultSchedule(Prng.fromSeed(4), { nodes: NODES, duration: 60_000, intensity }).length
    expect(count(0)).toBe(0)
    expect(count(1)).toBeGreaterThan(4 * count(0.2))
    const schedule: Array<ScheduledFault> = faultSchedule(Prng.fromSeed(4), { nodes: NODES, duration: 60_000, intensity: 1 })
    expect(schedule.some((f) => f.action._tag === "ClockSkew")).toBe(false)
    // Default maxCrashed: a minority (2 of 5).
    let down = 0
    let maxDown = 0
    for (const { action } of schedule) {
      if (action._tag === "Crash") down++
      if (action._tag === "Restart") down--
      maxDown = Math.max(maxDown, down)
    }
    expect(maxDown).toBe(2)
  })

  it("handle one and two nodes", () => {
    expect(faultSchedule(Prng.fromSeed(1), { nodes: [1], duration: 10_000, intensity: 1 })).toEqual([])
    const two = faultSchedule(Prng.fromSeed(1), { nodes: [1, 2], duration: 10_000, intensity: 1, maxCrashed: 1 })
    expect(two.length).toBeGreaterThan(0)
    expect(two.every((f) => f.action._tag !== "Bridge")).toBe(true)
  })
})

describe("Network + EventQueue throughput", () => {
  it("pushes 200,000 messages through send/schedule/pop/accept deterministically", () => {
    const run = () => {
      const { net, queue } = setup(11, { drop: [0, 0.05], duplicate: [0, 0.02], delay: [1, 20], slow: [0, 0.01], slowDelay: 200 })
      let delivered = 0
      let checksum = 0
      for (let i = 0; i < 200_000; i++) {
        net.send(1 + (i % 5), 1 + ((i + 1 + (i % 3)) % 5), "m", i >> 4)
        if (i % 2 === 1) {
          const e = queue.pop()!
          if (net.accept(e.event)) {
            delivered++
            checksum = (checksum * 31 + e.time + e.event.to) >>> 0
          }
        }
      }
      return { delivered, checksum }
    }
    const a = run()
    expect(a.delivered).toBeGreaterThan(90_000)
    expect(run()).toEqual(a)
  })
})
