/**
 * Sealing the new CA's key to one member: the member it is sealed to opens it; another member, a
 * changed context (another node's slot, another CA) or an altered copy does not.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { randomUUID } from "node:crypto"
import { SealedKey } from "../../src/domain/CaRotation.js"
import * as KeySeal from "../../src/net/KeySeal.js"
import * as Tls from "../../src/net/Tls.js"

const cluster = randomUUID()

const members = Effect.gen(function* () {
  const ca = yield* Tls.createCa(cluster)
  const issue = (node: number) =>
    Effect.gen(function* () {
      const request = yield* Tls.createRequest(node)
      return { cert: yield* Tls.signRequest({ ...ca, clusterId: cluster, node, csr: request.csr, names: ["127.0.0.1"] }), key: request.key }
    })
  return { one: yield* issue(1), two: yield* issue(2) }
})

describe("a CA key sealed to one member", () => {
  it.effect("opens with that member's key only, and only in its own context", () =>
    Effect.gen(function* () {
      const { one, two } = yield* members
      const secret = (yield* Tls.createCa(cluster)).caKey
      const context = KeySeal.caKeyContext(cluster, 1, "ab".repeat(32))
      const sealed = KeySeal.seal(secret, 1, one.cert, context)
      expect(sealed.ciphertext).not.toContain("PRIVATE")
      expect(Buffer.from(sealed.ciphertext, "base64").toString("utf8")).not.toContain("PRIVATE KEY")
      expect(KeySeal.open(sealed, one.key, context)).toEqual(Either.right(secret))
      // Another member (its own key) cannot open it.
      const other = KeySeal.open(sealed, two.key, context)
      expect(Either.isLeft(other) && other.left).toMatch(/does not open with this key/)
      // Moved to another slot or rotation: the context differs, authentication fails.
      expect(Either.isLeft(KeySeal.open(sealed, one.key, KeySeal.caKeyContext(cluster, 2, "ab".repeat(32))))).toBe(true)
      expect(Either.isLeft(KeySeal.open(sealed, one.key, KeySeal.caKeyContext(cluster, 1, "cd".repeat(32))))).toBe(true)
      // One bit of the ciphertext flipped: refused.
      const bytes = Buffer.from(sealed.ciphertext, "base64")
      bytes[0] = bytes[0]! ^ 1
      expect(Either.isLeft(KeySeal.open(new SealedKey({ ...sealed, ciphertext: bytes.toString("base64") }), one.key, context))).toBe(true)
      // Two seals of the same key differ (fresh ephemeral key and iv each time).
      expect(KeySeal.seal(secret, 1, one.cert, context).ciphertext).not.toBe(sealed.ciphertext)
    })
  )
})
