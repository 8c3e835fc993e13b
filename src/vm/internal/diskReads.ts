/**
 * Reads (and the stop path's clean-up writes) of files that may sit on a stalled disk, for a process that must go on meanwhile — the
 * fencing watchdog reads its lease, its record, the VMs' state directories, the runners' pid
 * files and their scripts (`isExecutable`: is there a `microvm-shutdown`, a `tap-down`?) on the very
 * disk whose stall it must outlive; the daemon reads the same on its start, prepare and remove
 * paths, which must not stop its event loop either (without a deadline: they wait, asynchronously). A synchronous read there, hung, would stop the
 * whole JavaScript thread (timers, signals, everything); so these reads:
 *
 * - run off the JavaScript thread, in libuv's thread pool;
 * - are SHARED, but never stale: a read asked for while one of the same file (the same operation) is
 *   under way waits for the NEXT read, which starts when that one ends and answers everyone who asked
 *   meanwhile. So a caller that asks again every poll never starts a second read of a file whose
 *   first read hangs (reads hung on a stalled disk never pile up in the pool's few threads: one runs,
 *   one waits in memory), and every answer comes from a read begun after it was asked for. The
 *   fencing protocol needs the latter: each side writes, then reads what the other wrote
 *   (`Watchdog.ts`), and a read that began before the other's write, joined after it, could miss it;
 * - of the LOW lane (the state directories' files, one per VM and more) at most `LowLaneReads` run
 *   at once, the others wait in memory for a turn: however many VMs' files hang, threads stay free
 *   for the HIGH lane (the lease and the watchdog's record, a handful) and for the logs;
 * - the stop path's CLEAN-UP writes (a claimed `booted` link renamed, put back or removed, a pid file
 *   removed: one or two per VM stopped, `stateDir.ts`) take the CLEANUP lane (`laned`), of which at
 *   most `CleanupLaneOps` run at once: a fence round stopping many VMs on a stalled disk holds at most
 *   that many threads with them, never the pool the lease read needs. They are not shared (each
 *   changes the disk), and whoever waits for one bounds the wait itself;
 * - are answered in time or not at all (`answerBy`): the caller knows its deadline in memory and
 *   takes a read not answered by then as no answer (a lease read unanswered is no renewal), while
 *   the read itself goes on and is shared by the next caller.
 *
 * Nothing here is synchronous, and nothing is cached: every answer is a read begun after it was
 * asked for.
 */
import { Clock, Effect, Option } from "effect"
import * as fs from "node:fs"

export type Lane = "high" | "low" | "cleanup"

/** How many low-lane reads run at once (libuv's pool has 4 threads unless `UV_THREADPOOL_SIZE` says more). */
export const LowLaneReads = 2

/** How many clean-up writes run at once. */
export const CleanupLaneOps = 2

/** Per key: the read under way, and the one asked for meanwhile (it starts when the first ends). */
interface InFlight {
  running: Promise<unknown>
  next: Promise<unknown> | undefined
}
const inFlight = new Map<string, InFlight>()
/** The bounded lanes: how many run, and who waits for a turn. */
const lanes = {
  low: { limit: LowLaneReads, running: 0, waiting: new Array<() => void>() },
  cleanup: { limit: CleanupLaneOps, running: 0, waiting: new Array<() => void>() }
}

const turn = (lane: Lane): Promise<void> => {
  if (lane === "high") return Promise.resolve()
  const l = lanes[lane]
  if (l.running < l.limit) {
    l.running++
    return Promise.resolve()
  }
  return new Promise((resolve) => l.waiting.push(resolve))
}

const release = (lane: Lane): void => {
  if (lane === "high") return
  const l = lanes[lane]
  const next = l.waiting.shift()
  if (next !== undefined) next()
  else l.running--
}

/** Runs `op` when `lane` gives it a turn (at once on the high lane), and frees the turn when it ends. */
export const laned = <A>(lane: Lane, op: () => Promise<A>): Promise<A> =>
  turn(lane)
    .then(op)
    .finally(() => release(lane))

/** Starts a read under `key`; ended, it leaves the key to the read that waits for it, if one does. */
const start = <A>(key: string, lane: Lane, read: () => Promise<A>): Promise<A> => {
  const entry: InFlight = { running: Promise.resolve(), next: undefined }
  const running = laned(lane, read).finally(() => {
    if (inFlight.get(key) === entry && entry.next === undefined) inFlight.delete(key)
  })
  entry.running = running
  inFlight.set(key, entry)
  return running
}

