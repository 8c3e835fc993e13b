/**
 * `GET /v1/cluster/snapshot` (admin): the replicated state as a snapshot file (`SnapshotFile.ts`),
 * streamed as it is serialised. The route table of `Server.ts` answers JSON only, so this endpoint
 * is one of its raw routes (`RawRoutes.ts`), after the same token check.
 *
 * The state is captured at an index the leader confirmed (`ControlPlane.snapshot`), then written a
 * piece at a time, each after the socket took the previous one: a large state never sits whole in
 * memory as text, and the node's event loop (its Raft loop) runs between pieces.
 */
import { Effect, Exit, Cause } from "effect"
import type * as http from "node:http"
import { HttpServerError } from "@effect/platform"
import * as SnapshotFile from "../cluster/SnapshotFile.js"
import { NotImplemented, type BlixardError } from "../domain/Errors.js"
import type { ControlPlaneShape, StateSnapshot } from "./ControlPlane.js"
import { errorResponse, type RawRoute } from "./RawRoutes.js"

export const path = "/v1/cluster/snapshot"
export const contentType = "application/x-blixard-snapshot"

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

export const route = (plane: ControlPlaneShape): RawRoute => ({
  method: "GET",
  path,
  access: "admin",
  operation: {
    tags: ["cluster"],
    operationId: "cluster.snapshot",
    description:
      "The replicated state at an index the leader confirmed, as a snapshot file: a JSON header line (magic, format, clusterId, index, term, node, createdAt), the state as one line of JSON, and a line with the SHA-256 and length of the two. Streamed. Admin only.",
    responses: {
      "200": { description: "The snapshot file", content: { [contentType]: { schema: { type: "string", format: "binary" } } } },
      "501": errorResponse("NotImplemented", "NotImplemented"),
      "503": errorResponse("NotLeader, Unavailable: no leader confirmed the index", "NotLeader", "Unavailable"),
      "504": errorResponse("Timeout", "Timeout")
    }
  },
  handle: (_request, response, { fail, runFork }) => {
    const snapshot: Effect.Effect<StateSnapshot, BlixardError> = plane.snapshot ?? Effect.fail(new NotImplemented({ message: "this API serves no cluster snapshots" }))
    const fiber = runFork(snapshot)
    fiber.addObserver((exit) => {
      if (response.destroyed) return
      if (Exit.isFailure(exit)) return fail(Cause.squash(exit.cause), exit.cause)
      stream(exit.value, response)
    })
    response.once("close", () => {
      if (!response.writableEnded) fiber.unsafeInterruptAsFork(HttpServerError.clientAbortFiberId)
    })
  }
})
