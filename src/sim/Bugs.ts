/**
 * Known bugs the simulator can put back (`--bug NAME`), each with what catches it.
 *
 * A bug is one entry: the unsafe switches that re-inject it — set on every node's `RaftNodeConfig`
 * (and through its `raft` field on the core's `RaftConfig`), on the control plane, or on the
 * orchestration layer's timeouts — plus the workload and profile that catch it, the seed bound
 * within which the first failing seed must come (taken from the measured catch rate, with margin; test/sim/Bugs.test.ts
 * holds the simulator to it) and what its failure says.
 *
 * A switch named here may be one the code does not know (yet, or any more): it is passed through
 * and ignored, so a bug whose switch is missing is simply not re-injected — and its bounded catch
 * test fails once the bug is fixed, which is how a fix without its switch shows up. A bug with no
 * switches at all is one the code still has: its fix adds the switch here.
 *
 * Reused ReadIndex contexts (`reused-read-contexts`) long had no entry: a restarted node learns its
 * leader only through the leader's reconnection, which first delivers what was queued for its
 * earlier process — the answer to its pending read, or the heartbeats that let the leader give it —
 * before the new process can ask any read; and read numbers drift apart (a read refused for want of
 * a known leader uses one up). Profile `stalereads` holds the round open: the third node is cut off
 * from the leader as the follower dies, so the round (and every write) waits for the follower's
 * acknowledgements, and the reconnection brings the round's heartbeats, with the commit index of
 * before the writes, together with the writes' appends; the successor's first read, begun once a
 * write completed, meets the old round's answer before the commit index that covers the write.
 */
import type { RaftNodeConfig } from "../raft/RaftNode.js"
import type { ProfileName } from "./Explorer.js"

/** The node's switches: every `unsafe…` option of `RaftNodeConfig` and, through `raft`, of the core. */
export type NodeSwitches = Partial<Omit<RaftNodeConfig, "id" | "bootstrap" | "tickMs" | "requestTimeoutMs">>

export interface Switches {
  readonly node?: NodeSwitches | undefined
  /** The control plane's (`NodeControlPlane.Options`), and the daemon's start-up check that shares its rule. */
  readonly controlPlane?: { readonly unsafeAdmitAmnesiacVoters?: boolean | undefined; readonly unsafeAdmitWipedLearners?: boolean | undefined } | undefined
  /** The orchestration layer's timeouts, in place of the daemon's defaults. */
  readonly orchestration?: { readonly fencingMs?: number | undefined; readonly nodeDownMs?: number | undefined } | undefined
  /**
   * The replicated state machine's (`ClusterState`). `unsafeOneStepMoves` is caught by the
   * orchestration workload's moves (drains, resizing updates; on unless `moves: false`).
   */
  readonly stateMachine?: { readonly unsafeOneStepMoves?: boolean | undefined } | undefined
  /** The leader's raise of the cluster's log version (`Orchestration.raiseClusterVersion`, `ClusterVersion.ts`). */
  readonly clusterVersion?: { readonly unsafeRaiseVersionEarly?: boolean | undefined } | undefined
}

export interface Bug {
  readonly summary: string
  readonly switches: Switches
  /** Where it is caught: the explorer, or the full-service tier running a workload. */
  readonly catch: {
    readonly tier: "explorer" | "full"
    readonly workload: "kv" | "orchestration"
    readonly profile: ProfileName
    /** The first failing seed is at most this (seeds counted from 1). */
    readonly seeds: number
    readonly violation: RegExp
  }
  /** Which runs can take the switch at all. */
  readonly appliesTo: ReadonlyArray<"explorer" | "kv" | "orchestration">
}

