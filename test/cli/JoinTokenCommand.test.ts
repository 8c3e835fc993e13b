import { describe, expect, it } from "@effect/vitest"
import { formatJoinTokenList, parseDuration } from "../../src/cli/JoinTokenCommand.js"
import { JoinTokenId, JoinTokenInfo } from "../../src/domain/JoinToken.js"
import { NodeId } from "../../src/domain/NodeId.js"

describe("cluster token", () => {
  it("--ttl takes 90s, 30m, 1h, 7d, 500ms and sums such as 1h30m; nothing else", () => {
    expect(parseDuration("90s")).toBe(90_000)
    expect(parseDuration("30m")).toBe(1_800_000)
    expect(parseDuration("1h")).toBe(3_600_000)
    expect(parseDuration("7d")).toBe(604_800_000)
    expect(parseDuration("500ms")).toBe(500)
    expect(parseDuration("1h30m")).toBe(5_400_000)
    for (const bad of ["", "1", "h", "1 h", "-1h", "1.5h", "1w", "1hh", "1h 30m"]) expect(parseDuration(bad), bad).toBeUndefined()
  })

  it("list says whether each token is unused, used (by which node) or expired", () => {
    const now = 10_000
    const tokens = [
      new JoinTokenInfo({ id: JoinTokenId.make("00000000000000aa"), createdAt: 0, expiresAt: 20_000 }),
      new JoinTokenInfo({ id: JoinTokenId.make("00000000000000bb"), createdAt: 0, expiresAt: 20_000, usedBy: NodeId.make(4), usedAt: 5_000 }),
      new JoinTokenInfo({ id: JoinTokenId.make("00000000000000cc"), createdAt: 0, expiresAt: 10_000 })
    ]
    const lines = formatJoinTokenList(tokens, false, now).split("\n")
    expect(lines[0]).toMatch(/^ID +STATE +CREATED +EXPIRES$/)
    expect(lines[1]).toMatch(/^00000000000000aa +unused /)
    expect(lines[2]).toMatch(/^00000000000000bb +used by node 4 /)
    expect(lines[3]).toMatch(/^00000000000000cc +expired /)
    expect(JSON.parse(formatJoinTokenList(tokens, true, now))).toEqual([
      { id: "00000000000000aa", createdAt: 0, expiresAt: 20_000 },
      { id: "00000000000000bb", createdAt: 0, expiresAt: 20_000, usedBy: 4, usedAt: 5_000 },
      { id: "00000000000000cc", createdAt: 0, expiresAt: 10_000 }
    ])
    expect(formatJoinTokenList([], false, now)).toContain("blixard cluster token create")
  })
})
