/**
 * A linearizability checker: the Wing–Gong / Lowe search with memoization of (set of linearized
 * operations, model state) and per-key partitioning, in the shape of porcupine
 * (github.com/anishathalye/porcupine), written for our simulator.
 *
 * A history is a list of operations, each with an invocation time, a response time, an input and an
 * output. Intervals are closed: two operations whose times touch are concurrent. An operation whose
 * outcome is unknown (the client timed out or crashed) has `ret = Infinity` and `output = undefined`:
 * it may have taken effect at any point after its invocation, or never (placing it last is the same
 * as never, for every other operation).
 *
 * The search is bounded (`maxSteps`, `maxCacheWords` per partition); when a bound is hit the answer
 * is `Unknown`, never a hang. `formatResult` prints any result for a person.
 *
 * Cost: a linearizable history with modest per-key concurrency is checked in about one step per
 * operation (5 keys × 1,000 operations, 8 clients: ~8,000 steps). A history that is NOT
 * linearizable must exhaust every reachable configuration; each unknown-outcome write that the
 * model's `simplify` cannot remove can double that, so such checks may end `Unknown`.
 */

/** One client operation. `output === undefined` and `ret === Infinity` when the outcome is unknown. */
export interface Operation<I, O> {
  /** Stable id, used in reports (the history recorder's op id). */
  readonly id: number
  readonly client: number
  readonly input: I
  readonly output: O | undefined
  /** Invocation time. */
  readonly call: number
  /** Response time; `Infinity` when the outcome is unknown. */
  readonly ret: number
}

export type StepResult<S> = { readonly ok: true; readonly next: S } | { readonly ok: false }

/** A group of operations that can be checked on its own (e.g. all operations on one key). */
export interface Partition<I, O> {
  readonly key: string
  readonly ops: ReadonlyArray<Operation<I, O>>
}

/** A sequential specification of the object under test. */
export interface Model<S, I, O> {
  readonly init: () => S
  /** Can `input` return `output` in `state`, and to which state? `output` undefined: unknown outcome. */
  readonly step: (state: S, input: I, output: O | undefined) => StepResult<S>
  readonly equal: (a: S, b: S) => boolean
  /** A 32-bit hash consistent with `equal`. */
  readonly hash: (state: S) => number
  /** Splits a history into independently checkable groups. Default: one group, key "". */
  readonly partition?: (ops: ReadonlyArray<Operation<I, O>>) => ReadonlyArray<Partition<I, O>>
  /**
   * Returns an equivalent history of one partition (linearizable iff the given one is), smaller:
   * e.g. without unknown-outcome operations whose effect nobody could observe. Each one removed
   * halves the search on a history that is not linearizable.
   */
  readonly simplify?: (ops: ReadonlyArray<Operation<I, O>>) => ReadonlyArray<Operation<I, O>>
  /** True for inputs that never change the state (reads): such operations with unknown outcome are dropped. */
  readonly readOnly?: (input: I) => boolean
  /**
   * True if, with this (known) output, the operation leaves the state unchanged in every state that
   * accepts it (a read; a compare-and-set that failed). The search places such an operation as soon
   * as it is accepted, without trying alternatives. Must not claim it for an unknown output.
   */
  readonly pure?: (input: I, output: O) => boolean
  readonly describeOperation?: (input: I, output: O | undefined) => string
  readonly describeState?: (state: S) => string
}

/** A pending operation at the point where the search got stuck, and whether the model allowed it there. */
export interface StuckOperation<I, O> {
  readonly op: Operation<I, O>
  /**
   * True if the model accepts it in the stuck state (then every continuation after it failed);
   * false if the model rejects it in that state.
   */
  readonly allowed: boolean
}

/** Why one key's history is not linearizable. */
export interface Counterexample<S, I, O> {
  readonly key: string
  /** Number of operations in the failing partition. */
  readonly size: number
  /** The longest linearizable prefix found, in linearization order. */
  readonly prefix: ReadonlyArray<Operation<I, O>>
  /** The model state after `prefix`. */
  readonly state: S
  /** The operation that had responded before any pending operation could be placed after `prefix`. */
  readonly blocking: Operation<I, O>
  /** Every operation that was pending at that point (invoked before `blocking` responded). */
  readonly stuck: ReadonlyArray<StuckOperation<I, O>>
}

