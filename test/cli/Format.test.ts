import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { VmRecord } from "../../src/domain/VmStatus.js"
import { ClusterStatus, MemberStatus } from "../../src/domain/ClusterStatus.js"
import {
  formatClusterStatus,
  formatVm,
  formatVmChange,
  formatVmDeleted,
  formatVmList,
  renderTable
} from "../../src/cli/Format.js"
import { clusterStatus, nodeInfo, vmRecord } from "./harness.js"

describe("renderTable", () => {
  it("pads every column to its widest cell and trims trailing blanks", () => {
    expect(renderTable(["A", "LONG"], [["wide-cell", "x"], ["b", ""]])).toBe(
      ["A           LONG", "wide-cell   x", "b"].join("\n")
    )
  })
})

describe("formatVmList", () => {
  const records = [
    vmRecord("web", { node: 2, vcpus: 2, memoryMiB: 1024, restarts: 1 }),
    vmRecord("db", { phase: "pending", pendingReason: "no node has 64 vcpus free" }),
    vmRecord("cache", { node: 3, desired: "stopped", phase: "stopped" })
  ]

  it("prints one aligned row per VM, sorted by name, with the hosting node or '-'", () => {
    const lines = formatVmList(records, false).split("\n")
    expect(lines).toHaveLength(4)
    expect(lines[0]?.split(/\s+/)).toEqual(["NAME", "DESIRED", "PHASE", "NODE", "VCPUS", "MEMORY", "RESTARTS", "NOTE"])
    expect(lines.slice(1).map((line) => line.split(/\s+/)[0])).toEqual(["cache", "db", "web"])
    expect(lines[2]?.split(/\s{3,}/)).toEqual(["db", "running", "pending", "-", "1", "512 MiB", "0", "no node has 64 vcpus free"])
    expect(lines[3]?.split(/\s{3,}/)).toEqual(["web", "running", "running", "2", "2", "1024 MiB", "1"])
    expect(lines[1]).toMatch(/^cache\s+stopped\s+stopped\s+3\s/)
    // Columns line up: every row's PHASE starts where the header's does.
    const phaseAt = lines[0]?.indexOf("PHASE")
    for (const line of lines.slice(1)) expect(line.slice(phaseAt).match(/^(pending|running|stopped)/)).not.toBeNull()
  })

  it("says so when there are no VMs", () => {
    expect(formatVmList([], false)).toBe("No VMs.")
    expect(JSON.parse(formatVmList([], true))).toEqual([])
  })

  it("prints JSON that decodes back to the same records", () => {
    const decoded = Schema.decodeUnknownSync(Schema.Array(VmRecord))(JSON.parse(formatVmList(records, true)))
    expect(decoded).toEqual(records)
  })
})

