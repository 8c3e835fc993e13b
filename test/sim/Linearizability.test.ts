import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  checkLinearizability,
  formatResult,
  type Model,
  type Operation,
  Register,
  type RegisterInput,
  registerModel,
  type RegisterOutput,
  type RegisterValue
} from "../../src/sim/Linearizability.js"
import { generateRegisterHistory } from "./registerHistory.js"

type Op = Operation<RegisterInput, RegisterOutput>

/** A tiny DSL: each line is one operation; ids are positions. `ret: Infinity` means unknown. */
let nextId = 0
const op = (client: number, input: RegisterInput, output: RegisterOutput | undefined, call: number, ret: number): Op => ({
  id: nextId++,
  client,
  input,
  output,
  call,
  ret
})
const read = (client: number, key: string, value: RegisterValue | null, call: number, ret: number) =>
  op(client, Register.read(key), value, call, ret)
const write = (client: number, key: string, value: RegisterValue, call: number, ret: number) =>
  op(client, Register.write(key, value), ret === Infinity ? undefined : null, call, ret)
const cas = (client: number, key: string, expected: RegisterValue | null, value: RegisterValue, ok: boolean | undefined, call: number, ret: number) =>
  op(client, Register.cas(key, expected, value), ok, call, ret)

const check = (history: ReadonlyArray<Op>) => checkLinearizability(registerModel, history)
const tag = (history: ReadonlyArray<Op>) => check(history)._tag

describe("Linearizability: hand-written histories it accepts", () => {
  it("an empty history and a sequential one", () => {
    expect(tag([])).toBe("Ok")
    expect(tag([read(0, "x", null, 0, 1), write(0, "x", 1, 2, 3), read(0, "x", 1, 4, 5), write(1, "x", 2, 6, 7), read(2, "x", 2, 8, 9)])).toBe("Ok")
  })

  it("overlapping writes may take effect in either order", () => {
    const w1 = write(0, "x", 1, 0, 10)
    const w2 = write(1, "x", 2, 0, 10)
    expect(tag([w1, w2, read(2, "x", 1, 11, 12), read(2, "x", 1, 13, 14)])).toBe("Ok")
    expect(tag([w1, w2, read(2, "x", 2, 11, 12), read(3, "x", 2, 13, 14)])).toBe("Ok")
  })

  it("a read overlapping a write may see the old or the new value", () => {
    const w = write(0, "x", 1, 0, 10)
    expect(tag([w, read(1, "x", null, 2, 3)])).toBe("Ok")
    expect(tag([w, read(1, "x", 1, 2, 3)])).toBe("Ok")
    expect(tag([w, read(1, "x", null, 2, 3), read(1, "x", 1, 4, 5)])).toBe("Ok")
  })

  it("intervals are closed: operations whose times touch are concurrent", () => {
    expect(tag([write(0, "x", 1, 0, 5), read(1, "x", null, 5, 6)])).toBe("Ok")
  })

  it("compare-and-set, sequential and concurrent", () => {
    expect(tag([write(0, "x", 1, 0, 1), cas(0, "x", 1, 2, true, 2, 3), cas(1, "x", 1, 3, false, 4, 5), read(0, "x", 2, 6, 7)])).toBe("Ok")
    // Two concurrent cas from 1: one wins, the other fails, whichever order.
    const base = write(0, "x", 1, 0, 1)
    expect(tag([base, cas(1, "x", 1, 2, true, 2, 10), cas(2, "x", 1, 3, false, 2, 10), read(3, "x", 2, 11, 12)])).toBe("Ok")
    expect(tag([base, cas(1, "x", 1, 2, false, 2, 10), cas(2, "x", 1, 3, true, 2, 10), read(3, "x", 3, 11, 12)])).toBe("Ok")
    // cas on an absent key expecting nil.
    expect(tag([cas(0, "x", null, 7, true, 0, 1), read(0, "x", 7, 2, 3)])).toBe("Ok")
  })

  it("independent keys are checked separately", () => {
    const h = [write(0, "x", 1, 0, 10), write(1, "y", 1, 0, 10), read(2, "x", 1, 11, 12), read(2, "y", null, 1, 2)]
    const r = check(h)
    expect(r).toMatchObject({ _tag: "Ok", partitions: 2 })
  })

  it("an unknown-outcome write may have applied, late, or never", () => {
    const base = () => [write(0, "x", 1, 0, 1), write(1, "x", 2, 2, Infinity)]
    expect(tag([...base(), read(2, "x", 2, 5, 6), read(2, "x", 2, 7, 8)])).toBe("Ok") // applied
    expect(tag([...base(), read(2, "x", 1, 5, 6), read(2, "x", 1, 7, 8)])).toBe("Ok") // never
    expect(tag([...base(), read(2, "x", 1, 5, 6), read(2, "x", 2, 100, 101)])).toBe("Ok") // applied late
  })

  it("an unknown-outcome cas may have applied; unknown reads are ignored", () => {
    expect(tag([write(0, "x", 1, 0, 1), cas(1, "x", 1, 5, undefined, 2, Infinity), read(2, "x", 5, 10, 11)])).toBe("Ok")
    expect(tag([write(0, "x", 1, 0, 1), cas(1, "x", 1, 5, undefined, 2, Infinity), read(2, "x", 1, 10, 11)])).toBe("Ok")
    expect(check([read(0, "x", null, 0, 1), op(1, Register.read("x"), undefined, 0, Infinity)])).toMatchObject({ _tag: "Ok", partitions: 1 })
  })
})

