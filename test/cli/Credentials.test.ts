/**
 * Which token the CLI sends: `--token-file`, `BLIXARD_API_TOKEN`, `--data-dir`, then, for a node on
 * this host only, `BLIXARD_DATA_DIR` and the default data directories found through the node's id.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { isLoopbackAddr, resolveToken } from "../../src/cli/Credentials.js"
import { tempDir } from "./harness.js"

const tokenIn = (dir: string, token: string) => {
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, "api-token"), `${token}\n`, { mode: 0o600 })
  return dir
}

/** The node's id, and whether it was asked. */
const idOf = (id: number | undefined) => {
  const asked = { count: 0 }
  return { asked, effect: Effect.sync(() => (asked.count++, id)) }
}

describe("resolveToken", () => {
  it.effect("the first source given wins: --token-file, BLIXARD_API_TOKEN, --data-dir", () =>
    Effect.gen(function* () {
      const root = tempDir()
      const file = path.join(root, "t")
      fs.writeFileSync(file, "from-file\n")
      const dir = tokenIn(path.join(root, "data"), "from-data-dir")
      const id = idOf(1)
      expect(yield* resolveToken({ addr: "10.0.0.1:7001", tokenFile: file, dataDir: dir }, { BLIXARD_API_TOKEN: "env" }, id.effect)).toBe("from-file")
      expect(yield* resolveToken({ addr: "10.0.0.1:7001", dataDir: dir }, { BLIXARD_API_TOKEN: " env " }, id.effect)).toBe("env")
      // Told explicitly, the CLI sends a data directory's token to another host too.
      expect(yield* resolveToken({ addr: "10.0.0.1:7001", dataDir: dir }, {}, id.effect)).toBe("from-data-dir")
      expect(id.asked.count).toBe(0)
      const missing = yield* Effect.flip(resolveToken({ addr: "10.0.0.1:7001", tokenFile: path.join(root, "nope") }, {}, id.effect))
      expect(missing.code).toBe("BLX_INVALID_ARGUMENT")
      expect(missing.message).toContain("--token-file")
    })
  )

  it.effect("guesses only for a node on this host: BLIXARD_DATA_DIR, then ./blixard-data/node-ID through the node's id", () =>
    Effect.gen(function* () {
      const root = tempDir()
      const daemonDir = tokenIn(path.join(root, "daemon"), "daemon-token")
      expect(yield* resolveToken({ addr: "127.0.0.1:7001" }, { BLIXARD_DATA_DIR: daemonDir }, idOf(1).effect)).toBe("daemon-token")
      // A daemon's BLIXARD_DATA_DIR left in the environment never goes to another host.
      const remote = idOf(1)
      expect(yield* resolveToken({ addr: "10.0.0.1:7001" }, { BLIXARD_DATA_DIR: daemonDir }, remote.effect)).toBeUndefined()
      expect(remote.asked.count).toBe(0)

      tokenIn(path.join(root, "blixard-data", "node-3"), "node-3-token")
      const cwd = process.cwd()
      try {
        process.chdir(root)
        expect(yield* resolveToken({ addr: "127.0.0.1:7003" }, {}, idOf(3).effect)).toBe("node-3-token")
        expect(yield* resolveToken({ addr: "[::1]:7003" }, {}, idOf(3).effect)).toBe("node-3-token")
        // Another node's directory is not used; nothing found is no token (the node's 401 says where it is).
        expect(yield* resolveToken({ addr: "127.0.0.1:7004" }, {}, idOf(4).effect)).toBeUndefined()
        expect(yield* resolveToken({ addr: "127.0.0.1:7004" }, {}, idOf(undefined).effect)).toBeUndefined()
      } finally {
        process.chdir(cwd)
      }
    })
  )

  it("knows a loopback address", () => {
    for (const addr of ["127.0.0.1:7001", "127.1.2.3:1", "[::1]:7001", "localhost:7001"]) expect(isLoopbackAddr(addr)).toBe(true)
    for (const addr of ["10.0.0.1:7001", "[fe80::1]:7001", "example.com:7001", "127.0.0.1.example.com:1"]) expect(isLoopbackAddr(addr)).toBe(false)
  })
})
