/**
 * The lease file: written atomically, read back with its schema; a damaged file, or another node's,
 * is refused with an error naming the file, the node and what happens next.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fencingPaths, isRunning, selfIdentity } from "../../src/agent/internal/fencingFiles.js"
import * as NodeLease from "../../src/agent/NodeLease.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { scopedTempDir } from "../vm/fixtures.js"

const node = NodeId.make(3)

const leaseIn = (dir: string) => fencingPaths(path.join(dir, "data")).lease

describe("NodeLease", () => {
  it.scoped("is written atomically into the data directory's fencing/ and read back", () =>
    Effect.gen(function* () {
      const file = leaseIn(yield* scopedTempDir("lease"))
      expect(Option.isNone(yield* NodeLease.read(file, node))).toBe(true)
      const lease = new NodeLease.NodeLease({ node, validUntil: 1_700_000_003_000, writtenAt: 1_700_000_000_000, writer: selfIdentity() })
      yield* NodeLease.write(file, lease)
      expect(path.basename(path.dirname(file))).toBe("fencing")
      expect(fs.readdirSync(path.dirname(file))).toEqual(["lease.json"]) // no temporary file left
      const read = yield* NodeLease.read(file, node)
      expect(Option.getOrThrow(read)).toEqual(lease)
      expect(isRunning(Option.getOrThrow(read).writer)).toBe(true) // its writer is this process

      const renewed = new NodeLease.NodeLease({ ...lease, validUntil: lease.validUntil + 500 })
      yield* NodeLease.write(file, renewed)
      expect(Option.getOrThrow(yield* NodeLease.read(file, node)).validUntil).toBe(lease.validUntil + 500)
    }))

  it.scoped("a temporary file left by an earlier process of this pid does not stop a write", () =>
    Effect.gen(function* () {
      const file = leaseIn(yield* scopedTempDir("lease"))
      fs.mkdirSync(path.dirname(file), { recursive: true })
      // An earlier process with this pid died between writing its temporary file and renaming it:
      // the names this process's next writes take are there already, holding something else.
      const leftovers = Array.from({ length: 200 }, (_, i) => `${file}.tmp-${process.pid}-${i + 1}`)
      for (const leftover of leftovers) fs.writeFileSync(leftover, "{\"left\":\"over\"}\n")
      const lease = new NodeLease.NodeLease({ node, validUntil: 1_700_000_003_000, writtenAt: 1_700_000_000_000, writer: selfIdentity() })
      yield* NodeLease.write(file, lease)
      expect(Option.getOrThrow(yield* NodeLease.read(file, node))).toEqual(lease)
      expect(leftovers.filter((f) => fs.existsSync(f))).toHaveLength(leftovers.length - 1) // the one it took was replaced, then renamed
    }))

  it.scoped("refuses a damaged file (BLX_STORAGE_CORRUPT) and another node's (BLX_WRONG_DATA_DIR), naming file, node and what happens", () =>
    Effect.gen(function* () {
      const file = leaseIn(yield* scopedTempDir("lease"))
      fs.mkdirSync(path.dirname(file), { recursive: true })
      const writer = selfIdentity()
      const damaged: ReadonlyArray<readonly [string, string]> = [
        ['{"node":3,"validUntil":17', "not valid"], // truncated
        ["", "not valid"],
        [JSON.stringify({ node: 3, validUntil: -1, writtenAt: 0, writer }), "validUntil"],
        [JSON.stringify({ node: 3, validUntil: 1.5, writtenAt: 0, writer }), "validUntil"],
        [JSON.stringify({ node: 3, validUntil: 5, writtenAt: 0 }), "writer"],
        [JSON.stringify({ node: 3, validUntil: 5, writtenAt: 0, writer: { ...writer, startTime: "abc" } }), "writer.startTime"],
        [JSON.stringify({ node: "3", validUntil: 5, writtenAt: 0, writer }), "node"]
      ]
      for (const [content, mentions] of damaged) {
        fs.writeFileSync(file, content)
        const error = yield* Effect.flip(NodeLease.read(file, node))
        expect(error).toMatchObject({ _tag: "StorageCorrupt", code: "BLX_STORAGE_CORRUPT", node, subject: file })
        expect(error.message).toContain(`the lease file ${file} of node 3 is not valid`)
        expect(error.message).toContain(mentions)
        expect(error.message).toContain("the fencing watchdog takes the lease as expired")
      }

      fs.writeFileSync(file, JSON.stringify({ node: 4, validUntil: 5, writtenAt: 0, writer }))
      const other = yield* Effect.flip(NodeLease.read(file, node))
      expect(other).toMatchObject({ _tag: "WrongDataDir", code: "BLX_WRONG_DATA_DIR", node, subject: file })
      expect(other.message).toContain("belongs to node 4, not node 3")
    }))

  it.scoped("a lease that cannot be written is a BLX_STORAGE_IO naming the file", () =>
    Effect.gen(function* () {
      const dir = yield* scopedTempDir("lease")
      const blocker = path.join(dir, "data")
      fs.writeFileSync(blocker, "a file where the data directory should be")
      const lease = new NodeLease.NodeLease({ node, validUntil: 5, writtenAt: 0, writer: selfIdentity() })
      const error = yield* Effect.flip(NodeLease.write(leaseIn(dir), lease))
      expect(error).toMatchObject({ _tag: "StorageIo", code: "BLX_STORAGE_IO", node, subject: leaseIn(dir) })
      expect(error.message).toContain("cannot write the lease file")
    }))
})
