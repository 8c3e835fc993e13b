/**
 * Opening a node's SQLite database.
 *
 * Durability: the database runs in WAL mode. A transaction is durable once `Durability.sync` has
 * returned after it: that runs `fdatasync` on the WAL file on Node's thread pool, so the event loop
 * keeps serving (HTTP requests, peer messages, further proposals) while the disk flushes, and every
 * write that arrives meanwhile joins the next batch (group commit). SQLite itself runs with
 * `synchronous = NORMAL`: in WAL mode it then syncs the WAL before each checkpoint and the database
 * file after it, so the file is always consistent; what NORMAL alone would lose on power loss — the
 * last transactions — is exactly what `sync` makes durable. Why this is sound: a commit's frames are
 * in the WAL (written with `write`) when the commit returns, `fdatasync` of the file flushes them,
 * and WAL frames carry a cumulative checksum, so recovery keeps a prefix of the frames and never a
 * later one without an earlier one. (`synchronous = FULL` gives the same guarantee with the fsync
 * inside the commit, blocking the single JavaScript thread for the whole flush: measured in
 * bench/RESULTS.md.) For Raft this is what persist-before-send needs: forgetting a vote or an entry
 * already acknowledged to a peer would break safety, so the driver sends nothing that depends on a
 * write before its `sync` returned. WAL (rather than a rollback journal) keeps each commit to one
 * sequential write.
 *
 * Exclusion: `locking_mode = EXCLUSIVE` makes the connection keep SQLite's file lock (an OS lock,
 * released by the kernel when the process dies, even on kill -9) for as long as it is open, and
 * `busy_timeout = 0` makes a second opener fail at once instead of waiting. So a data directory can
 * be used by one process only, with no stale lock files to clean up. Exclusive mode also keeps the
 * WAL index in process memory instead of a `-shm` file.
 *
 * Integrity: `quick_check` at open catches a damaged or truncated file before anything is served.
 */
import { NodeContext } from "@effect/platform-node"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { SqliteClient, SqliteMigrator } from "@effect/sql-sqlite-node"
import { Cause, Context, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { StorageCorrupt, StorageIo, StorageLocked } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import { migrations } from "./Migrations.js"

export type StorageError = StorageCorrupt | StorageIo | StorageLocked

export interface DatabaseOptions {
  /** The database file, or ":memory:". */
  readonly filename: string
  /** The node opening it, named in errors. */
  readonly node?: NodeId | undefined
}

const sqliteCode = (cause: unknown): string | undefined => {
  let current: unknown = cause
  for (let depth = 0; depth < 4 && current !== null && typeof current === "object"; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === "string" && code.startsWith("SQLITE_")) return code
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

const causeMessage = (cause: unknown): string => {
  let current: unknown = cause
  for (let depth = 0; depth < 4 && current !== null && typeof current === "object"; depth++) {
    const inner = (current as { cause?: unknown }).cause
    if (inner === undefined || inner === null) break
    current = inner
  }
  return current instanceof Error ? current.message : String(current)
}

/** Turns a SQLite failure into Blixard's storage errors, naming the file and what to do. */
export const classify =
  (options: DatabaseOptions, doing: string) =>
  (cause: unknown): StorageError => {
    const code = sqliteCode(cause)
    const file = options.filename
    const node = options.node
    const base = { subject: file, ...(node !== undefined ? { node } : {}) }
    if (code === "SQLITE_BUSY" || code === "SQLITE_LOCKED") {
      return new StorageLocked({
        ...base,
        message: `the database ${file} is in use by another process (another blixard node on the same data directory?); stop it or choose another --data-dir`
      })
    }
    if (code === "SQLITE_CORRUPT" || code === "SQLITE_NOTADB" || code?.startsWith("SQLITE_CORRUPT")) {
      return new StorageCorrupt({
        ...base,
        message: `the database ${file} is damaged (${causeMessage(cause)}) while ${doing}; the node will not serve from it — restore the data directory from a backup, or remove it and rejoin the node so it catches up from its peers`
      })
    }
    return new StorageIo({
      ...base,
      message: `cannot use the database ${file} while ${doing}: ${causeMessage(cause)}${code !== undefined ? ` (${code})` : ""}; check the data directory's permissions and free space`
    })
  }

const pragmas = (options: DatabaseOptions) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe("PRAGMA busy_timeout = 0")
    yield* sql.unsafe("PRAGMA locking_mode = EXCLUSIVE")
    const [mode] = yield* sql.unsafe<{ journal_mode: string }>("PRAGMA journal_mode = WAL")
    if (options.filename !== ":memory:" && mode?.journal_mode !== "wal") {
      return yield* new StorageIo({
        subject: options.filename,
        message: `could not put ${options.filename} in WAL mode (got ${mode?.journal_mode}); is the file system read-only?`,
        ...(options.node !== undefined ? { node: options.node } : {})
      })
    }
    yield* sql.unsafe("PRAGMA synchronous = NORMAL")
    // Take the exclusive lock now, not at the first write.
    yield* sql.withTransaction(sql.unsafe("PRAGMA user_version"))
    const check = yield* sql.unsafe<{ quick_check: string }>("PRAGMA quick_check")
    const problems = check.map((row) => row.quick_check).filter((line) => line !== "ok")
    if (problems.length > 0) {
      return yield* new StorageCorrupt({
        subject: options.filename,
        message: `the database ${options.filename} failed its integrity check (${problems.slice(0, 3).join("; ")}); the node will not serve from it — restore the data directory from a backup, or remove it and rejoin the node`,
        ...(options.node !== undefined ? { node: options.node } : {})
      })
    }
  })

