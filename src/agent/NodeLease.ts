/**
 * The node's LEASE: until when this node may run VMs, as proven by its last contact with the Raft
 * quorum, kept in a file (`${dataDir}/fencing/lease.json`) so that a process other than the daemon
 * — the node's fencing watchdog (`Watchdog.ts`) — can stop the node's VMs when the daemon no longer
 * can (killed, crashed, out of memory, its event loop hung).
 *
 *   validUntil = last quorum contact + fencingMs
 *
 * is exactly the deadline of the agent's own fencing (`Agent.ts`): the agent renews the lease each
 * time it measures quorum contact, and never extends it without contact. A daemon starting up takes
 * the lease over (it becomes its writer, `node/HostFence.ts`) without extending it: the deadline its
 * predecessor earned holds until the new daemon proves contact itself, which is what lets a daemon
 * restarted within `fencingMs` adopt its VMs, and what stops them if it is not back in time. (A node
 * with no lease yet gets `fencingMs` from its daemon's start, the agent's own start-up grace.)
 *
 * Times are epoch milliseconds of this host's wall clock, the clock the writer (the agent) and the
 * reader (the watchdog) both read: there is no skew between them.
 */
import { Effect, Option, Schema } from "effect"
import { type StorageCorrupt, type StorageIo, WrongDataDir } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import { ProcessIdentity, readJsonFile, writeJsonFile } from "./internal/fencingFiles.js"

export class NodeLease extends Schema.Class<NodeLease>("NodeLease")({
  node: NodeId,
  /** The node may run VMs until then. */
  validUntil: Schema.Int.pipe(Schema.nonNegative()),
  writtenAt: Schema.Int.pipe(Schema.nonNegative()),
  /** The daemon that wrote it. */
  writer: ProcessIdentity
}) {}

export type LeaseError = StorageCorrupt | StorageIo | WrongDataDir

const encode = Schema.encodeSync(NodeLease)

/** The lease in `file`, none if there is none; an invalid file, or another node's, is an error. */
export const read = (file: string, node: NodeId): Effect.Effect<Option.Option<NodeLease>, LeaseError> =>
  readJsonFile(NodeLease, file, {
    what: "the lease file",
    node,
    remedy: "the fencing watchdog takes the lease as expired; the daemon rewrites it at its next quorum contact"
  }).pipe(
    Effect.filterOrFail(
      (lease) => Option.isNone(lease) || lease.value.node === node,
      (lease) =>
        new WrongDataDir({
          node,
          subject: file,
          message: `the lease file ${file} belongs to node ${Option.getOrThrow(lease).node}, not node ${node}: the data directory is another node's; point --data-dir at node ${node}'s own`
        })
    )
  )

/** Writes the lease (atomically). */
export const write = (file: string, lease: NodeLease): Effect.Effect<void, StorageIo> =>
  writeJsonFile(file, encode(lease), { what: "the lease file", node: lease.node })
