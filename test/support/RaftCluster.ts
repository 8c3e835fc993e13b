/**
 * A cluster of real `RaftNode`s in one process — in-memory storage that survives a simulated crash,
 * an in-memory network, any state machine — with time driven by `TestClock`.
 */
import { Context, Duration, Effect, Exit, Layer, Scope, TestClock } from "effect"
import { MemoryNetwork } from "../../src/net/Transport.js"
import type { RaftNodeConfig, RaftNodeShape } from "../../src/raft/RaftNode.js"
import * as RaftNode from "../../src/raft/RaftNode.js"
import type { StateMachine } from "../../src/raft/StateMachine.js"
import { layerMemory, MemoryStore, RaftStorage } from "../../src/storage/RaftStorage.js"

export const tickMs = 10

export interface Member<S> {
  readonly id: number
  readonly store: MemoryStore
  /** Closed: the node's storage writes do not complete (a stalled disk) until it opens again. */
  readonly writes: Effect.Latch
  state: S
  node: RaftNodeShape | undefined
  scope: Scope.CloseableScope | undefined
}

/** The member's in-memory storage, whose writes wait while `member.writes` is closed. */
const stallable = (member: Member<unknown>): Layer.Layer<RaftStorage> =>
  Layer.effect(
    RaftStorage,
    Effect.map(RaftStorage, (inner) => ({
      ...inner,
      save: (batch) => member.writes.whenOpen(inner.save(batch)),
      saveSnapshot: (snapshot) => member.writes.whenOpen(inner.saveSnapshot(snapshot)),
      compact: (index) => member.writes.whenOpen(inner.compact(index))
    }))
  ).pipe(Layer.provide(layerMemory(member.store)))

export class RaftCluster<S> {
  readonly net = new MemoryNetwork()
  readonly members = new Map<number, Member<S>>()

  constructor(
    readonly voters: ReadonlyArray<number>,
    /** A fresh (empty) state machine: a restarted node has lost its memory, not its durable store. */
    readonly makeState: () => S,
    readonly layerOf: (state: S) => Layer.Layer<StateMachine>,
    readonly options: Partial<RaftNodeConfig> = {}
  ) {}

  start(id: number, bootstrap = this.voters.includes(id)) {
    return Effect.gen(this, function* () {
      const member: Member<S> = this.members.get(id) ?? {
        id,
        store: new MemoryStore(),
        writes: Effect.unsafeMakeLatch(true),
        state: this.makeState(),
        node: undefined,
        scope: undefined
      }
      member.state = this.makeState()
      const scope = yield* Scope.make()
      const layer = RaftNode.layer({
        id,
        tickMs,
        requestTimeoutMs: 2_000,
        ...(bootstrap ? { bootstrap: this.voters } : {}),
        ...this.options
      }).pipe(Layer.provide(Layer.mergeAll(stallable(member), this.net.layer(id), this.layerOf(member.state))))
      const context = yield* Layer.buildWithScope(layer, scope)
      member.node = Context.get(context, RaftNode.RaftNode)
      member.scope = scope
      this.members.set(id, member)
      return member
    })
  }

  crash(id: number) {
    return Effect.gen(this, function* () {
      const m = this.members.get(id)!
      yield* Scope.close(m.scope!, Exit.void)
      m.node = undefined
    })
  }

  node(id: number): RaftNodeShape {
    return this.members.get(id)!.node!
  }

  state(id: number): S {
    return this.members.get(id)!.state
  }

  /** Lets simulated time pass, a tick at a time, until `condition` holds (dies after `maxMs`). */
  until(what: string, condition: () => Effect.Effect<boolean>, maxMs = 10_000) {
    return Effect.gen(function* () {
      for (let t = 0; t <= maxMs; t += tickMs) {
        if (yield* condition()) return
        yield* TestClock.adjust(Duration.millis(tickMs))
        for (let i = 0; i < 5; i++) yield* Effect.yieldNow()
      }
      return yield* Effect.die(new Error(`not within ${maxMs} simulated ms: ${what}`))
    })
  }

  /** The id of the one node that leads and is recognised by every running node. */
  leader() {
    return Effect.gen(this, function* () {
      let found = 0
      yield* this.until("a leader is elected and known to all", () =>
        Effect.gen(this, function* () {
          const running = [...this.members.values()].filter((m) => m.node !== undefined)
          const leads = yield* Effect.forEach(running, (m) => m.node!.leader)
          const roles = yield* Effect.forEach(running, (m) => m.node!.role)
          const leaders = running.filter((_, i) => roles[i] === "leader")
          if (leaders.length !== 1 || !leads.every((l) => l === leaders[0]!.id)) return false
          found = leaders[0]!.id
          return true
        })
      )
      return found
    })
  }

  /** Runs `effect` while simulated time passes, and returns its exit. */
  drive<A, E>(effect: Effect.Effect<A, E>) {
    return Effect.gen(this, function* () {
      const fiber = yield* Effect.fork(effect)
      let exit: Exit.Exit<A, E> | undefined
      yield* this.until("the request completes", () =>
        Effect.map(fiber.poll, (o) => {
          if (o._tag === "Some") exit = o.value
          return o._tag === "Some"
        })
      )
      return exit!
    })
  }
}

export const value = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isSuccess(exit)) return exit.value
  throw new Error(`failed: ${String(exit.cause)}`)
}
