/**
 * `blixard cluster snapshot restore`: seeds the data directory of a new cluster's founding node
 * from a snapshot file, as `etcdctl snapshot restore` does. The new cluster has the snapshot's VMs,
 * nodes, API tokens and request memory, but its own identity:
 *
 * - a new cluster id, so no member of the old cluster (which may still have a disk somewhere) can
 *   join it or be joined by it (`BLX_WRONG_DATA_DIR`);
 * - one voter, the restoring node, at the snapshot's address for it (or `--bind`); others join it
 *   with empty data directories, as they join any cluster;
 * - the Raft log starts at the snapshot's index and term, so the state's revisions and the index
 *   the snapshot was taken at stay meaningful.
 *
 * Nothing secret is in a snapshot but hashes of API tokens (which keep working). The cluster secret
 * and the nodes' credentials (derived from it) come from the new nodes' settings, and the restored
 * node makes a new admin token in its data directory at its first start.
 *
 * The file is verified whole (`SnapshotFile.read`) before anything is written; the directory is
 * built beside the target and renamed into place, so a failure leaves no half-made directory.
 */
import { Effect, Either, Layer } from "effect"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as SnapshotFile from "../cluster/SnapshotFile.js"
import { InvalidArgument, SnapshotInvalid, StorageIo, WrongDataDir } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { HostPort } from "../domain/NodeInfo.js"
import { classify } from "../storage/Database.js"
import * as NodeMeta from "../storage/NodeMeta.js"
import { layerFile, RaftStorage } from "../storage/RaftStorage.js"
import * as Tls from "../net/Tls.js"
import * as StartTls from "./StartTls.js"

export interface RestoreOptions {
  readonly file: string
  /** The new node's data directory: absent or empty. */
  readonly dataDir: string
  readonly id: NodeId
  /** The node's peer and API address; default: the snapshot's address for `id` (else it is required). */
  readonly bind?: HostPort | undefined
  /** The new cluster runs in plain mode (`--insecure-plaintext`): no CA is made for it. */
  readonly plaintext?: boolean | undefined
}

export interface Restored {
  readonly header: SnapshotFile.SnapshotHeader
  readonly clusterId: string
  readonly address: string
  readonly vms: number
  readonly nodes: number
}

const readFile = (file: string) =>
  Effect.try({
    try: () => fs.readFileSync(file),
    catch: (e) =>
      new SnapshotInvalid({
        subject: file,
        message: `cannot read the snapshot file ${file}: ${e instanceof Error ? e.message : String(e)}; nothing was written`
      })
  })

/** Refuses a data directory that holds anything: a restore never mixes with another node's data. */
const checkTarget = (dataDir: string, id: NodeId) =>
  Effect.try({
    try: () => (fs.existsSync(dataDir) ? fs.readdirSync(dataDir) : []),
    catch: (e) => new StorageIo({ subject: dataDir, message: `cannot read ${dataDir}: ${e instanceof Error ? e.message : String(e)}` })
  }).pipe(
    Effect.filterOrFail(
      (entries) => entries.length === 0,
      () =>
        new WrongDataDir({
          node: id,
          subject: dataDir,
          message: `the data directory ${dataDir} is not empty; restore into a new directory (nothing was written)`
        })
    )
  )

/** Writes the new node's database into `dir` (created): the snapshot as its Raft state, and its identity. */
const writeDatabase = (dir: string, id: NodeId, header: SnapshotFile.SnapshotHeader, data: string, clusterId: string) => {
  const filename = path.join(dir, "blixard.db")
  return Effect.gen(function* () {
    const storage = yield* RaftStorage
    yield* storage.save({
      snapshot: { metadata: { index: header.index, term: header.term, confState: { voters: [id], learners: [] } }, data },
      hardState: { term: header.term, vote: 0, commit: header.index }
    })
    yield* Effect.all([NodeMeta.set("incarnation", randomUUID()), NodeMeta.set("node_id", String(id)), NodeMeta.set("cluster_id", clusterId)]).pipe(
      Effect.catchTag("SqlError", (e) => Effect.fail(classify({ filename, node: id }, "writing the node's identity")(e)))
    )
  }).pipe(Effect.provide(Layer.fresh(layerFile({ filename, node: id }))))
}

export const restore = (options: RestoreOptions) =>
  Effect.gen(function* () {
    const bytes = yield* readFile(options.file)
    const contents = SnapshotFile.read(bytes, options.file)
    if (Either.isLeft(contents)) return yield* contents.left
    const { header, state } = contents.right
    const address = options.bind ?? state.members.get(options.id)
    if (address === undefined) {
      const known = [...state.members.keys()].sort((a, b) => a - b).join(", ")
      return yield* new InvalidArgument({
        subject: "--bind",
        message: `the snapshot has no address for node ${options.id} (its members were ${known || "none"}): give --bind HOST:PORT, or --id of one of them; nothing was written`
      })
    }
    const target = path.resolve(options.dataDir)
    yield* checkTarget(target, options.id)
    const clusterId = randomUUID()
    state.clusterId = clusterId
    state.members.clear()
    state.members.set(options.id, address)

    const staging = `${target}.restoring-${process.pid}`
    yield* Effect.try({
      try: () => {
        fs.rmSync(staging, { recursive: true, force: true })
        fs.mkdirSync(staging, { recursive: true, mode: 0o700 })
      },
      catch: (e) => new StorageIo({ subject: staging, message: `cannot create ${staging}: ${e instanceof Error ? e.message : String(e)}` })
    })
    // A new cluster, so a new cluster CA (as a founding node makes one): the old one names the old cluster.
    const tls =
      options.plaintext === true ? Effect.void : StartTls.writeNewCluster({ dataDir: staging, clusterId, node: options.id, names: Tls.namesFor(address, undefined) })
    yield* writeDatabase(staging, options.id, header, state.snapshot(), clusterId).pipe(
      Effect.zipRight(tls),
      Effect.zipRight(
        Effect.try({
          try: () => {
            // `rename` replaces an empty directory; a missing one is made.
            fs.renameSync(staging, target)
          },
          catch: (e) => new StorageIo({ subject: target, message: `cannot move the restored data into ${target}: ${e instanceof Error ? e.message : String(e)}` })
        })
      ),
      Effect.onError(() => Effect.sync(() => fs.rmSync(staging, { recursive: true, force: true })))
    )
    return { header, clusterId, address, vms: state.vms.size, nodes: state.nodes.size } satisfies Restored
  })
