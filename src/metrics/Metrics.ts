/**
 * Every metric a node exposes at `GET /metrics`, as Effect `Metric`s in the global metric registry
 * (rendered by `Prometheus.ts`). Names follow Prometheus's conventions: `blixard_` prefix, the unit
 * in the name (`_seconds`, `_bytes`), `_total` on counters.
 *
 * Cost on hot paths: code updates a metric with `unsafeUpdate` and a tag array it reuses (`tags`),
 * so an update is a WeakMap hit and an addition — no Effect, no allocation. The Raft loop updates in
 * bulk, once per batch or per storage write, never per message. Values that already exist elsewhere
 * (term, indexes, peer counters kept by the transport, the replicated VMs) are read at scrape time
 * (`Scrape.ts`) rather than counted twice.
 *
 * The registry is the process's: one node per process (the daemon) is what these describe. Several
 * nodes in one process (the simulator, integration tests) add into the same counters.
 */
import { Metric, MetricBoundaries, MetricLabel } from "effect"

const cache = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()

/**
 * The tags (Prometheus labels) for `pairs`, the same array for the same pairs: Effect finds a tagged
 * metric's state by the array's identity first, so a reused array costs no registry lookup.
 */
export const tags = (...pairs: ReadonlyArray<readonly [string, string]>): ReadonlyArray<MetricLabel.MetricLabel> => {
  let key = ""
  for (const [name, value] of pairs) key += `${name}\u0000${value}\u0001`
  let found = cache.get(key)
  if (found === undefined) {
    found = pairs.map(([name, value]) => MetricLabel.make(name, value))
    cache.set(key, found)
  }
  return found
}

export const noTags: ReadonlyArray<MetricLabel.MetricLabel> = []

const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })
const gauge = (name: string, description: string) => Metric.gauge(name, { description })
const histogram = (name: string, bounds: ReadonlyArray<number>, description: string) =>
  Metric.histogram(name, MetricBoundaries.fromIterable(bounds), description)

/** Seconds, from 0.5 ms to 10 s: flushes, API requests, round trips. */
const latencyBounds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
/** Seconds, from 10 ms to 5 min: snapshots (a large state takes hundreds of milliseconds). */
const slowBounds = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]

// ---- Raft ---------------------------------------------------------------------------------------

export const raftTerm = gauge("blixard_raft_term", "The Raft term this node is in")
export const raftRole = gauge("blixard_raft_role", "1 for the Raft role this node has (label role), 0 for the others")
export const raftLeader = gauge("blixard_raft_leader_id", "The node id of the leader this node knows of (0: none)")
export const raftCommitIndex = gauge("blixard_raft_commit_index", "The highest log index this node knows to be committed")
export const raftAppliedIndex = gauge("blixard_raft_applied_index", "The highest log index this node has applied to its state machine")
export const raftApplyLag = gauge("blixard_raft_apply_lag_entries", "Committed entries this node has not applied yet (commit index - applied index)")
export const raftLastIndex = gauge("blixard_raft_last_index", "The last index of this node's log")
export const raftPeerMatch = gauge("blixard_raft_peer_match_index", "While this node leads: the highest log index known to be replicated to each peer")
export const raftProposals = counter(
  "blixard_raft_proposals_total",
  "Writes and membership changes handed to this node's Raft loop, by outcome (accepted: appended to the leader's log; refused: not the leader, busy)"
)
export const raftLeaderChanges = counter("blixard_raft_leader_changes_total", "Times the leader this node knows of changed (including to none)")
export const raftFlushSeconds = histogram(
  "blixard_raft_storage_flush_seconds",
  latencyBounds,
  "Duration of this node's Raft storage writes, each ending with a flush to disk, by op (save: entries and hard state; snapshot; compact)"
)
export const raftSnapshotBytes = gauge("blixard_raft_snapshot_size_bytes", "Size of the newest state-machine snapshot this node holds (its serialised length)")
export const raftSnapshotSeconds = histogram(
  "blixard_raft_snapshot_duration_seconds",
  slowBounds,
  "Time to serialise and store a state-machine snapshot this node took"
)
export const raftSnapshots = counter("blixard_raft_snapshots_total", "Snapshots this node stored, by source (local: taken here; leader: received)")

// ---- Peers --------------------------------------------------------------------------------------

export const peerSent = counter("blixard_peer_messages_sent_total", "Raft messages sent to each peer")
export const peerDelivered = counter("blixard_peer_messages_delivered_total", "Raft messages each peer acknowledged")
export const peerDropped = counter(
  "blixard_peer_messages_dropped_total",
  "Raft messages to each peer given up, by reason (queue_full: the send queue overflowed; connection_failed: lost with a failed connection; peer_restarted: built for an earlier incarnation of the peer, see Transport); Raft retransmits what is still needed"
)
export const peerFailures = counter("blixard_peer_connection_failures_total", "Failed connection attempts and connections lost to each peer")
export const peerConnected = gauge("blixard_peer_connected", "1 while the connection to the peer is up and acknowledging")
export const peerQueued = gauge("blixard_peer_queued_messages", "Raft messages waiting in each peer's send queue")
export const peerRoundTrip = histogram(
  "blixard_peer_round_trip_seconds",
  latencyBounds,
  "Time from sending a batch of Raft messages to a peer until its acknowledgement"
)

