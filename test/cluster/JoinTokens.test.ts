/**
 * Join tokens in the replicated state machine: made with an expiry from the entry's own clock,
 * consumed once, refused when expired, revoked, or presented with the wrong secret — the same on
 * every replica whatever its own clock says.
 */
import { afterEach, describe, expect, it, vi } from "@effect/vitest"
import { Either, Schema } from "effect"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import * as C from "../../src/domain/Command.js"
import { CommandEnvelope } from "../../src/domain/Command.js"
import { JoinTokenId, JoinTokenRetentionMs } from "../../src/domain/JoinToken.js"
import { NodeId } from "../../src/domain/NodeId.js"

const tokenId = JoinTokenId.make("00112233445566aa")
const hash = "e".repeat(64)
const minute = 60_000

/** One replica: applies commands at the proposer's clock `at`. */
class Replica {
  readonly state = new ClusterState()
  private index = 0
  run(command: C.Command, at: number) {
    return this.state.apply(++this.index, new CommandEnvelope({ command, proposedAt: at }))
  }
}

const code = (result: ReturnType<Replica["run"]>) => (Either.isLeft(result) ? result.left.code : "ok")

afterEach(() => {
  vi.useRealTimers()
})

describe("join tokens in the state machine", () => {
  it("a token expires ttlMs after the entry that made it, and is kept as its hash only", () => {
    const r = new Replica()
    const made = r.run(new C.CreateJoinToken({ id: tokenId, hash, ttlMs: 10 * minute }), 5_000)
    expect(Either.isRight(made) && made.right.joinToken).toEqual({ id: tokenId, createdAt: 5_000, expiresAt: 5_000 + 10 * minute })
    expect(Either.isRight(made) && made.right.joinToken).not.toHaveProperty("hash")
    expect(r.state.joinTokens.get(tokenId)?.hash).toBe(hash)
    // The same id again is refused, not overwritten.
    expect(code(r.run(new C.CreateJoinToken({ id: tokenId, hash: "f".repeat(64), ttlMs: minute }), 6_000))).toBe("BLX_INVALID_ARGUMENT")
    expect(r.state.joinTokens.get(tokenId)?.hash).toBe(hash)
  })

  it("admits one node: the first consumption uses it up, a second (or a replay of the first) is BLX_JOIN_TOKEN_USED", () => {
    const r = new Replica()
    r.run(new C.CreateJoinToken({ id: tokenId, hash, ttlMs: minute }), 0)
    const first = new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4) })
    const used = r.run(first, 1_000)
    expect(Either.isRight(used) && used.right.joinToken).toMatchObject({ id: tokenId, usedBy: 4, usedAt: 1_000 })
    expect(code(r.run(first, 1_001))).toBe("BLX_JOIN_TOKEN_USED")
    const second = r.run(new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(5) }), 1_002)
    expect(code(second)).toBe("BLX_JOIN_TOKEN_USED")
    expect(Either.isLeft(second) && second.left.message).toMatch(/already used by node 4.*cluster token create/)
    expect(r.state.joinTokens.get(tokenId)).toMatchObject({ usedBy: 4, usedAt: 1_000 })
  })

  it("admits again the node that used it with the same key (its answer was lost), until it expires; no other node or key", () => {
    const key = "a".repeat(64)
    const entries: Array<[C.Command, number]> = [
      [new C.CreateJoinToken({ id: tokenId, hash, ttlMs: minute }), 0],
      [new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4), key }), 1_000],
      // The same node with the same key: a retry, admitted without changing the record.
      [new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4), key }), 2_000],
      // The same node with another key, another node with the same key, a retry without a key.
      [new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4), key: "b".repeat(64) }), 3_000],
      [new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(5), key }), 3_001],
      [new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4) }), 3_002],
      // The right secret is still needed, and the retry ends at the token's expiry.
      [new C.ConsumeJoinToken({ id: tokenId, hash: "f".repeat(64), node: NodeId.make(4), key }), 4_000],
      [new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4), key }), minute - 1],
      [new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4), key }), minute]
    ]
    const replicas = [new Replica(), new Replica(), new Replica()]
    const outcomes = replicas.map((r) => entries.map(([command, at]) => code(r.run(command, at))))
    expect(outcomes[0]).toEqual([
      "ok",
      "ok",
      "ok",
      "BLX_JOIN_TOKEN_USED",
      "BLX_JOIN_TOKEN_USED",
      "BLX_JOIN_TOKEN_USED",
      "BLX_JOIN_TOKEN_INVALID",
      "ok",
      "BLX_JOIN_TOKEN_EXPIRED"
    ])
    // Every replica decides alike and keeps the same record: used by node 4 at the first consumption.
    for (const r of replicas) {
      expect(r.state.joinTokens.get(tokenId)).toMatchObject({ usedBy: 4, usedAt: 1_000, usedKey: key })
      expect(r.state.snapshot()).toEqual(replicas[0]!.state.snapshot())
    }
    expect(outcomes[1]).toEqual(outcomes[0])
    expect(outcomes[2]).toEqual(outcomes[0])
    // What an admin sees of it names the node, not the key.
    const again = new Replica()
    again.run(entries[0]![0], 0)
    again.run(entries[1]![0], 1_000)
    const retried = again.run(entries[2]![0], 2_000)
    expect(Either.isRight(retried) && retried.right.joinToken).toEqual({ id: tokenId, createdAt: 0, expiresAt: minute, usedBy: 4, usedAt: 1_000 })
    // The key survives a snapshot; a record from before keys (none kept) admits no retry.
    expect(ClusterState.restore(again.state.snapshot()).joinTokens.get(tokenId)?.usedKey).toBe(key)
    const old = JSON.parse(again.state.snapshot())
    delete old.joinTokens[0].usedKey
    const restored = ClusterState.restore(JSON.stringify(old))
    expect(code(restored.apply(10, new CommandEnvelope({ command: entries[2]![0], proposedAt: 5_000 })))).toBe("BLX_JOIN_TOKEN_USED")
  })

  it("a log entry from before keys decodes, and uses the token up for good", () => {
    const entry = Schema.decodeUnknownSync(C.Command)({ _tag: "ConsumeJoinToken", id: tokenId, hash, node: 4 })
    const r = new Replica()
    r.run(new C.CreateJoinToken({ id: tokenId, hash, ttlMs: minute }), 0)
    expect(code(r.run(entry, 1))).toBe("ok")
    expect(r.state.joinTokens.get(tokenId)?.usedKey).toBeUndefined()
    expect(code(r.run(entry, 2))).toBe("BLX_JOIN_TOKEN_USED")
  })

  it("a wrong secret (another hash) or an unknown id is BLX_JOIN_TOKEN_INVALID and uses nothing up", () => {
    const r = new Replica()
    r.run(new C.CreateJoinToken({ id: tokenId, hash, ttlMs: minute }), 0)
    expect(code(r.run(new C.ConsumeJoinToken({ id: tokenId, hash: "f".repeat(64), node: NodeId.make(4) }), 1))).toBe("BLX_JOIN_TOKEN_INVALID")
    expect(code(r.run(new C.ConsumeJoinToken({ id: JoinTokenId.make("ffffffffffffffff"), hash, node: NodeId.make(4) }), 2))).toBe("BLX_JOIN_TOKEN_INVALID")
    expect(r.state.joinTokens.get(tokenId)?.usedBy).toBeUndefined()
    expect(code(r.run(new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4) }), 3))).toBe("ok")
  })

  it("is refused from its expiry on (the entry's clock): BLX_JOIN_TOKEN_EXPIRED", () => {
    const r = new Replica()
    r.run(new C.CreateJoinToken({ id: tokenId, hash, ttlMs: minute }), 0)
    const expired = r.run(new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4) }), minute)
    expect(code(expired)).toBe("BLX_JOIN_TOKEN_EXPIRED")
    expect(Either.isLeft(expired) && expired.left.message).toMatch(/expired at 1970-01-01T00:01:00.000Z.*cluster token create/)
    expect(r.state.joinTokens.get(tokenId)?.usedBy).toBeUndefined()
    // A millisecond before, it would have been good.
    const early = new Replica()
    early.run(new C.CreateJoinToken({ id: tokenId, hash, ttlMs: minute }), 0)
    expect(code(early.run(new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4) }), minute - 1))).toBe("ok")
  })

  it("every replica decides alike, whatever its own clock says", () => {
    const entries: Array<[C.Command, number]> = [
      [new C.CreateJoinToken({ id: tokenId, hash, ttlMs: minute }), 1_000],
      [new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4) }), 1_000 + minute - 1]
    ]
    const results = [0, 10 * minute, 1_000 + minute * 1_000].map((clock) => {
      vi.useFakeTimers({ now: clock })
      const r = new Replica()
      const outcome = entries.map(([command, at]) => code(r.run(command, at)))
      vi.useRealTimers()
      return { outcome, snapshot: r.state.snapshot() }
    })
    expect(results[0]!.outcome).toEqual(["ok", "ok"])
    for (const other of results.slice(1)) expect(other).toEqual(results[0])
  })

  it("a revoked token admits no one; revoking an unknown id is BLX_TOKEN_NOT_FOUND", () => {
    const r = new Replica()
    r.run(new C.CreateJoinToken({ id: tokenId, hash, ttlMs: minute }), 0)
    expect(code(r.run(new C.RevokeJoinToken({ id: tokenId }), 1))).toBe("ok")
    expect(code(r.run(new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4) }), 2))).toBe("BLX_JOIN_TOKEN_INVALID")
    expect(code(r.run(new C.RevokeJoinToken({ id: tokenId }), 3))).toBe("BLX_TOKEN_NOT_FOUND")
  })

  it("is carried in snapshots (a snapshot from before join tokens has none), and forgotten a day after it expired", () => {
    const r = new Replica()
    r.run(new C.CreateJoinToken({ id: tokenId, hash, ttlMs: minute }), 0)
    r.run(new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(4) }), 1)
    const restored = ClusterState.restore(r.state.snapshot())
    expect(restored.joinTokens.get(tokenId)).toEqual(r.state.joinTokens.get(tokenId))
    expect(code(new Replica().run(new C.ConsumeJoinToken({ id: tokenId, hash, node: NodeId.make(5) }), 2))).toBe("BLX_JOIN_TOKEN_INVALID")
    const old = JSON.parse(r.state.snapshot())
    delete old.joinTokens
    expect(ClusterState.restore(JSON.stringify(old)).joinTokens.size).toBe(0)

    const other = JoinTokenId.make("00112233445566bb")
    r.run(new C.CreateJoinToken({ id: other, hash, ttlMs: minute }), minute + JoinTokenRetentionMs)
    expect(r.state.joinTokens.has(tokenId)).toBe(true)
    r.run(new C.CreateJoinToken({ id: JoinTokenId.make("00112233445566cc"), hash, ttlMs: minute }), minute + JoinTokenRetentionMs + 1)
    expect(r.state.joinTokens.has(tokenId)).toBe(false)
    expect(r.state.joinTokens.has(other)).toBe(true)
  })
})
