/**
 * The revocation list in the replicated state machine: nodes record the certificates they hold, an
 * admin revokes a node's (or one serial), removing a node revokes its certificates, expired entries
 * are forgotten, snapshots carry it all (and older snapshots without it still decode), and every
 * replica ends in the same state.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import { CertificateSerial, normalizeSerial } from "../../src/domain/Certificate.js"
import { EventBatch } from "../../src/domain/ClusterEvent.js"
import * as C from "../../src/domain/Command.js"
import { CommandEnvelope, CommandEnvelopeJson } from "../../src/domain/Command.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { batchJson, EventLog } from "../../src/events/EventLog.js"

const day = 24 * 60 * 60 * 1000
const serial = (s: string) => CertificateSerial.make(s)
const record = (node: number, s: string, notAfter = 400 * day) =>
  new C.RecordCertificate({ node: NodeId.make(node), serial: serial(s), fingerprint: s.padStart(64, "0").slice(-64), notAfter })

class Replica {
  readonly state = new ClusterState()
  private index = 0
  run(command: C.Command, at: number) {
    return this.state.apply(++this.index, new CommandEnvelope({ command, proposedAt: at }))
  }
  remove(node: number) {
    return this.state.applyMembership(++this.index, { type: "remove", nodeId: node })
  }
  add(node: number) {
    return this.state.applyMembership(++this.index, { type: "add", nodeId: node, address: `10.0.0.${node}:7001` })
  }
}

const issued = (node: number, s: string, how: "join" | "renewal") => new C.RecordCertificate({ ...record(node, s), issued: how })

const code = (result: ReturnType<Replica["run"]>) => (Either.isLeft(result) ? result.left.code : "ok")

describe("the certificate revocation list", () => {
  it("serials are one spelling: upper case, colons and leading zeros do not make another", () => {
    expect(normalizeSerial("00:1A:2b")).toBe("1a2b")
    expect(normalizeSerial("0")).toBe("0")
    expect(Schema.is(CertificateSerial)(normalizeSerial("0F0E"))).toBe(true)
  })

  it("a node's recorded certificates are revoked by node; a revoked serial cannot be recorded again (BLX_CERT_REVOKED)", () => {
    const r = new Replica()
    expect(code(r.run(record(2, "a1"), 1_000))).toBe("ok")
    expect(code(r.run(record(2, "a2"), 2_000))).toBe("ok")
    expect(code(r.run(record(3, "b1"), 3_000))).toBe("ok")
    const revoked = r.run(new C.RevokeCertificate({ node: NodeId.make(2), reason: "key leaked" }), 4_000)
    expect(Either.isRight(revoked) && revoked.right.revoked?.map((e) => [e.serial, e.node, e.reason, e.revokedAt])).toEqual([
      ["a1", 2, "key leaked", 4_000],
      ["a2", 2, "key leaked", 4_000]
    ])
    expect([...r.state.revoked.keys()]).toEqual(["a1", "a2"])
    expect([...r.state.certificates.keys()]).toEqual(["b1"])
    const again = r.run(record(2, "a1"), 5_000)
    expect(code(again)).toBe("BLX_CERT_REVOKED")
    expect(Either.isLeft(again) && again.left.message).toMatch(/node 2's certificate a1 is revoked \(key leaked\).*join token/)
    // A node with nothing recorded: refused, with what to do instead.
    const none = r.run(new C.RevokeCertificate({ node: NodeId.make(9), reason: "x" }), 6_000)
    expect(code(none)).toBe("BLX_NODE_NOT_FOUND")
    expect(Either.isLeft(none) && none.left.message).toMatch(/revoke it by serial number/)
  })

  it("a serial nobody reported is listed as given; one of another node than said is refused", () => {
    const r = new Replica()
    r.run(record(3, "b1"), 0)
    const unknown = r.run(new C.RevokeCertificate({ serial: serial("ff"), reason: "stolen laptop" }), 10)
    expect(Either.isRight(unknown) && unknown.right.revoked).toMatchObject([{ serial: "ff", reason: "stolen laptop", revokedAt: 10 }])
    expect(code(r.run(new C.RevokeCertificate({ serial: serial("b1"), node: NodeId.make(4), reason: "x" }), 11))).toBe("BLX_INVALID_ARGUMENT")
    expect(r.state.revoked.has("b1")).toBe(false)
    // Revoking it twice changes nothing.
    expect(Either.isRight(r.run(new C.RevokeCertificate({ serial: serial("ff"), reason: "again" }), 12))).toBe(true)
    expect(r.state.revoked.get("ff")?.reason).toBe("stolen laptop")
  })

  it("removing a node from the cluster revokes every certificate it reported", () => {
    const r = new Replica()
    r.run(record(2, "a1"), 0)
    r.run(record(3, "b1"), 0)
    const revoked = r.remove(2)
    expect(revoked.map((e) => [e.serial, e.node, e.reason])).toEqual([["a1", 2, "node 2 was removed from the cluster"]])
    expect(r.state.revoked.get("a1")).not.toHaveProperty("revokedAt")
    expect(r.state.revoked.has("b1")).toBe(false)
  })

  it("a certificate the signer recorded at a join is revoked when its node is removed, though the node never reported it", () => {
    const r = new Replica()
    r.add(1)
    // Node 4 joined (node 1 signed and recorded its certificate) and was removed before it reported anything.
    expect(code(r.run(issued(4, "d1", "join"), 1_000))).toBe("ok")
    r.add(4)
    expect(r.remove(4).map((e) => [e.serial, e.node, e.reason])).toEqual([["d1", 4, "node 4 was removed from the cluster"]])
    expect(r.state.certificates.has("d1")).toBe(false)
  })

  it("a renewal recorded after its node was removed is refused (BLX_FORBIDDEN): the signer does not hand it out", () => {
    const r = new Replica()
    r.add(1)
    r.add(2)
    expect(code(r.run(issued(2, "a1", "renewal"), 1_000))).toBe("ok")
    r.remove(2)
    const late = r.run(issued(2, "a2", "renewal"), 2_000)
    expect(code(late)).toBe("BLX_FORBIDDEN")
    expect(Either.isLeft(late) && late.left.message).toMatch(/node 2 is not a member of the cluster: its renewed certificate a2 is not issued/)
    expect(r.state.certificates.has("a2")).toBe(false)
    expect([...r.state.revoked.keys()]).toEqual(["a1"])
  })

  it("a serial recorded as one node's is not recorded as another's (BLX_INVALID_ARGUMENT)", () => {
    const r = new Replica()
    r.run(record(2, "a1"), 0)
    const other = r.run(issued(3, "a1", "join"), 1)
    expect(code(other)).toBe("BLX_INVALID_ARGUMENT")
    expect(Either.isLeft(other) && other.left.message).toBe("certificate a1 is recorded as node 2's, not node 3's")
    expect(r.state.certificates.get("a1")?.node).toBe(2)
    // The node's own report of the certificate its signer recorded is taken.
    expect(code(r.run(record(2, "a1"), 2))).toBe("ok")
  })

  it("records and revocations are forgotten once their certificate has expired (at the entry's clock)", () => {
    const r = new Replica()
    r.run(record(2, "a1", 10 * day), 0)
    r.run(record(3, "b1", 10 * day), 0)
    r.run(new C.RevokeCertificate({ node: NodeId.make(2), reason: "x" }), 1)
    r.run(record(4, "c1", 100 * day), 10 * day - 1)
    expect([...r.state.certificates.keys()]).toEqual(["b1", "c1"])
    expect([...r.state.revoked.keys()]).toEqual(["a1"])
    r.run(record(4, "c2", 100 * day), 10 * day + 1)
    expect([...r.state.certificates.keys()]).toEqual(["c1", "c2"])
    expect([...r.state.revoked.keys()]).toEqual([])
  })

  it("a snapshot carries records and revocations; one written before they existed decodes with none", () => {
    const r = new Replica()
    r.run(record(2, "a1"), 0)
    r.run(record(3, "b1"), 0)
    r.run(new C.RevokeCertificate({ serial: serial("ff"), reason: "stolen" }), 5)
    r.remove(3)
    const text = r.state.snapshot()
    const restored = ClusterState.restore(text)
    expect(restored.snapshot()).toBe(text)
    expect([...restored.certificates.keys()]).toEqual(["a1"])
    expect([...restored.revoked.keys()]).toEqual(["b1", "ff"])
    const old = JSON.parse(text) as Record<string, unknown>
    delete old.certificates
    delete old.revoked
    const before = ClusterState.restore(JSON.stringify(old))
    expect(before.certificates.size).toBe(0)
    expect(before.revoked.size).toBe(0)
  })

  it("replicas applying the same entries agree, whatever order their commands were recorded in memory", () => {
    const commands: Array<[C.Command | "remove", number]> = [
      [record(3, "c3"), 1],
      [record(1, "a1"), 2],
      [record(2, "b2"), 3],
      [new C.RevokeCertificate({ node: NodeId.make(1), reason: "r" }), 4],
      ["remove", 5],
      [new C.RevokeCertificate({ serial: serial("dd"), reason: "s" }), 6]
    ]
    const replicas = [new Replica(), new Replica()]
    for (const replica of replicas) for (const [command, at] of commands) command === "remove" ? replica.remove(2) : replica.run(command, at)
    expect(replicas[0]!.state.snapshot()).toBe(replicas[1]!.state.snapshot())
    expect([...replicas[0]!.state.revoked.keys()].sort()).toEqual(["a1", "b2", "dd"])
  })

  it("the commands cross the log as JSON: an entry of either decodes to the same command", () => {
    const encoded = Schema.encodeSync(CommandEnvelopeJson)(new CommandEnvelope({ command: new C.RevokeCertificate({ node: NodeId.make(2), reason: "r" }), proposedAt: 1 }))
    expect(Schema.decodeSync(CommandEnvelopeJson)(encoded).command).toEqual(new C.RevokeCertificate({ node: NodeId.make(2), reason: "r" }))
    expect(() => Schema.decodeUnknownSync(CommandEnvelopeJson)(JSON.stringify({ command: { _tag: "RecordCertificate", node: 2, serial: "XYZ", fingerprint: "0", notAfter: 1 }, proposedAt: 1 }))).toThrow()
    // A signer's record carries how it issued the certificate; an entry of an older version has no `issued` and decodes as a node's report.
    expect(Schema.decodeSync(CommandEnvelopeJson)(Schema.encodeSync(CommandEnvelopeJson)(new CommandEnvelope({ command: issued(2, "a1", "renewal"), proposedAt: 1 }))).command).toEqual(issued(2, "a1", "renewal"))
    const older = JSON.stringify({ command: { _tag: "RecordCertificate", node: 2, serial: "a1", fingerprint: "0".repeat(62) + "a1", notAfter: 1 }, proposedAt: 1 })
    expect(Schema.decodeSync(CommandEnvelopeJson)(older).command).toEqual(record(2, "a1", 1))
  })

  it("revocations are events (cert.revoked), by an admin and by a node's removal", () => {
    const holder = new ClusterStateHolder(new EventLog(100))
    const normal = (index: number, command: C.Command) => {
      const envelope = new CommandEnvelope({ command, proposedAt: 1000 + index })
      holder.applyEntry({ index, term: 1, kind: "normal", data: Schema.encodeSync(CommandEnvelopeJson)(envelope) })
    }
    normal(1, record(2, "a1"))
    normal(2, record(3, "b1"))
    normal(3, new C.RevokeCertificate({ node: NodeId.make(3), reason: "key leaked" }))
    holder.applyEntry({ index: 4, term: 1, kind: "confChange", data: JSON.stringify({ type: "remove", nodeId: 2 }) })
    const batches = (holder.events.after(0, 100) ?? []).map((batch) => Schema.decodeSync(Schema.parseJson(EventBatch))(batchJson(batch)))
    expect(batches.flatMap((b) => b.events).filter((e) => e.type === "cert.revoked")).toEqual([
      { type: "cert.revoked", serial: "b1", node: 3, reason: "key leaked" },
      { type: "cert.revoked", serial: "a1", node: 2, reason: "node 2 was removed from the cluster" }
    ])
  })
})
