/**
 * Runner fixtures honouring microvm.nix's runner contract (a directory with `bin/microvm-run` run in
 * the foreground from the VM's state directory, optional `bin/microvm-shutdown`, `bin/tap-up`,
 * `bin/tap-down`, `bin/virtiofsd-run`), generated into temporary directories, polling helpers, and
 * a fake `systemctl`.
 */
import { Duration, Effect, Schema } from "effect"
import { spawnSync } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { VmName } from "../../src/domain/VmName.js"
import { readStat } from "../../src/vm/internal/procfs.js"
import { removeDir } from "../support/TempDir.js"

export const vmName = Schema.decodeSync(VmName)

export const tempDir = (prefix: string): string => fs.mkdtempSync(path.join(os.tmpdir(), `blixard-${prefix}-`))

export { removeDir }

/** A temporary directory deleted when the test's scope closes. */
export const scopedTempDir = (prefix: string) =>
  Effect.acquireRelease(Effect.sync(() => tempDir(prefix)), (dir) => Effect.sync(() => removeDir(dir)))

const script = (file: string, body: string) => {
  fs.writeFileSync(file, `#!/bin/sh\n${body}\n`)
  fs.chmodSync(file, 0o755)
}

export interface RunnerScripts {
  /** The body of `bin/microvm-run` after the common prologue. */
  readonly run: string
  readonly shutdown?: string
  readonly tapUp?: string
  readonly tapDown?: string
  readonly virtiofsd?: string
  /** Further `bin/` scripts by name (e.g. `macvtap-up`). */
  readonly more?: Readonly<Record<string, string>>
}

export interface Runner {
  readonly dir: string
  /** Where the scripts record what happened (pid, cwd, calls). */
  readonly marks: string
  readonly mark: (file: string) => string
}

/**
 * A runner directory. `microvm-run` first appends its pid to `marks/starts`, writes its working
 * directory to `marks/cwd` and says hello on stdout, then runs `scripts.run`.
 */
export const makeRunner = (root: string, label: string, scripts: RunnerScripts): Runner => {
  const dir = path.join(root, `runner-${label}`)
  const marks = path.join(root, `marks-${label}`)
  fs.mkdirSync(path.join(dir, "bin"), { recursive: true })
  fs.mkdirSync(marks, { recursive: true })
  const m = (file: string) => JSON.stringify(path.join(marks, file))
  script(
    path.join(dir, "bin", "microvm-run"),
    `echo $$ >> ${m("starts")}\npwd > ${m("cwd")}\necho "hello from runner ${label}"\n${scripts.run}`
  )
  if (scripts.shutdown !== undefined) script(path.join(dir, "bin", "microvm-shutdown"), scripts.shutdown)
  if (scripts.tapUp !== undefined) script(path.join(dir, "bin", "tap-up"), scripts.tapUp)
  if (scripts.tapDown !== undefined) script(path.join(dir, "bin", "tap-down"), scripts.tapDown)
  if (scripts.virtiofsd !== undefined) script(path.join(dir, "bin", "virtiofsd-run"), scripts.virtiofsd)
  for (const [name, body] of Object.entries(scripts.more ?? {})) script(path.join(dir, "bin", name), body)
  return { dir, marks, mark: (file) => path.join(marks, file) }
}

/** Runs until killed. */
export const sleeper = "exec sleep 1000"
/** Prints `tick 1` … `tick COUNT` to stdout, one every `everyMs`, then runs until killed. */
export const ticker = (count: number, everyMs = 200) =>
  `i=0\nwhile [ $i -lt ${count} ]; do i=$((i+1)); echo "tick $i"; sleep ${everyMs / 1000}; done\nexec sleep 1000`
/** Exits with code 3 after a moment. */
export const crasher = `echo "about to crash" >&2\nsleep 0.3\nexit 3`
/** Ignores SIGTERM (so do its children), so only SIGKILL stops it; says "ready" once the trap is set. */
export const termIgnorer = (readyFile: string) =>
  `trap '' TERM\necho ready > ${JSON.stringify(readyFile)}\nwhile :; do sleep 1; done`
/**
 * Stops cleanly once `microvm-shutdown` (run from the state directory) creates `shutdown-requested`
 * there; ignores SIGTERM, so a stop that did not go through microvm-shutdown would need SIGKILL.
 * The request is removed once seen (not at the start: a stop right after the start, on a busy
 * machine, could create it before the runner got there, and the removal would lose it).
 */
