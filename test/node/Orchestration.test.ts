/**
 * What a node registers: this version advertises that it releases VMs moving off it and its log
 * version, and a record of the node without them (written by its previous version) is not current,
 * so the node registers again.
 */
import { describe, expect, it } from "vitest"
import { HostPort, NodeInfo, ReleasesMoves, releasesMoves } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import { LogVersion } from "../../src/cluster/ClusterVersion.js"
import { registration, registrationCurrent } from "../../src/node/Orchestration.js"

const offer = { advertise: HostPort.make("127.0.0.1:7002"), capacity: new Resources({ vcpus: 4, memoryMiB: 4096 }), labels: { rack: "a" } }

describe("registration", () => {
  it("advertises releases-moves", () => {
    const info = registration(NodeId.make(2), offer, [])
    expect(info.capabilities).toEqual([ReleasesMoves])
    expect(releasesMoves(info)).toBe(true)
  })

  it("a record of the node from its previous version (no capabilities) is not current; the cluster's state and health do not count", () => {
    const wanted = registration(NodeId.make(2), offer, ["legacy"])
    const { capabilities: _, ...old } = wanted
    const before = new NodeInfo(old)
    expect(releasesMoves(before)).toBe(false)
    expect(registrationCurrent(before, wanted)).toBe(false)
    expect(registrationCurrent(undefined, wanted)).toBe(false)
    expect(registrationCurrent(new NodeInfo({ ...wanted, state: "draining", health: "down" }), wanted)).toBe(true)
    expect(registrationCurrent(new NodeInfo({ ...wanted, foreignVms: [] }), wanted)).toBe(false)
  })

  it("advertises its release's log version; a record without it (or with another) is not current, so an upgraded node registers again", () => {
    const wanted = registration(NodeId.make(2), offer, [])
    expect(wanted.logVersion).toBe(LogVersion)
    const { logVersion: _, ...old } = wanted
    expect(registrationCurrent(new NodeInfo(old), wanted)).toBe(false)
    expect(registrationCurrent(new NodeInfo({ ...wanted, logVersion: LogVersion - 1 }), wanted)).toBe(false)
    expect(registrationCurrent(new NodeInfo({ ...wanted }), wanted)).toBe(true)
  })
})