export type CheckResult<S, I, O> =
  | { readonly _tag: "Ok"; readonly partitions: number; readonly steps: number }
  | { readonly _tag: "Illegal"; readonly counterexample: Counterexample<S, I, O>; readonly steps: number }
  | { readonly _tag: "Unknown"; readonly key: string; readonly reason: string; readonly steps: number }

export interface CheckOptions {
  /** Search steps allowed per partition (default 5,000,000: seconds, not minutes). */
  readonly maxSteps?: number
  /** Memo size allowed per partition, in 32-bit words of stored bitsets (default 64M ≈ 256 MB). */
  readonly maxCacheWords?: number
}

const DEFAULT_MAX_STEPS = 5_000_000
const DEFAULT_MAX_CACHE_WORDS = 64 * 1024 * 1024

/** Checks `history` against `model`: Ok, Illegal (first failing partition) or Unknown (a bound hit). */
export const checkLinearizability = <S, I, O>(
  model: Model<S, I, O>,
  history: ReadonlyArray<Operation<I, O>>,
  options: CheckOptions = {}
): CheckResult<S, I, O> => {
  const readOnly = model.readOnly
  const relevant = readOnly === undefined ? history : history.filter((op) => op.output !== undefined || !readOnly(op.input))
  for (const op of relevant) {
    const unknown = op.ret === Infinity
    if (!(op.call <= op.ret) || Number.isNaN(op.call) || unknown !== (op.output === undefined)) {
      throw new RangeError(
        `operation ${op.id}: needs call <= ret, and ret = Infinity exactly when output is undefined (call ${op.call}, ret ${op.ret})`
      )
    }
  }
  const partitions = model.partition === undefined ? [{ key: "", ops: relevant }] : model.partition(relevant)
  let steps = 0
  let unknown: CheckResult<S, I, O> | undefined
  for (const p of partitions) {
    const r = checkPartition(model, model.simplify === undefined ? p : { key: p.key, ops: model.simplify(p.ops) }, options)
    steps += r.steps
    if (r._tag === "Illegal") return { ...r, steps }
    if (r._tag === "Unknown" && unknown === undefined) unknown = r
  }
  if (unknown !== undefined) return { ...unknown, steps }
  return { _tag: "Ok", partitions: partitions.length, steps }
}

/** splitmix32-style mixer, used to give each operation a fixed random 32-bit tag for set hashing. */
const mix32 = (x: number): number => {
  let z = (x + 0x9e3779b9) >>> 0
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  return (z ^ (z >>> 16)) >>> 0
}

interface Memo<S> {
  readonly bits: Uint32Array
  readonly state: S
}

/**
 * The search over one partition. The history becomes a doubly linked list of call and return
 * entries sorted by time (arrays, not objects); an unknown outcome's return entry is last. Walking
 * from the head, a call entry whose operation the model accepts is "lifted" out of the list (with its
 * return entry) and pushed on a stack; meeting a return entry means the operation it closes had to be
 * placed already: backtrack and try the next candidate.
 *
 * Pruning:
 * - the memo holds every (linearized set, state) reached, so no configuration is explored twice; the
 *   set's hash is kept incrementally (xor of per-operation tags);
 * - an accepted candidate that the model calls `pure` (a read, a failed compare-and-set) is placed
 *   without branching: if any linearization exists from here, one exists that places it now (it
 *   changes nothing wherever it goes), so when that fails the alternatives need not be tried.
 */
