import { describe, expect, it } from "vitest"
import { deriveKey, HandshakeVerifier, sign, toQuery } from "../../src/net/PeerAuth.js"

const secret = "s3cret"
const url = (query: string) => `/raft?${query}`

describe("PeerAuth handshake", () => {
  it("accepts a fresh handshake signed with the cluster secret, once", () => {
    const v = new HandshakeVerifier(secret, "", 2, 30_000)
    const q = toQuery(sign(deriveKey(secret), "", 1, 2, 1_000_000))
    expect(v.verify(url(q), 1_000_500)).toEqual({ ok: true, from: 1 })
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
    expect(v.verify(url(toQuery(good)), now)).toEqual({ ok: true, from: 1 })
  })
})