describe("formatVm", () => {
  it("lists the fields a person needs, one per line", () => {
    const text = formatVm(vmRecord("web", { node: 2, lastError: "runner exited with 1" }), false)
    expect(text).toContain("name:          web")
    expect(text).toMatch(/^phase:\s+running since 2026-01-02T03:04:05.000Z$/m)
    expect(text).toMatch(/^node:\s+2$/m)
    expect(text).toMatch(/^last error:\s+runner exited with 1$/m)
    expect(text).toMatch(/^source:\s+flake github:me\/vms#web$/m)
    expect(text).toMatch(/^restart:\s+on-failure$/m)
  })

  it("says when a VM is not placed", () => {
    expect(formatVm(vmRecord("db", { phase: "pending", pendingReason: "no capacity" }), false)).toMatch(
      /^node:\s+- \(not placed\)\npending:\s+no capacity$/m
    )
  })

  it("says when a VM is moving off its node (stopped there first), in the table and the answer of a write too", () => {
    const record = new VmRecord({ ...vmRecord("web", { node: 2 }), moving: 7 })
    expect(formatVm(record, false)).toMatch(/^moving: +moving off node 2: stopping it there first, then placed on another node \(since revision 7\)$/m)
    expect(formatVmList([record], false).split("\n")[1]).toMatch(/moving off node 2: stopping it there first$/)
    expect(formatVmChange("updated", record, false)).toBe("updated VM web (desired running, on node 2, moving off node 2: stopping it there first)")
  })

  it("says what a move off a node of an older version waits for", () => {
    const movingReason = "waits for node 2 to be upgraded or marked down: its version does not stop and release VMs moving off it"
    const record = new VmRecord({ ...vmRecord("web", { node: 2 }), moving: 7, movingReason })
    expect(formatVm(record, false)).toMatch(/^moving: +moving off node 2: waits for node 2 to be upgraded or marked down: .* \(since revision 7\)$/m)
    expect(formatVmList([record], false).split("\n")[1]).toMatch(/moving off node 2: waits for node 2 to be upgraded or marked down: .*off it$/)
  })

  it("prints the record as JSON with --json", () => {
    const record = vmRecord("web", { node: 2 })
    expect(Schema.decodeUnknownSync(VmRecord)(JSON.parse(formatVm(record, true)))).toEqual(record)
  })
})

describe("write answers", () => {
  it("name the VM, its desired state and where it is", () => {
    expect(formatVmChange("started", vmRecord("web", { node: 2 }), false)).toBe(
      "started VM web (desired running, on node 2)"
    )
    expect(formatVmChange("created", vmRecord("db", { pendingReason: "no capacity" }), false)).toBe(
      "created VM db (desired running, pending placement: no capacity)"
    )
    expect(formatVmDeleted("web", false)).toBe("deleted VM web")
    expect(JSON.parse(formatVmDeleted("web", true))).toEqual({ deleted: "web" })
  })
})

describe("formatClusterStatus", () => {
  const status = clusterStatus(2, [
    nodeInfo(3, "10.0.0.3:7001"),
    nodeInfo(1, "10.0.0.1:7001", { zone: "eu-1" }),
    nodeInfo(2, "10.0.0.2:7001")
  ])

  it("names the leader and marks it in the member table, sorted by id", () => {
    const lines = formatClusterStatus(status, false).split("\n")
    expect(lines[0]).toBe("leader: node 2, term 4, commit 42, applied 42 (answered by node 1)")
    expect(lines[1]?.split(/\s{3,}/)).toEqual(["ID", "ADDRESS", "ROLE", "MATCH", "LAG", "LAST CONTACT", "LOG VERSION"])
    expect(lines.slice(2).map((line) => line.split(/\s+/)[0])).toEqual(["1", "2*", "3"])
    expect(lines[2]?.split(/\s{3,}/)).toEqual(["1", "10.0.0.1:7001", "follower", "42", "1", "12 ms ago", "-"])
    expect(lines[3]?.split(/\s{3,}/)).toEqual(["2*", "10.0.0.2:7001", "leader", "42", "0", "-", "-"])
  })

  it("shows the cluster's log version and each member's, marking a member behind it", () => {
    const versioned = new ClusterStatus({
      ...status,
      clusterVersion: 2,
      members: status.members.map((m) => new MemberStatus({ ...m, logVersion: m.id === 3 ? 1 : 2 }))
    })
    const lines = formatClusterStatus(versioned, false).split("\n")
    expect(lines[0]).toBe("leader: node 2, term 4, commit 42, applied 42, log version 2 (answered by node 1)")
    expect(lines[2]?.split(/\s{3,}/).at(-1)).toBe("2")
    expect(lines[4]?.split(/\s{3,}/).at(-1)).toBe("1 (behind)")
  })

  it("says when there is no leader", () => {
    expect(formatClusterStatus(clusterStatus(undefined, []), false)).toBe(
      "no leader (election in progress), term 4, commit 42, applied 42 (answered by node 1)\nNo members."
    )
  })

  it("prints JSON that decodes back to the status", () => {
    expect(Schema.decodeUnknownSync(ClusterStatus)(JSON.parse(formatClusterStatus(status, true)))).toEqual(status)
  })
})
