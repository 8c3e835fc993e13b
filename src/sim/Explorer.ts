/**
 * The explorer: whole Raft clusters of pure cores (`RawNode`) with a key→value state machine,
 * driven by a plain discrete-event loop. Everything random — network faults, crashes, clock drift,
 * election jitter, fsync latency, the client workload — derives from one seed, so a run is a seed
 * and a failing seed is a reproduction.
 *
 * A run has two phases:
 * - safety: faults from a seeded schedule (drops, delays, duplicates, reordering, symmetric,
 *   one-way and bridge partitions, crashes that lose every write not yet synced, clock drift,
 *   membership churn) under a client workload; invariants are checked after every event;
 * - liveness: faults healed; the cluster must elect a leader and commit a new entry on every node
 *   within a bound.
 * Then the clients' history (reads, writes, compare-and-set; unknown outcomes marked) is checked
 * for linearizability.
 *
 * Persistence is modelled as etcd's contract asks: a `Ready` is written to the node's durable
 * storage after a simulated fsync delay, and only then are its messages sent and its committed
 * entries applied. A node that crashes before the fsync completes loses that `Ready` entirely.
 */
import { messageBytes } from "../net/SendQueue.js"
import type { Message } from "../raft/Message.js"
import { MemoryStorage } from "../raft/MemoryStorage.js"
import type { Ready } from "../raft/RawNode.js"
import { RawNode } from "../raft/RawNode.js"
import type { Entry } from "../raft/Types.js"
import type { BugName } from "./Bugs.js"
import { switchesOf } from "./Bugs.js"
import type { StorageFaultOptions } from "./Disk.js"
import { storageFaults } from "./Disk.js"
import { EventQueue } from "./EventQueue.js"
import { History } from "./History.js"
import type { LogTerms } from "./Invariants.js"
import { QuorumContact, RaftInvariants, Violation } from "./Invariants.js"
import { KvStore } from "./KvStore.js"
import type { RegisterInput, RegisterOutput } from "./Linearizability.js"
import { checkLinearizability, formatResult, registerModel } from "./Linearizability.js"
import type { Delivery, FaultAction, LateAfterCrash } from "./Network.js"
import { applyFault, defaultLateAfterCrash, defaultLinkFaults, faultSchedule, Network } from "./Network.js"
import { Prng } from "./Prng.js"
import { TraceHash } from "./Trace.js"

