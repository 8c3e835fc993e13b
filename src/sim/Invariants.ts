/**
 * Raft's safety properties, checked the same way by both simulator tiers: the explorer (pure cores)
 * and the full-service simulation (real `RaftNode` services). Each tier feeds what it observes —
 * a node leading a term, a vote it granted, a commit index, an entry known committed or applied, a
 * write acknowledged to a client — and this class keeps what it needs to tell a violation apart from a legal history.
 * A violation goes to the tier's `fail`, which throws a `Violation` to stop the run.
 *
 * The checks see a node's log through `LogTerms`, so a tier may hand over the core's in-memory log
 * or the node's durable store: at the points where the full tier checks, the two hold the same
 * entries (a `Ready`'s entries are saved before anything else is done with it).
 */
import { decodeConfChange } from "../raft/Raft.js"
import type { ConfState, Entry } from "../raft/Types.js"
import { applyChangeToConfState } from "../raft/Types.js"

/** A broken invariant or failed check: the run stops with its message. */
export class Violation extends Error {}

/**
 * The terms of a node's log: `term(i)` for `firstIndex - 1 ≤ i ≤ lastIndex`, undefined elsewhere;
 * and the entries themselves (`entry(i)` for `firstIndex ≤ i ≤ lastIndex`) where the tier has them.
 */
export interface LogTerms {
  readonly firstIndex: number
  readonly lastIndex: number
  readonly term: (index: number) => number | undefined
  readonly entry?: ((index: number) => Entry | undefined) | undefined
}

export class RaftInvariants {
  /** index → term of every entry known committed (some node committed or applied it). */
  readonly committed = new Map<number, number>()
  private readonly committedData = new Map<number, string>()
  /** term → the node that led it, and which incarnation of that node. */
  private readonly termLeaders = new Map<number, { readonly node: number; readonly incarnation: number }>()
  /** Commit index per node, since its last (re)start. */
  private readonly commits = new Map<number, number>()
  /** Durable commit index per node, across crashes. */
  private readonly durableCommits = new Map<number, number>()
  private readonly acked: Array<{ readonly node: number; readonly index: number; readonly term: number; readonly data: string }> = []
  /** index → the committed membership change at it (kept to tell each index's configuration). */
  private readonly confChanges = new Map<number, string>()
  /** node → term → the candidate it granted its vote in that term (across its restarts and wipes). */
  private readonly votes = new Map<number, Map<number, number>>()
  /** Distinct (term, leader) pairs seen. */
  elections = 0
  maxTerm = 0

  constructor(private readonly fail: (message: string) => never) {}

  /**
   * `node` (its run `incarnation`, which a restart changes) leads `term`. At most one leader per
   * term — and one leadership: a node that led a term, crashed and leads the same term again after
   * its restart has won a second election in it (its vote or term was not durable), which is two
   * leaders as surely. A node seen leading a term for the first time must hold every committed
   * entry its log still covers (leader completeness). `log` is only read for a new leader.
   */
  leader(node: number, term: number, log: () => LogTerms, incarnation = 0): void {
    const prev = this.termLeaders.get(term)
    if (prev !== undefined && prev.node === node && prev.incarnation === incarnation) return
    if (prev !== undefined && prev.node !== node) this.fail(`two leaders in term ${term}: nodes ${prev.node} and ${node}`)
    if (prev !== undefined) {
      this.fail(`node ${node} led term ${term} twice: before a restart (run ${prev.incarnation}) and after it (run ${incarnation})`)
    }
    this.termLeaders.set(term, { node, incarnation })
    this.elections++
    this.maxTerm = Math.max(this.maxTerm, term)
    const l = log()
    for (const [index, committedTerm] of this.committed) {
      if (index < l.firstIndex) continue
      const has = l.term(index)
      if (has !== committedTerm) {
        this.fail(
          `leader completeness: node ${node} leads term ${term} but holds term ${has} at committed index ${index} (committed in term ${committedTerm})`
        )
      }
    }
  }

