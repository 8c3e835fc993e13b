import { describe, expect, it } from "@effect/vitest"
import { tempDir } from "../support/TempDir.js"
import Sqlite from "better-sqlite3"
import { Cause, Effect, Exit } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Entry } from "../../src/raft/Types.js"
import { layerFile, RaftStorage } from "../../src/storage/RaftStorage.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Schema } from "effect"

const fixture = path.resolve(import.meta.dirname, "../fixtures/hold-database.mjs")
const tempFile = () => path.join(tempDir("db"), "node.db")
const entry = (index: number, term: number, data = `cmd-${index}`): Entry => ({ index, term, kind: "normal", data })
const node = Schema.decodeSync(NodeId)(2)

/** Writes a log of `n` entries of ~`size` bytes and closes the database (checkpointing the WAL). */
const populate = (filename: string, n: number, size = 50) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.provide(
        Effect.flatMap(RaftStorage, (s) =>
          s.save({
            entries: Array.from({ length: n }, (_, i) => entry(i + 1, 1, `${i}:`.padEnd(size, "x"))),
            hardState: { term: 1, vote: 1, commit: n }
          })
        ),
        layerFile({ filename, node })
      )
    )
  )

/** Opens the database and reads everything; returns the failure, if any. */
const openAndRead = async (filename: string) => {
  const exit = await Effect.runPromiseExit(
    Effect.scoped(
      Effect.provide(
        Effect.gen(function* () {
          const s = yield* RaftStorage
          const init = yield* s.initialState
          return yield* s.entries(init.firstIndex, init.lastIndex + 1)
        }),
        layerFile({ filename, node })
      )
    )
  )
  return Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
}

const waitForLine = (child: ReturnType<typeof spawn>, deadlineMs: number) =>
  new Promise<string>((resolve, reject) => {
    let out = ""
    const timer = setTimeout(() => reject(new Error(`no output within ${deadlineMs} ms: ${out}`)), deadlineMs)
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      const nl = out.indexOf("\n")
      if (nl >= 0) {
        clearTimeout(timer)
        resolve(out.slice(0, nl))
      }
    })
    child.on("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`exited with ${code} before printing: ${out}`))
    })
  })

describe("Database: one process per data directory", () => {
  it("a second process opening a held database fails at once with BLX_STORAGE_LOCKED; kill -9 frees it", async () => {
    const file = tempFile()
    await populate(file, 3)
    const holder = spawn(process.execPath, [fixture, file], { stdio: ["pipe", "pipe", "inherit"] })
    try {
      expect(await waitForLine(holder, 30_000)).toBe("held")
      const started = Date.now()
      const error = await openAndRead(file)
      expect(Date.now() - started).toBeLessThan(2_000)
      expect(error).toMatchObject({ code: "BLX_STORAGE_LOCKED", subject: file, node: 2 })
      expect(String((error as Error).message)).toContain("another process")

      // A second holder process is refused too.
      const second = spawn(process.execPath, [fixture, file], { stdio: ["pipe", "pipe", "inherit"] })
      expect(await waitForLine(second, 30_000)).toBe("failed BLX_STORAGE_LOCKED")
    } finally {
      holder.kill("SIGKILL")
    }
    await new Promise((resolve) => holder.once("exit", resolve))
    expect(await openAndRead(file)).toBeUndefined()
  })
})