describe("Linearizability: hand-written histories it rejects", () => {
  it("a stale read: an old value after a newer write completed", () => {
    const h = [write(0, "x", 1, 0, 1), write(0, "x", 2, 2, 3), read(1, "x", 1, 4, 5)]
    const r = check(h)
    expect(r._tag).toBe("Illegal")
    if (r._tag !== "Illegal") return
    const cx = r.counterexample
    expect(cx.key).toBe("x")
    expect(cx.prefix.map((o) => o.id)).toEqual([h[0]!.id, h[1]!.id])
    expect(cx.state).toBe(2)
    expect(cx.blocking.id).toBe(h[2]!.id)
    expect(cx.stuck).toEqual([{ op: h[2], allowed: false }])
  })

  it("a new-old inversion: a read sees the new value, a later read the old one", () => {
    expect(tag([write(0, "x", 1, 0, 10), read(1, "x", 1, 2, 3), read(1, "x", null, 4, 5)])).toBe("Illegal")
  })

  it("a lost write: acknowledged, never visible, later reads see an older value", () => {
    const h = [write(0, "x", 1, 0, 1), read(1, "x", 1, 2, 3), write(0, "x", 2, 4, 5), read(1, "x", 1, 6, 7), read(2, "x", 1, 8, 9)]
    expect(tag(h)).toBe("Illegal")
  })

  it("a cas that succeeded against a wrong value", () => {
    expect(tag([write(0, "x", 1, 0, 1), cas(1, "x", 5, 2, true, 2, 3)])).toBe("Illegal")
    expect(tag([write(0, "x", 1, 0, 1), cas(1, "x", 1, 2, false, 2, 3)])).toBe("Illegal")
    // Both concurrent cas from 1 succeeded.
    expect(tag([write(0, "x", 1, 0, 1), cas(1, "x", 1, 2, true, 2, 10), cas(2, "x", 1, 3, true, 2, 10)])).toBe("Illegal")
  })

  it("an unknown-outcome write cannot be seen before it was invoked, nor disappear once seen", () => {
    expect(tag([read(2, "x", 2, 0, 1), write(1, "x", 2, 5, Infinity)])).toBe("Illegal")
    expect(tag([write(0, "x", 1, 0, 1), write(1, "x", 2, 2, Infinity), read(2, "x", 2, 5, 6), read(2, "x", 1, 7, 8)])).toBe("Illegal")
  })

  it("reports the failing key and prints a readable explanation", () => {
    const h = [
      write(0, "x", 1, 0, 1),
      read(1, "x", 1, 2, 3),
      write(0, "y", "a", 0, 1),
      write(0, "y", "b", 2, 3),
      read(1, "y", "a", 4, 5)
    ]
    const r = check(h)
    expect(r._tag).toBe("Illegal")
    if (r._tag !== "Illegal") return
    expect(r.counterexample.key).toBe("y")
    expect(r.counterexample.size).toBe(3)
    const text = formatResult(registerModel, r)
    expect(text).toContain(`NOT linearizable: partition "y" (3 operations)`)
    expect(text).toContain(`longest linearizable prefix: 2 operation(s)`)
    expect(text).toContain(`state after the prefix: "b"`)
    expect(text).toContain(`#${h[4]!.id} client 1 [4, 5] read(y) -> "a": impossible in this state`)
    expect(formatResult(registerModel, check(h.slice(0, 2)))).toMatch(/^linearizable \(1 partition\(s\)/)
  })

  it("rejects malformed operations", () => {
    expect(() => check([read(0, "x", null, 5, 4)])).toThrow(/call <= ret/)
    expect(() => check([op(0, Register.write("x", 1), null, 0, Infinity)])).toThrow(/Infinity exactly when/)
  })
})

describe("Linearizability: bounds", () => {
  // 14 concurrent writes of distinct values, then sequential reads that name them in an order no
  // linearization allows (each value read after a later one): the search must explore a lot.
  const hard = (): Array<Op> => {
    const h: Array<Op> = []
    for (let i = 0; i < 14; i++) h.push(write(i, "x", i, 0, 100))
    for (let i = 0; i < 14; i++) h.push(read(20, "x", i % 2 === 0 ? i : 13 - i, 200 + 2 * i, 201 + 2 * i))
    return h
  }

  it("returns Unknown instead of searching past the step budget", () => {
    const r = checkLinearizability(registerModel, hard(), { maxSteps: 1000 })
    expect(r).toMatchObject({ _tag: "Unknown", key: "x" })
    expect(formatResult(registerModel, r)).toContain("step budget of 1000 exhausted")
  })

  it("returns Unknown when the memo bound is exceeded", () => {
    const r = checkLinearizability(registerModel, hard(), { maxCacheWords: 100 })
    expect(r).toMatchObject({ _tag: "Unknown", key: "x" })
  })

  it("with the default bounds, the same history is decided", () => {
    expect(checkLinearizability(registerModel, hard())._tag).toBe("Illegal")
  })
})

describe("Linearizability: a user-defined model", () => {
  // A counter with increment (output ignored) and get; no partitioning.
  type CounterInput = { readonly _tag: "inc" } | { readonly _tag: "get" }
  const counter: Model<number, CounterInput, number> = {
    init: () => 0,
    step: (s, input, output) =>
      input._tag === "inc" ? { ok: true, next: s + 1 } : output === undefined || output === s ? { ok: true, next: s } : { ok: false },
    equal: (a, b) => a === b,
    hash: (s) => s
  }
  const o = (input: CounterInput, output: number | undefined, call: number, ret: number): Operation<CounterInput, number> => ({
    id: nextId++,
    client: 0,
    input,
    output,
    call,
    ret
  })

  it("accepts and rejects by the model's own step", () => {
    const inc = { _tag: "inc" } as const
    const get = { _tag: "get" } as const
    expect(checkLinearizability(counter, [o(inc, 0, 0, 10), o(inc, 0, 0, 10), o(get, 1, 2, 3), o(get, 2, 11, 12)])._tag).toBe("Ok")
    expect(checkLinearizability(counter, [o(inc, 0, 0, 1), o(inc, 0, 2, 3), o(get, 1, 4, 5)])._tag).toBe("Illegal")
  })
})

// ---------------------------------------------------------------------------------------------------
// Properties

interface Step {
  readonly kind: "read" | "write" | "cas"
  readonly key: number
  readonly value: number
  readonly expected: number
  readonly before: number
  readonly after: number
  readonly applies: boolean
}

const stepArb: fc.Arbitrary<Step> = fc.record({
  kind: fc.constantFrom("read", "write", "cas"),
  key: fc.integer({ min: 0, max: 2 }),
  value: fc.integer({ min: 1, max: 5 }),
  expected: fc.integer({ min: 0, max: 5 }),
  before: fc.integer({ min: 0, max: 40 }),
  after: fc.integer({ min: 0, max: 40 }),
  applies: fc.boolean()
})

/** Executes the steps sequentially (step i takes effect at time 10 i) and widens each interval. */
const fromSequential = (steps: ReadonlyArray<Step>, unknownRate: number, seedBits: ReadonlyArray<boolean>): Array<Op> => {
  const state = new Map<string, RegisterValue | null>()
  return steps.map((s, i) => {
    const key = `k${s.key}`
    const at = 10 * i
    const unknown = unknownRate > 0 && (seedBits[i] ?? false) && s.kind !== "read"
    const applies = !unknown || s.applies
    const current = state.get(key) ?? null
    const expected = s.expected === 0 ? null : s.expected
    let input: RegisterInput
    let output: RegisterOutput
    switch (s.kind) {
      case "read":
        input = Register.read(key)
        output = current
        break
      case "write":
        input = Register.write(key, s.value)
        output = null
        if (applies) state.set(key, s.value)
        break
      case "cas":
        input = Register.cas(key, expected, s.value)
        output = current === expected
        if (applies && current === expected) state.set(key, s.value)
        break
    }
    return unknown
      ? { id: i, client: i % 8, input, output: undefined, call: at - s.before, ret: Infinity }
      : { id: i, client: i % 8, input, output, call: at - s.before, ret: at + s.after }
  })
}

describe("Linearizability: properties", () => {
  it("histories from a sequential execution with random real-time overlap are accepted", () => {
    fc.assert(
      fc.property(fc.array(stepArb, { maxLength: 60 }), fc.array(fc.boolean(), { maxLength: 60 }), (steps, bits) => {
        const h = fromSequential(steps, 0, bits)
        const r = check(h)
        if (r._tag !== "Ok") throw new Error(formatResult(registerModel, r))
      }),
      { numRuns: 300 }
    )
  })

  it("... also when some writes and cas lose their outcome (applied or not)", () => {
    fc.assert(
      fc.property(fc.array(stepArb, { maxLength: 40 }), fc.array(fc.boolean(), { maxLength: 40 }), (steps, bits) => {
        const h = fromSequential(steps, 0.2, bits.map((b, i) => b && i % 3 === 0))
        const r = check(h)
        if (r._tag !== "Ok") throw new Error(formatResult(registerModel, r))
      }),
      { numRuns: 300 }
    )
  })

  it("changing one read's output to a value never written is rejected, at that read's key", () => {
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 60 }), fc.nat(), (steps, pick) => {
        const h = fromSequential(steps, 0, [])
        const reads = h.filter((o) => o.input._tag === "read")
        fc.pre(reads.length > 0)
        const victim = reads[pick % reads.length]!
        const mutated = h.map((o) => (o === victim ? { ...o, output: 999 } : o))
        const r = check(mutated)
        expect(r._tag).toBe("Illegal")
        if (r._tag === "Illegal") expect(r.counterexample.key).toBe(victim.input.key)
      }),
      { numRuns: 300 }
    )
  })

  it("generated closed-loop multi-client histories with lost outcomes are accepted", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const h = generateRegisterHistory(seed, { keys: 3, ops: 300, clients: 6, unknownRate: 0.02 })
      const r = check(h)
      expect(r._tag, `seed ${seed}: ${formatResult(registerModel, r)}`).toBe("Ok")
    }
  })
})