/**
 * Runs `read` now, or, while a read under `key` is under way, once it has ended: callers asking
 * meanwhile share that next read (one read runs per key and at most one waits).
 */
export const shared = <A>(key: string, lane: Lane, read: () => Promise<A>): Promise<A> => {
  const entry = inFlight.get(key)
  if (entry === undefined) return start(key, lane, read)
  if (entry.next === undefined) {
    const ended = entry.running.then(
      () => undefined,
      () => undefined
    )
    entry.next = ended.then(() => start(key, lane, read))
  }
  return entry.next as Promise<A>
}

/** How many shared reads are under way or waiting for their turn (for tests). */
export const outstanding = (): number => inFlight.size

/** How many operations of a bounded lane run or wait for their turn (for tests). */
export const busy = (lane: "low" | "cleanup"): number => lanes[lane].running + lanes[lane].waiting.length

const missing = (e: unknown): boolean => (e as NodeJS.ErrnoException | undefined)?.code === "ENOENT"

/** A file's text; undefined when it does not exist. `noFollow`: never through a symbolic link. */
export const readText = (file: string, lane: Lane, options?: { readonly noFollow?: boolean }): Promise<string | undefined> =>
  shared(`read${options?.noFollow === true ? "-nofollow" : ""}\0${file}`, lane, async () => {
    try {
      if (options?.noFollow !== true) return await fs.promises.readFile(file, "utf8")
      const handle = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
      try {
        return await handle.readFile("utf8")
      } finally {
        await handle.close()
      }
    } catch (e) {
      if (missing(e)) return undefined
      throw e
    }
  })

/** `lstat`; undefined when nothing is there. */
export const lstat = (file: string, lane: Lane): Promise<fs.Stats | undefined> =>
  shared(`lstat\0${file}`, lane, () => fs.promises.lstat(file).catch((e: unknown) => (missing(e) ? undefined : Promise.reject(e))))

/** `stat` (through links); undefined when nothing is there. */
export const stat = (file: string, lane: Lane): Promise<fs.Stats | undefined> =>
  shared(`stat\0${file}`, lane, () => fs.promises.stat(file).catch((e: unknown) => (missing(e) ? undefined : Promise.reject(e))))

/**
 * Whether `file` is a regular file this process may execute (a runner's `bin/` script); false when it
 * is not, or cannot be told (an error). The runner sits in the Nix store or a directory of the host,
 * either of which may be on the stalled disk: the stop path waits for this only so long (`answerBy`).
 */
export const isExecutable = (file: string, lane: Lane): Promise<boolean> =>
  shared(`executable\0${file}`, lane, async () => {
    try {
      await fs.promises.access(file, fs.constants.X_OK)
      return (await fs.promises.stat(file)).isFile()
    } catch {
      return false
    }
  })

/** A directory's entries; undefined when it does not exist. */
export const readDir = (dir: string, lane: Lane): Promise<ReadonlyArray<fs.Dirent> | undefined> =>
  shared(`readdir\0${dir}`, lane, () =>
    fs.promises.readdir(dir, { withFileTypes: true }).catch((e: unknown) => (missing(e) ? undefined : Promise.reject(e)))
  )

/** Where a symbolic link points (as written in it); undefined when it is not there or not a link. */
export const readLink = (link: string, lane: Lane): Promise<string | undefined> =>
  shared(`readlink\0${link}`, lane, () => fs.promises.readlink(link).catch(() => undefined))

/** The path with every symbolic link resolved; undefined when it does not exist. */
export const realPath = (file: string, lane: Lane): Promise<string | undefined> =>
  shared(`realpath\0${file}`, lane, () => fs.promises.realpath(file).catch(() => undefined))

/**
 * `read`'s answer if it comes by the instant `by` (epoch ms, on the `Clock`); none when it does not
 * (the read goes on). Without `by`, waits for it however long it takes. A failed read fails.
 */
export const answerBy = <A>(read: () => Promise<A>, by: number | undefined): Effect.Effect<Option.Option<A>, unknown> => {
  const answer = Effect.tryPromise({ try: read, catch: (e) => e })
  if (by === undefined) return Effect.map(answer, Option.some)
  return Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Effect.timeoutOption(answer, `${Math.max(0, by - now)} millis`)
  )
}