/** Makes every transaction committed so far durable (see the module comment). */
export class Durability extends Context.Tag("blixard/Durability")<
  Durability,
  { readonly sync: Effect.Effect<void, StorageError> }
>() {}

const durability = (options: DatabaseOptions): Layer.Layer<Durability> =>
  Layer.scoped(
    Durability,
    Effect.gen(function* () {
      if (options.filename === ":memory:") return { sync: Effect.void }
      const wal = `${options.filename}-wal`
      let fd: number | undefined
      yield* Effect.addFinalizer(() => Effect.sync(() => fd !== undefined && fs.closeSync(fd)))
      const failed = (cause: unknown) =>
        new StorageIo({
          subject: wal,
          message: `cannot flush ${wal} to disk: ${cause instanceof Error ? cause.message : String(cause)}; the write may be lost on power failure — check the disk and the data directory`,
          ...(options.node !== undefined ? { node: options.node } : {})
        })
      /** The WAL file, opened once it exists; its directory entry is made durable the first time. */
      const walFd = (): number | undefined => {
        if (fd !== undefined) return fd
        try {
          fd = fs.openSync(wal, "r+")
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined // nothing committed yet
          throw e
        }
        const dir = fs.openSync(path.dirname(options.filename), "r")
        try {
          fs.fsyncSync(dir)
        } finally {
          fs.closeSync(dir)
        }
        return fd
      }
      const sync = Effect.async<void, StorageError>((resume) => {
        let target: number | undefined
        try {
          target = walFd()
        } catch (e) {
          resume(Effect.fail(failed(e)))
          return
        }
        if (target === undefined) resume(Effect.void)
        else fs.fdatasync(target, (err) => resume(err === null ? Effect.void : Effect.fail(failed(err))))
      })
      return { sync }
    })
  )

const migrate = SqliteMigrator.run({ loader: SqliteMigrator.fromRecord(migrations) }).pipe(
  Effect.provide(NodeContext.layer)
)

/**
 * A SQLite client for the node's database, opened with the settings above and migrated to the
 * current schema. Fails with StorageLocked, StorageCorrupt or StorageIo, each naming the file.
 */
export const layer = (
  options: DatabaseOptions
): Layer.Layer<SqliteClient.SqliteClient | SqlClient.SqlClient | Durability, StorageError> => {
  const opened = SqliteClient.layer({ filename: options.filename, disableWAL: true })
  const setup = Layer.effectDiscard(
    Effect.gen(function* () {
      yield* pragmas(options).pipe(Effect.catchTag("SqlError", (e: SqlError) => Effect.fail(classify(options, "opening")(e))))
      yield* migrate.pipe(Effect.mapError(classify(options, "migrating the schema")))
    })
  )
  const checked = Layer.effectDiscard(
    Effect.suspend(() => {
      if (options.filename === ":memory:") return Effect.void
      const dir = path.dirname(options.filename)
      return fs.existsSync(dir)
        ? Effect.void
        : Effect.fail(
            new StorageIo({
              subject: dir,
              message: `the data directory ${dir} does not exist; create it or point --data-dir elsewhere`,
              ...(options.node !== undefined ? { node: options.node } : {})
            })
          )
    })
  )
  return Layer.provideMerge(setup, opened).pipe(
    Layer.merge(durability(options)),
    Layer.catchAllCause((cause) => {
      // better-sqlite3 throws from its constructor (a defect inside the client's layer) when the file
      // cannot be opened at all.
      const failure = Cause.squash(cause)
      const error =
        failure instanceof StorageCorrupt || failure instanceof StorageIo || failure instanceof StorageLocked
          ? failure
          : classify(options, "opening")(failure)
      return Layer.fail(error)
    }),
    Layer.provide(checked)
  )
}
