/**
 * The driver fills in the snapshot chunks a core over its mirror sends without data, from durable
 * storage, holding the data only while a follower is being sent the snapshot.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as path from "node:path"
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import type { Message, MsgSnap } from "../../src/raft/Message.js"
import { SnapshotSending } from "../../src/raft/SnapshotSending.js"
import type { Snapshot } from "../../src/raft/Types.js"
import { layerFile, makeMemory, RaftStorage } from "../../src/storage/RaftStorage.js"
import { tempDir } from "../support/TempDir.js"
import { leaderSendingSnapshot } from "./helpers.js"

const confState = { voters: [1, 2], learners: [] }
const snapshot: Snapshot = { metadata: { index: 3, term: 1, confState }, data: "0123456789".repeat(25) }
const chunks = (messages: ReadonlyArray<Message>) => messages.filter((m): m is MsgSnap => m.type === "snap")

describe("SnapshotSending", () => {
  it.effect("fills each chunk from storage, reading the snapshot once, and lets go of it once the follower has it", () =>
    Effect.gen(function* () {
      const storage = makeMemory()
      yield* storage.saveSnapshot(snapshot)
      let reads = 0
      const counted = { ...storage, snapshot: Effect.tap(storage.snapshot, () => void reads++) }
      const raw = leaderSendingSnapshot(MemoryStorage.mirror(), snapshot, 100)
      const sending = new SnapshotSending(counted, raw)
      const rd = raw.ready()
      expect(chunks(rd.messages).map((m) => m.data)).toEqual(["", "", ""])
      const sent = chunks(yield* sending.fill(rd.messages))
      expect(sent.map((m) => m.data).join("")).toBe(snapshot.data)
      expect(sent.map((m) => m.data.length)).toEqual([100, 100, 50])
      expect(reads).toBe(1)
      raw.advance(rd)
      sending.release()
      expect(sending.holding).toBe(true) // node 2 is still being sent the snapshot
      // Node 2 installed it and answers the last chunk: it is back to replication.
      raw.step({ type: "appResp", term: 2, from: 2, to: 1, index: 3, reject: false, rejectHint: 0, logTerm: 0 })
      raw.advance(raw.ready())
      sending.release()
      expect(sending.holding).toBe(false)
    })
  )

  it.effect("a snapshot no longer stored (a newer one is) is not sent: the core is told, and starts over", () =>
    Effect.gen(function* () {
      const storage = makeMemory()
      // The node's own newer snapshot is stored, not yet taken up by the mirror.
      yield* storage.saveSnapshot({ metadata: { index: 4, term: 2, confState }, data: "newer" })
      const raw = leaderSendingSnapshot(MemoryStorage.mirror(), snapshot, 100)
      const sending = new SnapshotSending(storage, raw)
      const rd = raw.ready()
      expect(chunks(rd.messages)).toHaveLength(3)
      const sent = yield* sending.fill(rd.messages)
      expect(chunks(sent)).toEqual([])
      expect(sent).toHaveLength(rd.messages.length - 3)
      raw.advance(rd)
      expect(raw.status().progress.find((p) => p.id === 2)).toMatchObject({ state: "probe", pendingSnapshot: 0 })
      expect(sending.holding).toBe(false)
    })
  )

  it.scoped("over SQLite, a snapshot the node took (stored in chunks) is sent whole, in the core's chunks", () =>
    Effect.gen(function* () {
      const storage = Context.get(yield* Layer.build(layerFile({ filename: path.join(tempDir("snapshot-sending"), "node.db") })), RaftStorage)
      const big: Snapshot = { metadata: snapshot.metadata, data: Array.from({ length: 300_000 }, (_, i) => `${i},`).join("") }
      yield* storage.saveSnapshot(big)
      const raw = leaderSendingSnapshot(MemoryStorage.mirror(), big, 256 * 1024)
      const sending = new SnapshotSending(storage, raw)
      let received = ""
      // Deliver and acknowledge chunk by chunk until the whole snapshot went out.
      for (let round = 0; round < 100 && received.length < big.data.length; round++) {
        const rd = raw.ready()
        const sent = chunks(yield* sending.fill(rd.messages))
        raw.advance(rd)
        for (const m of sent) {
          expect(m.offset).toBe(received.length)
          received += m.data
          raw.step({ type: "snapAck", term: 2, from: 2, to: 1, index: 3, received: received.length })
        }
      }
      expect(received).toBe(big.data)
      expect(sending.holding).toBe(true)
    })
  )

  it.effect("messages without chunks pass through untouched", () =>
    Effect.gen(function* () {
      const raw = leaderSendingSnapshot(MemoryStorage.mirror(), snapshot, 100)
      const sending = new SnapshotSending(makeMemory(), raw)
      const messages: ReadonlyArray<Message> = [{ type: "heartbeat", term: 2, from: 1, to: 2, commit: 3 }]
      expect(yield* sending.fill(messages)).toBe(messages)
    })
  )
})
