/**
 * Taking a snapshot does not stop the Raft loop: the loop captures the state, and serialising and
 * writing it happen on the side while the leader keeps ticking and sending heartbeats. Real time
 * (the point is what happens while a snapshot takes long), an in-memory network, three nodes.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Schema } from "effect"
import * as path from "node:path"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import { CommandEnvelope } from "../../src/domain/Command.js"
import { MemoryNetwork } from "../../src/net/Transport.js"
import * as RaftNode from "../../src/raft/RaftNode.js"
import { StateMachine } from "../../src/raft/StateMachine.js"
import { KvStore } from "../../src/sim/KvStore.js"
import { layerFile, layerMemory, MemoryStore, RaftStorage } from "../../src/storage/RaftStorage.js"
import { tempDir } from "../support/TempDir.js"

const put = (key: string, value: string) => JSON.stringify({ op: "put", key, value })
/** Production's timing: 50 ms ticks, elections after 500–1000 ms. */
const tickMs = 50

/** Polls `check` in real time until it holds; fails after `ms`. */
const eventually = (what: string, check: Effect.Effect<boolean>, ms = 20_000) =>
  Effect.gen(function* () {
    const until = Date.now() + ms
    while (!(yield* check)) {
      if (Date.now() > until) return yield* Effect.dieMessage(`not within ${ms} ms: ${what}`)
      yield* Effect.sleep(Duration.millis(10))
    }
  })

/** What the test sees of one snapshot write: heartbeats delivered when it began and when it was stored. */
interface Window {
  readonly node: number
  readonly heartbeatsAtCapture: number
  heartbeatsAtStored: number | undefined
}

interface Options {
  /**
   * The state machine of node `id`, around the KV store (its `snapshotView`, if any, is the test's);
   * `leader()` is the leader found (0 until one is).
   */
  readonly stateMachine: (id: number, kv: KvStore, captured: () => void, leader: () => number) => Layer.Layer<StateMachine>
  /** The node's storage; `stored` is called once a snapshot write completed. */
  readonly storage: (id: number, stored: () => void) => Layer.Layer<RaftStorage, unknown>
}

/**
 * Three nodes; once a leader is elected, writes until every node took a snapshot, and returns the
 * leader, its term before and after, and the leader's snapshot window.
 */
const snapshotUnderLoad = (options: Options) =>
  Effect.gen(function* () {
    const net = new MemoryNetwork()
    const heartbeats = () => net.delivered.get("heartbeat") ?? 0
    const windows: Array<Window> = []
    const nodes = new Map<number, RaftNode.RaftNodeShape>()
    let leader = 0
    for (const id of [1, 2, 3]) {
      const kv = new KvStore()
      let open: Window | undefined
      const captured = () => {
        open = { node: id, heartbeatsAtCapture: heartbeats(), heartbeatsAtStored: undefined }
        windows.push(open)
      }
      const stored = () => {
        if (open !== undefined) open.heartbeatsAtStored = heartbeats()
      }
      const layer = RaftNode.layer({
        id,
        tickMs,
        requestTimeoutMs: 20_000,
        bootstrap: [1, 2, 3],
        snapshotEvery: 5,
        snapshotRatio: 0,
        snapshotRetain: 0
      }).pipe(Layer.provide(Layer.mergeAll(options.storage(id, stored), net.layer(id), options.stateMachine(id, kv, captured, () => leader))))
      nodes.set(id, Context.get(yield* Layer.build(layer), RaftNode.RaftNode))
    }
    yield* eventually(
      "a leader",
      Effect.map(Effect.forEach([1, 2, 3], (id) => nodes.get(id)!.role), (roles) => {
        leader = roles.indexOf("leader") + 1
        return leader > 0
      })
    )
    const termBefore = (yield* nodes.get(leader)!.status).term
    for (let i = 0; i < 6; i++) yield* nodes.get(leader)!.propose(put(`k${i}`, `${i}`))
    yield* eventually(
      "the leader's snapshot is stored",
      Effect.sync(() => windows.some((w) => w.node === leader && w.heartbeatsAtStored !== undefined))
    )
    const after = yield* nodes.get(leader)!.status
    // The bootstrap's snapshot is taken (captured) too, but stored by `save`, not `saveSnapshot`.
    const window = windows.find((w) => w.node === leader && w.heartbeatsAtStored !== undefined)!
    return { termBefore, after, leader, heartbeatsDuring: window.heartbeatsAtStored! - window.heartbeatsAtCapture }
  })

