import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { createHash } from "node:crypto"
import { sha256Hex } from "../../src/api/Auth.js"
import { formatJoinToken, idOfPresented, JoinTokenId, JoinTokenText, parseJoinToken, presented, PresentedJoinToken } from "../../src/domain/JoinToken.js"

const fingerprint = createHash("sha256").update("a CA's DER").digest("hex")
const id = JoinTokenId.make("0123456789abcdef")
const secret = "A".repeat(20) + "b_-9".repeat(5) + "xyz"

describe("join token text", () => {
  it("has k3s's shape, K10<CA sha256>::<id>.<secret>, and parses back into its parts", () => {
    expect(secret).toHaveLength(43)
    const text = formatJoinToken({ fingerprint, id, secret })
    expect(text).toBe(`K10${fingerprint}::${id}.${secret}`)
    expect(parseJoinToken(text)).toEqual(Either.right({ fingerprint, id, secret }))
    // Surrounding whitespace (a file's newline) is not part of it.
    expect(parseJoinToken(`  ${text}\n`)).toEqual(Either.right({ fingerprint, id, secret }))
    expect(Schema.is(JoinTokenText)(text)).toBe(true)
  })

  it("refuses anything else, without echoing the secret", () => {
    const good = formatJoinToken({ fingerprint, id, secret })
    for (const bad of [
      "",
      "garbage",
      good.slice(0, -1), // cut short
      `${good}x`, // an extra character
      good.replace("K10", "K11"),
      good.replace(fingerprint, fingerprint.toUpperCase()),
      good.replace("::", ":"),
      good.replace(`${id}.`, `${id}:`),
      good.replace(id, "0123456789abcdeg")
    ]) {
      const parsed = parseJoinToken(bad)
      expect(Either.isLeft(parsed), bad).toBe(true)
      if (Either.isLeft(parsed)) expect(parsed.left).not.toContain(secret)
      expect(Schema.is(JoinTokenText)(bad)).toBe(false)
    }
  })

  it("a joining node presents <id>.<secret> only; the cluster keeps the SHA-256 of that", () => {
    const shown = presented({ id, secret })
    expect(shown).toBe(`${id}.${secret}`)
    expect(Schema.is(PresentedJoinToken)(shown)).toBe(true)
    expect(Schema.is(PresentedJoinToken)(`K10${fingerprint}::${shown}`)).toBe(false)
    expect(idOfPresented(shown)).toBe(id)
    expect(sha256Hex(shown)).toBe(createHash("sha256").update(`${id}.${secret}`).digest("hex"))
    expect(sha256Hex(shown)).not.toBe(sha256Hex(`${id}.${secret.replace("A", "B")}`))
  })
})
