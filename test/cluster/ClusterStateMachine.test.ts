import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import { TokenId } from "../../src/domain/ApiToken.js"
import { CertificateSerial } from "../../src/domain/Certificate.js"
import { SealedKey } from "../../src/domain/CaRotation.js"
import * as C from "../../src/domain/Command.js"
import { JoinTokenId } from "../../src/domain/JoinToken.js"
import { HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import { Constraint, FlakeConfig, InlineConfig, RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import { BuildProgress, VmStatus } from "../../src/domain/VmStatus.js"
import type { Entry } from "../../src/raft/Types.js"

const id = (n: number) => NodeId.make(n)
const vmName = (s: string) => VmName.make(s)
const node = (n: number, memoryMiB = 4096) =>
  new NodeInfo({
    id: id(n),
    address: HostPort.make(`127.0.0.1:${7000 + n}`),
    capacity: new Resources({ vcpus: 8, memoryMiB }),
    labels: { zone: n % 2 === 0 ? "b" : "a" },
    state: "active",
    health: "up"
  })

const encode = Schema.encodeSync(C.CommandEnvelopeJson)

/** One command of every kind, with every optional field somewhere, and a retried request id. */
const commands: ReadonlyArray<readonly [C.Command, string?]> = [
  [new C.RegisterNode({ info: node(1) })],
  [new C.RegisterNode({ info: node(2) })],
  [new C.CreateVm({ spec: new VmSpec({ name: vmName("web"), source: new RunnerConfig({ path: "/runners/web" }) }) }), "req-1"],
  [
    new C.CreateVm({
      spec: new VmSpec({
        name: vmName("db"),
        source: new InlineConfig({ module: "{ ... }: { }" }),
        vcpus: 2,
        memoryMiB: 1024,
        labels: { tier: "db" },
        constraints: [new Constraint({ key: "zone", op: "eq", value: "b" })],
        antiAffinity: "db",
        restartPolicy: "always"
      })
    })
  ],
  [new C.CreateVm({ spec: new VmSpec({ name: vmName("big"), source: new FlakeConfig({ ref: "github:me/vms#big" }), memoryMiB: 8192 }) })],
  [new C.CreateVm({ spec: new VmSpec({ name: vmName("web"), source: new RunnerConfig({ path: "/runners/web" }) }) }), "req-1"],
  [new C.StartVm({ name: vmName("web"), ifRevision: 2 })],
  [new C.StopVm({ name: vmName("web"), ifRevision: 1 })],
  [new C.SetVmLabels({ name: vmName("web"), labels: { team: "a" } })],
  [new C.UpdateVm({ name: vmName("web"), source: new FlakeConfig({ ref: "github:me/vms#web" }), vcpus: 2, memoryMiB: 256, restartPolicy: "never" })],
  [new C.UpdateVm({ name: vmName("db"), memoryMiB: 16 * 1024 * 1024, ifRevision: 1 })],
  [
    new C.ReportVmStatus({
      name: vmName("web"),
      node: id(1),
      status: new VmStatus({ phase: "failed", since: 5, exitCode: 3, lastError: "exited", restarts: 1 })
    })
  ],
  [new C.ReportVmStatus({ name: vmName("db"), node: id(2), status: new VmStatus({ phase: "running", since: 6, pid: 42, restarts: 0, generation: 1, build: new BuildProgress({ state: "failed", generation: 2, startedAt: 5, lastLine: "error: …" }) }) })],
  [
    new C.ReportVmStatuses({
      node: id(2),
      reports: [
        { name: vmName("db"), status: new VmStatus({ phase: "stopped", since: 7, exitCode: 0, restarts: 0 }) },
        { name: vmName("web"), status: new VmStatus({ phase: "running", since: 7, pid: 7, restarts: 0 }) },
        { name: vmName("db"), status: new VmStatus({ phase: "running", since: 8, pid: 43, restarts: 1 }) }
      ]
    })
  ],
  [new C.StartVm({ name: vmName("web") })],
  [new C.SetNodeState({ id: id(1), state: "draining" })],
  [new C.SetNodeHealth({ id: id(2), health: "down", at: 7 })],
  [new C.RegisterNode({ info: node(3, 16384) })],
  [new C.RemoveNode({ id: id(2) })],
  [new C.DeleteVm({ name: vmName("db") })],
  [new C.RemoveNode({ id: id(9) })],
  [new C.CreateApiToken({ id: TokenId.make("0123456789abcdef"), name: "ci", role: "operator", hash: "a".repeat(64) })],
  [new C.CreateApiToken({ id: TokenId.make("fedcba9876543210"), role: "read-only", hash: "b".repeat(64) })],
  [new C.RevokeApiToken({ id: TokenId.make("0123456789abcdef") })],
  [new C.RevokeApiToken({ id: TokenId.make("0123456789abcdef") })],
  [new C.CreateJoinToken({ id: JoinTokenId.make("00000000000000aa"), hash: "e".repeat(64), ttlMs: 60_000 })],
  [new C.ConsumeJoinToken({ id: JoinTokenId.make("00000000000000aa"), hash: "e".repeat(64), node: id(4) })],
  [new C.ConsumeJoinToken({ id: JoinTokenId.make("00000000000000aa"), hash: "e".repeat(64), node: id(5) })],
  [new C.RevokeJoinToken({ id: JoinTokenId.make("00000000000000aa") })],
  [new C.RecordCertificate({ node: id(1), serial: CertificateSerial.make("a1"), fingerprint: "c".repeat(64), notAfter: 10_000_000 })],
  [new C.RecordCertificate({ node: id(3), serial: CertificateSerial.make("b3"), fingerprint: "d".repeat(64), notAfter: 10_000_000 }), "req-cert"],
  [new C.RevokeCertificate({ node: id(1), reason: "key leaked" }), "req-revoke"],
  [new C.RevokeCertificate({ node: id(1), reason: "key leaked" }), "req-revoke"],
  [new C.RevokeCertificate({ serial: CertificateSerial.make("ff"), reason: "stolen" })],
  [new C.RecordCertificate({ node: id(1), serial: CertificateSerial.make("a1"), fingerprint: "c".repeat(64), notAfter: 10_000_000 })],
  [
    new C.StartCaRotation({
      ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
      fingerprint: "f1".repeat(32),
      previous: "0a".repeat(32),
      keys: [new SealedKey({ node: id(1), ephemeralKey: "AA==", iv: "AA==", ciphertext: "AA==", tag: "AA==" })]
    })
  ],
  [new C.CaRotationMoved({ node: id(1), fingerprint: "f1".repeat(32) })],
  [new C.FinishCaRotation({ fingerprint: "f1".repeat(32) })],
  // Refused (node 1 registered no log version, the oldest), then one at the cluster's own: no change.
  [new C.SetClusterVersion({ version: 3, members: [id(1)] })],
  [new C.SetClusterVersion({ version: 2, members: [] })]
]

const envelope = (i: number, [command, requestId]: readonly [C.Command, string?]) =>
  new C.CommandEnvelope({ command, proposedAt: 1_000 + i, ...(requestId !== undefined ? { requestId } : {}) })

const entry = (index: number, data: string): Entry => ({ index, term: 1, kind: "normal", data })

describe("ClusterStateHolder: committed entries", () => {
  it("every kind of command decodes from its entry and applies exactly as the command itself", () => {
    expect(new Set(commands.map(([c]) => c._tag)).size).toBe(C.Command.members.length)
    const holder = new ClusterStateHolder()
    const direct = new ClusterState()
    commands.forEach((command, i) => {
      const fromEntry = holder.applyEntry(entry(i + 1, encode(envelope(i, command))))
      const applied = direct.apply(i + 1, envelope(i, command))
      expect(fromEntry).toEqual(applied)
      expect(holder.current.snapshot()).toBe(direct.snapshot())
    })
    // The VMs and nodes the state keeps are instances of their classes, whichever way they came.
    for (const vm of holder.current.vms.values()) {
      expect(vm.spec).toBeInstanceOf(VmSpec)
      expect(vm.status).toBeInstanceOf(VmStatus)
    }
    for (const info of holder.current.nodes.values()) expect(info).toBeInstanceOf(NodeInfo)
  })

  it("an entry that is not a valid command is refused with BLX_INVALID_ARGUMENT, changes nothing, and is applied", () => {
    const holder = new ClusterStateHolder()
    holder.applyEntry(entry(1, encode(envelope(0, [new C.RegisterNode({ info: node(1) })]))))
    const before = holder.current.snapshot()
    const valid = JSON.parse(encode(envelope(1, [new C.StopVm({ name: vmName("web") })])))
    const invalid = [
      "not json",
      JSON.stringify({ ...valid, command: { _tag: "Reboot", name: "web" } }),
      JSON.stringify({ ...valid, command: { ...valid.command, name: "Not_A_Name" } }),
      JSON.stringify({ ...valid, command: { _tag: "CreateVm", spec: { name: "web", source: { _tag: "Runner", path: "relative" } } } }),
      JSON.stringify({ ...valid, proposedAt: -1 }),
      JSON.stringify({ ...valid, requestId: "spaces are not allowed" }),
      JSON.stringify({ proposedAt: 1 })
    ]
    invalid.forEach((data, i) => {
      const result = holder.applyEntry(entry(i + 2, data))
      expect(result !== undefined && Either.isLeft(result) && result.left.code).toBe("BLX_INVALID_ARGUMENT")
      expect(holder.current.appliedIndex).toBe(i + 2)
    })
    expect(holder.current.snapshot()).toBe(before.replace('"appliedIndex":1', `"appliedIndex":${invalid.length + 1}`))
  })
})
