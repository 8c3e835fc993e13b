/**
 * Hosts that are not Raft members (a Nomad "client": they run VMs, they do not vote or store the
 * log) prove they are alive with API heartbeats instead of Raft messages: `POST
 * /v1/nodes/ID/heartbeat`, answered by the leader after a ReadIndex round. This is the leader's
 * record of those answers, which the failure detector (`HealthMonitor.ts`) reads beside
 * `RaftNode.lastContact`. It lives in the leader's memory only: a new leader starts empty and gives
 * every node `nodeDownMs` from its own election, as it does for members.
 *
 * Safety, the same argument as for members. A host counts its contact from the moment it SENT a
 * heartbeat that was answered (its fencing clock), and fences `fencingMs` after its last one. The
 * leader records a heartbeat only after receiving it and confirming its leadership, so the time it
 * records is later than the host's send time; it marks the host down no earlier than that plus
 * `nodeDownMs ≥ fencingMs + 2 election timeouts`. A later leader was elected after a quorum had
 * answered the confirming round, so after the send time too; its grace starts at its election.
 */
export interface HostContact {
  /** The leader answered `node`'s heartbeat; `at` is the leader's clock after its ReadIndex round. */
  readonly record: (node: number, at: number) => void
  /** Each host's last answered heartbeat, merged with `members` (Raft contact) by the later time. */
  readonly merged: (members: ReadonlyMap<number, number>) => ReadonlyMap<number, number>
  /** How many hosts have heartbeated this leader (for `/metrics` and the scale benchmark). */
  readonly size: () => number
}

export const make = (): HostContact => {
  const heard = new Map<number, number>()
  return {
    record: (node, at) => {
      if ((heard.get(node) ?? 0) < at) heard.set(node, at)
    },
    merged: (members) => {
      if (heard.size === 0) return members
      const all = new Map(members)
      for (const [node, at] of heard) all.set(node, Math.max(all.get(node) ?? 0, at))
      return all
    },
    size: () => heard.size
  }
}
