/**
 * Whose data directory this is: the node id it was created for, its incarnation (a random id drawn
 * when the directory is first used: a node that comes back on a new, empty directory is a new
 * incarnation of its id, which has lost what the earlier one voted and acknowledged), and, once
 * known, the cluster it belongs to. A node started on another node's data directory stops with a
 * clear error instead of joining the cluster under a false identity.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import { randomUUID } from "node:crypto"
import { WrongDataDir } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { StorageError } from "./Database.js"
import * as Database from "./Database.js"

export const get = (key: string) =>
  Effect.map(SqlClient.SqlClient, (sql) => sql<{ value: string }>`SELECT value FROM node_meta WHERE key = ${key}`).pipe(
    Effect.flatten,
    Effect.map((rows) => rows[0]?.value)
  )

/** Records `key` = `value` durably. */
export const set = (key: string, value: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`INSERT INTO node_meta (key, value) VALUES (${key}, ${value}) ON CONFLICT (key) DO UPDATE SET value = excluded.value`
  ).pipe(Effect.zipRight(Effect.flatMap(Database.Durability, (d) => d.sync)))

/**
 * Claims the database for `node` on first use, drawing its incarnation; afterwards refuses to open
 * it as any other node. Returns the directory's incarnation.
 */
export const claim = (options: { readonly filename: string; readonly node: NodeId; readonly dataDir: string }): Effect.Effect<string, StorageError | WrongDataDir, SqlClient.SqlClient | Database.Durability> =>
  Effect.gen(function* () {
    // The incarnation is recorded before the owner: a directory with an owner always has one.
    let incarnation = yield* get("incarnation")
    if (incarnation === undefined) {
      incarnation = randomUUID()
      yield* set("incarnation", incarnation)
    }
    const owner = yield* get("node_id")
    if (owner === undefined) {
      yield* set("node_id", String(options.node))
      return incarnation
    }
    if (owner !== String(options.node)) {
      return yield* new WrongDataDir({
        node: options.node,
        subject: options.dataDir,
        message: `the data directory ${options.dataDir} belongs to node ${owner}, not node ${options.node}; start node ${owner} on it, or give node ${options.node} its own --data-dir`
      })
    }
    return incarnation
  }).pipe(
    Effect.catchTag("SqlError", (e) => Effect.fail(Database.classify({ filename: options.filename, node: options.node }, "reading the node's identity")(e)))
  )