export const shutdownAware = `trap '' TERM\nwhile [ ! -e shutdown-requested ]; do sleep 0.05; done\nrm -f shutdown-requested\necho "clean shutdown"\nexit 0`

export const readMark = (runner: Runner, file: string): string | undefined => {
  try {
    return fs.readFileSync(runner.mark(file), "utf8")
  } catch {
    return undefined
  }
}

/** Polls `check` every 20 ms until it answers a value (not undefined/false), failing after `deadline`. */
export const waitFor = <A>(
  what: string,
  check: () => A | undefined | false,
  deadline: Duration.DurationInput = Duration.seconds(20)
): Effect.Effect<A> =>
  Effect.gen(function* () {
    const end = Date.now() + Duration.toMillis(deadline)
    for (;;) {
      const value = check()
      if (value !== undefined && value !== false) return value
      if (Date.now() > end) return yield* Effect.die(new Error(`timed out after ${Duration.format(deadline)} waiting for ${what}`))
      yield* Effect.sleep("20 millis")
    }
  })

/** The effectful twin of `waitFor`. */
export const waitForEffect = <A, E, R>(
  what: string,
  check: Effect.Effect<A | undefined | false, E, R>,
  deadline: Duration.DurationInput = Duration.seconds(20)
): Effect.Effect<A, E, R> =>
  Effect.gen(function* () {
    const end = Date.now() + Duration.toMillis(deadline)
    for (;;) {
      const value = yield* check
      if (value !== undefined && value !== false) return value
      if (Date.now() > end) return yield* Effect.die(new Error(`timed out after ${Duration.format(deadline)} waiting for ${what}`))
      yield* Effect.sleep("20 millis")
    }
  })

/** The process exists and is not a zombie. */
export const processAlive = (pid: number): boolean => {
  const stat = readStat(pid)
  return stat !== undefined && stat.state !== "Z" && stat.state !== "X"
}

/** Kills a leftover process group (test clean-up), ignoring errors. */
export const killGroup = (pid: number | undefined): void => {
  if (pid === undefined) return
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, "SIGKILL")
    } catch {
      // gone
    }
  }
}

/**
 * A fake `systemctl` (`ROOT/systemctl`): a /bin/sh script that records each call's arguments and
 * keeps each unit's state in a file (`active`, `inactive`, `failed`), as microvm.nix tests its
 * command against injected fakes. `microvm@bad` fails to start; stopping `microvm@slow` hangs.
 * `list-units` lists the units not `inactive` (as `--plain --no-legend` prints them); a unit's
 * `Restart` is `no` (as the NixOS module sets the template's) unless `setRestart` says otherwise.
 * Each `start` (and `setState(…, "active")`, a start by hand) gives the unit a new `InvocationID`,
 * as systemd does for every activation; it is empty before the first.
 * `onStart`, when given, is shell run for each `start` with the VM's name in `$VM`; the start
 * fails (exit 1, its output on stderr) when it does.
 */
