/**
 * The cluster's log version over three in-process Raft nodes (`src/cluster/ClusterVersion.ts`): the
 * leader raises it once every member registered the new one, and the API refuses a command of a
 * newer version before it enters the log (409, `BLX_CLUSTER_VERSION`, naming the member that lags).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { ControlPlaneShape } from "../../src/api/ControlPlane.js"
import { ClusterStateHolder } from "../../src/cluster/ClusterStateMachine.js"
import { OldestLogVersion } from "../../src/cluster/ClusterVersion.js"
import { SealedKey } from "../../src/domain/CaRotation.js"
import * as C from "../../src/domain/Command.js"
import { HostPort, NodeInfo, ReleasesMoves } from "../../src/domain/NodeInfo.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { Resources } from "../../src/domain/Resources.js"
import * as NodeControlPlane from "../../src/node/NodeControlPlane.js"
import { raiseClusterVersion } from "../../src/node/Orchestration.js"
import { raw, serve } from "../api/harness.js"
import { RaftCluster, value } from "../support/RaftCluster.js"

const address = (id: number) => `127.0.0.1:${7000 + id}`
const voters = [1, 2, 3]

const info = (n: number, logVersion?: number) =>
  new NodeInfo({
    id: NodeId.make(n),
    address: HostPort.make(address(n)),
    capacity: new Resources({ vcpus: 8, memoryMiB: 4096 }),
    labels: {},
    state: "active",
    health: "up",
    capabilities: [ReleasesMoves],
    ...(logVersion !== undefined ? { logVersion } : {})
  })

const rotation = new C.StartCaRotation({
  ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
  fingerprint: "f1".repeat(32),
  previous: "0a".repeat(32),
  keys: voters.map((n) => new SealedKey({ node: NodeId.make(n), ephemeralKey: "AA==", iv: "AA==", ciphertext: "AA==", tag: "AA==" }))
})

/** Three members founded by a release before log versions (the cluster at the oldest), upgraded in place. */
const setup = Effect.gen(function* () {
  const cluster = new RaftCluster(
    voters,
    () => {
      const holder = new ClusterStateHolder()
      holder.current.clusterVersion = OldestLogVersion
      for (const id of voters) holder.current.members.set(id, address(id))
      return holder
    },
    (holder) => holder.layer()
  )
  const planes = new Map<string, ControlPlaneShape>()
  const plane = (id: number): ControlPlaneShape => {
    const made = NodeControlPlane.make({
      raft: cluster.node(id),
      state: cluster.state(id),
      remote: (addr) => planes.get(addr)!,
      prepareCaRotation: () => Effect.succeed(rotation)
    })
    planes.set(address(id), made)
    return made
  }
  for (const id of voters) yield* cluster.start(id)
  const leader = yield* cluster.leader()
  for (const id of voters) plane(id)
  return { cluster, plane, leader }
})

describe("cluster log version", () => {
  it.scoped("the leader raises it once every member registered it, on every replica", () =>
    Effect.gen(function* () {
      const { cluster, plane, leader } = yield* setup
      // Nodes 1 and 2 run this release; node 3 still one from before log versions.
      for (const [id, version] of [[1, 2], [2, 2], [3, undefined]] as const) value(yield* cluster.drive(plane(leader).registerNode(info(id, version))))
      for (const id of voters) value(yield* cluster.drive(raiseClusterVersion(cluster.node(id), cluster.state(id))))
      yield* cluster.until("every replica applied the registrations", () =>
        Effect.succeed(voters.every((id) => cluster.state(id).current.nodes.get(3) !== undefined))
      )
      expect(voters.map((id) => cluster.state(id).current.clusterVersion)).toEqual([1, 1, 1])

      value(yield* cluster.drive(plane(leader).registerNode(info(3, 2))))
      value(yield* cluster.drive(raiseClusterVersion(cluster.node(leader), cluster.state(leader))))
      yield* cluster.until("every replica is at log version 2", () => Effect.succeed(voters.every((id) => cluster.state(id).current.clusterVersion === 2)))
      const status = value(yield* cluster.drive(plane(leader).clusterStatus))
      expect(status.clusterVersion).toBe(2)
      expect(status.members.map((m) => m.logVersion)).toEqual([2, 2, 2])
    })
  )

  it.scoped("the API refuses a command of a newer log version before it enters the log: 409 BLX_CLUSTER_VERSION, naming the member that lags", () =>
    Effect.gen(function* () {
      const { cluster, plane, leader } = yield* setup
      for (const [id, version] of [[1, 2], [2, 2], [3, undefined]] as const) value(yield* cluster.drive(plane(leader).registerNode(info(id, version))))
      const served = yield* serve({}, () => plane(leader))
      const before = (yield* cluster.node(leader).status).lastIndex
      const answer = value(yield* cluster.drive(raw(served.url, { method: "POST", path: "/v1/cluster/ca/rotate" })))
      expect(answer.status).toBe(409)
      expect(answer.json).toMatchObject({ _tag: "ClusterVersionTooLow", code: "BLX_CLUSTER_VERSION", subject: "StartCaRotation", node: leader })
      expect((answer.json as { message: string }).message).toMatch(
        /StartCaRotation needs log version 2, but the cluster runs at log version 1 .*members below it: node 3 \(log version 1\); upgrade them/
      )
      // Nothing was proposed: the leader's log did not grow.
      expect((yield* cluster.node(leader).status).lastIndex).toBe(before)
      expect(cluster.state(leader).current.caRotation).toBeUndefined()
    })
  )
})
