import { describe, expect, it } from "vitest"
import { formatMessage } from "../../src/cli/EventsCommand.js"
import type { EventBatch } from "../../src/domain/ClusterEvent.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { VmName } from "../../src/domain/VmName.js"

const batch: EventBatch = {
  index: 42,
  term: 3,
  at: 1000,
  events: [
    { type: "vm.created", vm: VmName.make("web"), revision: 2 },
    { type: "vm.pending", vm: VmName.make("web"), reason: "no node can host web", revision: 2 },
    { type: "node.down", node: NodeId.make(2) },
    { type: "leader.changed", term: 3, leader: NodeId.make(1) },
    { type: "token.created", id: "0123456789abcdef" as never, role: "read-only" }
  ]
}

describe("blixard events prints", () => {
  it("one line per event: index, type, subject, then the other fields", () => {
    expect(formatMessage({ _tag: "Batch", batch }, false).split("\n")).toEqual([
      "42  vm.created  web  revision=2",
      `42  vm.pending  web  reason="no node can host web"  revision=2`,
      "42  node.down  node 2",
      "42  leader.changed  term=3  leader=1",
      "42  token.created  token 0123456789abcdef  role=read-only"
    ])
  })

  it("with --json, one line per entry (its batch) or per resync", () => {
    expect(JSON.parse(formatMessage({ _tag: "Batch", batch }, true))).toEqual(batch)
    const resync = { index: 7, reason: "compacted" as const, message: "list again" }
    expect(formatMessage({ _tag: "Resync", resync }, true)).toBe(JSON.stringify({ resync }))
    expect(formatMessage({ _tag: "Resync", resync }, false)).toBe("7  resync  (compacted): list again")
  })
})
