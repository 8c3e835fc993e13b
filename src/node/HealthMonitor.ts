/**
 * The leader's failure detector. Followers answer the leader's heartbeats (every 2 ticks), so the leader
 * knows when it last heard from each node. A node silent for longer than `nodeDownMs` is marked
 * down through Raft — and the state machine reschedules its VMs; a node heard from again is marked
 * up. Only the leader decides, so the decision is made once and replicated.
 *
 * It reads `RaftNode.lastContact`, stamped on every message's arrival, of any term, processed or
 * not. That is safe here, unlike for fencing: hearing a node late only makes the leader mark it
 * down later (its VMs wait longer to move, never run twice), and a node heard from is marked up
 * while its own agent still fences on proven contact (`QuorumContact.ts`), so a VM placed on it
 * meanwhile waits, never runs twice. Safety needs only that a node that went silent at P is not
 * marked down before P + nodeDownMs, which any message it sent until P guarantees.
 *
 * Hosts that are not Raft members are heard through their API heartbeats instead (`HostContact.ts`,
 * where the same argument is made for them).
 *
 * Fencing: the node that went silent stops its own VMs after `fencingMs` without a quorum, and the
 * configuration requires `nodeDownMs ≥ fencingMs + 2 election timeouts`, so by the time its VMs are
 * started elsewhere they have stopped there.
 */
import { Clock, Duration, Effect } from "effect"
import * as C from "../domain/Command.js"
import type { NodeHealth, NodeInfo } from "../domain/NodeInfo.js"
import type { NodeId } from "../domain/NodeId.js"
import type { RaftNodeShape } from "../raft/RaftNode.js"
import type { HostContact } from "./HostContact.js"
import { proposeCommand } from "./NodeControlPlane.js"

export interface HealthInput {
  readonly self: number
  readonly now: number
  readonly nodeDownMs: number
  /** When this node became leader: a node not heard from since is given until then + nodeDownMs. */
  readonly leadingSince: number
  readonly nodes: Iterable<NodeInfo>
  readonly lastContact: ReadonlyMap<number, number>
}

/** The health changes the leader should propose now, in node-id order. */
export const healthChanges = (input: HealthInput): ReadonlyArray<{ readonly id: NodeId; readonly health: NodeHealth }> => {
  const changes: Array<{ id: NodeId; health: NodeHealth }> = []
  for (const node of [...input.nodes].sort((a, b) => a.id - b.id)) {
    let up: boolean
    if (node.id === input.self) up = true
    else {
      const heard = Math.max(input.lastContact.get(node.id) ?? 0, input.leadingSince)
      up = input.now - heard <= input.nodeDownMs
    }
    const health: NodeHealth = up ? "up" : "down"
    if (health !== node.health) changes.push({ id: node.id, health })
  }
  return changes
}

/**
 * How long the leader may sleep before `healthChanges` could answer otherwise: until just past the
 * earliest instant a node judged up would have been silent for `nodeDownMs` (its contact may move
 * on meanwhile: it is judged then anyway), at least `intervalMs` and at most `maxMs` (a node
 * registered meanwhile is judged by then). While a node is down, every `downIntervalMs`: hearing
 * from it again is not scheduled.
 */
export const nextLookIn = (input: HealthInput, options: { readonly intervalMs: number; readonly downIntervalMs: number; readonly maxMs: number }): number => {
  let wait = options.maxMs
  for (const node of input.nodes) {
    if (node.id === input.self) continue
    if (node.health === "down") {
      wait = Math.min(wait, options.downIntervalMs)
      continue
    }
    const heard = Math.max(input.lastContact.get(node.id) ?? 0, input.leadingSince)
    wait = Math.min(wait, heard + input.nodeDownMs - input.now + 1)
  }
  return Math.max(options.intervalMs, Math.min(options.maxMs, wait))
}

/**
 * Runs forever. While this node leads, it proposes the health changes it sees, looking again when
 * one could be due (`nextLookIn`: a quiet leader's wake-ups are its idle cost, bench `idle`; every
 * `intervalMs` it was, ten a second) — at most `intervalMs` after it is due, as before. A node that
 * does not lead looks every `followerIntervalMs` (default 5 × `intervalMs`) whether it has become
 * leader: it has nothing else to do here. Finding its leadership that much later only starts its
 * grace later (`leadingSince`): a node is marked down later, never sooner.
 */
export const run = (options: {
  readonly raft: RaftNodeShape
  readonly nodes: () => Iterable<NodeInfo>
  readonly nodeDownMs: number
  readonly intervalMs: number
  readonly followerIntervalMs?: number | undefined
  /** Answered heartbeats of hosts that are not Raft members (`HostContact.ts`). */
  readonly hostContact?: HostContact | undefined
}) =>
  Effect.gen(function* () {
    let leadingSince = -1
    const followerIntervalMs = options.followerIntervalMs ?? 5 * options.intervalMs
    const spacing = { intervalMs: options.intervalMs, downIntervalMs: followerIntervalMs, maxMs: Math.max(options.intervalMs, Math.floor(options.nodeDownMs / 6)) }
    let sleepMs = followerIntervalMs
    for (;;) {
      yield* Effect.sleep(Duration.millis(sleepMs))
      const now = yield* Clock.currentTimeMillis
      if ((yield* options.raft.role) !== "leader") {
        leadingSince = -1
        sleepMs = followerIntervalMs
        continue
      }
      if (leadingSince < 0) leadingSince = now
      const input: HealthInput = {
        self: options.raft.id,
        now,
        nodeDownMs: options.nodeDownMs,
        leadingSince,
        nodes: [...options.nodes()],
        lastContact: options.hostContact === undefined ? yield* options.raft.lastContact : options.hostContact.merged(yield* options.raft.lastContact)
      }
      const changes = healthChanges(input)
      // A change proposed is looked at again soon (it may not have committed); else when one can be due.
      sleepMs = changes.length > 0 ? options.intervalMs : nextLookIn(input, spacing)
      for (const change of changes) {
        yield* proposeCommand(options.raft, new C.SetNodeHealth({ id: change.id, health: change.health, at: now })).pipe(
          Effect.tap(() => Effect.logInfo(`node ${options.raft.id} marked node ${change.id} ${change.health}`)),
          Effect.catchAll((e) => Effect.logWarning(`node ${options.raft.id} could not mark node ${change.id} ${change.health}: ${e.message}`))
        )
      }
    }
  })