export const fakeSystemctl = (root: string, options: { readonly onStart?: string } = {}) => {
  const units = path.join(root, "units")
  const calls = path.join(root, "calls")
  fs.mkdirSync(units)
  const file = path.join(root, "systemctl")
  fs.writeFileSync(
    file,
    `#!/bin/sh
UNITS=${JSON.stringify(units)}
echo "$*" >> ${JSON.stringify(calls)}
state() { cat "$UNITS/$1" 2>/dev/null || echo inactive; }
case "$1" in
  start)
    if [ "$2" = "microvm@bad" ]; then echo "Job for microvm@bad.service failed because the control process exited with error code." >&2; exit 1; fi
    VM="\${2#microvm@}"
    ${options.onStart === undefined ? ":" : `if ! ( ${options.onStart} ) >&2; then echo "Job for $2 failed." >&2; exit 1; fi`}
    echo active > "$UNITS/$2"; echo "$(date +%s%N)$$" > "$UNITS/$2.invocation"; exit 0 ;;
  stop)
    if [ "$2" = "microvm@slow" ]; then sleep 1000; fi
    echo inactive > "$UNITS/$2"; exit 0 ;;
  kill) echo inactive > "$UNITS/$3"; exit 0 ;;
  is-active)
    s=$(state "$2"); echo "$s"; [ "$s" = active ] && exit 0; exit 3 ;;
  list-units)
    for f in "$UNITS"/microvm@*; do
      case "$f" in *.status|*.restart|*.invocation|"$UNITS/microvm@*") continue ;; esac
      s=$(cat "$f"); [ "$s" = inactive ] && continue
      echo "$(basename "$f").service loaded $s running MicroVM"
    done
    exit 0 ;;
  show)
    unit="$4"
    case "$2" in
      --property=MainPID) if [ "$(state "$unit")" = active ]; then echo 4242; else echo 0; fi ;;
      --property=ExecMainStatus) cat "$UNITS/$unit.status" 2>/dev/null || echo 0 ;;
      --property=Restart) cat "$UNITS/$unit.restart" 2>/dev/null || echo no ;;
      --property=InvocationID) cat "$UNITS/$unit.invocation" 2>/dev/null || echo ;;
      *) echo "fake systemctl: unexpected property $2" >&2; exit 1 ;;
    esac
    exit 0 ;;
  *) echo "fake systemctl: unexpected command $*" >&2; exit 1 ;;
esac
`
  )
  fs.chmodSync(file, 0o755)
  return {
    file,
    calls: () => (fs.existsSync(calls) ? fs.readFileSync(calls, "utf8").trim().split("\n") : []),
    setState: (unit: string, state: string, exitStatus?: number) => {
      fs.writeFileSync(path.join(units, unit), `${state}\n`)
      if (state === "active") fs.writeFileSync(path.join(units, `${unit}.invocation`), `${crypto.randomUUID().replaceAll("-", "")}\n`)
      if (exitStatus !== undefined) fs.writeFileSync(path.join(units, `${unit}.status`), `${exitStatus}\n`)
    },
    setRestart: (unit: string, restart: string) => fs.writeFileSync(path.join(units, `${unit}.restart`), `${restart}\n`)
  }
}

/**
 * A file whose reads never answer: a FIFO with no writer (made in place of `file`, its directory
 * made if needed), whose open(2) holds one of libuv's threads until a writer comes, as a read on a
 * stalled disk does. Released (moved aside and opened for writing, so that the reads end) when the scope closes.
 */
export const stalledFile = (file: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      fs.mkdirSync(path.dirname(file), { recursive: true })
      fs.rmSync(file, { force: true })
      if (spawnSync("mkfifo", [file]).status !== 0) throw new Error(`mkfifo ${file} failed`)
      return file
    }),
    (fifo) =>
      Effect.sync(() => {
        // Moved aside first, so that a read queued meanwhile (a lane's turn) finds no file instead of
        // opening the FIFO after its writer came and went, which would hang it for good.
        const aside = `${fifo}.released`
        try {
          fs.renameSync(fifo, aside)
          fs.closeSync(fs.openSync(aside, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK))
        } catch {
          // No reader left (or the FIFO was replaced).
        }
        fs.rmSync(aside, { force: true })
      })
  )

/**
 * A fake `journalctl` (`ROOT/journalctl`): records its arguments in `ROOT/journalctl-calls`, prints
 * the lines of `ROOT/journal` (the last N with `-n N`), and with `-f` then prints `followed K` every
 * 100 ms until killed, its pid in `ROOT/journalctl.pid`. It does not model the journal's own
 * filtering, cursors, rotation, or the unit's other fields: only `-u`, `-n`, `-f` and `-o cat` text.
 */
export const fakeJournalctl = (root: string, lines: ReadonlyArray<string>) => {
  fs.writeFileSync(path.join(root, "journal"), lines.map((line) => `${line}\n`).join(""))
  const file = path.join(root, "journalctl")
  fs.writeFileSync(
    file,
    `#!/bin/sh
echo "$*" >> ${JSON.stringify(path.join(root, "journalctl-calls"))}
n=""; follow=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n="$2"; shift ;;
    -f) follow=1 ;;
  esac
  shift
done
if [ -n "$n" ]; then tail -n "$n" ${JSON.stringify(path.join(root, "journal"))}; else cat ${JSON.stringify(path.join(root, "journal"))}; fi
if [ -n "$follow" ]; then
  echo $$ > ${JSON.stringify(path.join(root, "journalctl.pid"))}
  k=0; while :; do k=$((k+1)); echo "followed $k"; sleep 0.1; done
fi
`
  )
  fs.chmodSync(file, 0o755)
  return {
    file,
    calls: () => {
      try {
        return fs.readFileSync(path.join(root, "journalctl-calls"), "utf8").trim().split("\n")
      } catch {
        return []
      }
    },
    pid: (): number | undefined => {
      try {
        return Number(fs.readFileSync(path.join(root, "journalctl.pid"), "utf8"))
      } catch {
        return undefined
      }
    }
  }
}

