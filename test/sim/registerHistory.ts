/**
 * Generates linearizable key → value register histories for tests and the benchmark: closed-loop
 * clients (one operation in flight each), every operation takes effect at a point inside its
 * interval, outputs are computed by applying the operations in the order of those points.
 */
import type { Operation, RegisterInput, RegisterOutput, RegisterValue } from "../../src/sim/Linearizability.js"
import { Prng } from "../../src/sim/Prng.js"

export interface RegisterWorkload {
  readonly keys: number
  readonly ops: number
  readonly clients: number
  /** Probability that an operation's outcome is lost (client times out); it applies or not, 50/50. */
  readonly unknownRate?: number
  /** Include compare-and-set operations (default true). */
  readonly cas?: boolean
}

type RegisterOp = Operation<RegisterInput, RegisterOutput>

export const generateRegisterHistory = (seed: number, w: RegisterWorkload): Array<RegisterOp> => {
  const prng = Prng.fromSeed(seed)
  const clientTime = Array.from({ length: w.clients }, () => prng.int(10))
  const written = new Map<string, Array<RegisterValue>>()
  interface Planned {
    readonly id: number
    readonly client: number
    readonly input: RegisterInput
    readonly call: number
    readonly at: number
    readonly ret: number
    readonly lost: boolean
    readonly applies: boolean
  }
  const planned: Array<Planned> = []
  let nextValue = 1
  for (let id = 0; id < w.ops; id++) {
    // The client that is free first issues the next operation.
    let client = 0
    for (let c = 1; c < w.clients; c++) if (clientTime[c]! < clientTime[client]!) client = c
    const key = `k${prng.int(w.keys)}`
    const values = written.get(key) ?? []
    const roll = prng.int(10)
    let input: RegisterInput
    if (roll < 4) input = { _tag: "read", key }
    else if (roll < 8 || values.length === 0 || w.cas === false) {
      const value = nextValue++
      values.push(value)
      written.set(key, values)
      input = { _tag: "write", key, value }
    } else {
      const expected = values[Math.max(0, values.length - 1 - prng.int(3))]!
      const value = nextValue++
      values.push(value)
      input = { _tag: "cas", key, expected, value }
    }
    const call = clientTime[client]!
    const at = call + 1 + prng.int(20)
    const ret = at + prng.int(20)
    const lost = w.unknownRate !== undefined && prng.chance(w.unknownRate)
    planned.push({ id, client, input, call, at, ret, lost, applies: !lost || prng.chance(0.5) })
    clientTime[client] = ret + prng.int(5)
  }
  // Apply in effect order (ties by id) to compute what each operation returned.
  const state = new Map<string, RegisterValue | null>()
  const outputs = new Map<number, RegisterOutput>()
  for (const p of [...planned].sort((a, b) => a.at - b.at || a.id - b.id)) {
    if (!p.applies) continue
    const current = state.get(p.input.key) ?? null
    switch (p.input._tag) {
      case "read":
        outputs.set(p.id, current)
        break
      case "write":
        state.set(p.input.key, p.input.value)
        outputs.set(p.id, null)
        break
      case "cas":
        outputs.set(p.id, current === p.input.expected)
        if (current === p.input.expected) state.set(p.input.key, p.input.value)
        break
    }
  }
  return planned.map((p) =>
    p.lost
      ? { id: p.id, client: p.client, input: p.input, output: undefined, call: p.call, ret: Infinity }
      : { id: p.id, client: p.client, input: p.input, output: outputs.get(p.id)!, call: p.call, ret: p.ret }
  )
}