export const bugs = {
  figure8: {
    summary: "a leader commits an entry of an earlier term by counting its replicas (Raft §5.4.2, Figure 8)",
    switches: { node: { raft: { unsafeCommitPreviousTermByCounting: true } } },
    // Measured with lazy commit broadcasts (`RaftConfig.lazyCommit`): 4 of seeds 1–400 fail (1 %), the first at seed 16.
    catch: {
      tier: "explorer",
      workload: "kv",
      profile: "crashpoints",
      seeds: 500,
      violation: /leader completeness|committed entry changed|linearizability|internal assertion|acknowledged write lost/
    },
    appliesTo: ["explorer", "kv", "orchestration"]
  },
  "no-fencing": {
    summary: "agents never fence: a node cut off from the quorum keeps its VMs",
    switches: { orchestration: { fencingMs: Infinity } },
    // Measured with moves on (the workload's default): 10 of seeds 1–30 fail (33 %), the first at seed 5, never more than 5 passing in a row.
    catch: { tier: "full", workload: "orchestration", profile: "default", seeds: 20, violation: /VM "[^"]+" runs on nodes \d+, \d+ at once/ },
    appliesTo: ["orchestration"]
  },
  "early-reschedule": {
    summary: "nodeDownMs below fencingMs: VMs move before their cut-off node has fenced",
    switches: { orchestration: { nodeDownMs: 1500 } },
    // Measured with moves on: 14 of seeds 1–30 fail (47 %), the first at seed 5, never more than 4 passing in a row.
    catch: { tier: "full", workload: "orchestration", profile: "default", seeds: 10, violation: /VM "[^"]+" runs on nodes \d+, \d+ at once/ },
    appliesTo: ["orchestration"]
  },
  "one-step-moves": {
    summary:
      "a VM leaves a live node (drained, or outgrown by an update) in one step: its next node starts it while the old node, which has not applied the entry yet, still runs it",
    switches: { stateMachine: { unsafeOneStepMoves: true } },
    // Measured since moves are on by default: 20 of seeds 1–30 fail (67 %), the first at seed 1, never more than 3 passing in a row.
    catch: { tier: "full", workload: "orchestration", profile: "default", seeds: 8, violation: /VM "[^"]+" runs on nodes \d+, \d+ at once/ },
    appliesTo: ["orchestration"]
  },
  "stall-contact": {
    summary:
      "a leader whose disk stalls keeps counting any message it receives as quorum contact (RaftNode's receiver stamps lastContact outside the Raft loop), so it never fences while the cluster moves its VMs",
    switches: { node: { unsafeContactFromAnyMessage: true } },
    // Measured with moves on: 16 of seeds 1–60 fail (27 %; about 40 % before moves), the first at seed 5, at most 18 passing in a row (16–33).
    catch: { tier: "full", workload: "orchestration", profile: "storage", seeds: 24, violation: /VM "[^"]+" runs on nodes \d+, \d+ at once/ },
    appliesTo: ["kv", "orchestration"]
  },
  "single-voter-early-send": {
    summary:
      "with a single voter (a founder and its learners), campaign, commit and appends leave in one Ready before its fsync: after a crash the founder wins the same term again and overwrites entries its learners hold, or applied, as committed",
    switches: { node: { raft: { unsafeCountSelfBeforeDurable: true } } },
    catch: {
      tier: "full",
      workload: "kv",
      profile: "join",
      // First caught at seed 17 since the driver's ticker sleeps until a tick acts (4 of seeds 1–40).
      seeds: 24,
      violation: /led term \d+ twice|leader completeness|committed entry changed|log matching|acknowledged write lost/
    },
    appliesTo: ["kv", "orchestration"]
  },
  amnesia: {
    summary:
      "a voter restarted with an empty data directory is let back in at once under its old id: it can vote twice in a term, or help elect a leader missing committed entries",
    switches: { controlPlane: { unsafeAdmitAmnesiacVoters: true } },
    // Caught by 8 of seeds 1–20 (kv) while its leader stopped it with a commit index beyond its
    // empty log; since peers learn incarnations (the leader starts its progress over) only its
    // consequences were left (profile amnesia: seed 39 of 1–40 orchestration, 5 of 1–260 kv, from
    // 119). Now the double vote itself is checked (`RaftInvariants.vote`), and profile votes wipes a
    // node as its grant leaves: 5 of seeds 1–100 fail (kv), the first at seed 7, 3 of them by the
    // double vote (orchestration: seed 5 first). The profile makes the catch: without the vote
    // check the same seeds fail, the double votes some 12 ms later as two leaders in the term.
    catch: {
      tier: "full",
      workload: "kv",
      profile: "votes",
      seeds: 40,
      violation:
        /voted twice in term \d+|beyond the last index|led term \d+ twice|two leaders|leader completeness|committed entry changed|log matching|acknowledged write lost/
    },
    appliesTo: ["kv", "orchestration"]
  },
  "wiped-learner": {
    summary:
      "a learner that acknowledged entries and restarted on an empty data directory starts as it is: the leader's progress still holds what the lost log acknowledged, so its heartbeat carries a commit index beyond the empty log, or the learner is promoted on entries it no longer has",
    // Two defences stand in its way: the start-up removal, and the leader starting the learner's
    // progress over once the handshake shows its new data incarnation. Both are lifted.
    switches: { controlPlane: { unsafeAdmitWipedLearners: true }, node: { unsafeIgnorePeerRestarts: true } },
    catch: {
      tier: "full",
      workload: "kv",
      profile: "learners",
      // Measured: the first failing seed is 1 (the removal runs in 4 of seeds 1–30 once fixed).
      seeds: 30,
      violation: /beyond the last index|led term \d+ twice|two leaders|leader completeness|committed entry changed|log matching|acknowledged write lost/
    },
    appliesTo: ["kv", "orchestration"]
  },
  "lease-reads": {
    summary:
      "the leader answers a ReadIndex at once from its commit index (a lease), trusting no other leader can exist yet: a transfer's votes override the followers' leases, and the deposed leader serves a read older than a write the new leader completed",
    switches: { node: { raft: { unsafeLeaseBasedReads: true } } },
    // Measured: 4 of seeds 1–500 fail (0.8 %; 6 before crashed nodes got what their peers queued for them), the first at seed 24.
    catch: { tier: "explorer", workload: "kv", profile: "transfer", seeds: 500, violation: /linearizability/ },
    appliesTo: ["explorer", "kv", "orchestration"]
  },
  "transfer-postpones-checkquorum": {
    summary:
      "a leadership-transfer request restarts the timer CheckQuorum runs on: a leader cut off from its quorum that keeps receiving transfer requests never steps down",
    switches: { node: { raft: { unsafeTransferPostponesCheckQuorum: true } } },
    // Measured: 48 of seeds 1–500 fail (9.6 %; 44 before crashed nodes got what their peers queued for them), the first at seed 27.
    catch: { tier: "explorer", workload: "kv", profile: "transfer", seeds: 60, violation: /leader without a quorum/ },
    appliesTo: ["explorer", "kv", "orchestration"]
  },
  "overwrite-proposal-waiters": {
    summary:
      "a proposal at an index this node proposed at in an earlier term replaces the earlier proposal's waiter, which is never answered, not even by its timeout",
    switches: { node: { unsafeOverwriteProposalWaiters: true } },
    // Measured: 10 of seeds 1–30 fail (33 %), the first at seed 5, since reads share ReadIndex rounds
    // (32 of 60, from seed 1, before); 20 seeds miss it with a chance of about 0.03 %.
    catch: { tier: "full", workload: "kv", profile: "waiters", seeds: 20, violation: /request without an answer/ },
    appliesTo: ["kv", "orchestration"]
  },
  "raise-version-early": {
    summary:
      "the leader raises the cluster's log version once a majority of the members, not all of them, registered the newer one: a member still on the older release meets the raise in the middle of a rolling upgrade",
    switches: { clusterVersion: { unsafeRaiseVersionEarly: true } },
    catch: {
      tier: "full",
      workload: "orchestration",
      profile: "upgrade",
      // Measured: 30 of seeds 1–30 fail (29 of 30 before late rollbacks), the first at seed 1, by the
      // raise itself (`Replicas.ts`); the old members meeting it stop with BLX_RELEASE_TOO_OLD.
      seeds: 4,
      violation: /log version was raised to \d+ at entry \d+ .* while members had registered a lower one|applied entry \d+ at cluster log version|applied entry \d+ differently/
    },
    appliesTo: ["orchestration"]
  },
  "reused-read-contexts": {
    summary:
      "ReadIndex contexts restart with the process: a restarted follower's read takes the context of a request its earlier process left waiting at the leader, and is answered with that request's read point, older than a write completed before the read began",
    switches: { node: { unsafeReuseReadContexts: true, raft: { unsafeMatchRepeatedReadContexts: true } } },
    // Measured: 128 of seeds 1–200 fail (64 %), the first at seed 2, never more than 3 passing in a row.
    catch: { tier: "full", workload: "kv", profile: "stalereads", seeds: 10, violation: /stale read|linearizability/ },
    appliesTo: ["kv", "orchestration"]
  },
  "reapply-conf-changes": {
    summary:
      "the conf changes among the committed entries of a Ready still being persisted are applied although a snapshot the core installed meanwhile already holds them: an older change is applied again over the newer configuration (a removed member comes back, a promoted one is demoted)",
    switches: { node: { raft: { unsafeReapplyConfChanges: true } } },
    // Measured: 11 of seeds 1–1000 fail (1.1 %), the first at seed 13, at most 208 passing in a row;
    // without the switch 0 of seeds 1–2000.
    catch: { tier: "explorer", workload: "kv", profile: "snapreconfig", seeds: 500, violation: /configuration: node \d+ applied up to index/ },
    appliesTo: ["explorer", "kv", "orchestration"]
  }
} as const satisfies Record<string, Bug>

export type BugName = keyof typeof bugs

export const bugNames = Object.keys(bugs) as ReadonlyArray<BugName>

export const isBugName = (name: string): name is BugName => Object.hasOwn(bugs, name)

/** The switches of `bug` (none without one). */
export const switchesOf = (bug: BugName | undefined): Switches => (bug === undefined ? {} : bugs[bug].switches)
