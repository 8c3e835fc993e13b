/** A host's incarnation: made once per data directory, kept across restarts, refused when altered. */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import { incarnationOf } from "../../src/node/HostDaemon.js"

describe("incarnationOf", () => {
  it.effect("is made at the first start, the same at the next, another in another data directory; an altered file is refused", () =>
    Effect.gen(function* () {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-host-"))
      try {
        const [a, b] = [path.join(root, "a"), path.join(root, "b")]
        for (const dir of [a, b]) fs.mkdirSync(dir)
        const first = yield* incarnationOf(a, NodeId.make(4))
        expect(first).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
        expect(yield* incarnationOf(a, NodeId.make(4))).toBe(first)
        expect(yield* incarnationOf(b, NodeId.make(4))).not.toBe(first)
        expect(fs.readdirSync(a)).toEqual(["host-incarnation"])

        fs.writeFileSync(path.join(a, "host-incarnation"), "not-a-uuid\n")
        const refused = yield* Effect.flip(incarnationOf(a, NodeId.make(4)))
        expect(refused.code).toBe("BLX_WRONG_DATA_DIR")
        expect(refused.message).toContain("wait until node 4 is marked down")
      } finally {
        fs.rmSync(root, { recursive: true, force: true })
      }
    })
  )
})