const checkPartition = <S, I, O>(
  model: Model<S, I, O>,
  partition: Partition<I, O>,
  options: CheckOptions
): CheckResult<S, I, O> => {
  const ops = partition.ops
  const n = ops.length
  if (n === 0) return { _tag: "Ok", partitions: 1, steps: 0 }
  const maxSteps = options.maxSteps ?? DEFAULT_MAX_STEPS
  const maxCacheWords = options.maxCacheWords ?? DEFAULT_MAX_CACHE_WORDS

  // Entries: 2i is op i's call, 2i + 1 its return. Sort by time; at equal times calls come first
  // (closed intervals), then by operation index so the order never depends on the sort's stability.
  const order = new Int32Array(2 * n)
  for (let e = 0; e < 2 * n; e++) order[e] = e
  const timeOf = (e: number): number => ((e & 1) === 0 ? ops[e >> 1]!.call : ops[e >> 1]!.ret)
  order.sort((a, b) => {
    const ta = timeOf(a), tb = timeOf(b)
    if (ta !== tb) return ta < tb ? -1 : 1
    if ((a & 1) !== (b & 1)) return (a & 1) - (b & 1)
    return a - b
  })
  // Linked list over entry ids; HEAD is a sentinel, -1 ends the list.
  const HEAD = 2 * n
  const next = new Int32Array(2 * n + 1)
  const prev = new Int32Array(2 * n + 1)
  let last = HEAD
  for (let k = 0; k < 2 * n; k++) {
    const e = order[k]!
    next[last] = e
    prev[e] = last
    last = e
  }
  next[last] = -1

  const lift = (call: number): void => {
    next[prev[call]!] = next[call]!
    prev[next[call]!] = prev[call]!
    const ret = call + 1
    next[prev[ret]!] = next[ret]!
    if (next[ret]! !== -1) prev[next[ret]!] = prev[ret]!
  }
  const unlift = (call: number): void => {
    const ret = call + 1
    next[prev[ret]!] = ret
    if (next[ret]! !== -1) prev[next[ret]!] = ret
    next[prev[call]!] = call
    prev[next[call]!] = call
  }

  const words = (n + 31) >>> 5
  const bits = new Uint32Array(words)
  const tagLo = new Uint32Array(n)
  const tagHi = new Uint32Array(n)
  for (let i = 0; i < n; i++) {
    tagLo[i] = mix32(2 * i)
    tagHi[i] = mix32(2 * i + 1)
  }
  let setLo = 0
  let setHi = 0
  const toggle = (i: number): void => {
    bits[i >>> 5]! ^= 1 << (i & 31)
    setLo ^= tagLo[i]!
    setHi ^= tagHi[i]!
  }
  const memo = new Map<number, Array<Memo<S>>>()
  let memoWords = 0

  /** Records (current set, state) unless present; returns false if it was already there. */
  const remember = (state: S): boolean => {
    const sh = model.hash(state) >>> 0
    const key = ((setHi ^ Math.imul(sh, 0x9e3779b1)) >>> 0) * 2097152 + ((setLo ^ sh) & 0x1fffff)
    let bucket = memo.get(key)
    if (bucket === undefined) {
      bucket = []
      memo.set(key, bucket)
    } else {
      outer: for (const m of bucket) {
        for (let w = 0; w < words; w++) if (m.bits[w] !== bits[w]) continue outer
        if (model.equal(m.state, state)) return false
      }
    }
    bucket.push({ bits: bits.slice(), state })
    memoWords += words + 4
    return true
  }

  // The placed operations (their call entries), the state before each, and whether it was forced.
  const stackCall: Array<number> = []
  const stackState: Array<S> = []
  const stackForced: Array<boolean> = []
  let state = model.init()
  let steps = 0
  let best: Counterexample<S, I, O> | undefined
  const pure = model.pure

  /** At a dead end (the walk met return entry `ret`): keeps the deepest one as the explanation. */
  const noteStuck = (ret: number): void => {
    if (best !== undefined && stackCall.length <= best.prefix.length) return
    const stuck: Array<StuckOperation<I, O>> = []
    for (let e = next[HEAD]!; e !== -1 && e !== ret; e = next[e]!) {
      if ((e & 1) === 0) {
        const op = ops[e >> 1]!
        stuck.push({ op, allowed: model.step(state, op.input, op.output).ok })
      }
    }
    best = {
      key: partition.key,
      size: n,
      prefix: stackCall.map((c) => ops[c >> 1]!),
      state,
      blocking: ops[ret >> 1]!,
      stuck
    }
  }

  let entry = next[HEAD]!
  while (next[HEAD]! !== -1) {
    if (++steps > maxSteps) {
      return { _tag: "Unknown", key: partition.key, reason: `step budget of ${maxSteps} exhausted`, steps }
    }
    let dead = false
    if ((entry & 1) === 0) {
      // A call entry: try to place its operation here.
      const i = entry >> 1
      const op = ops[i]!
      const r = model.step(state, op.input, op.output)
      if (!r.ok) {
        entry = next[entry]!
        continue
      }
      const forced = pure !== undefined && op.output !== undefined && pure(op.input, op.output)
      toggle(i)
      if (remember(r.next)) {
        if (memoWords > maxCacheWords) {
          return { _tag: "Unknown", key: partition.key, reason: `memo bound of ${maxCacheWords} words exceeded`, steps }
        }
        stackCall.push(entry)
        stackState.push(state)
        stackForced.push(forced)
        state = r.next
        lift(entry)
        entry = next[HEAD]!
        continue
      }
      toggle(i)
      if (!forced) {
        entry = next[entry]!
        continue
      }
      // Placing it here was explored already and failed: so does everything from here.
      dead = true
    } else {
      // A return entry: its operation should have been placed by now.
      noteStuck(entry)
    }
    // Backtrack: undo the last placement and try the next candidate after it; a forced placement
    // had no alternatives worth trying, so keep undoing.
    for (;;) {
      const call = stackCall.pop()
      if (call === undefined) {
        if (best === undefined) noteStuck(dead ? firstReturn(next, HEAD) : entry)
        return { _tag: "Illegal", counterexample: best!, steps }
      }
      state = stackState.pop()!
      const forced = stackForced.pop()!
      toggle(call >> 1)
      unlift(call)
      entry = next[call]!
      if (!forced) break
    }
  }
  return { _tag: "Ok", partitions: 1, steps }
}

