/**
 * The JavaScript thread goes on while the state directory's disk is held (real processes, the
 * built code): a Node.js process runs one of the daemon's disk paths with the LD_PRELOAD disk-fault
 * library (`staller.ts`) holding that directory, and prints a tick every 20 ms from a timer. A
 * synchronous call held there stops the ticks (the thread waits in the kernel, as it would with its
 * fencing); an asynchronous one holds one of libuv's threads and the ticks go on. Then the disk is
 * released and the path must finish as it would have.
 *
 * Run `npm run build` first: the probe imports `dist/`.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { root, waitFor } from "./harness.js"
import { buildStaller, hasCompiler } from "./staller.js"
import { tempDir } from "../support/TempDir.js"

/** How many ticks (20 ms apart) must come while the disk is held: 40, some 0.8 s of a thread not waiting. */
const TicksWhileHeld = 40

const probes: Array<ChildProcess> = []
afterEach(() => {
  for (const probe of probes.splice(0)) probe.kill("SIGKILL")
})

interface Probe {
  /** Every line printed so far. */
  readonly lines: () => ReadonlyArray<string>
  /** Sends one line to the probe's stdin. */
  readonly send: (line: string) => void
  /** Waits for `line`, then for `TicksWhileHeld` ticks after it; fails if `notBefore` is printed meanwhile. */
  readonly ticksAfter: (line: string, notBefore: string) => Promise<void>
  /** Waits for `TicksWhileHeld` ticks from now; fails if `notBefore` is printed meanwhile. */
  readonly ticksFromNow: (notBefore: string) => Promise<void>
  readonly waitLine: (line: string) => Promise<void>
}

/**
 * Starts `node` on `body` (an ES module evaluated in the repository, so `./dist/…` and packages
 * resolve), with `ARGS` its JSON argument and `next()` the next line of stdin, under the fault library.
 */
const probe = (body: string, args: unknown, env: Record<string, string>): Probe => {
  const script = `
import * as readline from "node:readline"
const ARGS = JSON.parse(process.env.PROBE_ARGS)
const input = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const next = async () => (await input.next()).value
let ticks = 0
setInterval(() => process.stdout.write("tick " + ++ticks + "\\n"), 20)
try {
${body}
} catch (e) {
  process.stdout.write("failed: " + String(e?.message ?? e).replaceAll("\\n", " ") + "\\n")
}
`
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    cwd: root,
    env: { ...process.env, ...env, PROBE_ARGS: JSON.stringify(args), UV_USE_IO_URING: "0" },
    stdio: ["pipe", "pipe", "pipe"]
  })
  probes.push(child)
  const lines: Array<string> = []
  let partial = ""
  let stderr = ""
  child.stdout!.on("data", (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split("\n")
    partial = parts.pop()!
    lines.push(...parts)
  })
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const failedLine = () => lines.find((l) => l.startsWith("failed: ")) ?? (child.exitCode !== null ? `exited ${child.exitCode}: ${stderr}` : undefined)
  const waitLine = (line: string) =>
    waitFor(`the probe to print ${JSON.stringify(line)}`, async () => {
      const failure = failedLine()
      if (failure !== undefined) throw new Error(`the probe ${failure}`)
      return lines.includes(line) ? true : undefined
    }, 20_000).then(() => undefined)
  const ticksFrom = async (at: number, what: string, notBefore: string) => {
    await waitFor(`${TicksWhileHeld} ticks after ${what} (the JavaScript thread is not held)`, async () => {
      if (lines.includes(notBefore)) throw new Error(`${JSON.stringify(notBefore)} came while the disk was held: the fault did not hold it`)
      return lines.slice(at).filter((l) => l.startsWith("tick ")).length >= TicksWhileHeld ? true : undefined
    }, 10_000)
    expect(lines).not.toContain(notBefore)
  }
  return {
    lines: () => lines,
    send: (line) => void child.stdin!.write(`${line}\n`),
    waitLine,
    ticksAfter: async (line, notBefore) => {
      await waitLine(line)
      await ticksFrom(lines.indexOf(line), JSON.stringify(line), notBefore)
    },
    ticksFromNow: (notBefore) => ticksFrom(lines.length, "the disk was held", notBefore)
  }
}

/** A stalled state directory: the fault library, its switches (off), and the environment that points it there. */
const stalledDisk = (dir: string, held: string) => {
  const staller = buildStaller(dir)
  if (staller.library === undefined) throw new Error(staller.why)
  const trigger = (what: "writes" | "reads" | "execs") => path.join(dir, `stall-${what}`)
  return {
    env: {
      LD_PRELOAD: staller.library,
      STALL_FSYNC_DIR: held,
      STALL_WRITE_TRIGGER: trigger("writes"),
      STALL_READ_TRIGGER: trigger("reads"),
      STALL_EXEC_TRIGGER: trigger("execs")
    },
    hold: (what: "writes" | "reads" | "execs") => fs.writeFileSync(trigger(what), ""),
    release: (what: "writes" | "reads" | "execs") => fs.rmSync(trigger(what), { force: true })
  }
}