export interface ExploreOptions {
  readonly seed: number
  readonly nodes?: number
  /** Simulated milliseconds of the safety phase (faults and load). */
  readonly safetyMs?: number
  /** Bound for the liveness phase: a leader and a new commit on every node within this. */
  readonly livenessMs?: number
  /** Fault intensity in [0, 1] (see `faultSchedule`). */
  readonly intensity?: number
  readonly clients?: number
  readonly tickMs?: number
  /** Compact the log behind a snapshot every this many applied entries (forces InstallSnapshot). */
  readonly compactEvery?: number
  /** Entries kept behind a snapshot when the log is compacted (default 8; 0: none, so any follower behind it needs the snapshot). */
  readonly compactKeep?: number
  /** Raft message sizing: small values send entries one per message, widening race windows. */
  readonly maxSizePerMsg?: number
  readonly maxInflightMsgs?: number
  /**
   * Probability that a leader crashes at the crash point "its Ready (with new or newly committed
   * entries) is durable, its messages not yet sent" (restarting a moment later). Exercises the windows where a leader dies between committing
   * and telling anyone.
   */
  readonly crashPoints?: number
  /**
   * Membership churn: about every this many simulated ms (seeded) the leader is asked for one
   * single-server change — remove a voter (never below three), add a removed node back as a learner,
   * or promote a learner that has caught up. Before the liveness probe every node is made a voter
   * again, so "committed on every node" still means every node. Off when absent.
   */
  readonly churnEveryMs?: number
  /**
   * With churn: the chance that a removal takes the node promoted last, so that consecutive
   * changes concern one node (add it as a learner, promote it, remove it) and an older change
   * applied again over a newer configuration changes it. Default 0 (any voter).
   */
  readonly churnFocus?: number | undefined
  /**
   * Leadership transfers: about every this many simulated ms (seeded, always less than an election
   * timeout apart when below 700) an operator asks a random running node to hand leadership to a
   * random voter of its configuration, as `cluster transfer` does through any node's API (a
   * follower forwards the request to the leader it knows). Off when absent.
   */
  readonly transferEveryMs?: number | undefined
  /**
   * Explorer only: a node's `Ready` takes up to this many ms to persist (default 3). The core keeps
   * stepping messages meanwhile — as etcd's `node` does between `Ready` and `Advance` — so a slow
   * disk widens the windows where a snapshot is installed while a `Ready` is outstanding.
   */
  readonly fsyncMs?: number | undefined
  /**
   * Explorer only: about every this many simulated ms (seeded) one follower is cut off from every
   * other node for 300–1,500 ms, while the cluster goes on. It returns with entries whose commit it
   * has not heard of: the leader's next heartbeat commits them at the follower (a `Ready` with
   * committed entries, conf changes among them under churn), and its first append is refused — the
   * follower's log is behind the leader's compaction — so a snapshot follows at once, arriving
   * while that `Ready` is still being persisted. Off when absent.
   */
  readonly isolateFollowerEveryMs?: number | undefined
  /** A known bug put back (`Bugs.ts`), to show the simulator catches it. */
  readonly bug?: BugName | undefined
  /**
   * Full-service tier only: about every this many simulated ms (seeded) the leader of the moment is
   * cut off from every other node for 1.5–3 election timeouts; then the cut heals and an operator
   * hands leadership back to it (`cluster transfer`). It stepped down (CheckQuorum) with its
   * clients' last writes appended but not committed, the others elected a leader without them, and
   * it took that leader's log when the cut healed: it leads again while those proposals still wait
   * for an answer, and appends new ones at their indexes. Off when absent.
   */
  readonly isolateLeaderEveryMs?: number | undefined
  /**
   * Full-service tier only: about every this many simulated ms (seeded) a follower's process is
   * killed and started again 100–400 ms later, as a supervisor restarts a daemon; its new process
   * gets what its peers queued for it meanwhile, and its old messages may still arrive. Off when absent.
   */
  readonly restartFollowerEveryMs?: number | undefined
  /**
   * Full-service tier only: a rolling upgrade. Every node starts on a release of log version `from`
   * (the cluster is founded at it); during the safety phase the nodes are restarted one at a time,
   * at seeded moments, on this release (`LogVersion`). After each upgrade, with chance `rollback`,
   * an upgraded node is restarted on the old release again while the cluster's version is still
   * `from` (a rollback), to be upgraded again later; and, with chance `lateRollback`, once the
   * version is raised, a node is started on the old release again (an operator's mistake): it must stop
   * (`BLX_RELEASE_TOO_OLD`), and the operator upgrades it. Nodes still old when the faults heal are
   * upgraded then, and the run converges only once the cluster's version is this release's. (The
   * KV stack has no log versions: there it is restarts only.) Off when absent.
   */
  readonly rollingUpgrade?: { readonly from: number; readonly rollback: number; readonly lateRollback: number } | undefined
  /**
   * Full-service tier, KV workload only: clients send each read to a random running node (as API
   * clients spread over the nodes do), not to the leader they know; followers serve them by ReadIndex.
   */
  readonly readsAnywhere?: boolean | undefined
  /**
   * Full-service tier only: the chance that a follower's process dies as the first read request of
   * its life leaves for the leader, and is started again 100–400 ms later (its data intact). Its
   * peers but the leader (all but a quorum's worth less two) are cut off from the leader meanwhile,
   * until 0.5–1.5 s after the restart: the leader's heartbeat round for that request waits for the
   * follower, and so do its writes. The new process learns its leader from the leader's
   * reconnection, which brings that round's heartbeats (with the commit index of before the
   * writes) together with the writes' appends. One such restart at a time.
   */
  readonly restartOnFirstRead?: number | undefined
  /**
   * Full-service tier, KV workload only: client 0 reads only at new processes, once at each (at the
   * start, and after every restart): once the process knows a leader and a node has applied an
   * entry since (a write completed; or 40 ms later). So it asks the first ReadIndex round of each
   * process (see `restartOnFirstRead`), in a restarted one as soon as it could meet a round left
   * by the earlier process, and begins after a write the read must see.
   */
  readonly readsAtNewProcesses?: boolean | undefined
  /**
   * Full-service tier only: how long a proposal, read or transfer may take on a node before it
   * fails with `Timeout` (default 1,000 ms; the daemon's default is 5,000).
   */
  readonly requestTimeoutMs?: number | undefined
  /**
   * How a crashed node's messages still in flight arrive (`Network.ts`): some late, after its next
   * incarnation has started, some twice. Default `defaultLateAfterCrash`.
   */
  readonly lateAfterCrash?: LateAfterCrash | undefined
  /**
   * Full-service tier only: the nodes' disks take time to flush and fail in the ways drawn from
   * these (`Disk.ts`); a crash then loses what was not flushed. Without it every flush completes
   * as its write commits.
   */
  readonly storage?: StorageFaultOptions | undefined
  /**
   * False for no scheduled partitions, crashes or clock skews (the links
   * still drop and delay; crash points still crash) — for profiles whose faults need the rest of
   * the cluster working while one node misbehaves. Default true.
   */
  readonly scheduledFaults?: boolean | undefined
  /**
   * Full-service tier only: membership through a single voter. `join`: node 1 founds the cluster
   * alone and every other node joins as a learner and is promoted once caught up, as `cluster
   * join` does. `shrink`: once during the safety phase the cluster is shrunk to one voter, then
   * grown back. Before the liveness probe every node is a voter again.
   */
  readonly membership?: "join" | "shrink" | undefined
  /**
   * Full-service tier only: the share of restarts that come back with an empty data directory
   * (the node's disk was replaced, or its directory removed), under the same node id — one node at
   * a time. As the daemon does, such a node does not start while a peer lists it as a voter; the
   * operator removes it, and adds it back as a learner that is promoted once caught up.
   */
  readonly amnesia?: number | undefined
  /**
   * With `amnesia`: the chance that a node re-added as a learner is wiped again once it has
   * acknowledged entries, before its promotion (full-service tier). Like a voter, it must not start
   * on its empty directory as it is: its daemon has it removed, and its join adds it again.
   */
  readonly wipeLearners?: number | undefined
  /**
   * Full-service tier only: the chance that a node that has just granted its vote (safety phase)
   * dies as the grant leaves and comes back 100–400 ms later on an empty data directory, under the
   * same id, while the election it voted in may still go on. One lost directory at a time.
   */
  readonly wipeVoters?: number | undefined
}

