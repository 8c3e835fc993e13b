import { describe, expect, it } from "vitest"
import { History } from "../../src/sim/History.js"
import { checkLinearizability, Register, type RegisterInput, registerModel, type RegisterOutput } from "../../src/sim/Linearizability.js"

describe("History", () => {
  it("records invocations and outcomes as the checker's operations", () => {
    const h = new History<RegisterInput, RegisterOutput>()
    const w = h.invoke(0, Register.write("x", 1), 10)
    const r = h.invoke(1, Register.read("x"), 12)
    const lost = h.invoke(2, Register.write("x", 2), 13)
    const rejected = h.invoke(3, Register.write("x", 3), 14)
    const still = h.invoke(4, Register.cas("x", 1, 5), 15)
    h.ok(r, 1, 20)
    h.ok(w, null, 18)
    h.unknown(lost)
    h.fail(rejected)
    expect(h.pendingCount).toBe(1)
    expect(h.operations()).toEqual([
      { id: w, client: 0, input: Register.write("x", 1), output: null, call: 10, ret: 18 },
      { id: r, client: 1, input: Register.read("x"), output: 1, call: 12, ret: 20 },
      { id: lost, client: 2, input: Register.write("x", 2), output: undefined, call: 13, ret: Infinity },
      { id: still, client: 4, input: Register.cas("x", 1, 5), output: undefined, call: 15, ret: Infinity }
    ])
    expect(checkLinearizability(registerModel, h.operations())._tag).toBe("Ok")
  })

  it("feeds the checker: a stale read recorded through it is rejected", () => {
    const h = new History<RegisterInput, RegisterOutput>()
    h.ok(h.invoke(0, Register.write("x", 1), 0), null, 1)
    h.ok(h.invoke(0, Register.write("x", 2), 2), null, 3)
    h.ok(h.invoke(1, Register.read("x"), 4), 1, 5)
    expect(checkLinearizability(registerModel, h.operations())._tag).toBe("Illegal")
  })

  it("completing twice, an unknown id, an undefined output or a return before the call throws", () => {
    const h = new History<RegisterInput, RegisterOutput>()
    const a = h.invoke(0, Register.read("x"), 5)
    expect(() => h.ok(a, null, 4)).toThrow(/before its invocation/)
    expect(() => h.ok(a, undefined as unknown as RegisterOutput, 6)).toThrow(/defined output/)
    h.ok(a, null, 6)
    expect(() => h.ok(a, null, 7)).toThrow(/not pending/)
    expect(() => h.unknown(a)).toThrow(/not pending/)
    expect(() => h.fail(99)).toThrow(/not pending/)
  })
})
