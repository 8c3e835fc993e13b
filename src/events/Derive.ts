/**
 * Deriving the cluster's events from what the state machine applied: pure functions of an entry
 * and the records it changed, before and after. Every node applies the same entries to the same
 * state, so every node derives the same events, in the same order — a client may follow any node.
 */
import type { CaRotation } from "../domain/CaRotation.js"
import type { ClusterEvent } from "../domain/ClusterEvent.js"
import type { Command } from "../domain/Command.js"
import { NodeId } from "../domain/NodeId.js"
import type { NodeInfo } from "../domain/NodeInfo.js"
import type { ApiTokenRecord } from "../domain/ApiToken.js"
import type { RevokedCertificate } from "../domain/Certificate.js"
import type { JoinTokenRecord } from "../domain/JoinToken.js"
import type { VmRecord } from "../domain/VmStatus.js"
import type { ConfChange } from "../raft/Types.js"

/** What one VM's change means: `before` is its record before the entry, `after` after it. */
export const vmEvents = (before: VmRecord | undefined, after: VmRecord | undefined, out: Array<ClusterEvent>): void => {
  if (before === undefined && after === undefined) return
  if (after === undefined) {
    const vm = before!.spec.name
    out.push(before!.node === undefined ? { type: "vm.deleted", vm } : { type: "vm.deleted", vm, node: before!.node })
    return
  }
  const vm = after.spec.name
  const revision = after.revision
  if (before === undefined) {
    out.push({ type: "vm.created", vm, revision })
  } else if (before.node !== after.node && before.node !== undefined) {
    out.push(after.node === undefined ? { type: "vm.moved", vm, from: before.node, revision } : { type: "vm.moved", vm, from: before.node, to: after.node, revision })
  }
  if (before !== undefined && before.node === after.node && after.node !== undefined && before.moving !== after.moving) {
    out.push(after.moving !== undefined ? { type: "vm.moving", vm, from: after.node, revision } : { type: "vm.moving", vm, from: after.node, cancelled: true, revision })
  }
  if (after.node !== undefined && (before === undefined || before.node === undefined)) out.push({ type: "vm.placed", vm, node: after.node, revision })
  if (after.node === undefined && after.pendingReason !== undefined && (before === undefined || before.node !== undefined || before.pendingReason !== after.pendingReason)) {
    out.push({ type: "vm.pending", vm, reason: after.pendingReason, revision })
  }
  if (before === undefined) return
  if (before.spec !== after.spec) out.push({ type: "vm.updated", vm, revision })
  if (before.desired !== after.desired) out.push({ type: after.desired === "running" ? "vm.started" : "vm.stopped", vm, revision })
  const status = after.status
  if (before.status.phase !== status.phase) {
    out.push({
      type: "vm.phase",
      vm,
      phase: status.phase,
      previous: before.status.phase,
      ...(after.node !== undefined ? { node: after.node } : {}),
      restarts: status.restarts,
      ...(status.exitCode !== undefined ? { exitCode: status.exitCode } : {}),
      ...(status.lastError !== undefined ? { lastError: status.lastError } : {}),
      revision
    })
  } else if (before.status !== status && (before.status.pid !== status.pid || before.status.restarts !== status.restarts || before.status.lastError !== status.lastError || before.status.exitCode !== status.exitCode)) {
    out.push({ type: "vm.status", vm, phase: status.phase, ...(after.node !== undefined ? { node: after.node } : {}), revision })
  }
}

/** What a node's record change means (registration, health, schedulability, removal). */
export const nodeEvents = (before: NodeInfo | undefined, after: NodeInfo | undefined, out: Array<ClusterEvent>): void => {
  if (after === undefined) {
    if (before !== undefined) out.push({ type: "node.removed", node: before.id })
    return
  }
  const node = after.id
  if (before === undefined || before.address !== after.address || before.capacity !== after.capacity || before.labels !== after.labels || before.foreignVms !== after.foreignVms) {
    out.push({ type: "node.registered", node, address: after.address, first: before === undefined })
  }
  if (before !== undefined && before.health !== after.health) out.push({ type: after.health === "down" ? "node.down" : "node.up", node })
  if (before !== undefined && before.state !== after.state) {
    out.push({ type: after.state === "cordoned" ? "node.cordoned" : after.state === "draining" ? "node.draining" : "node.uncordoned", node })
  }
}

