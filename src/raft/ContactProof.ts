/**
 * Quorum contact for followers, proven by the leader's own heartbeat rounds (no extra messages).
 *
 * The driver (`RaftNode`'s `PeerContact`) stamps what the core sends and reads what the core
 * steps; the core never sees these fields. Why a follower may trust what it gets — the fencing
 * argument — is in `agent/QuorumContact.ts`; here is the mechanism:
 *
 * - Leader, per send that carries heartbeats: a new round number `r` (increasing for the life of the
 *   process) on each of them. Per voter, the newest round it acknowledged: the `round` of a
 *   `heartbeatResp` of the leader's current term that the loop stepped while leading. `Q`, the
 *   quorum round: sorted newest first, the majority-th of those (the leader itself counts as `r`).
 *   Per peer, each `stamp` it sent back (in a `heartbeatResp` of the current term) is kept with the
 *   round number at its arrival (the newest round sent before it). A stamp that arrived before round
 *   `Q` was sent (its arrival round `< Q`) is proven: the newest one goes to the peer as `proven` on
 *   each heartbeat.
 * - Follower: each `heartbeatResp` it sends carries `stamp` (its `Clock` milliseconds when the loop
 *   took the batch it answers in: before it sends, so never later than the truth) and `round` (the
 *   newest round of its leader's in this term it has stepped). A `proven` in a heartbeat its loop
 *   steps, of its current term from the leader it now follows, is its contact: accepted only if it
 *   is a stamp this process could have sent (between its first and its newest).
 *
 * All state is the Raft loop's own: nothing here runs while the loop is stuck.
 */
import type { Message } from "./Message.js"
import type { StateRole } from "./Types.js"

interface Stamp {
  readonly stamp: number
  /** The newest round the leader had sent when the stamp arrived. */
  readonly round: number
}

export class ContactProof {
  // --- Leader side (reset with every new term led).
  private round = 0
  private term = 0
  private readonly acked = new Map<number, number>()
  private readonly stamps = new Map<number, Array<Stamp>>()
  // --- Follower side.
  private seen: { readonly term: number; readonly from: number; round: number } | undefined
  private firstStamp: number | undefined
  private lastStamp: number | undefined
  /** The newest contact proven by a leader's heartbeat (this node's `Clock` milliseconds). */
  proven: number | undefined

  private leading(term: number): void {
    if (term === this.term) return
    this.term = term
    this.acked.clear()
    this.stamps.clear()
  }

  /**
   * `peer` is back as another process: its stamps still waiting belong to the earlier one (a stamp
   * returned to the new process could fall in its own range if the clock was set back meanwhile).
   */
  restarted(peer: number): void {
    this.stamps.delete(peer)
  }

  /** The loop stepped `m`; the core is now in `term`, in `role`, following `lead`. */
  stepped(m: Message, term: number, role: StateRole, lead: number): void {
    if (m.type === "heartbeatResp" && role === "leader" && m.term === term) {
      this.leading(term)
      if (m.round !== undefined && m.round > (this.acked.get(m.from) ?? 0)) this.acked.set(m.from, m.round)
      if (m.stamp !== undefined) {
        let list = this.stamps.get(m.from)
        if (list === undefined) this.stamps.set(m.from, (list = []))
        const newest = list[list.length - 1]
        if (newest === undefined || m.stamp > newest.stamp) list.push({ stamp: m.stamp, round: this.round })
      }
    } else if (m.type === "heartbeat" && role !== "leader" && m.term === term && m.from === lead) {
      if (m.round !== undefined) {
        if (this.seen === undefined || this.seen.term !== term || this.seen.from !== lead) this.seen = { term, from: lead, round: m.round }
        else if (m.round > this.seen.round) this.seen.round = m.round
      }
      const p = m.proven
      if (p !== undefined && this.firstStamp !== undefined && this.lastStamp !== undefined && p >= this.firstStamp && p <= this.lastStamp) {
        if (this.proven === undefined || p > this.proven) this.proven = p
      }
    }
  }

  /**
   * What the driver sends, stamped: a leader's heartbeats with their round and the recipient's
   * proven stamp, a follower's heartbeat answers with its stamp (`now`) and the round it has seen.
   */
  outgoing(messages: ReadonlyArray<Message>, term: number, role: StateRole, voters: () => ReadonlyArray<number>, self: number, now: number): ReadonlyArray<Message> {
    let quorumRound: number | undefined
    let out: Array<Message> | undefined
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!
      let stamped: Message | undefined
      if (m.type === "heartbeat" && role === "leader" && m.term === term) {
        if (quorumRound === undefined) {
          this.leading(term)
          this.round++
          quorumRound = this.quorumRound(voters(), self)
        }
        const proven = this.provenFor(m.to, quorumRound)
        stamped = proven === undefined ? { ...m, round: this.round } : { ...m, round: this.round, proven }
      } else if (m.type === "heartbeatResp") {
        this.firstStamp ??= now
        if (this.lastStamp === undefined || now > this.lastStamp) this.lastStamp = now
        const seen = this.seen
        stamped = seen !== undefined && seen.term === m.term && seen.from === m.to ? { ...m, stamp: now, round: seen.round } : { ...m, stamp: now }
      }
      if (stamped !== undefined) {
        out ??= messages.slice(0, i)
        out.push(stamped)
      } else if (out !== undefined) out.push(m)
    }
    return out ?? messages
  }

  /** The newest round a majority of the voters (this leader as the round it sends now) have acknowledged in this term. */
  private quorumRound(voters: ReadonlyArray<number>, self: number): number {
    if (voters.length === 0) return this.round
    const rounds = voters.map((v) => (v === self ? this.round : (this.acked.get(v) ?? 0))).sort((a, b) => b - a)
    return rounds[Math.floor(voters.length / 2)]!
  }

  /** The newest stamp of `peer`'s that arrived before round `quorumRound` was sent; older ones are dropped. */
  private provenFor(peer: number, quorumRound: number): number | undefined {
    const list = this.stamps.get(peer)
    if (list === undefined) return undefined
    let newest = -1
    for (let i = 0; i < list.length && list[i]!.round < quorumRound; i++) newest = i
    if (newest < 0) return undefined
    if (newest > 0) list.splice(0, newest)
    return list[0]!.stamp
  }
}
