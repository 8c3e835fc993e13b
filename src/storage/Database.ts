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
 *
 * Two ways to run statements on the one connection. `SqlClient` (@effect/sql) serves the cold
 * paths: migrations, the node's identity, tests. `Connection` runs statements prepared once,
 * synchronously, for the Raft log's writes: measured on a 2-core machine, @effect/sql costs about
 * 20 µs per statement and 40 µs per transaction in Effect machinery (statement compilation, spans,
 * its prepared-statement cache, fibers), against a few µs per row for a prepared statement — which
 * was the main-thread cost of every replicated write. @effect/sql-sqlite-node's client does not
 * expose its connection, so this module opens the connection itself and builds the `SqlClient` over
 * it with @effect/sql's adapter API (as that package does). Both share one lock, held for a whole
 * transaction of either kind, so a statement never lands inside the other's open transaction.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import Sqlite from "better-sqlite3"
import { Cause, Context, Effect, Layer, Scope, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { type ReleaseTooOld, StorageCorrupt, StorageIo, StorageLocked } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import { migrations } from "./Migrations.js"

/** Includes `ReleaseTooOld`: the state machine stops the node on a log newer than its release. */
export type StorageError = StorageCorrupt | StorageIo | StorageLocked | ReleaseTooOld

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
/**
 * What to do about a node whose storage cannot be trusted. Never "restore it from a backup" or "wipe
 * it and restart": a node back with less than it had acknowledged, under its old identity, could
 * vote twice in a term or help elect a leader missing a committed write. It must leave the cluster
 * and join again as a new member.
 */
export const rejoinAdvice = (node: NodeId | undefined): string => {
  const id = node !== undefined ? String(node) : "N"
  return `remove node ${id} from the cluster first (blixard cluster leave --id ${id}, against a healthy member), move this data directory aside, then start the node on an empty one so it joins as a new member; never restore its Raft state from a backup`
}

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
        message: `the database ${file} is damaged (${causeMessage(cause)}) while ${doing}; the node will not serve from it — ${rejoinAdvice(options.node)}`
      })
    }
    return new StorageIo({
      ...base,
      message: `cannot use the database ${file} while ${doing}: ${causeMessage(cause)}${code !== undefined ? ` (${code})` : ""}; check the data directory's permissions and free space`
    })
  }

/** Sets the connection up as the module comment describes; throws a SQLite error or a storage error. */
const configure = (db: Sqlite.Database, options: DatabaseOptions): void => {
  db.pragma("busy_timeout = 0")
  db.pragma("locking_mode = EXCLUSIVE")
  const mode = db.pragma("journal_mode = WAL", { simple: true })
  if (options.filename !== ":memory:" && mode !== "wal") {
    throw new StorageIo({
      subject: options.filename,
      message: `could not put ${options.filename} in WAL mode (got ${String(mode)}); is the file system read-only?`,
      ...(options.node !== undefined ? { node: options.node } : {})
    })
  }
  db.pragma("synchronous = NORMAL")
  // Take the exclusive lock now, not at the first write.
  db.transaction(() => db.pragma("user_version"))()
  const check = db.pragma("quick_check") as Array<{ quick_check: string }>
  const problems = check.map((row) => row.quick_check).filter((line) => line !== "ok")
  if (problems.length > 0) {
    throw new StorageCorrupt({
      subject: options.filename,
      message: `the database ${options.filename} failed its integrity check (${problems.slice(0, 3).join("; ")}); the node will not serve from it — ${rejoinAdvice(options.node)}`,
      ...(options.node !== undefined ? { node: options.node } : {})
    })
  }
}

/**
 * The node's connection, for statements prepared once and run synchronously (see the module
 * comment). Prepare when the layer is built; run statements only inside `use` or `transaction`,
 * which hold the connection's lock.
 */
export class Connection extends Context.Tag("blixard/Connection")<
  Connection,
  {
    /** better-sqlite3's `prepare`: throws if the statement does not compile. */
    readonly prepare: Sqlite.Database["prepare"]
    /** Runs `f` holding the connection; what `f` throws is the failure. */
    readonly use: <A>(f: () => A) => Effect.Effect<A, unknown>
    /** Runs `f` as one transaction: committed if it returns, rolled back if it throws (the failure). */
    readonly transaction: <A>(f: () => A) => Effect.Effect<A, unknown>
  }
>() {}

/** `f`'s result, or what it threw as the failure. */
const attempt = <A>(f: () => A): Effect.Effect<A, unknown> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(f())
    } catch (e) {
      return Effect.fail(e)
    }
  })