export interface ExploreResult {
  readonly seed: number
  readonly ok: boolean
  /** The first broken invariant or failed check, for a person. */
  readonly violation: string | undefined
  readonly traceHash: string
  readonly stats: {
    readonly events: number
    readonly simulatedMs: number
    readonly elections: number
    readonly maxTerm: number
    readonly committed: number
    readonly snapshotsInstalled: number
    readonly crashes: number
    readonly operations: number
    readonly unknownOutcomes: number
    readonly messages: number
    readonly dropped: number
    /** Sent to a node that was down: queued by its sender, delivered once it was back and reconnected to. */
    readonly queued: number
    /** Messages of a crashed node held back to arrive late (`lateAfterCrash`). */
    readonly late: number
    /** Membership changes proposed (and accepted by a leader) by the churn. */
    readonly membershipChanges: number
  }
  readonly linearizability: "ok" | "illegal" | "unknown" | "not checked"
  /** What a workload did besides its operations, by name (the orchestration workload: VMs created, moved, …). */
  readonly counts?: Readonly<Record<string, number>> | undefined
}

/**
 * Named fault profiles. `default`: 5 nodes, moderate faults. `crashpoints`: 3 nodes sending one
 * entry per message, one message in flight, leaders crashing at the "durable but not yet sent"
 * point — the narrow windows where commitment rules matter (it finds the Figure 8 bug). `churn`: the
 * default faults plus membership changes about every second. Full-service tier only: `storage`
 * (3 nodes; the default network faults plus stalled, slow and failing disks, most often the
 * leader's, and crashes losing unflushed writes: `Disk.ts`), `join` and `shrink` (the storage
 * faults and a few leader crash points while the cluster passes through a single voter: founded by
 * one node that the others join, or shrunk to one voter and grown back) and `amnesia` (half the
 * restarts come back with an empty data directory: refused while still a voter, removed, re-added)
 * and `learners` (the same, and a re-added node is wiped again once it is a learner that
 * acknowledged entries: its daemon has it removed before it starts, and its join re-adds it) and
 * `votes` (amnesia, and a node that grants its vote dies as the grant leaves and comes back empty
 * 100–400 ms later, while the election may still go on: a second grant in that term, if let in).
 * `transfer`: the default faults plus an operator asking random nodes for leadership transfers
 * every few hundred ms (leases overridden by a transfer's votes; CheckQuorum under transfer
 * requests). `reconfig`: membership churn every few hundred ms, a snapshot every 4 applied entries
 * and Readys taking up to 40 ms to persist, while the cores go on stepping messages (snapshots
 * installed while a Ready with membership changes is outstanding). `snapreconfig`: the same pushed
 * to where it happens often — churn every ~60 ms whose removals mostly take the node promoted last
 * (so consecutive changes concern one node), a snapshot behind every applied entry with no entries
 * kept, Readys taking up to 80 ms, no scheduled faults but a follower cut off for 0.3–1.5 s every
 * ~300 ms: it returns to a heartbeat that commits entries it holds (membership changes among them)
 * and an append it must refuse, so a snapshot arrives while that Ready is still being persisted.
 * Full-service tier only: `waiters`
 * (3 nodes, 6 clients, about one entry per append: every ~3 s the leader is cut off for 1.5–3
 * election timeouts, then handed leadership back; the daemon's 5 s request timeout) — a leader
 * that appended and did not commit, lost leadership and regained it, proposing again at the
 * indexes its earlier proposals still wait on; `restarts` (a follower's process killed and started
 * again 100–400 ms later every ~400 ms, half the time the one restarted last — a crash loop;
 * clients read at random nodes): new processes receive what their peers queued for the old one;
 * `stalereads` (3 nodes, no scheduled faults: a follower restarted every ~600 ms, and its new
 * process dies as its first ReadIndex request leaves, the third node cut off from the leader so
 * that the request's heartbeat round waits for the follower, as do the writes; one client reads
 * once at each new process, after a write completed since it learned its leader): the successor
 * process's first read, numbered as the one still waiting at the leader, meets that round.
 * Full-service tier only: `upgrade` (5 nodes, the default faults, a rolling upgrade from log
 * version 1 with rollbacks: `rollingUpgrade`) — mixed releases apply the same log alike, and the
 * cluster's log version is raised only once every member runs the newer one.
 */
export const profiles = {
  default: { nodes: 5 },
  crashpoints: { nodes: 3, maxSizePerMsg: 1, maxInflightMsgs: 1, crashPoints: 0.3 },
  churn: { nodes: 5, churnEveryMs: 1000 },
  storage: { nodes: 3, clients: 2, storage: storageFaults, scheduledFaults: false, crashPoints: 0.003, livenessMs: 30_000 },
  join: { nodes: 3, membership: "join", storage: storageFaults, livenessMs: 30_000, crashPoints: 0.05 },
  shrink: { nodes: 3, membership: "shrink", storage: storageFaults, livenessMs: 30_000, crashPoints: 0.05 },
  amnesia: { nodes: 3, amnesia: 0.5 },
  learners: { nodes: 3, amnesia: 0.5, wipeLearners: 1 },
  votes: { nodes: 3, amnesia: 0.5, wipeVoters: 1 },
  transfer: { nodes: 3, transferEveryMs: 300 },
  waiters: {
    nodes: 3,
    clients: 6,
    // About one entry per append, one append in flight: the leader always holds a tail of
    // appended, unreplicated proposals when it is cut off.
    maxSizePerMsg: 64,
    maxInflightMsgs: 1,
    requestTimeoutMs: 5000,
    isolateLeaderEveryMs: 3000,
    scheduledFaults: false,
    livenessMs: 15_000
  },
  restarts: { nodes: 3, clients: 6, restartFollowerEveryMs: 400, readsAnywhere: true },
  stalereads: { nodes: 3, clients: 4, restartFollowerEveryMs: 600, restartOnFirstRead: 1, readsAtNewProcesses: true, scheduledFaults: false },
  reconfig: { nodes: 5, churnEveryMs: 300, compactEvery: 4, fsyncMs: 40 },
  snapreconfig: {
    nodes: 5,
    churnEveryMs: 60,
    churnFocus: 0.8,
    compactEvery: 1,
    compactKeep: 0,
    fsyncMs: 80,
    isolateFollowerEveryMs: 300,
    scheduledFaults: false
  },
  upgrade: { nodes: 5, rollingUpgrade: { from: 1, rollback: 0.3, lateRollback: 0.6 } }
} satisfies Record<string, Omit<ExploreOptions, "seed">>