// ---------------------------------------------------------------------------------------------------
// Against a brute-force oracle on small random histories (outputs random, so many are illegal).

/** Tries every order that respects real time; unknown-outcome operations may also never apply. */
const bruteForce = (ops: ReadonlyArray<Op>): boolean => {
  const go = (remaining: ReadonlyArray<Op>, state: RegisterValue | null): boolean => {
    if (remaining.every((o) => o.ret === Infinity)) return true
    for (const o of remaining) {
      // `o` can go next unless some other remaining operation returned before `o` was invoked.
      if (remaining.some((x) => x !== o && x.ret < o.call)) continue
      const r = registerModel.step(state, o.input, o.output)
      if (r.ok && go(remaining.filter((x) => x !== o), r.next)) return true
    }
    return false
  }
  return go(ops, null)
}

const smallOpArb: fc.Arbitrary<Op> = fc
  .record({
    kind: fc.constantFrom("read", "read", "write", "cas"),
    key: fc.constantFrom("x", "x", "y"),
    value: fc.integer({ min: 1, max: 3 }),
    expected: fc.constantFrom(null, 1, 2, 3),
    readValue: fc.constantFrom(null, 1, 2, 3),
    casOk: fc.boolean(),
    call: fc.integer({ min: 0, max: 20 }),
    length: fc.integer({ min: 0, max: 10 }),
    unknown: fc.integer({ min: 0, max: 4 }).map((x) => x === 0)
  })
  .map((r): Op => {
    const input = r.kind === "read" ? Register.read(r.key) : r.kind === "write" ? Register.write(r.key, r.value) : Register.cas(r.key, r.expected, r.value)
    const output = r.kind === "read" ? r.readValue : r.kind === "write" ? null : r.casOk
    return r.unknown
      ? { id: nextId++, client: 0, input, output: undefined, call: r.call, ret: Infinity }
      : { id: nextId++, client: 0, input, output, call: r.call, ret: r.call + r.length }
  })

