/**
 * `FrameAcks`: the frames of `PeerTransport`'s wire protocol, and how a receiver acknowledges the
 * frames of one accepted connection — standalone, or riding on a frame it sends the other way.
 *
 *   sender → receiver   [seq, [message, …]]                 a batch; seq counts 1, 2, … per connection
 *                       [seq, [message, …], [nonce, ack]]   the same, also acknowledging every batch
 *                                                           up to `ack` on the connection the other
 *                                                           way whose handshake had `nonce`
 *   receiver → sender   seq                                 a standalone acknowledgement
 *
 * Between nodes A and B there are two connections, A→B (A connected) and B→A. What B owes A for the
 * frames of A→B rides on B's next frame on B→A, if B→A's receiver (A) announced that it reads the
 * three-element frame: the header `x-blixard-riding-acks: 1` in its answer to B's upgrade request.
 * A release without the feature neither announces it nor sends it (and its `Frame` schema refuses a
 * third element), so during a rolling upgrade it gets two-element frames and standalone
 * acknowledgements; a new receiver reads both shapes. The header is not authenticated: a forged one
 * can only make an older peer drop frames, which anyone able to forge it could do anyway (with TLS
 * it cannot be forged).
 *
 * Identity: seqs restart per connection, so a riding acknowledgement names its connection by the
 * nonce of that connection's handshake — chosen at random by the connecting side (A), learned by the
 * accepting side (B) from the authenticated handshake. A applies it only if that is still its current
 * connection to B (else it acknowledges batches of an earlier connection, and is ignored), and only up
 * to the last batch A sent on it. Only the newest connection B accepted from A lends its
 * acknowledgements to B→A; an older one still open acknowledges standalone.
 *
 * When (`InboundAcks`): at once when `AckEveryFrames` frames are unacknowledged or they reach
 * `AckEveryBytes` — deferred to the end of the event loop's turn (`setImmediate`) when it could ride,
 * so an answer the node sends in that turn carries it — else after the receiver's `ackDelayMs`,
 * unless a frame the other way carried it before. A frame that carried an acknowledgement may be lost
 * with its connection: when that connection fails, the last acknowledgement is sent again standalone
 * (acknowledgements are cumulative, so a repeat is harmless).
 *
 * Measured (`npm run bench -- transport`, one node pair): one request and answer at a time, 3 frames
 * per round trip before (request, answer, and an acknowledgement for every two), 2 now. With 8 out at
 * once, the deferral takes standalone acknowledgements from 0.55 per round trip to 0 (without it they
 * stay); prompter acknowledgements there also coalesce fewer messages into a frame while the window is
 * full, so frames went from 1.64 to 1.71 per round trip.
 */
import { ParseResult, Schema } from "effect"

const Seq = Schema.Int.pipe(Schema.positive())
/** A connection's name: its handshake's nonce (`PeerAuth`). */
const ConnectionNonce = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{32}$/))
/** An acknowledgement riding on a frame: the connection the other way it is for, and its seq. */
const RidingAck = Schema.Tuple(ConnectionNonce, Seq)
export type RidingAck = typeof RidingAck.Type

/** One frame from a sender: a positive sequence number, the batch (each message checked on its own), and maybe a riding acknowledgement. */
const Frame = Schema.Tuple(Seq, Schema.Array(Schema.Unknown), Schema.optionalElement(RidingAck))
export type Frame = typeof Frame.Type
export const decodeFrame = ParseResult.decodeUnknownEither(Frame)
/** A standalone acknowledgement from a receiver. */
export const decodeAck = ParseResult.decodeUnknownEither(Seq)

/** The answer header by which a receiver announces that it reads riding acknowledgements. */
export const ridingAcksHeader = "x-blixard-riding-acks"

/**
 * A receiver acknowledges at once when this many frames are unacknowledged (so a window of two never
 * stalls), or when they add up to this many bytes (a large frame is not held back).
 */
export const AckEveryFrames = 2
export const AckEveryBytes = 64 * 1024

/** What a receiver owes for the frames of one accepted connection, and when it pays. */
export class InboundAcks {
  private lastSeq = 0
  private unacked = 0
  private unackedBytes = 0
  private timer: NodeJS.Timeout | undefined
  private soon: NodeJS.Immediate | undefined
  /** An acknowledgement rode on a frame the other way since the last standalone one. */
  private rode = false

  /**
   * `nonce`: the connection's handshake's; `write`: sends a standalone acknowledgement; `canRide`:
   * whether a frame the other way could carry one now.
   */
  constructor(
    readonly nonce: string,
    private readonly delayMs: number,
    private readonly write: (seq: number) => void,
    private readonly canRide: () => boolean
  ) {}

  /** Frame `seq` of `bytes` reached the inbox. */
  received(seq: number, bytes: number): void {
    this.lastSeq = seq
    this.unacked++
    this.unackedBytes += bytes
    if (this.unacked < AckEveryFrames && this.unackedBytes < AckEveryBytes) {
      this.timer ??= setTimeout(this.acknowledge, this.delayMs)
    } else if (this.canRide()) {
      clearTimeout(this.timer)
      this.timer = undefined
      this.soon ??= setImmediate(this.acknowledge)
    } else {
      this.acknowledge()
    }
  }

  /** Sends the acknowledgement owed, if any, standalone. */
  readonly acknowledge = (): void => {
    this.stopTimers()
    if (this.unacked === 0) return
    this.settle()
    this.rode = false
    this.write(this.lastSeq)
  }

  /** The acknowledgement owed, if any, to ride on a frame the other way: it is no longer owed. */
  take(): RidingAck | undefined {
    if (this.unacked === 0) return undefined
    this.stopTimers()
    this.settle()
    this.rode = true
    return [this.nonce, this.lastSeq]
  }

  /** The connection the other way failed: what rode on it may be lost, so the last acknowledgement goes again, standalone. */
  resend(): void {
    if (!this.rode) return
    this.rode = false
    if (this.unacked === 0) this.write(this.lastSeq)
    else this.acknowledge()
  }

  close(): void {
    this.stopTimers()
  }

  private settle(): void {
    this.unacked = 0
    this.unackedBytes = 0
  }

  private stopTimers(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.soon !== undefined) clearImmediate(this.soon)
    this.soon = undefined
  }
}