export type ProfileName = keyof typeof profiles

/** Profiles that only the full-service tier runs (the explorer has no disks, no joins, no wiped nodes). */
export const fullTierProfiles: ReadonlyArray<ProfileName> = ["storage", "join", "shrink", "amnesia", "learners", "votes", "waiters", "restarts", "upgrade", "stalereads"]

type Event =
  | { readonly k: "tick"; readonly node: number; readonly incarnation: number }
  | { readonly k: "deliver"; readonly d: Delivery<Message> }
  | { readonly k: "persisted"; readonly node: number; readonly incarnation: number; readonly rd: Ready }
  | { readonly k: "client"; readonly client: number }
  | { readonly k: "timeout"; readonly client: number; readonly op: number }
  | { readonly k: "fault"; readonly action: FaultAction }
  | { readonly k: "liveness" }
  | { readonly k: "churn" }
  | { readonly k: "transfer" }
  | { readonly k: "isolate" }
  | { readonly k: "rejoin" }

interface PendingWrite {
  readonly term: number
  readonly op: number
  readonly client: number
}

interface PendingRead {
  readonly op: number
  readonly client: number
  readonly key: string
}

interface SimNode {
  readonly id: number
  /** What the node has made durable; it survives crashes. */
  readonly storage: MemoryStorage
  raw: RawNode | undefined
  kv: KvStore
  incarnation: number
  busy: boolean
  tickEvery: number
  snapshotIndex: number
  readonly writes: Map<number, PendingWrite>
  readonly reads: Map<string, PendingRead>
  waitingReads: Array<PendingRead & { readonly index: number }>
}

interface Client {
  readonly id: number
  leaderGuess: number
  op: number | undefined
  /** Where the outstanding op went, so a crash there can settle it. */
  at: number
  seq: number
}

const keys = ["a", "b", "c"]

/** Message types as small numbers, for the trace hash (of both simulator tiers). */
export const messageCode: Record<Message["type"], number> = {
  app: 1,
  appResp: 2,
  vote: 3,
  voteResp: 4,
  preVote: 5,
  preVoteResp: 6,
  heartbeat: 7,
  heartbeatResp: 8,
  snap: 9,
  timeoutNow: 10,
  readIndex: 11,
  readIndexResp: 12,
  transferLeader: 13,
  snapAck: 14
}

