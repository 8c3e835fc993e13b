import { describe, expect, it } from "vitest"
import { answeredIncarnation, deriveKey, HandshakeVerifier, incarnationHeaders, sign, toQuery } from "../../src/net/PeerAuth.js"

const secret = "s3cret"
const url = (query: string) => `/raft?${query}`

describe("PeerAuth handshake", () => {
  it("accepts a fresh handshake signed with the cluster secret, once", () => {
    const v = new HandshakeVerifier(secret, "", 2, 30_000)
    const q = toQuery(sign(deriveKey(secret), "", 1, 2, 1_000_000))
    expect(v.verify(url(q), 1_000_500)).toMatchObject({ ok: true, from: 1, incarnation: undefined })
    expect(v.verify(url(q), 1_000_600)).toMatchObject({ ok: false, reason: expect.stringContaining("replayed") })
  })

  it("refuses a wrong secret, another cluster id, another receiver, a stale clock and garbage", () => {
    const v = new HandshakeVerifier(secret, "prod", 2, 30_000)
    const now = 5_000_000
    expect(v.verify(url(toQuery(sign(deriveKey("wrong"), "prod", 1, 2, now))), now)).toMatchObject({ ok: false, reason: expect.stringContaining("MAC") })
    expect(v.verify(url(toQuery(sign(deriveKey(secret), "staging", 1, 2, now))), now)).toMatchObject({ ok: false, reason: expect.stringContaining("MAC") })
    expect(v.verify(url(toQuery(sign(deriveKey(secret), "prod", 1, 3, now))), now)).toMatchObject({ ok: false, reason: expect.stringContaining("addressed to node 3") })
    // Signed with the secret, but "from" the receiver itself (the peer fuzzer found that such a
    // connection's messages reach Raft as the node's own and can stop a leader from committing).
    expect(v.verify(url(toQuery(sign(deriveKey(secret), "prod", 2, 2, now))), now)).toMatchObject({ ok: false, reason: expect.stringContaining("this node itself") })
    expect(v.verify(url(toQuery(sign(deriveKey(secret), "prod", 1, 2, now - 31_000))), now)).toMatchObject({ ok: false, reason: expect.stringContaining("stale") })
    expect(v.verify(url(toQuery(sign(deriveKey(secret), "prod", 1, 2, now + 31_000))), now)).toMatchObject({ ok: false })
    expect(v.verify("/raft", now)).toMatchObject({ ok: false, reason: expect.stringContaining("malformed") })
    expect(v.verify("/raft?from=1&to=2&ts=1&nonce=zz&mac=short", now)).toMatchObject({ ok: false })
    const good = sign(deriveKey(secret), "prod", 1, 2, now)
    // Tampering with any signed field breaks the MAC.
    expect(v.verify(url(toQuery({ ...good, from: 3 })), now)).toMatchObject({ ok: false, reason: expect.stringContaining("MAC") })
    expect(v.verify(url(toQuery({ ...good, ts: now + 1 })), now)).toMatchObject({ ok: false, reason: expect.stringContaining("MAC") })
    expect(v.verify(url(toQuery(good)), now)).toMatchObject({ ok: true, from: 1 })
  })

  it("carries the sender's incarnation, authenticated; refuses one altered or malformed; accepts none (an older release)", () => {
    const key = deriveKey(secret)
    const v = new HandshakeVerifier(secret, "prod", 2, 30_000)
    const now = 7_000_000
    const signed = sign(key, "prod", 1, 2, now, "3b1f2c3d-0000-4000-8000-00000000000a")
    expect(toQuery(signed)).toContain("&inc=3b1f2c3d-0000-4000-8000-00000000000a&incmac=")
    expect(v.verify(url(toQuery(signed)), now)).toEqual({ ok: true, from: 1, incarnation: "3b1f2c3d-0000-4000-8000-00000000000a", nonce: signed.nonce, key })
    // Another incarnation under the same MAC, one without its MAC, garbage: refused.
    const other = sign(key, "prod", 1, 2, now, "old-life")
    expect(v.verify(url(toQuery({ ...other, incarnation: { id: "new-life", mac: other.incarnation!.mac } })), now)).toMatchObject({ ok: false, reason: expect.stringContaining("incarnation MAC") })
    const bare = sign(key, "prod", 1, 2, now)
    expect(v.verify(url(`${toQuery(bare)}&inc=x`), now)).toMatchObject({ ok: false, reason: expect.stringContaining("malformed incarnation") })
    const spaced = sign(key, "prod", 1, 2, now, "a")
    expect(v.verify(url(toQuery(spaced).replace("inc=a", "inc=a%20b")), now)).toMatchObject({ ok: false, reason: expect.stringContaining("malformed incarnation") })
    // An incarnation MAC taken from another handshake (another nonce) does not pass either.
    const first = sign(key, "prod", 1, 2, now, "life")
    const second = sign(key, "prod", 1, 2, now)
    expect(v.verify(url(toQuery({ ...second, incarnation: first.incarnation })), now)).toMatchObject({ ok: false, reason: expect.stringContaining("incarnation MAC") })
  })

  it("the receiver's answer names its incarnation, bound to the handshake it answers", () => {
    const key = deriveKey(secret)
    const h = sign(key, "prod", 1, 2, 1_000)
    const headers = (lines: ReadonlyArray<string>) => Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 2)]))
    const answer = headers(incarnationHeaders(key, "prod", h, "b-life"))
    expect(answeredIncarnation(key, "prod", h, answer)).toEqual({ ok: true, incarnation: "b-life" })
    // No headers: a receiver of an older release.
    expect(answeredIncarnation(key, "prod", h, {})).toEqual({ ok: true, incarnation: undefined })
    // The answer to another handshake, another cluster, an altered incarnation, a missing MAC: refused.
    expect(answeredIncarnation(key, "prod", sign(key, "prod", 1, 2, 1_000), answer)).toMatchObject({ ok: false, reason: expect.stringContaining("not authenticated") })
    expect(answeredIncarnation(key, "staging", h, answer)).toMatchObject({ ok: false })
    expect(answeredIncarnation(key, "prod", h, { ...answer, "x-blixard-incarnation": "c-life" })).toMatchObject({ ok: false, reason: expect.stringContaining("not authenticated") })
    expect(answeredIncarnation(key, "prod", h, { "x-blixard-incarnation": "b-life" })).toMatchObject({ ok: false, reason: expect.stringContaining("malformed") })
  })

  it("with a keyring, accepts a handshake made with any of its secrets, answers with the sender's key, refuses others", () => {
    const [old, next, other] = ["old-cluster-secret", "next-cluster-secret", "other-cluster-secret"]
    let keyring: ReadonlyArray<string> = [next, old]
    const v = new HandshakeVerifier(() => keyring, "prod", 2, 30_000)
    const now = 9_000_000
    expect(v.verify(url(toQuery(sign(deriveKey(old), "prod", 1, 2, now))), now)).toMatchObject({ ok: true, from: 1, key: deriveKey(old) })
    expect(v.verify(url(toQuery(sign(deriveKey(next), "prod", 1, 2, now))), now)).toMatchObject({ ok: true, from: 1, key: deriveKey(next) })
    expect(v.verify(url(toQuery(sign(deriveKey(other), "prod", 1, 2, now))), now)).toMatchObject({ ok: false, reason: expect.stringContaining("MAC") })
    // The keyring is read at each handshake: once the old secret is dropped, it is refused.
    keyring = [next]
    expect(v.verify(url(toQuery(sign(deriveKey(old), "prod", 1, 2, now))), now)).toMatchObject({ ok: false, reason: expect.stringContaining("MAC") })
    expect(v.verify(url(toQuery(sign(deriveKey(next), "prod", 1, 2, now))), now)).toMatchObject({ ok: true })
  })
})