/** Everything observable of a directory tree: each entry's type, mode, owner, link target or content, and the directories' mtimes. */
export const snapshotTree = (dir: string): string => {
  const lines: Array<string> = []
  const walk = (at: string, rel: string) => {
    const stat = fs.lstatSync(at)
    const head = `${rel} mode=${stat.mode.toString(8)} uid=${stat.uid} gid=${stat.gid}`
    if (stat.isSymbolicLink()) lines.push(`${head} -> ${fs.readlinkSync(at)}`)
    else if (stat.isDirectory()) {
      lines.push(`${head} dir mtime=${stat.mtimeMs}`)
      for (const entry of fs.readdirSync(at).sort()) walk(path.join(at, entry), `${rel}/${entry}`)
    } else lines.push(`${head} size=${stat.size} mtime=${stat.mtimeMs} ${fs.readFileSync(at).toString("base64")}`)
  }
  walk(dir, ".")
  return lines.join("\n")
}

/**
 * A VM made by microvm.nix's `microvm -c NAME` (pkgs/microvm-command.nix): `STATE/NAME` with
 * `current` and `booted` links to its runner, a `flake` file, a `var.img` volume, group `kvm`-like
 * permissions, and its GC roots `GCROOTS/NAME` and `GCROOTS/booted-NAME`. Its runner's `tap-down`
 * and `microvm-shutdown` record that they ran (they never should, from Blixard).
 */
export const microvmCreatedVm = (root: string, stateDir: string, gcRootDir: string, name: string) => {
  const marks = path.join(root, `marks-foreign-${name}`)
  const runner = makeRunner(root, `foreign-${name}`, {
    run: sleeper,
    tapDown: `echo tap-down >> ${JSON.stringify(path.join(marks, "teardown"))}`,
    shutdown: `echo shutdown >> ${JSON.stringify(path.join(marks, "teardown"))}`
  })
  const dir = path.join(stateDir, name)
  fs.mkdirSync(dir, { recursive: true })
  fs.symlinkSync(runner.dir, path.join(dir, "current"))
  fs.symlinkSync(runner.dir, path.join(dir, "booted"))
  fs.writeFileSync(path.join(dir, "flake"), "git+file:///etc/nixos")
  fs.writeFileSync(path.join(dir, "var.img"), Buffer.alloc(64 * 1024, 0x5a))
  fs.chmodSync(dir, 0o775)
  fs.mkdirSync(gcRootDir, { recursive: true })
  fs.symlinkSync(path.join(dir, "current"), path.join(gcRootDir, name))
  fs.symlinkSync(path.join(dir, "booted"), path.join(gcRootDir, `booted-${name}`))
  const roots = () => [path.join(gcRootDir, name), path.join(gcRootDir, `booted-${name}`)].map((l) => `${l} -> ${fs.readlinkSync(l)}`)
  const before = { tree: snapshotTree(dir), roots: roots() }
  return {
    dir,
    runner,
    /** What its teardown scripts recorded (nothing, if Blixard left it alone). */
    teardowns: () => readMark(runner, "teardown"),
    /** Fails the test if anything of it changed. */
    unchanged: () => {
      if (snapshotTree(dir) !== before.tree) throw new Error(`the foreign VM ${dir} was changed:\n${snapshotTree(dir)}\nwas:\n${before.tree}`)
      if (JSON.stringify(roots()) !== JSON.stringify(before.roots)) throw new Error(`the GC roots of ${dir} were changed`)
      if (readMark(runner, "teardown") !== undefined) throw new Error(`the foreign VM's teardown ran: ${readMark(runner, "teardown")}`)
      return true
    }
  }
}
