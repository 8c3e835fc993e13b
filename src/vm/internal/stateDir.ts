/**
 * microvm.nix's state layout, shared by process mode and systemd mode:
 *
 *   ${stateDir}/${name}/blixard.json       → the marker that makes the directory Blixard's (`ownership.ts`)
 *   ${stateDir}/${name}/current            → the runner to start (what `prepare` made)
 *   ${stateDir}/${name}/booted             → the runner that was started (removed by a clean stop;
 *                                            `booted.claimed-PID` while process PID tears it down)
 *   ${stateDir}/${name}/toplevel           → the guest's NixOS system (the runner's share/microvm/system),
 *                                            as microvm.nix's declarative VMs have it: `microvm -l` shows
 *                                            the VM without evaluating a flake, `microvm -u` refuses to
 *                                            rebuild it behind Blixard's back
 *   ${stateDir}/${name}/flake/             → the generated flake of an inline VM
 *   ${stateDir}/${name}/blixard.log        → build output and the runner's stdout/stderr
 *   ${stateDir}/${name}/blixard.pid        → process mode: the runner's pid file (JSON, see PidRecord)
 *   ${stateDir}/${name}/blixard-virtiofsd.pid
 */
import { Effect, Option, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { VmName } from "../../domain/VmName.js"
import { answerBy, laned, readText } from "./diskReads.js"

export interface VmPaths {
  readonly dir: string
  readonly marker: string
  readonly current: string
  readonly toplevel: string
  readonly booted: string
  readonly flakeDir: string
  readonly log: string
  readonly pidFile: (process: "vm" | "virtiofsd") => string
}

export const vmPaths = (stateDir: string, name: VmName): VmPaths => {
  const dir = path.join(stateDir, name)
  return {
    dir,
    marker: path.join(dir, "blixard.json"),
    current: path.join(dir, "current"),
    toplevel: path.join(dir, "toplevel"),
    booted: path.join(dir, "booted"),
    flakeDir: path.join(dir, "flake"),
    log: path.join(dir, "blixard.log"),
    pidFile: (process) => path.join(dir, process === "vm" ? "blixard.pid" : "blixard-virtiofsd.pid")
  }
}

/**
 * Points `link` at `target`, replacing any previous link atomically (a new link renamed over it).
 * Off the JavaScript thread, as every write of this module: the state directory may be on a stalled
 * disk, and the daemon's event loop runs its fencing.
 */
export const replaceSymlink = async (target: string, link: string): Promise<void> => {
  const tmp = `${link}.tmp-${process.pid}`
  await fs.promises.rm(tmp, { force: true })
  await fs.promises.symlink(target, tmp)
  await fs.promises.rename(tmp, link)
}

/**
 * Writes a whole file atomically (temporary file renamed over it). The temporary file is created
 * exclusively, so a link planted at its name (a VM directory may belong to microvm.nix's user) is
 * never followed.
 */
export const writeFileAtomic = async (file: string, content: string): Promise<void> => {
  const tmp = `${file}.tmp-${process.pid}`
  await fs.promises.rm(tmp, { force: true })
  await fs.promises.writeFile(tmp, content, { flag: "wx" })
  await fs.promises.rename(tmp, file)
}

/** What a pid file holds: enough to recognise the process after a daemon restart. */
export const PidRecord = Schema.Struct({
  vm: Schema.String,
  process: Schema.Literal("vm", "virtiofsd"),
  pid: Schema.Int.pipe(Schema.positive()),
  /** /proc/PID/stat start time (clock ticks since boot). */
  startTime: Schema.String,
  bootId: Schema.String,
  /** Epoch milliseconds when it was started. */
  startedAt: Schema.Number
})
export type PidRecord = typeof PidRecord.Type

const decodePidRecord = Schema.decodeUnknownOption(Schema.parseJson(PidRecord))

/**
 * The pid file's record; undefined when it is missing or does not hold one (then nothing is adopted
 * from it). Read off the JavaScript thread and shared (`diskReads.ts`, low lane): the stop path reads
 * it on a disk that may be stalled.
 */
export const readPidRecord = (file: string): Promise<PidRecord | undefined> =>
  readText(file, "low").then(
    (text) => (text === undefined ? undefined : Option.getOrUndefined(decodePidRecord(text))),
    () => undefined
  )

/**
 * Takes `link` for this process by renaming it to a name of its own (one rename wins when several
 * processes try); answers that name, or undefined if the link was not there (or was taken first).
 * Asynchronous (libuv's threads, the clean-up lane of `diskReads.ts`), as it runs on the stop path:
 * a rename hung on a stalled disk must not stop the JavaScript thread, nor take more of the pool.
 */
export const claimLink = (link: string): Promise<string | undefined> => {
  const claimed = `${link}.claimed-${process.pid}`
  return laned("cleanup", () => fs.promises.rename(link, claimed)).then(
    () => claimed,
    () => undefined
  )
}

/**
 * `claimLink`, answered by the instant `by` (epoch ms, on the `Clock`; none: as long as it takes) or
 * taken as not claimed (undefined): a claim that lands later is put back, for the next stop to take.
 */
export const claimLinkBy = (link: string, by: number | undefined): Effect.Effect<string | undefined> =>
  Effect.suspend(() => {
    let state: { readonly _tag: "waiting" | "abandoned" } | { readonly _tag: "answered"; readonly claimed: string | undefined } = {
      _tag: "waiting"
    }
    const claim = claimLink(link).then((claimed) => {
      if (state._tag === "abandoned" && claimed !== undefined) void unclaimLink(claimed, link)
      else state = { _tag: "answered", claimed }
    })
    // Decided in one synchronous step once the wait ends: answered by now (even just after `by`), or abandoned.
    return answerBy(() => claim, by).pipe(
      Effect.ignore,
      Effect.flatMap(() =>
        Effect.sync(() => {
          if (state._tag === "answered") return state.claimed
          state = { _tag: "abandoned" }
          return undefined
        })
      )
    )
  })

/** Puts a claimed link back, unless `link` has been made again meanwhile (it is then kept). Asynchronous, as `claimLink`. */
export const unclaimLink = (claimed: string, link: string): Promise<void> =>
  laned("cleanup", async () => {
    // link(2) does not follow a symbolic link and refuses to replace an existing `link`.
    await fs.promises.link(claimed, link).catch(() => undefined) // made again meanwhile, or the directory is gone
    await fs.promises.rm(claimed, { force: true }).catch(() => undefined)
  })

/**
 * Removes a file if it is there, off the JavaScript thread (the clean-up lane); never fails (what is
 * left is harmless).
 */
export const removeFile = (file: string): Promise<void> =>
  laned("cleanup", () => fs.promises.rm(file, { force: true })).catch(() => undefined)

/** Opens a file to append to, never through a symbolic link (see `writeFileAtomic`); off the JavaScript thread. */
export const openAppend = (file: string): Promise<fs.promises.FileHandle> =>
  fs.promises.open(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o644)
