/**
 * `GET /v1/cluster/secret` on a member (`NodeControlPlane.secretStatus`): its own keyring and each
 * other member's answer, one that does not answer named with why, and hosts by the secret their
 * credentials were made from (the latest any member saw; members are not listed as hosts).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Auth from "../../src/api/Auth.js"
import type { ControlPlaneShape } from "../../src/api/ControlPlane.js"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import { Unavailable } from "../../src/domain/Errors.js"
import type { RaftNodeShape } from "../../src/raft/RaftNode.js"
import * as ClusterKeyring from "../../src/node/ClusterKeyring.js"
import * as NodeControlPlane from "../../src/node/NodeControlPlane.js"

const old = "old-cluster-secret-0123456789"
const next = "new-cluster-secret-9876543210"
const address = (id: number) => `127.0.0.1:${7000 + id}`

describe("cluster secret status", () => {
  it.live("lists every member's fingerprints, a silent member with why, and hosts by what they use", () =>
    Effect.gen(function* () {
      const rings = new Map([
        [1, new ClusterKeyring.LiveKeyring([next, old], undefined, "file")],
        [2, new ClusterKeyring.LiveKeyring([old, next], undefined, "received")]
      ])
      const state = new ClusterStateHolder()
      for (const id of [1, 2, 3]) state.current.members.set(id, address(id))
      const planes = new Map<string, ControlPlaneShape>()
      for (const [id, ring] of rings) {
        planes.set(
          address(id),
          NodeControlPlane.make({ raft: { id } as RaftNodeShape, state, remote: (a) => planes.get(a)!, secretFingerprints: () => ring.fingerprints() })
        )
      }
      planes.set(address(3), { secretFingerprints: Effect.fail(new Unavailable({ message: "connection refused" })) } as unknown as ControlPlaneShape)
      // Host 7 called node 1 with the old secret, then node 2 with the new one; member 3 called node 1.
      const check1 = Auth.makeAuthenticate({ clusterSecret: () => rings.get(1)!.secrets, nodeCredentialSeen: (n, s) => rings.get(1)!.heardFrom(n, s) })
      const check2 = Auth.makeAuthenticate({ clusterSecret: () => rings.get(2)!.secrets, nodeCredentialSeen: (n, s) => rings.get(2)!.heardFrom(n, s) })
      check1(`Bearer ${Auth.nodeCredential(old, 7)}`, "10.0.0.7")
      check1(`Bearer ${Auth.nodeCredential(next, 3)}`, "10.0.0.3")
      yield* Effect.sleep("2 millis")
      check2(`Bearer ${Auth.nodeCredential(next, 7)}`, "10.0.0.7")

      const status = yield* planes.get(address(1))!.secretStatus!
      expect(status.askedBy).toBe(1)
      expect(status.members.map((m) => [m.node, m.fingerprints?.uses, m.fingerprints?.accepts, m.fingerprints?.source])).toEqual([
        [1, ClusterKeyring.fingerprint(next), [ClusterKeyring.fingerprint(next), ClusterKeyring.fingerprint(old)], "file"],
        [2, ClusterKeyring.fingerprint(old), [ClusterKeyring.fingerprint(old), ClusterKeyring.fingerprint(next)], "received"],
        [3, undefined, undefined, undefined]
      ])
      expect(status.members[2]!.problem).toContain("connection refused")
      expect(status.hosts.map((h) => [h.node, h.uses])).toEqual([[7, ClusterKeyring.fingerprint(next)]])
      expect(JSON.stringify(status)).not.toContain(old)
      expect(JSON.stringify(status)).not.toContain(next)
    })
  )
})