export const explore = (options: ExploreOptions): ExploreResult => {
  const seed = options.seed
  const n = options.nodes ?? 5
  const safetyMs = options.safetyMs ?? 10_000
  const livenessMs = options.livenessMs ?? 10_000
  const tickMs = options.tickMs ?? 100
  const compactEvery = options.compactEvery ?? 64
  const compactKeep = options.compactKeep ?? 8
  const root = Prng.fromSeed(seed)
  const workload = root.fork("workload")
  const fsync = root.fork("fsync")
  const crashPrng = root.fork("crashpoints")
  const crashPoints = options.crashPoints ?? 0
  const fsyncMs = options.fsyncMs ?? 3
  const ids = Array.from({ length: n }, (_, i) => i + 1)
  const queue = new EventQueue<Event>()
  // Small fields are packed into one number per record: the hash costs per field, and a record
  // per message is the simulator's hottest path.
  const trace = new TraceHash()
  const history = new History<RegisterInput, RegisterOutput>()
  let now = 0
  let events = 0
  let snapshotsInstalled = 0
  let crashes = 0
  let messages = 0

  const network = new Network<Message>({
    nodes: ids,
    prng: root.fork("network"),
    links: defaultLinkFaults,
    queue: { sizeOf: messageBytes },
    lateAfterCrash: options.lateAfterCrash ?? defaultLateAfterCrash,
    schedule: (time, d) => queue.push(time, { k: "deliver", d })
  })

  /** Infinity during the safety phase; then the time by which the cluster must have made progress. */
  let livenessDeadline = Infinity
  const fail = (message: string): never => {
    throw new Violation(`at ${now} ms: ${message}`)
  }
  const invariants = new RaftInvariants(fail)
  // Two CheckQuorum rounds of ten ticks at the slowest skewed tick (+20 %), and margin.
  const contact = new QuorumContact(fail, Math.ceil(2 * 10 * tickMs * 1.25) + 100)
  const initialConf = { voters: ids, learners: [] }

  const makeRaw = (node: SimNode): RawNode =>
    new RawNode({
      id: node.id,
      storage: node.storage,
      random: (() => {
        const prng = root.fork(`raft:${node.id}:${node.incarnation}`)
        return (k: number) => prng.int(k)
      })(),
      applied: node.storage.snapshot().metadata.index,
      electionTick: 10,
      heartbeatTick: 1,
      preVote: true,
      checkQuorum: true,
      // As the daemon runs (`RaftNode.makeCore`).
      lazyCommit: true,
      maxSizePerMsg: options.maxSizePerMsg ?? 4096,
      maxInflightMsgs: options.maxInflightMsgs ?? 64,
      ...switchesOf(options.bug).node?.raft
    })

  const nodes = new Map<number, SimNode>()
  for (const id of ids) {
    const storage = MemoryStorage.bootstrap({ voters: ids, learners: [] }, "")
    const node: SimNode = {
      id,
      storage,
      raw: undefined,
      kv: new KvStore(),
      incarnation: 0,
      busy: false,
      tickEvery: tickMs,
      snapshotIndex: 1,
      writes: new Map(),
      reads: new Map(),
      waitingReads: []
    }
    node.kv.restore("", 1)
    node.raw = makeRaw(node)
    nodes.set(id, node)
    queue.push(root.fork(`tick:${id}`).int(tickMs), { k: "tick", node: id, incarnation: 0 })
  }

  const clients: Array<Client> = Array.from({ length: options.clients ?? 3 }, (_, i) => ({
    id: i,
    leaderGuess: 0,
    op: undefined,
    at: 0,
    seq: 0
  }))
  for (const c of clients) queue.push(workload.int(50), { k: "client", client: c.id })

  const schedule = faultSchedule(root.fork("faults"), {
    nodes: ids,
    duration: safetyMs,
    intensity: options.intensity ?? 0.5,
    maxSkewMs: 200,
    healAtEnd: true
  })
  if (options.scheduledFaults !== false) for (const f of schedule) queue.push(f.at, { k: "fault", action: f.action })
  queue.push(safetyMs, { k: "liveness" })
  const churnEveryMs = options.churnEveryMs ?? 0
  const churnPrng = root.fork("churn")
  let membershipChanges = 0
  if (churnEveryMs > 0) queue.push(churnPrng.int(2 * churnEveryMs), { k: "churn" })
  const transferEveryMs = options.transferEveryMs ?? 0
  const transferPrng = root.fork("transfer")
  let transfers = 0
  const nextTransfer = () => now + Math.ceil(transferEveryMs / 2) + transferPrng.int(transferEveryMs)
  if (transferEveryMs > 0) queue.push(transferPrng.int(transferEveryMs), { k: "transfer" })
  const isolateEveryMs = options.isolateFollowerEveryMs ?? 0
  const isolatePrng = root.fork("isolate")
  if (isolateEveryMs > 0) queue.push(isolatePrng.int(isolateEveryMs), { k: "isolate" })

  // --- Invariants -------------------------------------------------------------------------------

  const rawLog = (raw: RawNode): LogTerms => {
    const st = raw.status()
    return {
      firstIndex: st.firstIndex,
      lastIndex: st.lastIndex,
      term: (i) => raw.raft.log.term(i),
      entry: (i) => raw.raft.log.slice(i, i + 1, Number.MAX_SAFE_INTEGER)?.[0]
    }
  }

  const checkLeader = (node: SimNode) => {
    const raw = node.raw!
    if (raw.role === "leader") {
      invariants.leader(node.id, raw.term, () => rawLog(raw), node.incarnation)
      contact.leader(node.id, raw.term, raw.status().confState.voters, now)
    } else contact.notLeader(node.id)
  }

  const checkLogMatching = () => {
    const live = [...nodes.values()].filter((x) => x.raw !== undefined)
    invariants.logMatching(live.map((x) => ({ node: x.id, log: rawLog(x.raw!) })))
  }

  // --- Nodes ------------------------------------------------------------------------------------

  const pump = (node: SimNode) => {
    const raw = node.raw
    if (raw === undefined || node.busy || !raw.hasReady()) return
    const rd = raw.ready()
    if (rd.softState?.role === "leader") checkLeader(node)
    // An entry is committed as soon as any node learns it is (before anyone applies it).
    for (const e of rd.committedEntries) invariants.committedEntry(node.id, e)
    node.busy = true
    queue.push(now + fsync.int(fsyncMs), { k: "persisted", node: node.id, incarnation: node.incarnation, rd })
  }

  const finishWrite = (node: SimNode, e: Entry, result: unknown) => {
    const w = node.writes.get(e.index)
    if (w === undefined) return
    node.writes.delete(e.index)
    const c = clients[w.client]!
    if (c.op !== w.op) return
    if (w.term === e.term) {
      history.ok(w.op, result as RegisterOutput, now)
      invariants.acknowledged(node.id, e)
    } else history.fail(w.op)
    c.op = undefined
    queue.push(now + 1 + workload.int(20), { k: "client", client: c.id })
  }

  const persisted = (node: SimNode, rd: Ready) => {
    const raw = node.raw!
    // 1. durable
    if (rd.snapshot !== undefined) node.storage.applySnapshot(rd.snapshot)
    node.storage.append(rd.entries)
    if (rd.hardState !== undefined) {
      invariants.durableCommit(node.id, rd.hardState.commit)
      node.storage.setHardState(rd.hardState)
    }
    // Crash point: durable, but nothing sent or applied yet.
    const interesting = rd.entries.length > 0 || rd.committedEntries.length > 0
    if (crashPoints > 0 && interesting && livenessDeadline === Infinity && raw.role === "leader" && crashable() && crashPrng.chance(crashPoints)) {
      trace.record(now, (5 << 24) | node.id)
      network.crash(node.id, now)
      crash(node)
      const at = now + 100 + crashPrng.int(1900)
      queue.push(at, { k: "fault", action: { _tag: "Restart", node: node.id } })
      return
    }
    // 2. send
    for (const m of rd.messages) {
      messages++
      if (m.type === "voteResp" && !m.reject) invariants.vote(m.from, m.term, m.to)
      network.send(m.from, m.to, m, now)
    }
    // 3. apply
    if (rd.snapshot !== undefined) {
      snapshotsInstalled++
      const index = rd.snapshot.metadata.index
      node.kv.restore(rd.snapshot.data, index)
      node.snapshotIndex = index
      for (const [i, w] of node.writes) {
        if (i > index) continue
        node.writes.delete(i)
        const c = clients[w.client]!
        if (c.op === w.op) {
          history.unknown(w.op)
          c.op = undefined
          queue.push(now + 1, { k: "client", client: c.id })
        }
      }
    }
    for (const e of rd.committedEntries) {
      if (e.index <= node.kv.applied) continue
      invariants.committedEntry(node.id, e)
      const result = node.kv.apply(e)
      finishWrite(node, e, result)
    }
    for (const rs of rd.readStates) {
      const r = node.reads.get(rs.context)
      if (r === undefined) continue
      node.reads.delete(rs.context)
      node.waitingReads.push({ ...r, index: rs.index })
    }
    raw.advance(rd)
    node.busy = false
    if (churnEveryMs > 0) {
      // A snapshot the core installed while this Ready was outstanding already holds its configuration.
      const st = raw.status()
      invariants.configuration(node.id, Math.max(raw.appliedIndex, st.firstIndex - 1), initialConf, st.confState)
    }
    // 4. serve reads that became linearizable, compact
    if (node.waitingReads.length > 0) {
      const still: typeof node.waitingReads = []
      for (const r of node.waitingReads) {
        if (r.index > node.kv.applied) {
          still.push(r)
          continue
        }
        const c = clients[r.client]!
        if (c.op === r.op) {
          history.ok(r.op, node.kv.get(r.key), now)
          c.op = undefined
          queue.push(now + 1 + workload.int(20), { k: "client", client: c.id })
        }
      }
      node.waitingReads = still
    }
    // Not while a snapshot the core installed meanwhile (a slow Ready) is still to be applied: the
    // applied index is then behind the core's log, which starts after that snapshot.
    if (node.kv.applied - node.snapshotIndex >= compactEvery && raw.status().firstIndex - 1 <= raw.appliedIndex) {
      const snap = raw.createSnapshot(node.kv.snapshot())
      node.storage.createSnapshot(snap)
      node.snapshotIndex = snap.metadata.index
      const to = snap.metadata.index - compactKeep
      if (to >= node.storage.firstIndex()) node.storage.compact(to)
    }
    invariants.commitIndex(node.id, raw.commitIndex)
    trace.record(now, (2 << 24) | (node.id << 16) | Math.min(rd.messages.length, 0xffff), rd.entries.length * 65536 + rd.committedEntries.length, raw.term)
  }

  /** Crash points never take down a majority (the schedule's own crashes are bounded the same way). */
  const crashable = () => {
    let down = 0
    for (const x of nodes.values()) if (x.raw === undefined) down++
    return down < Math.floor((n - 1) / 2)
  }

  const crash = (node: SimNode) => {
    if (node.raw === undefined) return
    crashes++
    contact.notLeader(node.id)
    node.raw = undefined
    node.busy = false
    node.incarnation++
    // Outstanding client operations at this node: their outcome is now unknown (writes) or void (reads).
    for (const w of node.writes.values()) {
      const c = clients[w.client]!
      if (c.op === w.op) {
        history.unknown(w.op)
        c.op = undefined
        queue.push(now + 1, { k: "client", client: c.id })
      }
    }
    for (const r of [...node.reads.values(), ...node.waitingReads]) {
      const c = clients[r.client]!
      if (c.op === r.op) {
        history.fail(r.op)
        c.op = undefined
        queue.push(now + 1, { k: "client", client: c.id })
      }
    }
    node.writes.clear()
    node.reads.clear()
    node.waitingReads = []
  }

  const restart = (node: SimNode) => {
    if (node.raw !== undefined) return
    // The state machine is rebuilt from the durable snapshot; the log replays the rest.
    const snap = node.storage.snapshot()
    node.kv = new KvStore()
    node.kv.restore(node.storage.snapshotData(), snap.metadata.index)
    node.snapshotIndex = snap.metadata.index
    node.raw = makeRaw(node)
    invariants.restarted(node.id)
    queue.push(now + node.tickEvery, { k: "tick", node: node.id, incarnation: node.incarnation })
  }

  // --- Clients ----------------------------------------------------------------------------------

  const clientStep = (c: Client) => {
    if (c.op !== undefined) return
    const live = ids.filter((id) => nodes.get(id)!.raw !== undefined)
    if (live.length === 0) {
      queue.push(now + 50, { k: "client", client: c.id })
      return
    }
    const target = c.leaderGuess !== 0 && nodes.get(c.leaderGuess)!.raw !== undefined ? c.leaderGuess : workload.pick(live)
    const node = nodes.get(target)!
    const raw = node.raw!
    const key = workload.pick(keys)
    const roll = workload.float()
    c.at = target
    if (roll < 0.4) {
      const op = history.invoke(c.id, { _tag: "read", key }, now)
      const context = `r${op}`
      const result = raw.readIndex(context)
      if (!result.ok) {
        history.fail(op)
        c.leaderGuess = raw.status().lead
        queue.push(now + 5 + workload.int(20), { k: "client", client: c.id })
        return
      }
      c.op = op
      node.reads.set(context, { op, client: c.id, key })
      queue.push(now + 1000, { k: "timeout", client: c.id, op })
    } else {
      const value = `${c.id}.${++c.seq}`
      const cas = roll >= 0.8
      const expected = cas ? workload.pick([null, ...clients.map((x) => `${x.id}.${Math.max(1, x.seq - workload.int(2))}`)]) : null
      const input: RegisterInput = cas ? { _tag: "cas", key, expected, value } : { _tag: "write", key, value }
      const op = history.invoke(c.id, input, now)
      const data = JSON.stringify(cas ? { op: "cas", key, expected, value } : { op: "put", key, value })
      const result = raw.propose(data)
      if (!result.ok) {
        history.fail(op)
        if (result.reason === "notLeader") c.leaderGuess = result.leader
        queue.push(now + 5 + workload.int(20), { k: "client", client: c.id })
        return
      }
      c.op = op
      c.leaderGuess = target
      node.writes.set(result.index, { term: result.term, op, client: c.id })
      queue.push(now + 1000, { k: "timeout", client: c.id, op })
    }
    pump(node)
  }

  const timeout = (c: Client, op: number) => {
    if (c.op !== op) return
    const node = nodes.get(c.at)!
    let read = false
    for (const [ctx, r] of node.reads) if (r.op === op) (node.reads.delete(ctx), (read = true))
    const waiting = node.waitingReads.findIndex((r) => r.op === op)
    if (waiting >= 0) (node.waitingReads.splice(waiting, 1), (read = true))
    for (const [i, w] of node.writes) if (w.op === op) node.writes.delete(i)
    if (read) history.fail(op)
    else history.unknown(op)
    c.op = undefined
    c.leaderGuess = 0
    queue.push(now + 1 + workload.int(20), { k: "client", client: c.id })
  }

  // --- Membership churn -------------------------------------------------------------------------

  /**
   * One membership change at the leader of the highest term (if any): promote a caught-up learner;
   * else add a node missing from the configuration back as a learner; else (not when `restoring`)
   * maybe remove a voter, never going below three. Returns whether every node is a voter.
   */
  const churnFocus = options.churnFocus ?? 0
  let lastPromoted: number | undefined
  const churnStep = (restoring: boolean): boolean => {
    let leader: SimNode | undefined
    for (const x of nodes.values()) {
      if (x.raw === undefined || x.raw.role !== "leader") continue
      if (leader === undefined || x.raw.term > leader.raw!.term) leader = x
    }
    if (leader === undefined) return false
    const raw = leader.raw!
    const st = raw.status()
    const { voters, learners } = st.confState
    const missing = ids.filter((id) => !voters.includes(id) && !learners.includes(id))
    let change: { readonly type: "addLearner" | "promote" | "remove"; readonly nodeId: number } | undefined
    const learner = learners[0]
    if (learner !== undefined) {
      const progress = st.progress.find((p) => p.id === learner)
      if (progress !== undefined && progress.match >= st.commit) change = { type: "promote", nodeId: learner }
    } else if (missing.length > 0 && (restoring || churnPrng.chance(0.5))) {
      change = { type: "addLearner", nodeId: churnPrng.pick(missing) }
    } else if (!restoring && voters.length > 3) {
      const focus = lastPromoted !== undefined && voters.includes(lastPromoted) && churnFocus > 0 && churnPrng.chance(churnFocus)
      change = { type: "remove", nodeId: focus ? lastPromoted! : churnPrng.pick(voters) }
    }
    if (change !== undefined && raw.proposeConfChange(change).ok) {
      membershipChanges++
      if (change.type === "promote") lastPromoted = change.nodeId
      trace.record(now, (6 << 24) | (leader.id << 16) | (change.nodeId << 8) | (change.type === "remove" ? 1 : change.type === "addLearner" ? 2 : 3))
      pump(leader)
    }
    return missing.length === 0 && learners.length === 0
  }

  // --- Liveness ---------------------------------------------------------------------------------

  let probe: { node: number; index: number; term: number } | undefined
  let liveDone = false

  const livenessCheck = () => {
    // After churn, first make every node a voter again (one change per check). A removal still in
    // the log when the probe went out may apply later: then restore again and probe anew.
    if (churnEveryMs > 0 && !churnStep(true)) {
      probe = undefined
      return
    }
    if (probe !== undefined) {
      const done = [...nodes.values()].every((x) => x.raw !== undefined && x.kv.applied >= probe!.index)
      if (done && invariants.committed.get(probe.index) === probe.term) liveDone = true
      else if (done) probe = undefined // overwritten: propose again
      return
    }
    for (const x of nodes.values()) {
      if (x.raw === undefined || x.raw.status().role !== "leader") continue
      const r = x.raw.propose(JSON.stringify({ op: "put", key: "__probe", value: String(now) }))
      if (r.ok) {
        probe = { node: x.id, index: r.index, term: r.term }
        pump(x)
      }
      return
    }
  }

  // --- The loop ---------------------------------------------------------------------------------

  let violation: string | undefined
  let linearizability: ExploreResult["linearizability"] = "not checked"
  try {
    for (;;) {
      const next = queue.pop()
      if (next === undefined) fail("the event queue ran dry")
      now = next!.time
      if (now > livenessDeadline) {
        const states = [...nodes.values()].map((x) => {
          if (x.raw === undefined) return `${x.id}: down`
          const st = x.raw.status()
          const progress = st.progress
            .filter((p) => p.id !== x.id)
            .map((p) => ` ${p.id}:${p.state} match ${p.match} next ${p.next} inflight ${p.inflight} snap ${p.pendingSnapshot}`)
            .join(",")
          return `${x.id}: ${st.role} term ${st.term} lead ${st.lead} commit ${st.commit} applied ${x.kv.applied} first ${st.firstIndex} last ${st.lastIndex} voters [${st.confState.voters.join(",")}]${progress !== "" ? ` progress${progress}` : ""}`
        })
        fail(`liveness: no leader committed a new entry on every node within ${livenessMs} ms after the faults healed (${states.join("; ")})`)
      }
      events++
      const ev = next!.event
      switch (ev.k) {
        case "tick": {
          const node = nodes.get(ev.node)!
          if (node.raw === undefined || node.incarnation !== ev.incarnation) break
          node.raw.tick()
          trace.record(now, (1 << 24) | node.id)
          pump(node)
          checkLeader(node)
          queue.push(now + node.tickEvery, { k: "tick", node: node.id, incarnation: node.incarnation })
          if (livenessDeadline !== Infinity && !liveDone && ev.node === ids[0]) livenessCheck()
          break
        }
        case "deliver": {
          if (!network.accept(ev.d)) break
          const node = nodes.get(ev.d.to)!
          if (node.raw === undefined) break
          trace.record(now, (3 << 24) | (ev.d.from << 16) | (ev.d.to << 8) | messageCode[ev.d.msg.type], ev.d.msg.term)
          contact.heard(ev.d.to, ev.d.from, ev.d.msg.term, now)
          node.raw.step(ev.d.msg)
          pump(node)
          break
        }
        case "persisted": {
          const node = nodes.get(ev.node)!
          if (node.raw === undefined || node.incarnation !== ev.incarnation) break
          persisted(node, ev.rd)
          pump(node)
          break
        }
        case "client": {
          if (liveDone) break
          clientStep(clients[ev.client]!)
          break
        }
        case "timeout":
          timeout(clients[ev.client]!, ev.op)
          break
        case "fault": {
          const a = ev.action
          // Crash points add crashes of their own: skip schedule actions they made moot.
          if (a._tag === "Crash" && !network.isUp(a.node)) break
          if (a._tag === "Restart" && network.isUp(a.node)) break
          trace.record(now, 4, a._tag)
          applyFault(network, a, now)
          if (a._tag === "Crash") crash(nodes.get(a.node)!)
          else if (a._tag === "Restart") restart(nodes.get(a.node)!)
          else if (a._tag === "ClockSkew") nodes.get(a.node)!.tickEvery = Math.max(1, Math.round(tickMs * (1 + a.skewMs / 1000)))
          break
        }
        case "transfer": {
          if (livenessDeadline !== Infinity) break
          const live = [...nodes.values()].filter((x) => x.raw !== undefined)
          if (live.length > 0) {
            const at = transferPrng.pick(live)
            const to = transferPrng.pick(at.raw!.status().confState.voters)
            if (at.raw!.transferLeader(to).ok) {
              transfers++
              trace.record(now, (7 << 24) | (at.id << 8) | to)
              pump(at)
            }
          }
          queue.push(nextTransfer(), { k: "transfer" })
          break
        }
        case "isolate": {
          if (livenessDeadline !== Infinity) break
          const followers = [...nodes.values()].filter((x) => x.raw !== undefined && x.raw.role !== "leader")
          if (followers.length > 0) {
            const f = isolatePrng.pick(followers).id
            trace.record(now, (8 << 24) | f)
            network.partition([[f], ids.filter((id) => id !== f)])
            queue.push(now + 300 + isolatePrng.int(1200), { k: "rejoin" })
          } else queue.push(now + 1 + isolatePrng.int(isolateEveryMs), { k: "isolate" })
          break
        }
        case "rejoin": {
          network.heal()
          if (livenessDeadline === Infinity) queue.push(now + Math.ceil(isolateEveryMs / 2) + isolatePrng.int(isolateEveryMs), { k: "isolate" })
          break
        }
        case "churn": {
          if (livenessDeadline !== Infinity) break
          churnStep(false)
          queue.push(now + 1 + churnPrng.int(2 * churnEveryMs), { k: "churn" })
          break
        }
        case "liveness": {
          for (const x of nodes.values()) {
            if (!network.isUp(x.id)) network.restart(x.id, now)
            restart(x)
            x.tickEvery = tickMs
          }
          network.heal()
          network.healAll()
          livenessDeadline = now + livenessMs
          break
        }
      }
      if (events % 512 === 0) checkLogMatching()
      if (liveDone) break
    }
    checkLogMatching()
    invariants.checkAcknowledged()
    const result = checkLinearizability(registerModel, history.operations(), { maxSteps: 5_000_000 })
    linearizability = result._tag === "Ok" ? "ok" : result._tag === "Illegal" ? "illegal" : "unknown"
    if (result._tag === "Illegal") {
      violation = `linearizability: ${formatResult(registerModel, result)}`
    }
  } catch (e) {
    // An assertion inside the Raft core stops the node loudly rather than corrupt state: in the
    // simulator that is a failed run, reported like any broken invariant.
    violation = e instanceof Violation ? e.message : `at ${now} ms: a node stopped on an internal assertion: ${e instanceof Error ? e.message : String(e)}`
  }

  const ops = history.operations()
  return {
    seed,
    ok: violation === undefined,
    violation,
    traceHash: trace.digest(),
    stats: {
      events,
      simulatedMs: now,
      elections: invariants.elections,
      maxTerm: invariants.maxTerm,
      committed: invariants.committed.size,
      snapshotsInstalled,
      crashes,
      operations: ops.length,
      unknownOutcomes: ops.filter((o) => o.ret === Infinity).length,
      messages,
      dropped: network.stats.dropped,
      queued: network.stats.queued,
      late: network.stats.late,
      membershipChanges
    },
    linearizability,
    ...(transferEveryMs > 0 ? { counts: { transfers } } : {})
  }
}
