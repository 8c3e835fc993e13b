/**
 * The database schema, one numbered migration per change, applied by `SqliteMigrator` at open.
 * Never edit a migration that has shipped: add the next one.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"

const initial = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  // Who this data directory belongs to: the node id and the cluster it joined.
  yield* sql`CREATE TABLE node_meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
  ) STRICT`
  // Raft hard state: one row.
  yield* sql`CREATE TABLE raft_hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    term INTEGER NOT NULL CHECK (term >= 0),
    vote INTEGER NOT NULL CHECK (vote >= 0),
    commit_index INTEGER NOT NULL CHECK (commit_index >= 0),
    checksum INTEGER NOT NULL
  ) STRICT`
  // The log: the index is the rowid, so a range read is a b-tree walk.
  yield* sql`CREATE TABLE raft_log (
    idx INTEGER PRIMARY KEY CHECK (idx > 0),
    term INTEGER NOT NULL CHECK (term > 0),
    kind TEXT NOT NULL CHECK (kind IN ('normal', 'confChange', 'empty')),
    data TEXT NOT NULL,
    checksum INTEGER NOT NULL
  ) STRICT`
  // Where the log starts: the first index it holds and the term of the entry just before it (the
  // last one compacted away, or the snapshot's). One row; (1, 0) for a log never compacted.
  yield* sql`CREATE TABLE raft_log_start (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    first_index INTEGER NOT NULL CHECK (first_index > 0),
    prev_term INTEGER NOT NULL CHECK (prev_term >= 0)
  ) STRICT`
  yield* sql`INSERT INTO raft_log_start (id, first_index, prev_term) VALUES (1, 1, 0)`
  // The latest snapshot (metadata and the state machine's serialised state): one row.
  yield* sql`CREATE TABLE raft_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    idx INTEGER NOT NULL CHECK (idx > 0),
    term INTEGER NOT NULL CHECK (term > 0),
    conf_state TEXT NOT NULL,
    data TEXT NOT NULL,
    checksum INTEGER NOT NULL
  ) STRICT`
  // The replicated state machine, written in the same transaction as the applied index.
  yield* sql`CREATE TABLE sm_applied (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    idx INTEGER NOT NULL CHECK (idx >= 0),
    term INTEGER NOT NULL CHECK (term >= 0)
  ) STRICT`
  yield* sql`CREATE TABLE sm_vms (
    name TEXT PRIMARY KEY NOT NULL,
    node INTEGER,
    revision INTEGER NOT NULL,
    record TEXT NOT NULL
  ) STRICT`
  yield* sql`CREATE INDEX sm_vms_node ON sm_vms (node)`
  yield* sql`CREATE TABLE sm_nodes (
    id INTEGER PRIMARY KEY CHECK (id > 0),
    info TEXT NOT NULL
  ) STRICT`
  // Client request ids already applied, so a retried write applies once.
  yield* sql`CREATE TABLE sm_requests (
    request_id TEXT PRIMARY KEY NOT NULL,
    idx INTEGER NOT NULL,
    result TEXT NOT NULL
  ) STRICT`
})

/**
 * A snapshot the node took itself is stored in chunks, each in its own short transaction, so that
 * writing one (~40 MB at 100,000 VMs) never holds the event loop for the whole of it; the
 * `raft_snapshot` row (written last, naming the chunks by its `idx`) then has an empty `data`.
 */
const snapshotChunks = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE raft_snapshot_chunk (
    idx INTEGER NOT NULL CHECK (idx > 0),
    seq INTEGER NOT NULL CHECK (seq >= 0),
    data TEXT NOT NULL,
    PRIMARY KEY (idx, seq)
  ) STRICT`
})

export const migrations = {
  "0001_initial": initial,
  "0002_snapshot_chunks": snapshotChunks
}
