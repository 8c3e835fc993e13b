/**
 * Fencing's files, in the node's data directory (beside its database, so they belong to the node
 * id that directory is claimed for):
 *
 *   ${dataDir}/fencing/lease.json      the node's lease (`NodeLease.ts`), written by the daemon
 *   ${dataDir}/fencing/watchdog.json   the running watchdog: pid, start time, phase (`Watchdog.ts`)
 *   ${dataDir}/fencing/watchdog.log    the watchdog's output: what it stopped, why, what to do
 *
 * Each is JSON checked with a schema when read; a file that fails its schema is a `StorageCorrupt`
 * naming the file and the node, never a silent default. Writes are atomic (a temporary file renamed
 * over the old one), so a reader sees the old or the new content, never a torn one. They are not
 * fsynced: they only mean something while this host runs (a host that crashes loses its runners
 * too), and while it runs every process sees the same page cache.
 *
 * Reads and writes run off the JavaScript thread: the fencing watchdog reads and writes these files
 * on the disk whose stall it must outlive. Reads are shared (`diskReads.ts`): asked again while one
 * hangs, a file is not read twice; the watchdog bounds how long it waits for an answer.
 */
import { Effect, Option, ParseResult, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { StorageCorrupt, StorageIo } from "../../domain/Errors.js"
import type { NodeId } from "../../domain/NodeId.js"
import { readText } from "../../vm/internal/diskReads.js"
import { bootId, isAlive, readStat } from "../../vm/internal/procfs.js"

export interface FencingPaths {
  readonly dir: string
  readonly lease: string
  readonly watchdog: string
  readonly log: string
}

export const fencingPaths = (dataDir: string): FencingPaths => {
  const dir = path.join(dataDir, "fencing")
  return {
    dir,
    lease: path.join(dir, "lease.json"),
    watchdog: path.join(dir, "watchdog.json"),
    log: path.join(dir, "watchdog.log")
  }
}

/** One process for good: a pid alone can be reused; (boot id, pid, start time) cannot. */
export const ProcessIdentity = Schema.Struct({
  pid: Schema.Int.pipe(Schema.positive()),
  /** Field 22 of /proc/PID/stat: clock ticks since boot. */
  startTime: Schema.String.pipe(Schema.pattern(/^[0-9]+$/)),
  bootId: Schema.String
})
export type ProcessIdentity = typeof ProcessIdentity.Type

/** This process. */
export const selfIdentity = (): ProcessIdentity => ({
  pid: process.pid,
  startTime: readStat(process.pid)?.startTime ?? "0",
  bootId: bootId()
})

/** The process still runs (same boot, same pid, same start time, not a zombie). */
export const isRunning = (identity: ProcessIdentity): boolean =>
  identity.bootId === bootId() && isAlive(identity.pid, identity.startTime)

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/**
 * Reads `file` as JSON of `schema` (off the JavaScript thread, shared): none when it does not exist.
 * `what` names it in messages ("the lease file"), `remedy` says what happens and what to do when it
 * is invalid.
 */
export const readJsonFile = <A, I>(
  schema: Schema.Schema<A, I>,
  file: string,
  options: { readonly what: string; readonly node: NodeId; readonly remedy: string }
): Effect.Effect<Option.Option<A>, StorageCorrupt | StorageIo> =>
  Effect.gen(function* () {
    const text = yield* Effect.tryPromise({
      try: () => readText(file, "high"),
      catch: (e) =>
        new StorageIo({
          node: options.node,
          subject: file,
          message: `cannot read ${options.what} ${file} of node ${options.node}: ${describe(e)}; ${options.remedy}`
        })
    })
    if (text === undefined) return Option.none()
    const decoded = Schema.decodeUnknownEither(Schema.parseJson(schema))(text)
    if (decoded._tag === "Right") return Option.some(decoded.right)
    const problems = ParseResult.ArrayFormatter.formatErrorSync(decoded.left)
      .map((issue) => (issue.path.length > 0 ? `${issue.path.join(".")}: ${issue.message}` : issue.message))
      .join("; ")
    return yield* new StorageCorrupt({
      node: options.node,
      subject: file,
      message: `${options.what} ${file} of node ${options.node} is not valid (${problems}); ${options.remedy}`
    })
  })

let writes = 0

/**
 * Writes `value` (already encoded) to `file` atomically (`writeFileAtomic`'s steps), making its
 * directory if needed. Off the event loop (libuv's threads): on a hung volume a write or rename can
 * block, and the process writing — the watchdog, the daemon — must go on stopping VMs meanwhile.
 */
export const writeJsonFile = (
  file: string,
  value: unknown,
  options: { readonly what: string; readonly node: NodeId }
): Effect.Effect<void, StorageIo> =>
  Effect.tryPromise({
    try: async () => {
      // One name per write: two writes of one file may now overlap. Two operations when all is in
      // place (the lease is written every few hundred ms); the directory is made, and a temporary
      // file left by an earlier process of this pid removed, only when the write finds them so.
      const tmp = `${file}.tmp-${process.pid}-${++writes}`
      const text = `${JSON.stringify(value)}\n`
      try {
        await fs.promises.writeFile(tmp, text, { flag: "wx" })
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code
        if (code === "ENOENT") await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
        else if (code === "EEXIST") await fs.promises.rm(tmp, { force: true })
        else throw e
        await fs.promises.writeFile(tmp, text, { flag: "wx" })
      }
      await fs.promises.rename(tmp, file)
    },
    catch: (e) =>
      new StorageIo({
        node: options.node,
        subject: file,
        message: `cannot write ${options.what} ${file} of node ${options.node}: ${describe(e)}; check the data directory's permissions and free space`
      })
  })