/**
 * An @effect/sql client over `db`, as @effect/sql-sqlite-node builds one: statements outside a
 * transaction take the lock only to start, a transaction holds it until it ends. It serves the cold
 * paths only, so each statement is prepared when it runs.
 */
const makeSqlClient = (db: Sqlite.Database, lock: Effect.Semaphore) => {
  /** Runs one statement: a reader's rows (as objects, or as value arrays), or a writer's `RunResult` (`raw`) or nothing. */
  const run = (sql: string, params: ReadonlyArray<unknown>, shape: "rows" | "raw" | "values") =>
    Effect.try({
      try: (): ReadonlyArray<unknown> | Sqlite.RunResult => {
        const statement = db.prepare(sql)
        if (statement.reader) return shape === "values" ? statement.raw(true).all(...params) : statement.all(...params)
        const result = statement.run(...params)
        return shape === "raw" ? result : []
      },
      catch: (cause) => new SqlError({ cause, message: "Failed to execute statement" })
    })
  const rows = (sql: string, params: ReadonlyArray<unknown>) => run(sql, params, "rows") as Effect.Effect<ReadonlyArray<object>, SqlError>
  const execute: SqlConnection.Connection["execute"] = (sql, params, transformRows) =>
    transformRows !== undefined ? Effect.map(rows(sql, params), transformRows) : rows(sql, params)
  const connection: SqlConnection.Connection = {
    execute,
    executeUnprepared: execute,
    executeRaw: (sql, params) => run(sql, params, "raw"),
    executeValues: (sql, params) => run(sql, params, "values") as Effect.Effect<ReadonlyArray<ReadonlyArray<unknown>>, SqlError>,
    executeStream: () => Stream.dieMessage("streaming queries are not supported")
  }
  return SqlClient.make({
    acquirer: lock.withPermits(1)(Effect.succeed(connection)),
    transactionAcquirer: Effect.uninterruptibleMask((restore) =>
      Effect.as(
        Effect.zipRight(
          restore(lock.take(1)),
          Effect.flatMap(Effect.scope, (scope) => Scope.addFinalizer(scope, lock.release(1)))
        ),
        connection
      )
    ),
    compiler: Statement.makeCompilerSqlite(),
    spanAttributes: [["db.system.name", "sqlite"]]
  })
}

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

const migrate = Migrator.make({})({ loader: Migrator.fromRecord(migrations) })

/**
 * The node's database, opened with the settings above and migrated to the current schema, as a
 * `Connection` and a `SqlClient`. Fails with StorageLocked, StorageCorrupt or StorageIo, each naming
 * the file.
 */
export const layer = (
  options: DatabaseOptions
): Layer.Layer<Connection | SqlClient.SqlClient | Durability, StorageError> => {
  const isStorageError = (e: unknown): e is StorageError =>
    e instanceof StorageCorrupt || e instanceof StorageIo || e instanceof StorageLocked
  const opened = Layer.scopedContext(
    Effect.gen(function* () {
      const db = yield* Effect.acquireRelease(
        Effect.try({ try: () => new Sqlite(options.filename), catch: classify(options, "opening") }),
        (db) => Effect.sync(() => db.close())
      )
      yield* Effect.mapError(attempt(() => configure(db, options)), (e) =>
        isStorageError(e) ? e : classify(options, "opening")(e)
      )
      const lock = yield* Effect.makeSemaphore(1)
      const sql = yield* makeSqlClient(db, lock)
      yield* migrate.pipe(
        Effect.provideService(SqlClient.SqlClient, sql),
        Effect.mapError(classify(options, "migrating the schema"))
      )
      const inTransaction = db.transaction((f: () => unknown) => f())
      return Context.make(Connection, {
        prepare: db.prepare.bind(db) as Sqlite.Database["prepare"],
        use: (f) => lock.withPermits(1)(attempt(f)),
        transaction: <A>(f: () => A) => lock.withPermits(1)(attempt(() => inTransaction(f) as A))
      }).pipe(Context.add(SqlClient.SqlClient, sql))
    })
  ).pipe(Layer.provide(Reactivity.layer))
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
  return opened.pipe(
    Layer.merge(durability(options)),
    Layer.catchAllCause((cause) => {
      // A defect while opening (a migration that died, say) stops the node like a failure.
      const failure = Cause.squash(cause)
      return Layer.fail(isStorageError(failure) ? failure : classify(options, "opening")(failure))
    }),
    Layer.provide(checked)
  )
}
