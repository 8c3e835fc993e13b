/**
 * What `RaftNode` knows of its contact with its peers, for the failure detector and for fencing.
 *
 * - `lastContact`: when a message from each peer last arrived, whatever its term, processed or not
 *   (stamped by the receiver on arrival): a liveness hint, never a proof of contact.
 * - `quorumAcks`, a leader's proof: per peer, the newest response of its CURRENT term (`appResp`,
 *   `heartbeatResp`) its Raft loop stepped while leading in that term. A loop stuck (say, in a
 *   storage write) steps nothing, so these age: what `QuorumContact` fences on.
 * - `followerContact`, a follower's proof: its leader's heartbeat rounds (`ContactProof.ts`), whose
 *   heartbeats and answers the driver stamps as it sends them (`outgoing`) and reads as it steps
 *   them (`stepped`); the core never sees those fields.
 *
 * `unsafeContactFromAnyMessage` (simulator only) brings back the bug where a leader's proof was
 * `lastContact`.
 */
import { ContactProof } from "./ContactProof.js"
import type { Message } from "./Message.js"
import type { RawNode } from "./RawNode.js"

/** The responses a follower sends to its leader's appends and heartbeats: what proves it follows this leader's term. */
const isLeaderAck = (m: Message): boolean => m.type === "appResp" || m.type === "heartbeatResp"

export class PeerContact {
  /** Per peer: when (Clock milliseconds) a message from it last arrived. */
  private readonly arrivals = new Map<number, number>()
  /** Per peer: the newest response of a term this node led in, as the loop stepped it (`quorumAcks`). */
  private readonly acks = new Map<number, { readonly term: number; readonly at: number }>()
  /** Quorum contact for followers, from the leader's heartbeat rounds (`ContactProof.ts`). */
  private readonly proofs = new ContactProof()
  /** The clock (`Clock.currentTimeMillis`, whole milliseconds) when the loop took its current batch: a follower's stamp. */
  batchWall = 0

  constructor(
    private readonly id: number,
    private readonly raw: RawNode,
    private readonly unsafeContactFromAnyMessage: boolean
  ) {}

  /** A message from `from` arrived at `now` (the receiver, before the loop takes it). */
  arrived(from: number, now: number): void {
    this.arrivals.set(from, now)
  }

  /** The loop has just stepped `message`, which arrived `at`. */
  stepped(message: Message, at: number): void {
    const raw = this.raw
    if (isLeaderAck(message) && raw.role === "leader" && raw.term === message.term) {
      this.acks.set(message.from, { term: message.term, at })
    }
    if (message.type === "heartbeat" || message.type === "heartbeatResp") this.proofs.stepped(message, raw.term, raw.role, raw.lead)
  }

  /** `peer` is back as another process (`ContactProof.restarted`). */
  restarted(peer: number): void {
    this.proofs.restarted(peer)
  }

  /** Stamps what the core sends with the heartbeat-round proofs (`ContactProof.outgoing`). */
  outgoing(messages: ReadonlyArray<Message>): ReadonlyArray<Message> {
    const raw = this.raw
    return this.proofs.outgoing(messages, raw.term, raw.role, () => raw.confState().voters, this.id, this.batchWall)
  }

  lastContact(): ReadonlyMap<number, number> {
    return new Map(this.arrivals)
  }

  quorumAcks(): ReadonlyMap<number, number> {
    if (this.unsafeContactFromAnyMessage) return new Map(this.arrivals)
    const proven = new Map<number, number>()
    if (this.raw.role !== "leader") return proven
    const term = this.raw.term
    for (const [peer, ack] of this.acks) if (ack.term === term) proven.set(peer, ack.at)
    return proven
  }

  followerContact(): number | undefined {
    return this.proofs.proven
  }
}
