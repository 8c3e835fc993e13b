/**
 * `blixard cluster snapshot save FILE` and `blixard cluster snapshot restore FILE --data-dir DIR`:
 * backing up the replicated state and seeding a new cluster from it (`SnapshotFile.ts`,
 * `node/SnapshotRestore.ts`).
 *
 * `save` streams the snapshot into a file beside FILE, verifies it as `restore` would (checksum,
 * schema), makes it durable and only then renames it to FILE: FILE is a whole, valid snapshot or
 * is left as it was.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Either, Option, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as SnapshotFile from "../cluster/SnapshotFile.js"
import { type BlixardError, StorageIo } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import { HostPort } from "../domain/NodeInfo.js"
import { BlixardClient } from "./BlixardClient.js"
import { clientContext, clientOptions } from "./GlobalOptions.js"
import { check, invalidArgument } from "./Validate.js"

const fileArg = Args.text({ name: "FILE" })

const ioError = (file: string, doing: string) => (e: unknown) =>
  new StorageIo({ subject: file, message: `cannot ${doing} ${file}: ${e instanceof Error ? e.message : String(e)}` })

/** Writes `body` to `file`, fsynced; a broken answer fails with the node's error. */
const writeAll = (file: string, body: Stream.Stream<Uint8Array, BlixardError>) =>
  Effect.acquireUseRelease(
    Effect.try({ try: () => fs.openSync(file, "w", 0o600), catch: ioError(file, "create") }),
    (fd) =>
      Stream.runForEach(body, (chunk) => Effect.try({ try: () => void fs.writeSync(fd, chunk), catch: ioError(file, "write") })).pipe(
        Effect.zipRight(Effect.try({ try: () => fs.fsyncSync(fd), catch: ioError(file, "sync") }))
      ),
    (fd) => Effect.sync(() => fs.closeSync(fd))
  )

/** Makes the rename of a file in `dir` durable. */
const syncDir = (dir: string) =>
  Effect.try({
    try: () => {
      const fd = fs.openSync(dir, "r")
      try {
        fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
    },
    catch: ioError(dir, "sync the directory")
  })

const save = Command.make(
  "save",
  { ...clientOptions, file: fileArg.pipe(Args.withDescription("Where to write the snapshot (replaced only once a whole, verified one is written).")) },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const file = path.resolve(args.file)
      const partial = `${file}.partial-${process.pid}`
      const body = (yield* BlixardClient).downloadSnapshot(context.target)
      const contents = yield* writeAll(partial, body).pipe(
        Effect.zipRight(Effect.try({ try: () => fs.readFileSync(partial), catch: ioError(partial, "read back") })),
        Effect.flatMap((bytes) => {
          const read = SnapshotFile.read(bytes, `the snapshot from ${context.target.addr}`)
          return Either.isLeft(read) ? Effect.fail(read.left) : Effect.succeed({ ...read.right, bytes: bytes.length })
        }),
        Effect.tap(() => Effect.try({ try: () => fs.renameSync(partial, file), catch: ioError(file, "rename the snapshot to") })),
        Effect.tap(() => syncDir(path.dirname(file))),
        Effect.onError(() => Effect.sync(() => fs.rmSync(partial, { force: true })))
      )
      const { header, state } = contents
      const summary = {
        file,
        clusterId: header.clusterId,
        index: header.index,
        term: header.term,
        node: header.node,
        createdAt: header.createdAt,
        vms: state.vms.size,
        nodes: state.nodes.size,
        bytes: contents.bytes,
        sha256: contents.sha256
      }
      yield* Console.log(
        context.json
          ? JSON.stringify(summary, null, 2)
          : `saved a snapshot of cluster ${header.clusterId} at index ${header.index} (term ${header.term}, from node ${header.node}): ${summary.vms} VMs, ${summary.nodes} nodes, ${summary.bytes} bytes, sha256 ${summary.sha256}, to ${file}`
      )
    })
).pipe(
  Command.withDescription(
    "Save the cluster's replicated state (VMs, nodes, API token hashes) to FILE: a consistent snapshot at an index the leader confirmed, checksummed. Needs the admin role."
  )
)

const restore = Command.make(
  "restore",
  {
    file: fileArg.pipe(Args.withDescription("A snapshot made by `blixard cluster snapshot save`.")),
    dataDir: Options.text("data-dir").pipe(
      Options.withPseudoName("DIR"),
      Options.withDescription("The new founding node's data directory (must not exist, or be empty).")
    ),
    id: Options.integer("id").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("The new node's id (default 1)."),
      Options.withDefault(1)
    ),
    bind: Options.text("bind").pipe(
      Options.withPseudoName("HOST:PORT"),
      Options.withDescription("Where the new node will serve peers and the API (default: the snapshot's address for --id)."),
      Options.optional
    ),
    insecurePlaintext: Options.boolean("insecure-plaintext").pipe(
      Options.withDescription("The new cluster will run with --insecure-plaintext: make no cluster CA for it (by default a new one is made).")
    ),
    json: Options.boolean("json").pipe(Options.withDescription("Print the result as JSON."))
  },
  (args) =>
    Effect.gen(function* () {
      const problems: Array<string> = []
      const id = check(NodeId, args.id, "--id", problems)
      const bind = Option.isSome(args.bind) ? check(HostPort, args.bind.value, "--bind", problems) : undefined
      if (id === undefined || problems.length > 0) return yield* invalidArgument(problems)
      // The storage layers (SQLite) load only here.
      const SnapshotRestore = yield* Effect.promise(() => import("../node/SnapshotRestore.js"))
      const restored = yield* SnapshotRestore.restore({ file: path.resolve(args.file), dataDir: args.dataDir, id, bind, plaintext: args.insecurePlaintext })
      const dataDir = path.resolve(args.dataDir)
      const start = `blixard node --id ${id} --bind ${restored.address} --data-dir ${dataDir} --cluster-secret-file FILE${args.insecurePlaintext ? " --insecure-plaintext" : ""}`
      yield* Console.log(
        args.json
          ? JSON.stringify({ dataDir, id, address: restored.address, clusterId: restored.clusterId, from: { clusterId: restored.header.clusterId, index: restored.header.index, term: restored.header.term }, vms: restored.vms, nodes: restored.nodes }, null, 2)
          : [
              `restored cluster ${restored.header.clusterId} at index ${restored.header.index} (${restored.vms} VMs, ${restored.nodes} nodes) into ${dataDir}`,
              `as node ${id} (${restored.address}), the only member of a new cluster ${restored.clusterId}.`,
              `Start it with: ${start}`,
              `(a new admin API token is made in ${path.join(dataDir, "api-token")}; other nodes join it with empty data directories and --peer ${id}:${restored.address})`
            ].join("\n")
      )
    })
).pipe(
  Command.withDescription(
    "Seed a new cluster from a snapshot: write the data directory of its founding node (a new cluster id, this node its only member). The file is verified before anything is written."
  )
)

export const snapshotCommand = Command.make("snapshot").pipe(
  Command.withDescription("Back up the cluster's state to a file, or seed a new cluster from one."),
  Command.withSubcommands([save, restore])
)
