/**
 * Systemd mode's memory of the markers' verdicts (`SystemdBackend.ts`): for each VM's unit, whose its
 * directory was when its marker was last read, and under which of the unit's invocations
 * (`InvocationID`). A unit whose marker does not answer (a stalled disk) is judged by it while that
 * run of the unit lasts.
 *
 * One memory per file, shared by every backend instance of the process (the fencing watchdog builds
 * one for each round). With a file — in the runtime directory (`RuntimeDirectory=blixard`, handed to
 * the daemon and from it to its watchdog as `$RUNTIME_DIRECTORY`: tmpfs, never the stalled disk) —
 * the memory outlives the process: it is read back when first used (off the JavaScript thread,
 * waited for `LoadWaitMs` at most, merged whenever it lands), so a watchdog started again
 * (it died, or its daemon started another) still leaves alone a hand-made unit whose verdict it
 * read before. Without one it is the process's only.
 *
 * The file is input like any other: checked with its schema when read, and a file that cannot be
 * read or does not hold a memory is ignored (the memory starts empty), with a warning naming it.
 * It is written off the JavaScript thread (temporary file renamed over it) whenever a verdict
 * changes, never waited for: one write at a time, the last state written last. A write that fails
 * is said (once, at the next change) and the memory goes on in the process.
 */
import { Effect, Either, Option, ParseResult, Schema } from "effect"
import * as fs from "node:fs"
import { VmName } from "../../domain/VmName.js"

/** Whose a VM's directory is, for a listing or a stop. */
export const Whose = Schema.Union(
  Schema.Struct({ _tag: Schema.Literal("Ours", "Absent") }),
  Schema.Struct({ _tag: Schema.Literal("Foreign"), reason: Schema.String })
)
export type Whose = typeof Whose.Type

/** A verdict and the invocation of the unit it was read under. */
export interface Verdict {
  readonly invocation: string
  readonly whose: Whose
}

/** The file: every unit's verdict. */
export const VerdictFile = Schema.Struct({
  version: Schema.Literal(1),
  verdicts: Schema.Array(
    Schema.Struct({ stateDir: Schema.NonEmptyString, vm: VmName, invocation: Schema.NonEmptyString, whose: Whose })
  )
})

const decode = Schema.decodeUnknownEither(Schema.parseJson(VerdictFile))
const encode = Schema.encodeSync(VerdictFile)

export interface UnitVerdicts {
  /** The verdict last read for the VM's unit (read back from the file first, once). */
  readonly get: (stateDir: string, vm: VmName) => Effect.Effect<Verdict | undefined>
  /** Keeps a verdict read now (and writes the file when it changed; not waited for). */
  readonly set: (stateDir: string, vm: VmName, verdict: Verdict) => Effect.Effect<void>
}

const keyOf = (stateDir: string, vm: VmName) => `${stateDir}\0${vm}`

const same = (a: Verdict | undefined, b: Verdict): boolean =>
  a !== undefined && a.invocation === b.invocation && JSON.stringify(a.whose) === JSON.stringify(b.whose)

/** How long a listing waits for the file to be read back (once). */
const LoadWaitMs = 100

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e))