/** The KV store's state machine, reporting when the driver captures a snapshot. */
const kvCapturing = (kv: KvStore, captured: () => void, view?: () => Iterable<string>): Layer.Layer<StateMachine> =>
  Layer.effect(
    StateMachine,
    Effect.map(Layer.build(kv.layer()).pipe(Effect.map(Context.get(StateMachine)), Effect.scoped), (inner) => ({
      ...inner,
      ...(view === undefined
        ? { snapshot: Effect.zipLeft(inner.snapshot, Effect.sync(captured)) }
        : {
            snapshot: Effect.sync(() => (captured(), [...view()].join(""))),
            snapshotView: Effect.sync(() => (captured(), view())),
            // The snapshot's text is not the KV store's: a restart starts from an empty store.
            restore: (snapshot) => inner.restore({ ...snapshot, data: new KvStore().snapshot() })
          })
    }))
  )

/** A storage whose `saveSnapshot` reports completion after `delayMs` (a disk slow to write a large snapshot). */
const reporting = (inner: Layer.Layer<RaftStorage, unknown>, stored: () => void, delayMs = 0): Layer.Layer<RaftStorage, unknown> =>
  Layer.effect(
    RaftStorage,
    Effect.map(RaftStorage, (s) => ({
      ...s,
      saveSnapshot: (snapshot) =>
        s.saveSnapshot(snapshot).pipe(Effect.delay(Duration.millis(delayMs)), Effect.zipLeft(Effect.sync(stored)))
    }))
  ).pipe(Layer.provide(inner))

/** 100,000 VMs on three nodes, as the cluster benchmark creates them. */
const bigClusterState = (vms: number): ClusterState => {
  const decode = Schema.decodeUnknownSync(CommandEnvelope)
  const state = new ClusterState()
  let index = 1
  for (const id of [1, 2, 3]) {
    const info = { id, address: `127.0.0.1:${7000 + id}`, capacity: { vcpus: 64, memoryMiB: 65536 }, labels: {}, state: "active", health: "up" }
    state.apply(index++, decode({ proposedAt: 0, command: { _tag: "RegisterNode", info } }))
  }
  const spec = (k: number) => ({ name: `b${k}`, source: { _tag: "Runner", path: "/nix/store/bench-runner" }, vcpus: 1, memoryMiB: 16, labels: {}, constraints: [], restartPolicy: "never" })
  for (let k = 0; k < vms; k++) state.apply(index++, decode({ proposedAt: 0, command: { _tag: "CreateVm", spec: spec(k) } }))
  return state
}

describe("a snapshot is taken off the Raft loop", () => {
  it.scopedLive(
    "a leader whose snapshot takes three election timeouts to store keeps leading and sending heartbeats",
    () =>
      Effect.gen(function* () {
        const result = yield* snapshotUnderLoad({
          stateMachine: (_, kv, captured) => kvCapturing(kv, captured),
          storage: (_, stored) => reporting(layerMemory(new MemoryStore()), stored, 3_000)
        })
        // Three seconds at one heartbeat per 50 ms tick; before, the loop waited for the write and
        // sent none, and the followers elected a new leader.
        expect(result.heartbeatsDuring).toBeGreaterThanOrEqual(10)
        expect(result.after).toMatchObject({ role: "leader", term: result.termBefore })
      }),
    60_000
  )

  it.scopedLive(
    "a leader snapshotting 100,000 VMs into a SQLite file keeps leading and sending heartbeats",
    () =>
      Effect.gen(function* () {
        const big = bigClusterState(100_000)
        const dir = tempDir("snapshot-off-loop")
        const result = yield* snapshotUnderLoad({
          // The leader's snapshot is the 100,000-VM state's (the entries applied are the KV store's);
          // the followers', the KV store's: the three nodes share this process's one thread, where
          // three 40 MB snapshots stored back to back (SQLite writes are synchronous) would stall the
          // followers too, which their own processes would not.
          stateMachine: (id, kv, captured, leader) => kvCapturing(kv, captured, () => (id === leader() ? big.snapshotView() : [kv.snapshot()])),
          storage: (id, stored) => reporting(layerFile({ filename: path.join(dir, `node-${id}.db`) }), stored)
        })
        // ~40 MB of JSON written while heartbeats kept flowing; before, none between capture and store.
        expect(result.heartbeatsDuring).toBeGreaterThanOrEqual(2)
        expect(result.after).toMatchObject({ role: "leader", term: result.termBefore })
      }),
    120_000
  )
})
