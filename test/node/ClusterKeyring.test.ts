/**
 * The cluster secret keyring (`ClusterKeyring.ts`): the file's schema, following the file without a
 * restart (an invalid one keeps the last good keyring), and fingerprints that never show a secret.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Logger, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Auth from "../../src/api/Auth.js"
import { NodeId } from "../../src/domain/NodeId.js"
import * as ClusterKeyring from "../../src/node/ClusterKeyring.js"
import { NodeConfig } from "../../src/node/Config.js"
import { tempDir } from "../support/TempDir.js"

const node = NodeId.make(3)
const old = "old-cluster-secret-0123456789"
const next = "new-cluster-secret-9876543210"

const parse = (text: string) => ClusterKeyring.parseKeyring(text, "/etc/blixard/secret", node)

/** Polls `check` until it holds, failing after the deadline. */
const eventually = (what: string, check: () => boolean, deadlineMs = 10_000) =>
  Effect.gen(function* () {
    const until = Date.now() + deadlineMs
    while (!check()) {
      if (Date.now() > until) return yield* Effect.fail(new Error(`timed out waiting for: ${what}`))
      yield* Effect.sleep(Duration.millis(10))
    }
  })

describe("the cluster secret file", () => {
  it("holds 1 to 4 secrets, one a line, in order; blank lines and surrounding spaces are skipped", () => {
    expect(parse(`${old}\n`)).toEqual(Either.right([old]))
    expect(parse(`  ${next}\r\n\n${old}\n\n`)).toEqual(Either.right([next, old]))
  })

  it("one line is one secret, taken as earlier releases took it, short or with spaces inside", () => {
    expect(parse("short\n")).toEqual(Either.right(["short"]))
    expect(parse("  an old secret with spaces \n\n")).toEqual(Either.right(["an old secret with spaces"]))
  })

  it("refuses, naming the file and never a secret: empty, short, spaces, too many, a duplicate", () => {
    const cases: Array<[string, RegExp]> = [
      ["\n\n", /holds no secret/],
      [`${old}\nshort-secret\n`, /secret 2: .*at least 16 characters/],
      [`${old}\nhas a space inside it, long enough\n`, /secret 2: .*printable ASCII without spaces/],
      [[1, 2, 3, 4, 5].map((i) => `${old}-${i}`).join("\n"), /at most 4 secrets/],
      [`${old}\n${next}\n${old}\n`, /appears twice/]
    ]
    for (const [text, why] of cases) {
      const refused = parse(text)
      expect(Either.isLeft(refused), text).toBe(true)
      if (Either.isRight(refused)) continue
      expect(refused.left.code).toBe("BLX_CONFIG_INVALID")
      expect(refused.left.subject).toBe("/etc/blixard/secret")
      expect(refused.left.message).toContain("the cluster secret file /etc/blixard/secret is not a valid keyring")
      expect(refused.left.message).toMatch(why)
      for (const secret of text.split("\n").filter((l) => l.length > 0)) expect(refused.left.message).not.toContain(secret)
    }
  })

  it("a node whose file is invalid does not start: load fails with the file's error", () =>
    Effect.gen(function* () {
      const dir = tempDir("keyring-load")
      const file = path.join(dir, "secret")
      fs.writeFileSync(file, `${old}\nshort\n`)
      const config = Schema.decodeUnknownSync(NodeConfig)({ id: 3, bind: "127.0.0.1:7003", dataDir: dir, clusterSecretFile: file })
      const failed = yield* Effect.flip(ClusterKeyring.load(config))
      expect(failed.message).toContain(file)
      fs.writeFileSync(file, `${next}\n${old}\n`)
      const live = yield* ClusterKeyring.load(config)
      expect([live.primary, live.secrets, live.source]).toEqual([next, [next, old], "file"])
    }).pipe(Effect.runPromise))
})

describe("following the file", () => {
  it.scopedLive("a changed file is used without a restart; an invalid one keeps the last good keyring and says so", () =>
    Effect.gen(function* () {
      const file = path.join(tempDir("keyring-follow"), "secret")
      fs.writeFileSync(file, `${old}\n`)
      const live = new ClusterKeyring.LiveKeyring([old], file, "file")
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => void logs.push(Array.isArray(message) ? message.join(" ") : String(message)))
      yield* Effect.forkScoped(ClusterKeyring.follow(live, node, 20).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger))))

      fs.writeFileSync(file, `${old}\n${next}\n`)
      yield* eventually("the second secret is accepted", () => live.secrets.length === 2)
      expect(live.primary).toBe(old)
      fs.writeFileSync(file, `${next}\n${old}\n`)
      yield* eventually("the new secret is used", () => live.primary === next)

      // Broken (a duplicate): the last good keyring stays, and the log names the file and what to do.
      fs.writeFileSync(file, `${next}\n${next}\n`)
      yield* eventually("the error is logged", () => logs.some((l) => l.includes("appears twice")))
      const error = logs.find((l) => l.includes("appears twice"))!
      expect(error).toContain(file)
      expect(error).toContain("keeps its last good keyring")
      expect(live.secrets).toEqual([next, old])
      for (const line of logs) {
        expect(line).not.toContain(old)
        expect(line).not.toContain(next)
      }

      // Fixed: taken at once.
      fs.writeFileSync(file, `${next}\n`)
      yield* eventually("the old secret is dropped", () => live.secrets.length === 1)
      expect(live.secrets).toEqual([next])
    })
  )
})

describe("fingerprints", () => {
  it("are 16 hex characters, the same for the same secret, different for another, and show nothing of the secret", () => {
    const a = ClusterKeyring.fingerprint(old)
    expect(a).toMatch(/^[0-9a-f]{16}$/)
    expect(ClusterKeyring.fingerprint(old)).toBe(a)
    expect(ClusterKeyring.fingerprint(next)).not.toBe(a)
    // Not a plain hash of the secret, nor a node credential's MAC, nor a prefix of either.
    const hex = Buffer.from(old).toString("hex")
    expect(hex).not.toContain(a)
    expect(Auth.nodeCredential(old, 3)).not.toContain(a)
    const live = new ClusterKeyring.LiveKeyring([next, old], undefined, "file")
    const shown = JSON.stringify(live.fingerprints())
    expect(shown).not.toContain(old)
    expect(shown).not.toContain(next)
    expect(live.fingerprints()).toMatchObject({ uses: ClusterKeyring.fingerprint(next), accepts: [ClusterKeyring.fingerprint(next), a] })
  })
})

describe("node credentials with a keyring", () => {
  it("a credential made from any secret of the keyring is accepted, as the keyring is now; others are refused", () => {
    let ring: ReadonlyArray<string> = [next, old]
    const check = Auth.makeAuthenticate({ clusterSecret: () => ring })
    const as = (secret: string) => check(`Bearer ${Auth.nodeCredential(secret, 2)}`, "10.0.0.2")
    expect(as(old)).toEqual(Either.right({ kind: "node", node: 2 }))
    expect(as(next)).toEqual(Either.right({ kind: "node", node: 2 }))
    expect(Either.isLeft(as("a-third-cluster-secret"))).toBe(true)
    ring = [next]
    expect(Either.isLeft(as(old))).toBe(true)
    expect(as(next)).toEqual(Either.right({ kind: "node", node: 2 }))
  })
})
