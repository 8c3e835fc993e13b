/** Whose data directory this is: node id and incarnation, over real SQLite files. */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Schema } from "effect"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import * as NodeMeta from "../../src/storage/NodeMeta.js"
import { layerFile } from "../../src/storage/RaftStorage.js"
import { tempDir } from "../support/TempDir.js"

const claim = (dataDir: string, id: number) => {
  const filename = path.join(dataDir, "blixard.db")
  const node = Schema.decodeSync(NodeId)(id)
  return Effect.runPromiseExit(Effect.scoped(Effect.provide(NodeMeta.claim({ filename, node, dataDir }), layerFile({ filename, node }))))
}

const incarnation = async (dataDir: string, id: number): Promise<string> => {
  const exit = await claim(dataDir, id)
  if (Exit.isFailure(exit)) throw new Error(`claim failed: ${String(exit.cause)}`)
  return exit.value
}

describe("NodeMeta", () => {
  it("a data directory keeps its incarnation across restarts; a new directory for the same node is a new incarnation", async () => {
    const first = tempDir("meta")
    const a = await incarnation(first, 3)
    expect(a).toMatch(/^[0-9a-f-]{36}$/)
    expect(await incarnation(first, 3)).toBe(a)
    const emptied = tempDir("meta")
    const b = await incarnation(emptied, 3)
    expect(b).not.toBe(a)
  })

  it("a data directory made for another node is refused, naming its owner", async () => {
    const dir = tempDir("meta")
    await incarnation(dir, 3)
    const exit = await claim(dir, 4)
    expect(Exit.isFailure(exit)).toBe(true)
    expect(JSON.stringify(exit)).toContain("BLX_WRONG_DATA_DIR")
  })
})
