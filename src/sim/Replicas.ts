/**
 * Checks on the replicas of the cluster state in the orchestration workload, made as each replica
 * applies an entry (through its `EventLog`, which the state machine hands every entry's changes):
 *
 * - every replica applies each entry alike: the changes it made (its events: VMs placed, moved,
 *   marked moving, stopped…, nodes, tokens) and the cluster's log version after it are the same on
 *   every replica that applied that index — so a replica that moves a VM in one step where the
 *   others move it in two, or refuses what the others applied, is caught at that entry;
 * - the cluster's log version (`ClusterVersion.ts`) is raised only once every member (voter or
 *   learner, as the applying replica's state lists them) has registered a log version at least the
 *   new one; it never goes down, on any replica, across restarts and snapshots;
 * - a replica of an older release never applies an entry once the cluster's version is above its
 *   release: it must stop (`BLX_RELEASE_TOO_OLD`) at the entry that raised it, or at start-up.
 *
 * A violation is noted from the node's Raft loop (which must not throw) and reported by `check`
 * after the instant.
 */
import type { ClusterEvent } from "../domain/ClusterEvent.js"
import type { ClusterState } from "../cluster/ClusterState.js"
import { lagging, nodeLogVersion } from "../cluster/ClusterVersion.js"
import { EventLog } from "../events/EventLog.js"

/** An `EventLog` that also hands each applied entry's events, and each state replacement, to `seen`. */
class ObservedEvents extends EventLog {
  constructor(private readonly seen: { readonly applied: (index: number, events: ReadonlyArray<ClusterEvent>) => void; readonly restored: (index: number) => void }) {
    // The simulator serves no event streams: a small ring does.
    super(64)
  }

  override publish(index: number, term: number, at: number | undefined, events: ReadonlyArray<ClusterEvent>): void {
    super.publish(index, term, at, events)
    this.seen.applied(index, events)
  }

  override reset(index: number): void {
    super.reset(index)
    this.seen.restored(index)
  }
}

export class ReplicaChecks {
  /** index → the first replica that applied it, and what it made of it. */
  private readonly applied = new Map<number, { readonly node: number; readonly fingerprint: string }>()
  /** version → the lowest index any replica raised the cluster's log version to it at. */
  private readonly raised = new Map<number, number>()
  /** The first violation, reported by `check`. */
  private violation: string | undefined

  /** The first violation noted, if any. */
  check(): string | undefined {
    return this.violation
  }

  /** The highest cluster log version any replica applied. */
  get highest(): number {
    return Math.max(0, ...this.raised.keys())
  }

  private note(message: string): void {
    this.violation ??= message
  }

  /**
   * The event log for one incarnation of `node`, a release of log version `release`, whose state
   * is `state()` and starts at cluster log version `founded` (a state restored from a snapshot
   * carries its own).
   */
  events(node: number, release: number, founded: number, state: () => ClusterState): EventLog {
    let version = founded
    const below = (index: number, after: number, what: string) => {
      for (const [v, at] of this.raised) {
        if (at <= index && after < v) {
          this.note(`the cluster's log version went down: node ${node} ${what} at index ${index} at log version ${after}, but it was raised to ${v} at index ${at}`)
        }
      }
    }
    return new ObservedEvents({
      applied: (index, events) => {
        const s = state()
        const after = s.clusterVersion
        if (version > release) {
          this.note(
            `node ${node}, a release of log version ${release}, applied entry ${index} at cluster log version ${version}: it must stop (BLX_RELEASE_TOO_OLD) at the entry that raised the version`
          )
        }
        if (after < version) this.note(`the cluster's log version went down on node ${node}: from ${version} to ${after} at entry ${index}`)
        if (after > version) {
          const behind = lagging(s.nodes, s.members.keys(), after)
          if (behind.length > 0) {
            const which = behind.map((id) => `node ${id} (${s.nodes.has(id) ? `log version ${nodeLogVersion(s.nodes.get(id))}` : "not registered"})`).join(", ")
            this.note(`the cluster's log version was raised to ${after} at entry ${index} (on node ${node}) while members had registered a lower one: ${which}`)
          }
          const at = this.raised.get(after)
          if (at === undefined || index < at) this.raised.set(after, index)
        }
        below(index, after, "applied an entry")
        version = after
        const fingerprint = `log version ${after}, ${JSON.stringify(events)}`
        const first = this.applied.get(index)
        if (first === undefined) this.applied.set(index, { node, fingerprint })
        else if (first.fingerprint !== fingerprint) {
          this.note(`replicas applied entry ${index} differently: node ${first.node}: ${first.fingerprint}; node ${node}: ${fingerprint}`)
        }
      },
      restored: (index) => {
        version = state().clusterVersion
        below(index, version, "restored a snapshot")
      }
    })
  }
}
