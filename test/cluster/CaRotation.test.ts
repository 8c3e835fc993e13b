/**
 * A CA rotation in the replicated state machine: it starts only with the new CA's key sealed to
 * exactly the current members, one at a time; members report they moved; finishing is refused,
 * naming the members still on the old CA, until all moved; a removed member leaves it; snapshots
 * carry it and replicas agree.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import { SealedKey } from "../../src/domain/CaRotation.js"
import * as C from "../../src/domain/Command.js"
import { CommandEnvelope } from "../../src/domain/Command.js"
import { NodeId } from "../../src/domain/NodeId.js"

const newCa = "f1".repeat(32)
const oldCa = "0a".repeat(32)
const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
const sealed = (node: number) => new SealedKey({ node: NodeId.make(node), ephemeralKey: "AA==", iv: "AA==", ciphertext: "AA==", tag: "AA==" })
const start = (nodes: ReadonlyArray<number>, fingerprint = newCa) =>
  new C.StartCaRotation({ ca: pem, fingerprint, previous: oldCa, keys: nodes.map(sealed) })
const moved = (node: number, fingerprint = newCa) => new C.CaRotationMoved({ node: NodeId.make(node), fingerprint })
const finish = (fingerprint = newCa) => new C.FinishCaRotation({ fingerprint })

class Replica {
  readonly state = new ClusterState()
  private index = 0
  constructor(members: ReadonlyArray<number>) {
    for (const id of members) this.state.applyMembership(++this.index, { type: "add", nodeId: id, address: `127.0.0.1:${7000 + id}` })
  }
  run(command: C.Command, at: number) {
    return this.state.apply(++this.index, new CommandEnvelope({ command, proposedAt: at }))
  }
  remove(node: number) {
    return this.state.applyMembership(++this.index, { type: "remove", nodeId: node })
  }
}

const code = (result: ReturnType<Replica["run"]>) => (Either.isLeft(result) ? result.left.code : "ok")
const message = (result: ReturnType<Replica["run"]>) => (Either.isLeft(result) ? result.left.message : "")

describe("a CA rotation in the state machine", () => {
  it("starts only with a key sealed to each current member, and not twice", () => {
    const r = new Replica([1, 2, 3])
    // Sealed to nodes 1 and 2 only (node 3 joined meanwhile): refused, nothing starts.
    const short = r.run(start([1, 2]), 1_000)
    expect(code(short)).toBe("BLX_CONFLICT")
    expect(message(short)).toMatch(/sealed to nodes 1, 2, but the members are 1, 2, 3/)
    expect(code(r.run(start([1, 2, 3, 4]), 1_000))).toBe("BLX_CONFLICT")
    expect(r.state.caRotation).toBeUndefined()
    expect(code(r.run(start([3, 1, 2]), 2_000))).toBe("ok")
    expect(r.state.caStatus().phase).toBe("rotating")
    expect(r.state.caStatus().rotation?.waiting).toEqual([1, 2, 3])
    expect(code(r.run(start([1, 2, 3], "f2".repeat(32)), 3_000))).toBe("BLX_CONFLICT")
    expect(r.state.caRotation?.fingerprint).toBe(newCa)
  })

  it("finishing is refused, naming the members on the old CA, until every member moved; then the new CA is in force", () => {
    const r = new Replica([1, 2, 3])
    expect(code(r.run(finish(), 500))).toBe("BLX_INVALID_ARGUMENT")
    r.run(start([1, 2, 3]), 1_000)
    expect(code(r.run(moved(1), 2_000))).toBe("ok")
    expect(code(r.run(moved(1), 2_100))).toBe("ok")
    expect(code(r.run(moved(2, "f2".repeat(32)), 2_200))).toBe("BLX_INVALID_ARGUMENT")
    const early = r.run(finish(), 3_000)
    expect(code(early)).toBe("BLX_CA_ROTATION_INCOMPLETE")
    expect(message(early)).toMatch(/nodes 2, 3 still hold only a certificate of the old CA/)
    expect(r.state.caStatus().rotation?.moved).toEqual([1])
    r.run(moved(3), 4_000)
    const still = r.run(finish(), 5_000)
    expect(message(still)).toMatch(/^node 2 still holds only a certificate of the old CA/)
    r.run(moved(2), 6_000)
    expect(code(r.run(finish("f2".repeat(32)), 7_000))).toBe("BLX_INVALID_ARGUMENT")
    expect(code(r.run(finish(), 7_000))).toBe("ok")
    expect(r.state.caRotation).toBeUndefined()
    expect(r.state.caStatus()).toMatchObject({ phase: "steady", fingerprint: newCa })
    // The next rotation must replace the CA now in force.
    expect(code(r.run(new C.StartCaRotation({ ca: pem, fingerprint: "f3".repeat(32), previous: oldCa, keys: [1, 2, 3].map(sealed) }), 8_000))).toBe("BLX_CONFLICT")
    expect(code(r.run(new C.StartCaRotation({ ca: pem, fingerprint: "f3".repeat(32), previous: newCa, keys: [1, 2, 3].map(sealed) }), 8_000))).toBe("ok")
  })

  it("a member removed during the rotation no longer holds it up, and its sealed copy leaves the state", () => {
    const r = new Replica([1, 2, 3])
    r.run(start([1, 2, 3]), 1_000)
    r.run(moved(1), 2_000)
    r.run(moved(2), 2_000)
    expect(code(r.run(finish(), 3_000))).toBe("BLX_CA_ROTATION_INCOMPLETE")
    r.remove(3)
    expect(r.state.caRotation?.keys.map((k) => k.node)).toEqual([1, 2])
    expect(code(r.run(finish(), 4_000))).toBe("ok")
  })

  it("snapshots carry the rotation; replicas applying the same entries agree", () => {
    const a = new Replica([1, 2])
    const b = new Replica([1, 2])
    for (const r of [a, b]) {
      r.run(start([1, 2]), 1_000)
      r.run(moved(2), 2_000)
    }
    const text = a.state.snapshot()
    expect(text).toBe(b.state.snapshot())
    const restored = ClusterState.restore(text)
    expect(restored.snapshot()).toBe(text)
    expect(restored.caStatus().rotation?.waiting).toEqual([1])
    // A snapshot from before rotations existed decodes with none.
    const older = JSON.parse(text) as Record<string, unknown>
    delete older.caRotation
    delete older.caInForce
    expect(ClusterState.restore(JSON.stringify(older)).caStatus()).toMatchObject({ phase: "steady", fingerprint: "" })
  })
})