// ---- API ----------------------------------------------------------------------------------------

export const apiRequests = counter("blixard_api_requests_total", "API requests answered, by method, route (the path template) and status")
export const apiRequestSeconds = histogram(
  "blixard_api_request_duration_seconds",
  latencyBounds,
  "Time from an API request's arrival to the end of its answer, by method and route"
)

// ---- Replicated state ---------------------------------------------------------------------------

export const vms = gauge("blixard_vms", "VMs in the replicated state, by phase and hosting node (node=\"none\": not placed)")
export const nodes = gauge("blixard_nodes", "Nodes registered in the replicated state, by schedulability state")
export const caRotationWaiting = gauge(
  "blixard_ca_rotation_waiting_members",
  "During a CA rotation: the members still holding only a certificate of the old CA (it cannot finish before 0); -1 when no rotation is in progress"
)

// ---- Agent --------------------------------------------------------------------------------------

export const agentStarts = counter("blixard_agent_vm_starts_total", "Runner starts on this node, by result (ok, failed)")
export const agentStops = counter("blixard_agent_vm_stops_total", "Runners this node stopped because their VM was stopped, deleted or moved")
export const agentRestarts = counter("blixard_agent_vm_restarts_total", "Runner restarts by the restart policy after an unexpected exit on this node")
export const agentFencingEvents = counter("blixard_agent_fencing_events_total", "Times this node fenced itself (lost proven quorum contact for longer than fencingMs)")
export const agentFencingStops = counter("blixard_agent_fencing_stops_total", "Runners stopped by fencing on this node")
export const agentFenced = gauge("blixard_agent_fenced", "1 while this node is fenced (starts nothing, stops its runners)")

// ---- Process ------------------------------------------------------------------------------------

export const processCpu = counter("blixard_process_cpu_seconds_total", "CPU time (user and system) the node's process used")
export const processResident = gauge("blixard_process_resident_memory_bytes", "Resident set size of the node's process")
export const processHeapUsed = gauge("blixard_process_heap_used_bytes", "V8 heap in use")
export const processHeapTotal = gauge("blixard_process_heap_total_bytes", "V8 heap allocated")
export const processStartTime = gauge("blixard_process_start_time_seconds", "When the node's process started (Unix time)")
export const tlsCertificateExpiry = gauge(
  "blixard_tls_certificate_expiry_timestamp_seconds",
  "When this node's own certificate expires (Unix time); alert when it comes near: renewal (at two thirds of its lifetime) has failed"
)
export const tlsRenewals = counter("blixard_tls_certificate_renewals_total", "Renewals of this node's certificate, by result")
export const eventLoopDelayP50 = gauge("blixard_process_event_loop_delay_p50_seconds", "Median event-loop delay since the previous scrape")
export const eventLoopDelayP99 = gauge("blixard_process_event_loop_delay_p99_seconds", "99th percentile of the event-loop delay since the previous scrape")
export const eventLoopDelayMax = gauge("blixard_process_event_loop_delay_max_seconds", "Largest event-loop delay since the previous scrape")

/**
 * Creates the series of every counter and gauge updated only when something happens, at 0, so a
 * scrape shows them (and `rate()` works) before the first event.
 */
export const declare = (): void => {
  for (const outcome of ["accepted", "refused"]) raftProposals.unsafeUpdate(0, tags(["outcome", outcome]))
  raftLeaderChanges.unsafeUpdate(0, noTags)
  for (const source of ["local", "leader"]) raftSnapshots.unsafeUpdate(0, tags(["source", source]))
  raftSnapshotBytes.unsafeUpdate(raftSnapshotBytes.unsafeValue(noTags).value, noTags)
  for (const result of ["ok", "failed"]) agentStarts.unsafeUpdate(0, tags(["result", result]))
  for (const metric of [agentStops, agentRestarts, agentFencingEvents, agentFencingStops]) metric.unsafeUpdate(0, noTags)
  agentFenced.unsafeUpdate(agentFenced.unsafeValue(noTags).value, noTags)
  // Reading a histogram creates its series, empty.
  raftSnapshotSeconds.unsafeValue(noTags)
  for (const op of ["save", "snapshot", "compact"]) raftFlushSeconds.unsafeValue(tags(["op", op]))
}

/**
 * Brings counters up to totals kept elsewhere (the transport's, the process's CPU time): adds what
 * each total grew since it was last seen. A total that went down (its source restarted: a peer
 * removed and added again) counts from zero again, so the counter never decreases.
 */
export class Totals {
  private readonly seen = new Map<string, number>()

  advance(metric: Metric.Metric.Counter<number>, labels: ReadonlyArray<MetricLabel.MetricLabel>, key: string, total: number): void {
    const before = this.seen.get(key) ?? 0
    const delta = total >= before ? total - before : total
    this.seen.set(key, total)
    // Also when 0: the series then exists from the first scrape.
    metric.unsafeUpdate(delta, labels)
  }
}