/** What a token's change means. */
export const tokenEvents = (before: ApiTokenRecord | undefined, after: ApiTokenRecord | undefined, out: Array<ClusterEvent>): void => {
  if (before === undefined && after !== undefined) {
    out.push(after.name === undefined ? { type: "token.created", id: after.id, role: after.role } : { type: "token.created", id: after.id, role: after.role, name: after.name })
  } else if (before !== undefined && after === undefined) {
    out.push({ type: "token.revoked", id: before.id })
  }
}

/** What a join token's change means (one forgotten after its expiry is not an event). */
export const joinTokenEvents = (before: JoinTokenRecord | undefined, after: JoinTokenRecord | undefined, out: Array<ClusterEvent>): void => {
  if (before === undefined && after !== undefined) out.push({ type: "joinToken.created", id: after.id, expiresAt: after.expiresAt })
  else if (before !== undefined && after === undefined) out.push({ type: "joinToken.revoked", id: before.id })
  else if (before?.usedBy === undefined && after?.usedBy !== undefined) out.push({ type: "joinToken.used", id: after.id, node: after.usedBy })
}

/** The node, API token or join token a command may change (read before and after applying it). */
export const subjectsOf = (command: Command): { readonly node?: number; readonly token?: string; readonly joinToken?: string } => {
  switch (command._tag) {
    case "RegisterNode":
      return { node: command.info.id }
    case "SetNodeState":
    case "SetNodeHealth":
    case "RemoveNode":
      return { node: command.id }
    case "CreateApiToken":
    case "RevokeApiToken":
      return { token: command.id }
    case "CreateJoinToken":
    case "RevokeJoinToken":
    case "ConsumeJoinToken":
      return { joinToken: command.id }
    default:
      return {}
  }
}

/** Certificates put on the revocation list. */
export const revocationEvents = (revoked: ReadonlyArray<RevokedCertificate>, out: Array<ClusterEvent>): void => {
  for (const entry of revoked) {
    out.push(entry.node === undefined ? { type: "cert.revoked", serial: entry.serial, reason: entry.reason } : { type: "cert.revoked", serial: entry.serial, node: entry.node, reason: entry.reason })
  }
}

/** What an entry did to the CA rotation (`before`: the rotation before it; `after` and `inForce`: after it). */
export const caRotationEvents = (before: CaRotation | undefined, after: CaRotation | undefined, inForce: string, out: Array<ClusterEvent>): void => {
  if (before === after) return
  if (before === undefined && after !== undefined) {
    out.push({ type: "ca.rotation.started", fingerprint: after.fingerprint, previous: after.previous })
    return
  }
  if (before !== undefined && after === undefined) {
    if (inForce === before.fingerprint) out.push({ type: "ca.rotation.finished", fingerprint: before.fingerprint, previous: before.previous })
    return
  }
  if (before !== undefined && after !== undefined) {
    for (const node of after.moved) if (!before.moved.includes(node)) out.push({ type: "ca.rotation.moved", node, fingerprint: after.fingerprint })
  }
}

/** A committed membership change. */
export const membershipEvents = (change: ConfChange): Array<ClusterEvent> => {
  const node = NodeId.make(change.nodeId)
  switch (change.type) {
    case "addLearner":
      return [change.address === undefined ? { type: "node.joined", node } : { type: "node.joined", node, address: change.address }]
    case "promote":
      return [{ type: "node.promoted", node }]
    case "remove":
      return [{ type: "node.left", node }]
  }
}

/**
 * A new leader's first (empty) entry: it carries the leader's id as its data (`Raft.becomeLeader`);
 * an empty entry written before it did has none.
 */
export const leaderEvents = (term: number, data: string): Array<ClusterEvent> => {
  const id = /^[1-9][0-9]{0,9}$/.test(data) ? Number(data) : undefined
  return [id !== undefined && id <= 2 ** 31 - 1 ? { type: "leader.changed", term, leader: NodeId.make(id) } : { type: "leader.changed", term }]
}