const make = (file: string | undefined): UnitVerdicts => {
  const verdicts = new Map<string, { readonly stateDir: string; readonly vm: VmName; readonly verdict: Verdict }>()
  let writing = false
  let again = false
  let writeProblem: string | undefined
  let writeProblemSaid = false
  /** The read of the file, started when first needed: what to warn of, if anything. */
  let reading: Promise<string | undefined> | undefined
  let readSaid = false

  const readBack = async (path: string): Promise<string | undefined> => {
    let text: string
    try {
      text = await fs.promises.readFile(path, "utf8")
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined
      return `${path} (the systemd units' verdicts) cannot be read (${describe(e)}): it is ignored, the verdicts are read again from the VMs' markers`
    }
    return Either.match(decode(text), {
      onLeft: (e) =>
        `${path} does not hold the systemd units' verdicts (${ParseResult.ArrayFormatter.formatErrorSync(e)
          .map((i) => `${i.path.join(".") || "file"}: ${i.message}`)
          .join("; ")}): it is ignored, the verdicts are read again from the VMs' markers, and it is rewritten with them`,
      onRight: (content) => {
        // Verdicts read since this process started are newer: they are kept.
        for (const v of content.verdicts) {
          const key = keyOf(v.stateDir, v.vm)
          if (!verdicts.has(key)) verdicts.set(key, { stateDir: v.stateDir, vm: v.vm, verdict: { invocation: v.invocation, whose: v.whose } })
        }
        return undefined
      }
    })
  }

  /**
   * The file read back, once, waited for `LoadWaitMs` at most: the runtime directory is tmpfs, but
   * should it be on a stalled disk after all, a listing goes on without it (the read is merged
   * whenever it lands).
   */
  const load: Effect.Effect<void> = Effect.suspend(() => {
    if (file === undefined) return Effect.void
    reading ??= readBack(file)
    return Effect.promise(() => reading!).pipe(
      Effect.timeoutOption(`${LoadWaitMs} millis`),
      Effect.flatMap((answer) => {
        if (Option.isNone(answer) || answer.value === undefined || readSaid) return Effect.void
        readSaid = true
        return Effect.logWarning(answer.value)
      })
    )
  })

  /** Writes the whole memory, one write at a time; a change meanwhile is written after. */
  const persist = (): void => {
    if (file === undefined) return
    if (writing) {
      again = true
      return
    }
    writing = true
    const text = `${JSON.stringify(
      encode({ version: 1, verdicts: [...verdicts.values()].map((v) => ({ stateDir: v.stateDir, vm: v.vm, ...v.verdict })) })
    )}\n`
    const tmp = `${file}.tmp-${process.pid}`
    fs.promises
      .writeFile(tmp, text, { mode: 0o600 })
      .then(() => fs.promises.rename(tmp, file))
      .then(
        () => {
          writeProblem = undefined
          writeProblemSaid = false
        },
        (e: unknown) => {
          writeProblem = describe(e)
        }
      )
      .finally(() => {
        writing = false
        if (again) {
          again = false
          persist()
        }
      })
  }

  return {
    get: (stateDir, vm) => Effect.zipRight(load, Effect.sync(() => verdicts.get(keyOf(stateDir, vm))?.verdict)),
    set: (stateDir, vm, verdict) =>
      Effect.zipRight(
        load,
        Effect.suspend(() => {
          const key = keyOf(stateDir, vm)
          // Only what the schema holds (a marker read as Blixard's comes with the marker itself).
          const whose: Whose = verdict.whose._tag === "Foreign" ? { _tag: "Foreign", reason: verdict.whose.reason } : { _tag: verdict.whose._tag }
          const kept = { invocation: verdict.invocation, whose }
          if (same(verdicts.get(key)?.verdict, kept)) return Effect.void
          verdicts.set(key, { stateDir, vm, verdict: kept })
          persist()
          if (writeProblem === undefined || writeProblemSaid) return Effect.void
          writeProblemSaid = true
          return Effect.logWarning(
            `${file} (the systemd units' verdicts) could not be written (${writeProblem}); they are kept in this process only until it can`
          )
        })
      )
  }
}

const memories = new Map<string, UnitVerdicts>()

/** The memory kept in `file` (none: in this process only); one per file for the process's life. */
export const unitVerdicts = (file: string | undefined): UnitVerdicts => {
  const key = file ?? ""
  let memory = memories.get(key)
  if (memory === undefined) {
    memory = make(file)
    memories.set(key, memory)
  }
  return memory
}

/** The verdict file of node `node`'s watchdog in the runtime directory `runtimeDir`. */
export const verdictFileIn = (runtimeDir: string, node: number): string => `${runtimeDir}/systemd-verdicts-node-${node}.json`
