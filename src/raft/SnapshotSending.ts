/**
 * The data of the snapshot chunks a leader sends, for the Raft driver (`ReadyHandler`).
 *
 * The driver's mirror of its log keeps only a snapshot's metadata (`MemoryStorage.mirror`): the
 * data — the whole state machine, ~42 MB at 100,000 VMs — is in durable storage already, and a
 * node that keeps it in memory as well holds it for nothing nearly all the time. So the core sends
 * the chunks of a snapshot without their data, and the driver fills each in just before the
 * transport, reading the snapshot from `RaftStorage` — as etcd's server attaches its backend
 * database to a snapshot message only when it sends one (`createMergedSnapshotMessage`).
 *
 * The core paces a snapshot in chunks, a window of them at a time (`Raft.sendSnapshotChunks`), so
 * the data read for the first chunk is held until no follower is being sent a snapshot any more
 * (`release`, after each batch of Readies): one read per transmission, not one per chunk. A
 * follower that stops answering in the middle stays in snapshot state until it answers again (or is
 * removed), and the data stays held that long (releasing it on CheckQuorum's "not recently active"
 * would drop it every election timeout in the middle of a slow transmission, and read it again).
 *
 * The stored snapshot can be newer than the mirror's: a snapshot the node took is stored on the
 * side and taken up by the mirror at the loop's next turn (`LocalSnapshots`). A transmission that
 * would start in between cannot be served (the older data is gone): its chunks are dropped and the
 * core told the snapshot failed (`reportSnapshot`), so it sends the newer one after the next
 * heartbeat answer. One that already started goes on from the data held.
 */
import { Effect } from "effect"
import type { StorageError } from "../storage/Database.js"
import type { RaftStorageShape } from "../storage/RaftStorage.js"
import type { Message, MsgSnap } from "./Message.js"
import { snapshotChunk } from "./Message.js"
import type { RawNode } from "./RawNode.js"
import type { Snapshot } from "./Types.js"

export class SnapshotSending {
  /** The snapshot whose chunks are being sent, read from storage for the first of them. */
  private held: Snapshot | undefined = undefined

  constructor(
    private readonly storage: RaftStorageShape,
    private readonly raw: RawNode
  ) {}

  /** Whether the snapshot's data is held (for tests and the memory benchmark). */
  get holding(): boolean {
    return this.held !== undefined
  }

  /**
   * `messages` with the data of their snapshot chunks filled in. Without chunks it answers
   * `messages` itself and runs no effect (the loop's operations stay the same).
   */
  fill(messages: ReadonlyArray<Message>): Effect.Effect<ReadonlyArray<Message>, StorageError> {
    if (!messages.some((m) => m.type === "snap")) return Effect.succeed(messages)
    return Effect.gen(this, function* () {
      const out: Array<Message> = []
      const failed = new Set<number>()
      for (const m of messages) {
        if (m.type !== "snap") {
          out.push(m)
          continue
        }
        const data = yield* this.dataOf(m)
        if (data === undefined) {
          failed.add(m.to)
          continue
        }
        out.push({ ...m, data: snapshotChunk(data, m.offset, this.raw.maxSizePerMsg) })
      }
      for (const to of failed) {
        yield* Effect.logDebug(
          `node ${this.raw.id}: the snapshot follower ${to} was to be sent is no longer stored (a newer one is); it will be sent the newer one`
        )
        this.raw.reportSnapshot(to, false)
      }
      return out
    })
  }

  /** The data of the snapshot `m` is a chunk of: held, or read from storage; undefined if storage has another. */
  private dataOf(m: MsgSnap): Effect.Effect<string | undefined, StorageError> {
    const held = this.held
    if (held !== undefined && held.metadata.index === m.metadata.index && held.metadata.term === m.metadata.term) {
      return Effect.succeed(held.data)
    }
    return Effect.map(this.storage.snapshot, (stored) => {
      if (stored._tag === "None") return undefined
      const s = stored.value
      if (s.metadata.index !== m.metadata.index || s.metadata.term !== m.metadata.term || s.data.length !== m.totalSize) return undefined
      this.held = s
      return s.data
    })
  }

  /** After a batch of Readies: the data goes once no follower is being sent a snapshot. */
  release(): void {
    if (this.held === undefined) return
    if (this.raw.role === "leader" && this.raw.status().progress.some((p) => p.state === "snapshot")) return
    this.held = undefined
  }
}