  /**
   * `node` granted its vote in `term` to `candidate` (a `voteResp` it sent without `reject`; a
   * PreVote grant is no vote). A server votes at most once per term — across its restarts, and
   * across a wiped data directory too: a voter back empty and let in under its old id (the
   * amnesia bug) can grant a second vote in a term it voted in, and two leaders may follow. This
   * catches the second grant itself, whether or not a second leader comes of it.
   *
   * A node's committed removal forgets its votes (`committedEntry`): the daemon's way back for a
   * wiped voter is removal, then a re-add. That is sound: a candidate counting the new member's
   * vote holds the re-add in its log, committed after the removal by a leader of a term at least
   * that of any vote the old member gave to a candidate that could still win; so a candidate of
   * such a term cannot hold it.
   */
  vote(node: number, term: number, candidate: number): void {
    let byTerm = this.votes.get(node)
    if (byTerm === undefined) this.votes.set(node, (byTerm = new Map()))
    const prev = byTerm.get(term)
    if (prev === undefined) byTerm.set(term, candidate)
    else if (prev !== candidate) {
      this.fail(`node ${node} voted twice in term ${term}: for ${prev}, then for ${candidate} (after a restart on a wiped data directory?)`)
    }
  }

  /** A node's commit index never goes back while it runs (after a restart it is learned again). */
  commitIndex(node: number, commit: number): void {
    const last = this.commits.get(node) ?? 0
    if (commit < last) this.fail(`node ${node}'s commit index went back from ${last} to ${commit}`)
    this.commits.set(node, commit)
  }

  /** The node restarted: its commit index starts again from what it had made durable. */
  restarted(node: number): void {
    this.commits.delete(node)
  }

  /** The node came back with an empty data directory: what it had made durable is gone, by design. */
  wiped(node: number): void {
    this.commits.delete(node)
    this.durableCommits.delete(node)
  }

  /** The commit index a node made durable never goes back, crashes included. */
  durableCommit(node: number, commit: number): void {
    if (commit < (this.durableCommits.get(node) ?? 0)) this.fail(`node ${node}'s durable commit went back to ${commit}`)
    this.durableCommits.set(node, commit)
  }

  /**
   * `node` knows `e` committed (it committed or applied it). Committed entries never change: one
   * (term, data) per index, whoever commits or applies it — so no two nodes apply different
   * commands at one index.
   */
  committedEntry(node: number, e: Entry): void {
    const term = this.committed.get(e.index)
    if (term === undefined) {
      this.committed.set(e.index, e.term)
      this.committedData.set(e.index, e.data)
      if (e.kind === "confChange") {
        this.confChanges.set(e.index, e.data)
        const cc = decodeConfChange(e.data)
        if (cc.type === "remove") this.votes.delete(cc.nodeId)
      }
    } else if (term !== e.term || this.committedData.get(e.index) !== e.data) {
      this.fail(`committed entry changed: node ${node} has term ${e.term} committed at index ${e.index}, where term ${term} was committed before`)
    }
  }

  /**
   * A node that applied everything up to `applied` runs with the configuration the committed log
   * gives at that index: `initial`, then every committed membership change up to `applied`, each
   * once and in log order. (A change applied twice — say, on top of a snapshot that already
   * reflects it and later ones — re-adds a removed member or removes a re-added one.)
   */
  configuration(node: number, applied: number, initial: ConfState, has: ConfState): void {
    let cs = initial
    for (const index of [...this.confChanges.keys()].filter((i) => i <= applied).sort((a, b) => a - b)) {
      cs = applyChangeToConfState(cs, decodeConfChange(this.confChanges.get(index)!))
    }
    const same = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => a.length === b.length && a.every((x, i) => x === b[i])
    const sorted = (a: ReadonlyArray<number>) => [...a].sort((x, y) => x - y)
    if (!same(sorted(cs.voters), sorted(has.voters)) || !same(sorted(cs.learners), sorted(has.learners))) {
      this.fail(
        `configuration: node ${node} applied up to index ${applied} and runs with voters [${has.voters.join(",")}] learners [${has.learners.join(",")}], but the committed log gives voters [${cs.voters.join(",")}] learners [${cs.learners.join(",")}] there`
      )
    }
  }

  /** A client was told its write (entry `e`, applied on `node`) succeeded. */
  acknowledged(node: number, e: Entry): void {
    this.acked.push({ node, index: e.index, term: e.term, data: e.data })
  }

