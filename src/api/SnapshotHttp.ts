/**
 * `GET /v1/cluster/snapshot` (admin): the replicated state as a snapshot file (`SnapshotFile.ts`),
 * streamed as it is serialised. The route table of `Server.ts` answers JSON only, so this endpoint
 * is served beside it, after the same token check.
 *
 * The state is captured at an index the leader confirmed (`ControlPlane.snapshot`), then written a
 * piece at a time, each after the socket took the previous one: a large state never sits whole in
 * memory as text, and the node's event loop (its Raft loop) runs between pieces.
 */
import { Effect, Exit, Cause } from "effect"
import type * as http from "node:http"
import type { RuntimeFiber } from "effect/Fiber"
import { HttpServerError } from "@effect/platform"
import * as SnapshotFile from "../cluster/SnapshotFile.js"
import { NotImplemented, type BlixardError } from "../domain/Errors.js"
import type { ControlPlaneShape, StateSnapshot } from "./ControlPlane.js"

export const path = "/v1/cluster/snapshot"
export const contentType = "application/x-blixard-snapshot"

export interface SnapshotServing {
  readonly plane: ControlPlaneShape
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => RuntimeFiber<A, E>
  /** Answers a failure as the API does (its status and JSON). */
  readonly fail: (error: unknown, cause: Cause.Cause<unknown>) => void
}

/** Writes `snapshot`'s file text to `response`, waiting for the socket to drain between pieces. */
const stream = (snapshot: StateSnapshot, response: http.ServerResponse): void => {
  const pieces = SnapshotFile.encode(snapshot.header, snapshot.pieces)[Symbol.iterator]()
  response.writeHead(200, {
    "content-type": contentType,
    "cache-control": "no-store",
    "x-blixard-snapshot-index": String(snapshot.header.index)
  })
  const pump = (): void => {
    try {
      for (;;) {
        if (response.destroyed) return
        const next = pieces.next()
        if (next.done === true) return void response.end()
        if (!response.write(next.value)) return void response.once("drain", pump)
      }
    } catch {
      // The answer has begun: the client sees a file without its checksum line, which it refuses.
      response.destroy()
    }
  }
  pump()
}

/** `document` (the API's OpenAPI document, as JSON) with this endpoint added: it is served beside the route table. */
export const describe = <D extends { readonly paths?: Record<string, unknown> }>(document: D): D => {
  const error = (description: string, ...names: ReadonlyArray<string>) => ({
    description,
    content: { "application/json": { schema: { anyOf: names.map((name) => ({ $ref: `#/components/schemas/${name}` })) } } }
  })
  const paths = { ...document.paths }
  paths[path] = {
    get: {
      tags: ["cluster"],
      operationId: "cluster.snapshot",
      description:
        "The replicated state at an index the leader confirmed, as a snapshot file: a JSON header line (magic, format, clusterId, index, term, node, createdAt), the state as one line of JSON, and a line with the SHA-256 and length of the two. Streamed. Admin only.",
      security: [{ bearer: [] }],
      responses: {
        "200": { description: "The snapshot file", content: { [contentType]: { schema: { type: "string", format: "binary" } } } },
        "401": error("Unauthorized", "Unauthorized"),
        "403": error("Forbidden: the token's role is not admin", "Forbidden"),
        "501": error("NotImplemented", "NotImplemented"),
        "503": error("NotLeader, Unavailable: no leader confirmed the index", "NotLeader", "Unavailable"),
        "504": error("Timeout", "Timeout")
      }
    }
  }
  return { ...document, paths }
}

export const serve = (serving: SnapshotServing, response: http.ServerResponse): void => {
  const snapshot: Effect.Effect<StateSnapshot, BlixardError> =
    serving.plane.snapshot ?? Effect.fail(new NotImplemented({ message: "this API serves no cluster snapshots" }))
  const fiber = serving.runFork(snapshot)
  fiber.addObserver((exit) => {
    if (response.destroyed) return
    if (Exit.isFailure(exit)) return serving.fail(Cause.squash(exit.cause), exit.cause)
    stream(exit.value, response)
  })
  response.once("close", () => {
    if (!response.writableEnded) fiber.unsafeInterruptAsFork(HttpServerError.clientAbortFiberId)
  })
}