describe("Linearizability: against a brute-force oracle", () => {
  it("agrees on random small histories", () => {
    let illegal = 0
    fc.assert(
      fc.property(fc.array(smallOpArb, { maxLength: 8 }), (ops) => {
        const relevant = ops.filter((o) => o.output !== undefined || o.input._tag !== "read")
        const expected = ["x", "y"].every((k) => bruteForce(relevant.filter((o) => o.input.key === k)))
        const r = check(ops)
        if (!expected) illegal++
        expect(r._tag).toBe(expected ? "Ok" : "Illegal")
      }),
      { numRuns: 2000 }
    )
    expect(illegal).toBeGreaterThan(200) // the property saw plenty of both answers
  })
})

describe("Linearizability: scale", () => {
  /** Plants, after everything, a write of -1 to k0 and then a read of k0's first written value. */
  const plantStaleRead = (h: ReadonlyArray<Op>): { history: Array<Op>; stale: Op } => {
    const last = Math.max(...h.filter((o) => o.ret !== Infinity).map((o) => o.ret))
    const first = h.find((o) => o.input._tag === "write" && o.input.key === "k0" && o.ret !== Infinity)!
    const value = first.input._tag === "write" ? first.input.value : 0
    const stale = op(99, Register.read("k0"), value, last + 3, last + 4)
    return { history: [...h, op(99, Register.write("k0", -1), null, last + 1, last + 2), stale], stale }
  }

  it("accepts 5 keys × 1,000 operations from 8 clients (1 % lost outcomes) in few search steps", () => {
    const r = check(generateRegisterHistory(1, { keys: 5, ops: 5000, clients: 8, unknownRate: 0.01 }))
    expect(r).toMatchObject({ _tag: "Ok", partitions: 5 })
    expect(r.steps).toBeLessThan(50_000) // about 8,000 today: the pruning works
  })

  it("finds a stale read planted in 5 × 1,000 operations, with lost outcomes of unread writes", () => {
    const { history, stale } = plantStaleRead(generateRegisterHistory(2, { keys: 5, ops: 5000, clients: 8, unknownRate: 0.01, cas: false }))
    expect(history.filter((o) => o.ret === Infinity && o.input.key === "k0").length).toBeGreaterThan(3)
    const r = check(history)
    expect(r._tag).toBe("Illegal")
    if (r._tag !== "Illegal") return
    expect(r.counterexample.key).toBe("k0")
    expect(r.counterexample.blocking.id).toBe(stale.id)
    expect(r.steps).toBeLessThan(200_000)
  })

  it("finds a stale read planted in 5 × 1,000 operations with cas and no lost outcomes", () => {
    const { history } = plantStaleRead(generateRegisterHistory(3, { keys: 5, ops: 5000, clients: 8 }))
    expect(check(history)._tag).toBe("Illegal")
  })
})