  /** No acknowledged write was lost: each is still the committed entry at its index. */
  checkAcknowledged(): void {
    for (const a of this.acked) {
      if (this.committed.get(a.index) !== a.term || this.committedData.get(a.index) !== a.data) {
        this.fail(`acknowledged write lost: the write node ${a.node} acknowledged at index ${a.index} (term ${a.term}) is no longer committed there`)
      }
    }
  }

  /**
   * Log matching: if two logs hold an entry with the same index and term, that entry is the same
   * (kind and data, where the logs carry entries) and all earlier entries agree.
   */
  logMatching(logs: ReadonlyArray<{ readonly node: number; readonly log: LogTerms }>): void {
    for (let i = 0; i < logs.length; i++) {
      for (let j = i + 1; j < logs.length; j++) {
        const a = logs[i]!.log
        const b = logs[j]!.log
        const lo = Math.max(a.firstIndex, b.firstIndex)
        let hi = Math.min(a.lastIndex, b.lastIndex)
        while (hi >= lo && a.term(hi) !== b.term(hi)) hi--
        for (let k = lo; k <= hi; k++) {
          if (a.term(k) !== b.term(k)) {
            this.fail(`log matching: nodes ${logs[i]!.node} and ${logs[j]!.node} agree at index ${hi} but differ at ${k}`)
          }
          const x = a.entry?.(k)
          const y = b.entry?.(k)
          if (x !== undefined && y !== undefined && (x.kind !== y.kind || x.data !== y.data)) {
            this.fail(
              `log matching: nodes ${logs[i]!.node} and ${logs[j]!.node} both hold an entry of term ${x.term} at index ${k}, with different contents (${x.kind} ${JSON.stringify(x.data.slice(0, 80))} and ${y.kind} ${JSON.stringify(y.data.slice(0, 80))})`
            )
          }
        }
      }
    }
  }
}

/**
 * CheckQuorum, seen from outside: a leader that has heard nothing of its term from a quorum of its
 * voters for `boundMs` (two of its CheckQuorum rounds, with clock skew and margin) must have
 * stepped down. A tier reports every message a node received and when a node leads a term.
 */
export class QuorumContact {
  /**
   * `to * 4096 + from` → term → when `to` last received a message of that term from `from` (per term:
   * a PreVote carries a term its sender has not reached).
   */
  private readonly heardFrom = new Map<number, Map<number, number>>()
  /**
   * node → the term it leads with which voters, and since when (a new configuration counts from
   * its own start: the core's next round judges it).
   */
  private readonly leading = new Map<number, { readonly term: number; readonly voters: string; readonly since: number }>()

  constructor(
    private readonly fail: (message: string) => never,
    private readonly boundMs: number
  ) {}

  heard(to: number, from: number, term: number, at: number): void {
    const key = to * 4096 + from
    let m = this.heardFrom.get(key)
    if (m === undefined) this.heardFrom.set(key, (m = new Map()))
    m.set(term, at)
  }

  /** `node` is leader of `term` with `voters` now (call it at least every tick while it leads). */
  leader(node: number, term: number, voters: ReadonlyArray<number>, now: number): void {
    const lead = this.leading.get(node)
    const key = voters.join(",")
    if (lead === undefined || lead.term !== term || lead.voters !== key) {
      this.leading.set(node, { term, voters: key, since: now })
      return
    }
    if (now - lead.since < this.boundMs) return
    const recent = voters.filter((v) => {
      if (v === node) return true
      const at = this.heardFrom.get(node * 4096 + v)?.get(term)
      return at !== undefined && now - at <= this.boundMs
    })
    if (recent.length * 2 <= voters.length) {
      this.fail(
        `leader without a quorum: node ${node} has led term ${term} for ${now - lead.since} ms and heard from only [${recent.join(",")}] of voters [${voters.join(",")}] in its term in the last ${this.boundMs} ms; CheckQuorum must have stepped it down`
      )
    }
  }

  /** `node` is not leading (any more), or restarted. */
  notLeader(node: number): void {
    this.leading.delete(node)
  }
}
