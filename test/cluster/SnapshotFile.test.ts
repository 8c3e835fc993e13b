import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import * as SnapshotFile from "../../src/cluster/SnapshotFile.js"
import * as C from "../../src/domain/Command.js"
import { CommandEnvelope } from "../../src/domain/Command.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { Resources } from "../../src/domain/Resources.js"
import { VmName } from "../../src/domain/VmName.js"
import { InlineConfig, RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"

/** A state with two nodes, `vms` VMs and a cluster id. */
const stateWith = (vms: number): ClusterState => {
  const state = new ClusterState()
  state.clusterId = "c0ffee00-0000-4000-8000-000000000001"
  let index = 0
  const run = (command: C.Command) => state.apply(++index, new CommandEnvelope({ command, proposedAt: 1_000 + index }))
  for (const id of [1, 2]) {
    run(
      new C.RegisterNode({
        info: new NodeInfo({
          id: NodeId.make(id),
          address: HostPort.make(`127.0.0.1:700${id}`),
          capacity: new Resources({ vcpus: 1024, memoryMiB: 1 << 20 }),
          labels: {},
          state: "active",
          health: "up"
        })
      })
    )
  }
  for (let i = 0; i < vms; i++) {
    // vm-0's inline config has multi-byte characters and newlines, which the format must keep.
    const source = i === 0 ? new InlineConfig({ module: "{ ... }: {\n  # zoë's VM ✓\n}\n" }) : new RunnerConfig({ path: `/nix/store/r${i}` })
    run(new C.CreateVm({ spec: new VmSpec({ name: VmName.make(`vm-${i}`), source, labels: { owner: "x" } }) }))
  }
  return state
}

const header = (state: ClusterState) =>
  new SnapshotFile.SnapshotHeader({
    magic: SnapshotFile.SnapshotMagic,
    format: SnapshotFile.SnapshotFormat,
    clusterId: state.clusterId,
    index: state.appliedIndex,
    term: 3,
    node: NodeId.make(1),
    createdAt: "2026-12-06T06:00:00.000Z"
  })

const fileOf = (state: ClusterState): Buffer => Buffer.from([...SnapshotFile.encode(header(state), state.snapshotView())].join(""), "utf8")

const problem = (bytes: Uint8Array): string => {
  const read = SnapshotFile.read(bytes, "backup.snap")
  if (Either.isRight(read)) throw new Error("the file was accepted")
  expect(read.left.code).toBe("BLX_SNAPSHOT_INVALID")
  expect(read.left.message).toContain("nothing was written")
  return read.left.message
}

describe("SnapshotFile", () => {
  it("reads back the state it wrote, with its header and checksum", () => {
    const state = stateWith(1_200) // several pieces of `snapshotView`
    const read = SnapshotFile.read(fileOf(state), "backup.snap")
    if (Either.isLeft(read)) throw new Error(read.left.message)
    expect(read.right.header.index).toBe(state.appliedIndex)
    expect(read.right.header.term).toBe(3)
    // The same state (a decoded record may list its fields in another order).
    expect(read.right.state.vms.size).toBe(1_200)
    expect(JSON.parse(read.right.state.snapshot())).toEqual(JSON.parse(state.snapshot()))
    expect(read.right.state.vms.get("vm-0")?.spec.source).toEqual(state.vms.get("vm-0")?.spec.source)
    expect(read.right.sha256).toMatch(/^[0-9a-f]{64}$/)
  })

  it("refuses a file cut short anywhere", () => {
    const file = fileOf(stateWith(20))
    // Every cut: inside the header, the state, the checksum line, and one byte short.
    for (const at of [0, 10, 100, Math.floor(file.length / 2), file.length - 40, file.length - 1]) {
      expect(problem(file.subarray(0, at)), `cut at ${at} of ${file.length}`).toMatch(/truncated or damaged|not a Blixard cluster snapshot/)
    }
    expect(problem(file.subarray(0, file.length - 1))).toContain("truncated or damaged")
  })

  it("refuses a file with one flipped bit, wherever it is", () => {
    const file = fileOf(stateWith(20))
    const headerEnd = file.indexOf(0x0a)
    for (const at of [headerEnd + 30, Math.floor(file.length / 2), file.lastIndexOf(0x0a, file.length - 2) - 5]) {
      const damaged = Buffer.from(file)
      damaged[at] = damaged[at]! ^ 0x04
      expect(problem(damaged), `flip at ${at}`).toMatch(/SHA-256|truncated or damaged/)
    }
  })

  it("says when a file is not a snapshot, or of another format", () => {
    expect(problem(Buffer.from("hello\n"))).toContain("not a Blixard cluster snapshot")
    expect(problem(Buffer.from(""))).toContain("not a Blixard cluster snapshot")
    const other = fileOf(stateWith(1)).toString("utf8").replace('"format":1', '"format":2')
    expect(problem(Buffer.from(other))).toContain("format 2; this blixard reads format 1")
  })

  it("refuses a state that fails its schema even when the checksum holds", () => {
    const state = stateWith(1)
    const text = state.snapshot().replace('"vcpus":1', '"vcpus":0')
    const bytes = Buffer.from([...SnapshotFile.encode(header(state), [text])].join(""), "utf8")
    expect(problem(bytes)).toContain("does not match this blixard's schema")
  })

  it("refuses a state that is not the one its header names", () => {
    const state = stateWith(1)
    const bytes = Buffer.from([...SnapshotFile.encode(new SnapshotFile.SnapshotHeader({ ...header(state), index: 99 }), state.snapshotView())].join(""), "utf8")
    expect(problem(bytes)).toContain("but the state in it is cluster")
  })
})
