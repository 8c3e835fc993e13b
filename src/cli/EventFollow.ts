/**
 * Following a node's event stream (`GET /v1/events`) from the CLI, through dropped connections: on
 * a drop it reconnects — to the next of the addresses given, round robin — with `Last-Event-ID` set
 * to the last index received, and skips any batch at or below it, so no event is lost or repeated.
 * A stream silent for longer than three of the node's heartbeats counts as dropped.
 *
 * Everything read is validated (`EventBatch`, `Resync`); a refused request (a bad token, a bad
 * index) on every address ends the follow with that error.
 */
import { Duration, Effect, Either, Option, Schema, Stream } from "effect"
import { EventBatchJson, type EventBatch, type Resync, ResyncJson } from "../domain/ClusterEvent.js"
import { type BlixardError, InvalidArgument, Unavailable } from "../domain/Errors.js"

export type FollowMessage = { readonly _tag: "Batch"; readonly batch: EventBatch } | { readonly _tag: "Resync"; readonly resync: Resync }

export interface FollowTarget {
  readonly addr: string
  /** Opens the address's event stream (token and TLS as for any request), after `lastEventId` if given. */
  readonly open: (lastEventId: number | undefined) => Stream.Stream<Uint8Array, BlixardError>
}

export interface FollowOptions {
  readonly targets: ReadonlyArray<FollowTarget>
  /** Resume after this index; absent: from now on. */
  readonly since: number | undefined
  readonly onMessage: (message: FollowMessage) => Effect.Effect<void, BlixardError>
  /** Told of every reconnection (for a note on stderr). */
  readonly onReconnect?: ((addr: string, after: number | undefined, why: string) => Effect.Effect<void>) | undefined
  /** A stream silent this long is dropped and reconnected (default 60 s: four 15 s heartbeats). */
  readonly idleMs?: number | undefined
}

const decodeBatch = Schema.decodeEither(EventBatchJson)
const decodeResync = Schema.decodeEither(ResyncJson)

/** Why one connection ended: `refused` is not retried on that address. */
type Ended = { readonly refused?: BlixardError; readonly why: string }

/** Errors of the connection itself, worth another try (elsewhere); any other answer is a refusal. */
const transient: ReadonlySet<string> = new Set(["Unavailable", "Timeout", "TlsUntrusted", "NotLeader"])

/**
 * One connection: reads messages until the stream ends or breaks; `state.last` follows the ids.
 * Runs `onMessage` for each (in order; the next chunk is read once it is done).
 */
const connectOnce = (target: FollowTarget, state: { last: number | undefined }, options: FollowOptions): Effect.Effect<Ended, BlixardError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const pull = yield* Stream.toPull(target.open(state.last))
      const decoder = new TextDecoder()
      const parser = new SseParser()
      const idleMs = options.idleMs ?? 60_000
      for (;;) {
        const chunk = yield* Effect.either(pull.pipe(Effect.timeoutFail({ duration: Duration.millis(idleMs), onTimeout: () => "idle" as const })))
        if (Either.isLeft(chunk)) {
          const why = chunk.left
          if (why === "idle") return { why: `${target.addr} sent nothing for ${idleMs} ms` }
          if (Option.isNone(why)) return { why: `${target.addr} ended the stream` }
          return transient.has(why.value._tag) ? { why: why.value.message } : { refused: why.value, why: why.value.message }
        }
        for (const bytes of chunk.right) {
          for (const message of parser.feed(decoder.decode(bytes, { stream: true }))) {
            yield* receive(target.addr, message, state, options)
          }
        }
      }
    })
  )

/** One message of a connection: a batch or resync to hand on, or the index the stream starts after. */
const receive = (addr: string, message: SseMessage, state: { last: number | undefined }, options: FollowOptions): Effect.Effect<void, BlixardError> => {
  const index = message.id === undefined ? undefined : Number(message.id)
  if (message.data === undefined) {
    // An id alone: where the stream starts (a stream "from now" says so at once).
    if (message.event === "" && index !== undefined && Number.isSafeInteger(index) && index >= 0 && (state.last === undefined || index > state.last)) {
      state.last = index
    }
    return Effect.void
  }
  if (message.event === "resync") {
    const resync = decodeResync(message.data)
    if (Either.isLeft(resync)) return malformed(addr, message.data)
    state.last = resync.right.index
    return options.onMessage({ _tag: "Resync", resync: resync.right })
  }
  const batch = decodeBatch(message.data)
  if (Either.isLeft(batch) || batch.right.index !== index) return malformed(addr, message.data)
  // Already seen (a node behind the one before it replays nothing new): skip it.
  if (state.last !== undefined && batch.right.index <= state.last) return Effect.void
  state.last = batch.right.index
  return options.onMessage({ _tag: "Batch", batch: batch.right })
}

interface SseMessage {
  /** The last event id as of this message (it persists from message to message). */
  readonly id: string | undefined
  readonly event: string
  /** Absent for a message without data (which only sets the id). */
  readonly data: string | undefined
}

/** The Server-Sent Events framing: lines of `field: value`, comments, a blank line ending a message. */
class SseParser {
  private pending = ""
  private id: string | undefined
  private event = ""
  private data: Array<string> = []

  feed(text: string): Array<SseMessage> {
    this.pending += text
    const out: Array<SseMessage> = []
    for (;;) {
      const at = this.pending.search(/\r\n|\r|\n/)
      if (at === -1) return out
      const line = this.pending.slice(0, at)
      this.pending = this.pending.slice(this.pending.startsWith("\r\n", at) ? at + 2 : at + 1)
      if (line === "") {
        out.push({ id: this.id, event: this.event, data: this.data.length === 0 ? undefined : this.data.join("\n") })
        this.event = ""
        this.data = []
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":")
        const field = colon === -1 ? line : line.slice(0, colon)
        const value = colon === -1 ? "" : line.slice(colon + (line[colon + 1] === " " ? 2 : 1))
        if (field === "id") this.id = value
        else if (field === "event") this.event = value
        else if (field === "data") this.data.push(value)
      }
    }
  }
}

const malformed = (addr: string, text: string) =>
  Effect.fail(
    new Unavailable({
      subject: addr,
      message: `${addr} sent an event this client cannot read (${text.slice(0, 200)}); is it a Blixard node of another version?`
    })
  )

/** Follows until interrupted; fails only when every address refuses (401, 403, 400). */
export const follow = (options: FollowOptions): Effect.Effect<never, BlixardError> =>
  Effect.gen(function* () {
    if (options.targets.length === 0) return yield* new InvalidArgument({ message: "no address to follow the events of" })
    const state = { last: options.since }
    const refused = new Map<number, BlixardError>()
    let at = 0
    let quiet = 0
    for (;;) {
      const which = at % options.targets.length
      const target = options.targets[which]!
      const before = state.last
      const ended = yield* connectOnce(target, state, options)
      if (ended.refused !== undefined) refused.set(which, ended.refused)
      else refused.delete(which)
      if (refused.size === options.targets.length) return yield* Effect.fail(ended.refused ?? refused.values().next().value!)
      // Back off while nothing comes through: 0.25 s doubling to 5 s.
      quiet = state.last !== before ? 0 : quiet + 1
      at++
      const next = options.targets[at % options.targets.length]!
      if (options.onReconnect !== undefined) yield* options.onReconnect(next.addr, state.last, ended.why)
      if (quiet > 0) yield* Effect.sleep(Duration.millis(Math.min(5_000, 250 * 2 ** Math.min(quiet - 1, 5))))
    }
  })
