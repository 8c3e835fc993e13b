/**
 * A node's `GET /metrics`: brings the gauges read at scrape time up to date (Raft status, the
 * replicated VMs and nodes, the transport's per-peer totals, the process), then renders the whole
 * metric registry (`Prometheus.render`).
 *
 * Reading these at scrape time costs the Raft loop nothing: a scrape every 15 s walks the VMs once
 * (about 20 ms at 100,000 VMs), instead of the loop keeping gauges current on every apply.
 */
import { Effect, Metric } from "effect"
import { monitorEventLoopDelay } from "node:perf_hooks"
import type { ClusterState } from "../cluster/ClusterState.js"
import type { PeerStats } from "../net/PeerTransport.js"
import type { Status } from "../raft/Raft.js"
import type { StateRole } from "../raft/Types.js"
import * as M from "./Metrics.js"
import * as Prometheus from "./Prometheus.js"

export interface ScrapeSources {
  readonly raft: Effect.Effect<Status>
  /** The replicated state as this node has applied it. */
  readonly state: () => ClusterState
  /** The Raft transport's per-peer counters (absent: no peer metrics). */
  readonly peers?: Effect.Effect<ReadonlyArray<PeerStats>> | undefined
}

const roles: ReadonlyArray<StateRole> = ["follower", "preCandidate", "candidate", "leader"]

/** Process-wide: the process's CPU time is one total whichever node scrapes it. */
const processTotals = new M.Totals()
const startTimeSeconds = Math.round((Date.now() - performance.now()) / 10) / 100

/**
 * Sets gauges for the label sets in `current`, and 0 for those set before and gone since (a VM
 * deleted, a phase left empty): a series that vanished would otherwise keep its last value.
 */
const gaugeSet = (metric: Metric.Metric.Gauge<number>) => {
  let previous = new Map<string, ReturnType<typeof M.tags>>()
  return (current: Map<string, { readonly labels: ReturnType<typeof M.tags>; count: number }>) => {
    for (const entry of current.values()) metric.unsafeUpdate(entry.count, entry.labels)
    for (const [key, labels] of previous) if (!current.has(key)) metric.unsafeUpdate(0, labels)
    previous = new Map(Array.from(current, ([key, entry]) => [key, entry.labels] as const))
  }
}

/** Counts `items` by the labels `labelsOf` gives, keyed by their values joined (no JSON per item: 100,000 VMs). */
const countBy = <A>(items: Iterable<A>, names: ReadonlyArray<string>, valuesOf: (item: A) => ReadonlyArray<string>) => {
  const counts = new Map<string, { readonly labels: ReturnType<typeof M.tags>; count: number }>()
  for (const item of items) {
    const values = valuesOf(item)
    const key = values.join("\u0000")
    const entry = counts.get(key)
    if (entry !== undefined) entry.count++
    else counts.set(key, { labels: M.tags(...names.map((name, i) => [name, values[i]!] as const)), count: 1 })
  }
  return counts
}

/**
 * The scrape of one node; scoped: it samples the event-loop delay (`monitorEventLoopDelay`) from now
 * until the scope closes, every 100 ms: its timer wakes the process at each sample, and at the
 * default 10 ms that cost an idle process about 4 ms of CPU per second, a tenth of a quiet daemon's
 * (`bench/RESULTS.md`); ten samples a second still give the percentiles between two scrapes, and a
 * stall shows in the maximum at any resolution.
 */
