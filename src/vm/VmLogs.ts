/**
 * A VM's log on the node that hosts it (`blixard vm logs`): the runner's console output and the
 * build log, as a stream of text chunks, optionally followed as it grows.
 *
 * - Process mode: `${stateDir}/NAME/blixard.log`, where the runner's stdout and stderr, `nix build`'s
 *   output and Blixard's own `# blixard …` lines are appended (`ProcessBackend.ts`,
 *   `RunnerBuild.ts`). Followed by polling its size (a truncated file is read again from the
 *   start): no file watcher, nothing to leak; interrupting the stream ends it.
 * - Systemd mode: the same file's build log (its last lines, not followed), then the unit's journal,
 *   `journalctl -u microvm@NAME -o cat [-n N] [-f]`, spawned without a shell; interrupting the
 *   stream (the client went away) kills `journalctl`.
 *
 * Only a Blixard directory's log is read (a foreign directory is refused, as every backend call).
 *
 * The file is read off the JavaScript thread (`fs.promises`, a `FileHandle`), in the low lane of
 * `internal/diskReads.ts`: a log on a stalled disk makes its reader wait, never the daemon's event
 * loop (its fencing), and however many clients read or follow such a log they hold at most that
 * lane's few threads of libuv's pool, never the ones the lease needs.
 */
import { Effect, Option, Schedule, Stream } from "effect"
import * as childProcess from "node:child_process"
import * as fs from "node:fs"
import { BackendFailed, type VmDirForeign } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { VmName } from "../domain/VmName.js"
import * as DiskReads from "./internal/diskReads.js"
import { vmPaths } from "./internal/stateDir.js"
import { requireOwnDir, type StateDirSettings } from "./RunnerBuild.js"
import { unitName } from "./SystemdBackend.js"

export interface VmLogSettings extends Pick<StateDirSettings, "stateDir" | "node" | "cluster"> {
  readonly backend: "process" | "systemd"
  /** The `journalctl` executable (default `journalctl`; tests point it at a fake). */
  readonly journalctl?: string | undefined
  /** How often a followed log file is checked for growth (default 250 ms). */
  readonly pollMs?: number | undefined
}

export interface VmLogRequest {
  readonly name: VmName
  /** Keep the stream open and send what is appended. */
  readonly follow: boolean
  /** Only the last N lines of what exists now (default: everything). */
  readonly tail?: number | undefined
}

/** The most read back from an existing log before following it (the rest is older than anyone reads here). */
const MaxBacklogBytes = 8 * 1024 * 1024
const ChunkBytes = 64 * 1024

/** The last `lines` lines of `text` (`undefined`: all of it). */
export const lastLines = (text: string, lines: number | undefined): string => {
  if (lines === undefined) return text
  if (lines <= 0) return ""
  let end = text.endsWith("\n") ? text.length - 1 : text.length
  let at = end
  for (let n = 0; n < lines; n++) {
    at = text.lastIndexOf("\n", at - 1)
    if (at === -1) return text
  }
  end = at + 1
  return text.slice(end)
}

const failed = (node: NodeId, name: VmName, message: string) => new BackendFailed({ message, subject: name, node })

/** Reads `[from, to)` of `file`, off the JavaScript thread (the low lane). */
const readRange = (file: string, from: number, to: number): Promise<Buffer> =>
  DiskReads.laned("low", async () => {
    const handle = await fs.promises.open(file, "r")
    try {
      const buffer = Buffer.alloc(to - from)
      let done = 0
      while (done < buffer.length) {
        const { bytesRead } = await handle.read(buffer, done, buffer.length - done, from + done)
        if (bytesRead === 0) break
        done += bytesRead
      }
      return buffer.subarray(0, done)
    } finally {
      await handle.close()
    }
  })

/** The file's size (0 when it does not exist), off the JavaScript thread (shared, the low lane). */
const sizeOf = async (file: string): Promise<number> => (await DiskReads.stat(file, "low"))?.size ?? 0

/** What the file holds now (its last `tail` lines), and the offset following should resume from. */
const backlog = async (file: string, tail: number | undefined): Promise<{ readonly text: string; readonly offset: number }> => {
  const size = await sizeOf(file)
  const from = Math.max(0, size - MaxBacklogBytes)
  const text = size === 0 ? "" : (await readRange(file, from, size)).toString("utf8")
  return { text: lastLines(text, tail), offset: size }
}

/** The log file from `offset` on, as it grows, until interrupted. */
const followFile = (file: string, offset: number, pollMs: number): Stream.Stream<string> => {
  let position = offset
  const poll = Effect.promise(async (): Promise<Option.Option<string>> => {
    const size = await sizeOf(file)
    if (size < position) position = 0 // truncated (or replaced): read it again from its start
    if (size === position) return Option.none()
    const to = Math.min(size, position + ChunkBytes)
    const chunk = await readRange(file, position, to)
    position += chunk.length
    return Option.some(chunk.toString("utf8"))
  })
  return Stream.repeatEffectWithSchedule(poll, Schedule.spaced(`${pollMs} millis`)).pipe(Stream.filterMap((chunk) => chunk))
}

/** `journalctl -u microvm@NAME -o cat …` as a stream of its output; interrupting it kills the process. */
const journal = (settings: VmLogSettings, request: VmLogRequest): Stream.Stream<string, BackendFailed> => {
  const command = settings.journalctl ?? "journalctl"
  const args = [
    "-u",
    unitName(request.name),
    "-o",
    "cat",
    "--no-pager",
    ...(request.tail !== undefined ? ["-n", String(request.tail)] : []),
    ...(request.follow ? ["-f"] : [])
  ]
  return Stream.async<string, BackendFailed>((emit) => {
    const child = childProcess.spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] })
    let stderr = ""
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", (chunk: string) => void emit.single(chunk))
    child.stderr.setEncoding("utf8")
    child.stderr.on("data", (chunk: string) => {
      if (stderr.length < 4096) stderr += chunk
    })
    child.once("error", (e) =>
      void emit.fail(failed(settings.node, request.name, `VM "${request.name}": could not run ${command} on node ${settings.node}: ${e.message}`))
    )
    child.once("close", (code) => {
      if (code === 0 || code === null) void emit.end()
      else {
        void emit.fail(
          failed(settings.node, request.name, `VM "${request.name}": ${command} ${args.join(" ")} failed on node ${settings.node} (exit code ${code}): ${stderr.trim()}`)
        )
      }
    })
    // The client went away (or the stream ended): no journalctl is left behind.
    return Effect.sync(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
    })
  })
}

/** The VM's log on this node (see the module comment). */
export const stream = (settings: VmLogSettings, request: VmLogRequest): Stream.Stream<string, BackendFailed | VmDirForeign> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const exists = yield* requireOwnDir(settings, request.name)
      const file = vmPaths(settings.stateDir, request.name).log
      if (!exists) {
        return yield* failed(
          settings.node,
          request.name,
          `VM "${request.name}" has no state directory on node ${settings.node} (never prepared here, or removed): no log to show`
        )
      }
      const { text, offset } = yield* Effect.tryPromise({
        try: () => backlog(file, request.tail),
        catch: (e) => failed(settings.node, request.name, `VM "${request.name}": cannot read ${file} on node ${settings.node}: ${String(e)}. Check that file and its disk on node ${settings.node}, then ask again.`)
      })
      const head = text === "" ? Stream.empty : Stream.make(text)
      if (settings.backend === "systemd") return Stream.concat(head, journal(settings, request))
      return request.follow ? Stream.concat(head, followFile(file, offset, settings.pollMs ?? 250)) : head
    })
  )