/** A runner directory `runner-LABEL` with `microvm-run` (runs until killed) and the further `bin/` scripts given. */
const runnerIn = (dir: string, label = "web", scripts: Readonly<Record<string, string>> = {}): string => {
  const runner = path.join(dir, `runner-${label}`)
  fs.mkdirSync(path.join(runner, "bin"), { recursive: true })
  for (const [name, body] of Object.entries({ "microvm-run": "exec sleep 1000", ...scripts })) {
    fs.writeFileSync(path.join(runner, "bin", name), `#!/bin/sh\n${body}\n`, { mode: 0o755 })
  }
  return runner
}

const alive = (pid: number): boolean => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return !/^\d+ \(.*\) [ZX]/s.test(stat)
  } catch {
    return false
  }
}

/** A probe preparing the VM "web" from the runner `runner` into `stateDir` once for each line sent. */
const prepareProbe = (stateDir: string, runner: string, env: Record<string, string>) =>
  probe(
    `
const { Effect } = await import("effect")
const { NodeContext } = await import("@effect/platform-node")
const { prepareRunner } = await import("./dist/src/vm/RunnerBuild.js")
const { VmSpec, RunnerConfig } = await import("./dist/src/domain/VmSpec.js")
const settings = { stateDir: ARGS.stateDir, node: 1, allowedRunnerPrefixes: [ARGS.runnerRoot] }
const spec = VmSpec.make({ name: "web", source: RunnerConfig.make({ path: ARGS.runner }) })
for (let round = 1; ; round++) {
  await next()
  process.stdout.write("preparing " + round + "\\n")
  await Effect.runPromise(prepareRunner(settings, spec).pipe(Effect.provide(NodeContext.layer)))
  process.stdout.write("prepared " + round + "\\n")
}
`,
    { stateDir, runner, runnerRoot: path.dirname(runner) },
    env
  )