export const make = (sources: ScrapeSources) =>
  Effect.gen(function* () {
    const loopDelay = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const histogram = monitorEventLoopDelay({ resolution: 100 })
        histogram.enable()
        return histogram
      }),
      (histogram) => Effect.sync(() => histogram.disable())
    )
    M.declare()
    const peerTotals = new M.Totals()
    const setVms = gaugeSet(M.vms)
    const setNodes = gaugeSet(M.nodes)
    const setPeerMatch = gaugeSet(M.raftPeerMatch)

    const raft = (status: Status) => {
      M.raftTerm.unsafeUpdate(status.term, M.noTags)
      M.raftLeader.unsafeUpdate(status.lead, M.noTags)
      for (const role of roles) M.raftRole.unsafeUpdate(role === status.role ? 1 : 0, M.tags(["role", role]))
      M.raftCommitIndex.unsafeUpdate(status.commit, M.noTags)
      M.raftAppliedIndex.unsafeUpdate(status.applied, M.noTags)
      M.raftApplyLag.unsafeUpdate(Math.max(0, status.commit - status.applied), M.noTags)
      M.raftLastIndex.unsafeUpdate(status.lastIndex, M.noTags)
      const match = new Map<string, { readonly labels: ReturnType<typeof M.tags>; count: number }>()
      for (const p of status.progress) {
        if (p.id === status.id) continue
        match.set(String(p.id), { labels: M.tags(["peer", String(p.id)]), count: p.match })
      }
      setPeerMatch(match)
    }

    const replicated = (state: ClusterState) => {
      setVms(countBy(state.vms.values(), ["node", "phase"], (vm) => [vm.node === undefined ? "none" : String(vm.node), vm.status.phase]))
      setNodes(countBy(state.nodes.values(), ["state"], (node) => [node.state]))
      M.caRotationWaiting.unsafeUpdate(state.caRotation === undefined ? -1 : (state.caStatus().rotation?.waiting.length ?? 0), M.noTags)
    }

    const peers = (stats: ReadonlyArray<PeerStats>) => {
      for (const p of stats) {
        const peer = String(p.id)
        const labels = M.tags(["peer", peer])
        peerTotals.advance(M.peerSent, labels, `sent ${peer}`, p.sent)
        peerTotals.advance(M.peerDelivered, labels, `delivered ${peer}`, p.delivered)
        peerTotals.advance(M.peerDropped, M.tags(["peer", peer], ["reason", "queue_full"]), `queue ${peer}`, p.droppedQueueFull)
        peerTotals.advance(M.peerDropped, M.tags(["peer", peer], ["reason", "connection_failed"]), `failed ${peer}`, p.droppedFailed)
        peerTotals.advance(M.peerDropped, M.tags(["peer", peer], ["reason", "peer_restarted"]), `restarted ${peer}`, p.droppedRestarted)
        peerTotals.advance(M.peerFailures, labels, `failures ${peer}`, p.failuresTotal)
        M.peerConnected.unsafeUpdate(p.connected ? 1 : 0, labels)
        M.peerQueued.unsafeUpdate(p.queued, labels)
      }
    }

    const processMetrics = () => {
      const cpu = process.cpuUsage()
      processTotals.advance(M.processCpu, M.noTags, "cpu", (cpu.user + cpu.system) / 1e6)
      const memory = process.memoryUsage()
      M.processResident.unsafeUpdate(memory.rss, M.noTags)
      M.processHeapUsed.unsafeUpdate(memory.heapUsed, M.noTags)
      M.processHeapTotal.unsafeUpdate(memory.heapTotal, M.noTags)
      M.processStartTime.unsafeUpdate(startTimeSeconds, M.noTags)
      // Nanoseconds; no sample yet (a scrape right after start) reads as 0, not as NaN.
      const seconds = (ns: number) => (Number.isFinite(ns) && loopDelay.count > 0 ? ns / 1e9 : 0)
      M.eventLoopDelayP50.unsafeUpdate(seconds(loopDelay.percentile(50)), M.noTags)
      M.eventLoopDelayP99.unsafeUpdate(seconds(loopDelay.percentile(99)), M.noTags)
      M.eventLoopDelayMax.unsafeUpdate(seconds(loopDelay.max), M.noTags)
      loopDelay.reset()
    }

    return Effect.gen(function* () {
      raft(yield* sources.raft)
      replicated(sources.state())
      if (sources.peers !== undefined) peers(yield* sources.peers)
      processMetrics()
      // Effect's own runtime metrics (`effect_fiber_*`) are left out: `effect_fiber_active` is a
      // counter that goes down, which Prometheus would read as resets.
      return Prometheus.render((yield* Metric.snapshot).filter((pair) => pair.metricKey.name.startsWith("blixard_")))
    })
  })