/** The first return entry (odd id) of the list: where the walk from the head would stop. */
const firstReturn = (next: Int32Array, head: number): number => {
  let e = next[head]!
  while ((e & 1) === 0) e = next[e]!
  return e
}

// ---------------------------------------------------------------------------------------------------
// Printing

const showTime = (t: number): string => (t === Infinity ? "∞" : String(t))

/** A multi-line, human-readable account of a result; `tail` limits how much of the prefix is shown. */
export const formatResult = <S, I, O>(
  model: Model<S, I, O>,
  result: CheckResult<S, I, O>,
  options: { readonly tail?: number } = {}
): string => {
  switch (result._tag) {
    case "Ok":
      return `linearizable (${result.partitions} partition(s), ${result.steps} search steps)`
    case "Unknown":
      return `unknown: partition "${result.key}": ${result.reason} (${result.steps} search steps)`
    case "Illegal": {
      const cx = result.counterexample
      const describeOp = (op: Operation<I, O>): string => {
        const what = model.describeOperation?.(op.input, op.output) ?? `${JSON.stringify(op.input)} -> ${op.output === undefined ? "?" : JSON.stringify(op.output)}`
        return `#${op.id} client ${op.client} [${showTime(op.call)}, ${showTime(op.ret)}] ${what}`
      }
      const describeState = (s: S): string => model.describeState?.(s) ?? JSON.stringify(s)
      const tail = options.tail ?? 10
      const lines: Array<string> = []
      lines.push(`NOT linearizable: partition "${cx.key}" (${cx.size} operations)`)
      lines.push(`longest linearizable prefix: ${cx.prefix.length} operation(s)`)
      const shown = cx.prefix.slice(Math.max(0, cx.prefix.length - tail))
      if (shown.length < cx.prefix.length) lines.push(`  … ${cx.prefix.length - shown.length} earlier operation(s)`)
      for (const op of shown) lines.push(`  ${describeOp(op)}`)
      lines.push(`state after the prefix: ${describeState(cx.state)}`)
      lines.push(`${describeOp(cx.blocking)} had responded, but no pending operation can be placed next:`)
      for (const s of cx.stuck) {
        lines.push(`  ${describeOp(s.op)}: ${s.allowed ? "allowed here, but every continuation fails" : "impossible in this state"}`)
      }
      return lines.join("\n")
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The key → value register model

export type RegisterValue = string | number

export type RegisterInput =
  | { readonly _tag: "read"; readonly key: string }
  | { readonly _tag: "write"; readonly key: string; readonly value: RegisterValue }
  | { readonly _tag: "cas"; readonly key: string; readonly expected: RegisterValue | null; readonly value: RegisterValue }

/**
 * read → the value (null: never written); write → anything (an acknowledgement, ignored);
 * cas → true if it swapped, false if the current value differed from `expected`.
 */
export type RegisterOutput = RegisterValue | boolean | null

/** One key's value; null before the first write. */
export type RegisterState = RegisterValue | null

export const Register = {
  read: (key: string): RegisterInput => ({ _tag: "read", key }),
  write: (key: string, value: RegisterValue): RegisterInput => ({ _tag: "write", key, value }),
  cas: (key: string, expected: RegisterValue | null, value: RegisterValue): RegisterInput => ({ _tag: "cas", key, expected, value })
} as const

const REJECT = { ok: false } as const

const hashString = (s: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  return h >>> 0
}

const hashNumber = (x: number): number => ((x | 0) === x ? mix32(x ^ 0x5bd1e995) : hashString(String(x)) ^ 0x68e31da4)

const showValue = (v: RegisterOutput | undefined): string => (v === undefined ? "?" : v === null ? "nil" : JSON.stringify(v))

/** A linearizable key → value store with read, write and compare-and-set, partitioned by key. */
export const registerModel: Model<RegisterState, RegisterInput, RegisterOutput> = {
  init: () => null,
  step: (state, input, output) => {
    switch (input._tag) {
      case "read":
        return output === undefined || output === state ? { ok: true, next: state } : REJECT
      case "write":
        return { ok: true, next: input.value }
      case "cas": {
        const matches = state === input.expected
        if (output === undefined) return { ok: true, next: matches ? input.value : state }
        if (output !== matches) return REJECT
        return { ok: true, next: matches ? input.value : state }
      }
    }
  },
  equal: (a, b) => a === b,
  hash: (s) => (s === null ? 0x2545f491 : typeof s === "number" ? hashNumber(s) : hashString(s)),
  partition: (ops) => {
    const byKey = new Map<string, Array<Operation<RegisterInput, RegisterOutput>>>()
    for (const op of ops) {
      const group = byKey.get(op.input.key)
      if (group === undefined) byKey.set(op.input.key, [op])
      else group.push(op)
    }
    return Array.from(byKey, ([key, group]) => ({ key, ops: group }))
  },
  simplify: (ops) => {
    // An unknown write (or cas) W of a value v that no read returned and no cas expected can be left
    // out (as if it never applied), provided no cas that failed could be placed after it. Why: take
    // a linearization where W applies. Until the next write or successful cas, nothing observes v:
    // reads of v and cas expecting v do not exist, failed cas cannot be there; only unknown cas, which
    // we may move to the end (never applied). So removing W leaves a linearization. The converse is
    // immediate (an unknown operation may never apply).
    const observed = new Set<RegisterValue | null>()
    let lastFailedCas = -Infinity
    for (const op of ops) {
      if (op.input._tag === "read" && op.output !== undefined) observed.add(op.output as RegisterValue | null)
      if (op.input._tag === "cas") {
        observed.add(op.input.expected)
        if (op.output === false) lastFailedCas = Math.max(lastFailedCas, op.ret)
      }
    }
    return ops.filter(
      (op) => op.output !== undefined || op.input._tag === "read" || observed.has(op.input.value) || lastFailedCas >= op.call
    )
  },
  readOnly: (input) => input._tag === "read",
  pure: (input, output) => input._tag === "read" || (input._tag === "cas" && output === false),
  describeOperation: (input, output) => {
    switch (input._tag) {
      case "read":
        return `read(${input.key}) -> ${showValue(output)}`
      case "write":
        return `write(${input.key}, ${showValue(input.value)})${output === undefined ? " -> ?" : ""}`
      case "cas":
        return `cas(${input.key}, ${showValue(input.expected)} => ${showValue(input.value)}) -> ${showValue(output)}`
    }
  },
  describeState: (s) => showValue(s)
}
