/**
 * Records client operations as they happen in a simulated run and produces the history that
 * `checkLinearizability` checks.
 *
 *   const id = history.invoke(client, Register.write("x", 1), now)
 *   …  history.ok(id, null, later)      // the client got an answer
 *   or history.unknown(id)              // timed out / crashed: may or may not have taken effect
 *   or history.fail(id)                 // definitely had no effect (rejected before being proposed)
 *
 * Completing an operation twice, or completing one that does not exist, throws: that is a bug in the
 * driver and must stop the run loudly.
 */
import type { Operation } from "./Linearizability.js"

interface Pending<I> {
  readonly client: number
  readonly input: I
  readonly call: number
}

export class History<I, O> {
  private readonly done: Array<Operation<I, O> | undefined> = []
  private readonly pending = new Map<number, Pending<I>>()
  private nextId = 0

  /** Records an invocation; returns the operation id. */
  invoke(client: number, input: I, time: number): number {
    const id = this.nextId++
    this.pending.set(id, { client, input, call: time })
    this.done.push(undefined)
    return id
  }

  private take(id: number, what: string): Pending<I> {
    const p = this.pending.get(id)
    if (p === undefined) throw new Error(`History.${what}: operation ${id} is not pending`)
    this.pending.delete(id)
    return p
  }

  /** The operation returned `output` (never `undefined`) at `time`. */
  ok(id: number, output: O, time: number): void {
    if (output === undefined) throw new Error(`History.ok: operation ${id} needs a defined output`)
    const p = this.pending.get(id)
    if (p !== undefined && time < p.call) {
      throw new Error(`History.ok: operation ${id} returns at ${time}, before its invocation at ${p.call}`)
    }
    const q = this.take(id, "ok")
    this.done[id] = { id, client: q.client, input: q.input, output, call: q.call, ret: time }
  }

  /** The outcome will never be known (timeout, crash): it may have taken effect any time after invocation. */
  unknown(id: number): void {
    const p = this.take(id, "unknown")
    this.done[id] = { id, client: p.client, input: p.input, output: undefined, call: p.call, ret: Infinity }
  }

  /** The operation certainly had no effect: it is left out of the history. */
  fail(id: number): void {
    this.take(id, "fail")
  }

  /** Number of invoked operations still waiting for an outcome. */
  get pendingCount(): number {
    return this.pending.size
  }

  /** The history so far, in invocation order; still-pending operations count as unknown. */
  operations(): Array<Operation<I, O>> {
    const out: Array<Operation<I, O>> = []
    for (let id = 0; id < this.done.length; id++) {
      const op = this.done[id]
      if (op !== undefined) {
        out.push(op)
        continue
      }
      const p = this.pending.get(id)
      if (p !== undefined) out.push({ id, client: p.client, input: p.input, output: undefined, call: p.call, ret: Infinity })
    }
    return out
  }
}