describe("Database: damaged files stop the node, naming the file and the index", () => {
  it("an entry whose payload changed under SQLite fails its checksum", async () => {
    const file = tempFile()
    await populate(file, 20)
    const raw = new Sqlite(file)
    raw.prepare("UPDATE raft_log SET data = 'rm -rf /' WHERE idx = 7").run()
    raw.close()
    const error = await openAndRead(file)
    expect(error).toMatchObject({ code: "BLX_STORAGE_CORRUPT", subject: file, node: 2 })
    expect((error as Error).message).toMatch(/log entry 7 fails its checksum/)
    expect((error as Error).message).toContain(file)
    // What to do: leave the cluster, then join as a new member — never a restored or wiped node under its old id.
    expect((error as Error).message).toContain("blixard cluster leave --id 2")
    expect((error as Error).message).not.toMatch(/restore the data directory|remove it and rejoin/)
  })

  it("a missing entry in the middle of the log is reported by index", async () => {
    const file = tempFile()
    await populate(file, 20)
    const raw = new Sqlite(file)
    raw.prepare("DELETE FROM raft_log WHERE idx = 11").run()
    raw.close()
    const error = await openAndRead(file)
    expect(error).toMatchObject({ code: "BLX_STORAGE_CORRUPT" })
    expect((error as Error).message).toMatch(/log entry 11 is missing/)
  })

  it("a tampered hard state (a changed vote) fails its checksum", async () => {
    const file = tempFile()
    await populate(file, 3)
    const raw = new Sqlite(file)
    raw.prepare("UPDATE raft_hard_state SET vote = 9").run()
    raw.close()
    const error = await openAndRead(file)
    expect(error).toMatchObject({ code: "BLX_STORAGE_CORRUPT" })
    expect((error as Error).message).toMatch(/hard state fails its checksum/)
  })

  it("a truncated database file is refused at open", async () => {
    const file = tempFile()
    await populate(file, 2000, 200)
    const size = fs.statSync(file).size
    expect(size).toBeGreaterThan(100_000)
    fs.truncateSync(file, Math.floor(size / 2))
    const error = await openAndRead(file)
    expect(error).toMatchObject({ code: "BLX_STORAGE_CORRUPT", subject: file })
  })

  it("a file whose header is garbage is refused at open", async () => {
    const file = tempFile()
    await populate(file, 10)
    const fd = fs.openSync(file, "r+")
    fs.writeSync(fd, Buffer.alloc(100, 0x5a), 0, 100, 0)
    fs.closeSync(fd)
    const error = await openAndRead(file)
    expect(error).toMatchObject({ code: "BLX_STORAGE_CORRUPT", subject: file })
  })

  it("a data directory that does not exist is a clear I/O error", async () => {
    const file = path.join(os.tmpdir(), "blixard-no-such-dir", String(process.pid), "node.db")
    const error = await openAndRead(file)
    expect(error).toMatchObject({ code: "BLX_STORAGE_IO" })
    expect((error as Error).message).toMatch(/does not exist/)
  })
})

describe("Database: a node's start reads the log and the snapshot once", () => {
  /** Opens the database; answers what `initialState`, then `verifiedLog` and `snapshot`, gave or failed with. */
  const openInTwoSteps = (filename: string) =>
    Effect.runPromise(
      Effect.scoped(
        Effect.provide(
          Effect.gen(function* () {
            const s = yield* RaftStorage
            const init = yield* Effect.either(s.initialState)
            let read = 0
            const log = yield* Effect.either(s.verifiedLog((entries) => (read += entries.length)))
            const snapshot = yield* Effect.either(s.snapshot)
            return { init, log, read, snapshot }
          }),
          layerFile({ filename, node })
        )
      )
    )

  it("initialState reads neither the log nor the snapshot's data: damage there is found by the one read that follows", async () => {
    const file = tempFile()
    await populate(file, 5000)
    await Effect.runPromise(
      Effect.scoped(
        Effect.provide(
          Effect.flatMap(RaftStorage, (s) => s.saveSnapshot({ metadata: { index: 10, term: 1, confState: { voters: [2], learners: [] } }, data: "state".repeat(1000) })),
          layerFile({ filename: file, node })
        )
      )
    )
    const intact = await openInTwoSteps(file)
    expect(intact.init._tag).toBe("Right")
    expect(intact.log._tag).toBe("Right")
    expect(intact.read).toBe(5000)
    expect(intact.snapshot._tag).toBe("Right")

    const raw = new Sqlite(file)
    raw.prepare("UPDATE raft_log SET data = 'tampered' WHERE idx = 4321").run()
    raw.prepare("UPDATE raft_snapshot_chunk SET data = 'tampered'").run()
    raw.close()
    const damaged = await openInTwoSteps(file)
    // The bounds, hard state and snapshot metadata are all a start needs before reading on.
    expect(damaged.init._tag).toBe("Right")
    if (damaged.init._tag === "Right") expect(damaged.init.right).toMatchObject({ firstIndex: 1, lastIndex: 5000, hardState: { commit: 5000 } })
    expect(damaged.log._tag === "Left" && damaged.log.left.message).toMatch(/log entry 4321 fails its checksum/)
    // Handed over in chunks up to the damaged one, none after it.
    expect(damaged.read).toBeLessThan(4321)
    expect(damaged.snapshot._tag === "Left" && damaged.snapshot.left.message).toMatch(/snapshot at index 10 fails its checksum/)
  })

  it("verifiedLog refuses a log whose terms go down", async () => {
    const file = tempFile()
    await populate(file, 100)
    const raw = new Sqlite(file)
    // A lower term with a matching checksum: only the order check can find it.
    const { entryChecksum } = await import("../../src/storage/Checksum.js")
    raw.prepare("UPDATE raft_log SET term = 2, checksum = ? WHERE idx = 50").run(entryChecksum(entry(50, 2, "49:".padEnd(50, "x"))))
    raw.close()
    const result = await openInTwoSteps(file)
    expect(result.log._tag === "Left" && result.log.left.message).toMatch(/log entry 51 has term 1, lower than the term 2 before it/)
  })
})
