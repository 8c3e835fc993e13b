/**
 * `blixard cluster ca status|rotate|finish`: the phase and who moved, as text and JSON; a refused
 * finish exits 1 with its code and the members it names.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { formatCaStatus } from "../../src/cli/CertCommand.js"
import { CaStatus } from "../../src/domain/CaRotation.js"
import { CaRotationIncomplete } from "../../src/domain/Errors.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { fakeClient, runBlixard } from "./harness.js"

const rotating = new CaStatus({
  phase: "rotating",
  fingerprint: "0a".repeat(32),
  rotation: { fingerprint: "f1".repeat(32), previous: "0a".repeat(32), startedAt: 0, moved: [NodeId.make(1)], waiting: [NodeId.make(2), NodeId.make(3)] }
})

describe("cluster ca", () => {
  it("status says the phase, both CAs and who is still on the old one", () => {
    const text = formatCaStatus(rotating, false)
    expect(text).toMatch(/^phase: +rotating/)
    expect(text).toMatch(/old CA: +0a0a0a0a0a0a0a0a…/)
    expect(text).toMatch(/new CA: +f1f1f1f1f1f1f1f1…/)
    expect(text).toMatch(/moved to the new CA: +1\nstill on the old CA: +2, 3/)
    expect(formatCaStatus(new CaStatus({ phase: "steady", fingerprint: "" }), false)).toMatch(/phase: steady\nCA: +\(the CA the cluster was founded with\)/)
    expect(JSON.parse(formatCaStatus(rotating, true)).rotation.waiting).toEqual([2, 3])
  })

  it.effect("rotate and finish ask the node; a refused finish exits 1 with BLX_CA_ROTATION_INCOMPLETE", () =>
    Effect.gen(function* () {
      const client = fakeClient({ rotateCa: () => Effect.succeed(rotating) })
      const started = yield* runBlixard(["cluster", "ca", "rotate", "--addr", "10.0.0.1:7001"], { client: client.layer })
      expect([started.code, client.calls.map((c) => c.method)]).toEqual([0, ["rotateCa"]])
      expect(started.stdout).toMatch(/still on the old CA: +2, 3/)
      const refused = yield* runBlixard(["cluster", "ca", "finish"], {
        client: fakeClient({ finishCaRotation: () => Effect.fail(new CaRotationIncomplete({ subject: "2,3", message: "nodes 2, 3 still hold only a certificate of the old CA" })) }).layer
      })
      expect(refused.code).toBe(1)
      expect(refused.stderr).toMatch(/BLX_CA_ROTATION_INCOMPLETE: nodes 2, 3 still hold only a certificate of the old CA/)
    })
  )
})
