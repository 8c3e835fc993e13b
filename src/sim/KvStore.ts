/**
 * A key→value register map: the test state machine of the Raft tests and the simulator, whose
 * histories the linearizability checker verifies. Commands are JSON text:
 * `{"op":"put","key":"k","value":"v"}` → null, `{"op":"cas","key":"k","expected":"a","value":"b"}` →
 * true/false. Reads are served locally after a ReadIndex round (or after the entry of a `get`).
 */
import { Effect, Layer } from "effect"
import { StateMachine } from "../raft/StateMachine.js"
import type { Entry } from "../raft/Types.js"

export type KvCommand =
  | { readonly op: "put"; readonly key: string; readonly value: string }
  | { readonly op: "cas"; readonly key: string; readonly expected: string | null; readonly value: string }
  | { readonly op: "get"; readonly key: string }

export type KvResult = string | boolean | null

export class KvStore {
  readonly data = new Map<string, string>()
  applied = 0

  /** Applies one committed entry; non-`normal` entries only advance the applied index. */
  apply(entry: Entry): KvResult {
    if (entry.index <= this.applied) throw new Error(`kv: entry ${entry.index} applied twice (applied ${this.applied})`)
    this.applied = entry.index
    if (entry.kind !== "normal") return null
    const cmd = JSON.parse(entry.data) as KvCommand
    switch (cmd.op) {
      case "put":
        this.data.set(cmd.key, cmd.value)
        return null
      case "cas": {
        const current = this.data.get(cmd.key) ?? null
        if (current !== cmd.expected) return false
        this.data.set(cmd.key, cmd.value)
        return true
      }
      case "get":
        return this.data.get(cmd.key) ?? null
    }
  }

  get(key: string): string | null {
    return this.data.get(key) ?? null
  }

  snapshot(): string {
    return JSON.stringify({ applied: this.applied, data: [...this.data.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)) })
  }

  restore(text: string, index: number): void {
    this.data.clear()
    if (text !== "") {
      const parsed = JSON.parse(text) as { data: Array<[string, string]> }
      for (const [k, v] of parsed.data) this.data.set(k, v)
    }
    this.applied = index
  }

  /** A `StateMachine` layer over this store (which, being in memory, is lost at a simulated crash). */
  layer(): Layer.Layer<StateMachine> {
    return Layer.succeed(StateMachine, {
      applied: Effect.sync(() => this.applied),
      apply: (entries) => Effect.sync(() => entries.map((e) => this.apply(e))),
      snapshot: Effect.sync(() => this.snapshot()),
      restore: (snapshot) => Effect.sync(() => this.restore(snapshot.data, snapshot.metadata.index))
    })
  }
}