describe.skipIf(!hasCompiler)("the JavaScript thread is never held by the state directory's disk (real processes)", () => {
  it("prepare: creating the VM's directory and its marker, then relinking current, wait for the held disk off the thread", async () => {
    const dir = tempDir("threadstall")
    const stateDir = path.join(dir, "microvms")
    const runner = runnerIn(dir)
    const disk = stalledDisk(dir, stateDir)
    const p = prepareProbe(stateDir, runner, disk.env)
    // The first prepare: making the directory (mkdir) is held.
    disk.hold("writes")
    p.send("go")
    await p.ticksAfter("preparing 1", "prepared 1")
    disk.release("writes")
    await p.waitLine("prepared 1")
    const vmDir = path.join(stateDir, "web")
    expect(JSON.parse(fs.readFileSync(path.join(vmDir, "blixard.json"), "utf8"))).toMatchObject({ vm: "web", node: 1 })
    expect(fs.readlinkSync(path.join(vmDir, "current"))).toBe(fs.realpathSync(runner))
    // The second: the directory is Blixard's, `current` is made again (its rename is held).
    disk.hold("writes")
    p.send("go")
    await p.ticksAfter("preparing 2", "prepared 2")
    disk.release("writes")
    await p.waitLine("prepared 2")
    expect(fs.readlinkSync(path.join(vmDir, "current"))).toBe(fs.realpathSync(runner))
  }, 60_000)

  it("prepare: resolving and checking a runner on a disk that answers nothing (the Nix store's) waits off the thread", async () => {
    const dir = tempDir("threadstall")
    const stateDir = path.join(dir, "microvms")
    const runner = runnerIn(dir)
    const disk = stalledDisk(dir, runner)
    const p = prepareProbe(stateDir, runner, disk.env)
    disk.hold("reads")
    p.send("go")
    await p.ticksAfter("preparing 1", "prepared 1")
    disk.release("reads")
    await p.waitLine("prepared 1")
    expect(fs.readlinkSync(path.join(stateDir, "web", "current"))).toBe(fs.realpathSync(runner))
  }, 60_000)

  it("vm logs: the log's backlog and its followed growth are read off the thread while the log's disk answers nothing", async () => {
    const dir = tempDir("threadstall")
    const stateDir = path.join(dir, "microvms")
    const vmDir = path.join(stateDir, "web")
    fs.mkdirSync(vmDir, { recursive: true })
    fs.writeFileSync(path.join(vmDir, "blixard.json"), JSON.stringify({ vm: "web", node: 1, createdAt: 1 }))
    const log = path.join(vmDir, "blixard.log")
    fs.writeFileSync(log, "line 1\n")
    // Only the log is held: the marker answers, so the reads held are the log's own.
    const disk = stalledDisk(dir, log)
    const p = probe(
      `
const { Effect, Stream } = await import("effect")
const { stream } = await import("./dist/src/vm/VmLogs.js")
await next()
process.stdout.write("reading\\n")
await Effect.runPromise(
  Stream.runForEach(stream({ stateDir: ARGS.stateDir, node: 1, backend: "process", pollMs: 20 }, { name: "web", follow: true }), (chunk) =>
    Effect.sync(() => process.stdout.write("chunk " + JSON.stringify(chunk) + "\\n"))
  )
)
`,
      { stateDir },
      disk.env
    )
    // The backlog: its stat and read are held.
    disk.hold("reads")
    p.send("go")
    await p.ticksAfter("reading", 'chunk "line 1\\n"')
    disk.release("reads")
    await p.waitLine('chunk "line 1\\n"')
    // Following: the polls' stat and read are held while the log grows.
    disk.hold("reads")
    fs.appendFileSync(log, "line 2\n")
    await p.ticksFromNow('chunk "line 2\\n"')
    disk.release("reads")
    await p.waitLine('chunk "line 2\\n"')
  }, 60_000)

  it("process mode: a runner script whose exec hangs after its check answered (the Nix store stalls between) holds the child, never the thread", async () => {
    const dir = tempDir("threadstall")
    const stateDir = path.join(dir, "microvms")
    const ran = (what: string) => path.join(dir, `ran-${what}`)
    const runners = path.join(dir, "runners")
    const web = runnerIn(runners, "web", { "tap-up": `touch ${ran("tap-up")}`, "microvm-shutdown": `touch ${ran("shutdown")}` })
    const db = runnerIn(runners, "db")
    // Only the exec of what lies under the runners is held: their checks (stat, access) answer.
    const disk = stalledDisk(dir, runners)
    const p = probe(
      `
const { Effect, Scope } = await import("effect")
const { NodeContext } = await import("@effect/platform-node")
const { make } = await import("./dist/src/vm/ProcessBackend.js")
const { VmSpec, RunnerConfig } = await import("./dist/src/domain/VmSpec.js")
const scope = await Effect.runPromise(Scope.make())
const backend = await Effect.runPromise(
  make({ stateDir: ARGS.stateDir, node: 1, allowedRunnerPrefixes: [ARGS.runners] }).pipe(Scope.extend(scope), Effect.provide(NodeContext.layer))
)
for (const [name, runner] of [["web", ARGS.web], ["db", ARGS.db]]) {
  await Effect.runPromise(backend.prepare(VmSpec.make({ name, source: RunnerConfig.make({ path: runner }) })))
}
process.stdout.write("prepared\\n")
for (const name of ["web", "db"]) {
  await next()
  process.stdout.write("starting " + name + "\\n")
  const pid = await Effect.runPromise(backend.start(name))
  process.stdout.write("started " + name + "\\n")
  process.stdout.write("pid " + name + " " + pid + "\\n")
}
await next()
process.stdout.write("stopping web\\n")
await Effect.runPromise(backend.stop("web", "500 millis"))
process.stdout.write("stopped web\\n")
`,
      { stateDir, runners, web, db },
      disk.env
    )
    await p.waitLine("prepared")
    // tap-up (a short script, with the daemon's environment: the library holds its exec in the child).
    disk.hold("execs")
    p.send("go")
    await p.ticksAfter("starting web", "started web")
    expect(fs.existsSync(ran("tap-up"))).toBe(false)
    disk.release("execs")
    await p.waitLine("started web")
    expect(fs.existsSync(ran("tap-up"))).toBe(true)
    const pidOf = (name: string) => Number(p.lines().find((l) => l.startsWith(`pid ${name} `))!.split(" ")[2])
    // microvm-run, spawned detached with the runner's own environment: the child's shell execs it at
    // once, so the start ends while the disk is still held (without the trampoline it waits in the spawn).
    disk.hold("execs")
    p.send("go")
    await p.waitLine("started db")
    expect(alive(pidOf("db"))).toBe(true)
    // The stop: microvm-shutdown's exec is held in the child; the timeout runs, SIGKILL, done, all
    // while the disk is held.
    p.send("go")
    await p.waitLine("stopped web")
    expect(alive(pidOf("web"))).toBe(false)
    expect(fs.existsSync(ran("shutdown"))).toBe(false)
    disk.release("execs")
    process.kill(-pidOf("db"), "SIGKILL")
  }, 60_000)
})
