/**
 * `GET /v1/events`: the node's `EventLog` as Server-Sent Events. Each message is one applied
 * entry's `EventBatch`, its SSE `id` the entry's Raft index; a client resumes with `Last-Event-ID`
 * (what EventSource sends on reconnecting) or `?since=N`, and gets every batch after that index.
 *
 * A stream is a cursor into the log, pumped on the event loop — never on the Raft loop, which only
 * wakes it. It writes while the socket takes more, then waits for `drain`, so a slow client costs a
 * socket buffer, not a queue. When the ring has overwritten what the client had not read yet, the
 * client is dropped (`resync`, reason `behind`); it reconnects, is told to resync, and re-lists.
 * A `: keepalive` comment every `heartbeatMs` keeps proxies and load balancers from closing an
 * idle stream (and tells the client the node is still there).
 */
import { Either, Schema } from "effect"
import type * as http from "node:http"
import type { Resync, ResyncReason } from "../domain/ClusterEvent.js"
import { InvalidArgument } from "../domain/Errors.js"
import { errorResponse, type RawRoute } from "../api/RawRoutes.js"
import { batchJson, type EventLog, type StoredBatch } from "./EventLog.js"

export const EventsPath = "/v1/events"

export interface EventStreamOptions {
  /** How often an idle stream gets a comment line (default 15 s). */
  readonly heartbeatMs?: number | undefined
}

export const DefaultHeartbeatMs = 15_000

/** Batches written per turn of the event loop before yielding to other work. */
const batchesPerWrite = 256

const Since = Schema.NumberFromString.pipe(Schema.compose(Schema.Int.pipe(Schema.nonNegative())))
const decodeSince = Schema.decodeUnknownEither(Since)

/**
 * The index to resume after: `Last-Event-ID` (a reconnecting EventSource) wins over `?since=`;
 * neither means "from now on". Anything else than a non-negative whole number is refused.
 */
export const resumeFrom = (lastEventId: string | undefined, since: string | null): Either.Either<number | undefined, InvalidArgument> => {
  const [text, origin] = lastEventId !== undefined && lastEventId !== "" ? [lastEventId, "the Last-Event-ID header"] : [since, "the query parameter since"]
  if (text === null) return Either.right(undefined)
  return Either.mapLeft(
    decodeSince(text.trim()),
    () =>
      new InvalidArgument({
        subject: origin.includes("header") ? "Last-Event-ID" : "since",
        message: `GET ${EventsPath}: ${origin} must be a Raft index (a whole number ≥ 0, the id of the last event received), not ${JSON.stringify(text)}`
      })
  )
}

const frame = (batch: StoredBatch): string => `id: ${batch.index}\ndata: ${batchJson(batch)}\n\n`

const resyncMessages: Record<ResyncReason, string> = {
  compacted: "the events after the index asked for are no longer kept on this node; list the VMs and nodes again, then follow on from this index",
  behind: "the client read the stream too slowly and fell behind what this node keeps; list the VMs and nodes again, then follow on from this index",
  restored: "this node replaced its state with a snapshot from the leader; list the VMs and nodes again, then follow on from this index"
}

const resyncFrame = (index: number, reason: ResyncReason): string => {
  const data: Resync = { index, reason, message: resyncMessages[reason] }
  return `id: ${index}\nevent: resync\ndata: ${JSON.stringify(data)}\n\n`
}

/** Streams `log` to `response` from after `since` (or from now on) until the client goes away. */
export const stream = (
  log: EventLog,
  request: http.IncomingMessage,
  response: http.ServerResponse,
  since: number | undefined,
  options: EventStreamOptions = {}
): void => {
  response.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no"
  })
  if (request.method === "HEAD") return void response.end()
  response.socket?.setNoDelay(true)
  response.socket?.setTimeout(0)
  let closed = false
  let draining = false
  let scheduled = false
  let cancelWait: (() => void) | undefined
  let epoch = log.epoch
  let cursor: number
  // `retry:` tells an EventSource how long to wait before reconnecting (ms).
  let head = "retry: 1000\n\n"
  if (since !== undefined && since < log.floor) {
    cursor = log.last
    head += resyncFrame(cursor, "compacted")
  } else {
    cursor = since ?? log.last
    // An id without data dispatches nothing but sets the client's last event id (as EventSource
    // does): a client starting "from now" that reconnects before any event resumes from here.
    if (since === undefined) head += `id: ${cursor}\n\n`
  }
  response.write(head)

  const schedule = () => {
    if (scheduled || closed) return
    scheduled = true
    setImmediate(pump)
  }

  const dropBehind = () => {
    closed = true
    response.end(resyncFrame(log.last, "behind"))
  }

  function pump(): void {
    scheduled = false
    if (closed || draining) return
    if (log.epoch !== epoch) {
      // From the snapshot's index on, the log holds everything again.
      epoch = log.epoch
      cursor = log.floor
      response.write(resyncFrame(cursor, "restored"))
    }
    const batches = log.after(cursor, batchesPerWrite)
    if (batches === undefined) return dropBehind()
    if (batches.length === 0) {
      cancelWait = log.onNext(schedule)
      return
    }
    cursor = batches[batches.length - 1]!.index
    if (response.write(batches.map(frame).join(""))) return schedule()
    draining = true
    response.once("drain", () => {
      draining = false
      schedule()
    })
  }

  const heartbeat = setInterval(() => {
    if (closed) return
    // A client that stopped reading while the ring moved past it is gone for good: free it now.
    if (draining) return void (cursor < log.floor && response.destroy())
    response.write(": keepalive\n\n")
  }, options.heartbeatMs ?? DefaultHeartbeatMs)
  heartbeat.unref()

  response.once("close", () => {
    closed = true
    clearInterval(heartbeat)
    cancelWait?.()
  })
  pump()
}

/** `GET /v1/events` as one of the API server's raw routes (`api/RawRoutes.ts`): any role's token. */
export const route = (log: EventLog, options: EventStreamOptions = {}): RawRoute => ({
  method: "GET",
  path: EventsPath,
  access: "read",
  operation: {
    tags: ["events"],
    operationId: "events",
    description:
      "The cluster's applied changes as Server-Sent Events: one message per Raft entry that changed something, its id the entry's index, its data an EventBatch (JSON: index, term, at, events). Resume with Last-Event-ID or since; an index no longer kept starts with an `event: resync` message. Idle streams get a `: keepalive` comment. Any role's token.",
    parameters: [
      {
        name: "since",
        in: "query",
        required: false,
        description: "Send every batch after this Raft index first (Last-Event-ID wins when both are given).",
        schema: { type: "integer", minimum: 0 }
      },
      {
        name: "Last-Event-ID",
        in: "header",
        required: false,
        description: "The id of the last event received: resume after it (what EventSource sends on reconnecting).",
        schema: { type: "integer", minimum: 0 }
      }
    ],
    responses: {
      "200": { description: "The event stream, until the client goes away", content: { "text/event-stream": { schema: { type: "string" } } } },
      "400": errorResponse("InvalidArgument: since or Last-Event-ID is not a Raft index", "InvalidArgument")
    }
  },
  handle: (request, response, { fail, query }) => {
    const from = resumeFrom(request.headers["last-event-id"] as string | undefined, query.get("since"))
    if (Either.isLeft(from)) return fail(from.left)
    stream(log, request, response, from.right, options)
  }
})
