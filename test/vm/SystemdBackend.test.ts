/**
 * Systemd mode against a fake `systemctl`: a /bin/sh script that records each call's arguments and
 * keeps each unit's state in a file (`active`, `inactive`, `failed`), as microvm.nix tests its
 * command against injected fakes.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Option, Schema, Stream } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { make, runningUnits, type SystemdSettings } from "../../src/vm/SystemdBackend.js"
import { fakeSystemctl, makeRunner, scopedTempDir, sleeper, stalledFile, vmName } from "./fixtures.js"

const node = Schema.decodeSync(NodeId)(2)

const setup = Effect.gen(function* () {
  const root = yield* scopedTempDir("vm-systemd")
  const systemctl = fakeSystemctl(root)
  const settings: SystemdSettings = {
    stateDir: path.join(root, "microvms"),
    node,
    // The runner fixtures live in `root`, not in the Nix store.
    allowedRunnerPrefixes: [root],
    systemctl: systemctl.file,
    pollInterval: Duration.millis(50)
  }
  return { root, systemctl, settings }
})

const backend = (settings: SystemdSettings) => make(settings).pipe(Effect.provide(NodeContext.layer))

const prepare = (root: string, settings: SystemdSettings, name: string) =>
  Effect.gen(function* () {
    const vms = yield* backend(settings)
    const runner = makeRunner(root, name, { run: sleeper })
    yield* vms.prepare(VmSpec.make({ name: vmName(name), source: RunnerConfig.make({ path: runner.dir }) }))
    return { vms, runner }
  })

describe("VmBackend, microvm.nix systemd mode (fake systemctl)", () => {
  it.scopedLive("start, is-active and stop drive microvm@NAME; prepare makes the same state layout", () =>
    Effect.gen(function* () {
      const { root, systemctl, settings } = yield* setup
      const { vms, runner } = yield* prepare(root, settings, "web")
      expect(fs.readlinkSync(path.join(settings.stateDir, "web", "current"))).toBe(runner.dir)

      expect(yield* vms.start(vmName("web"))).toBe(4242)
      expect(systemctl.calls()).toContain("start microvm@web")
      expect(systemctl.calls()).toContain("show --property=MainPID --value microvm@web")
      expect(yield* vms.status(vmName("web"))).toMatchObject({ _tag: "Running", pid: 4242 })
      expect(systemctl.calls()).toContain("is-active microvm@web")
      expect((yield* vms.list).map((o) => [o.name, o.state._tag])).toEqual([["web", "Running"]])

      yield* vms.stop(vmName("web"), "5 seconds")
      expect(systemctl.calls()).toContain("stop microvm@web")
      expect(yield* vms.status(vmName("web"))).toMatchObject({ _tag: "Absent" })
      // Nothing was ever passed through a shell: every call is exactly the expected argv.
      for (const call of systemctl.calls()) expect(call).toMatch(/^(start|stop|is-active|show --property=\w+ --value) microvm@web$/)
    }))

  it.scopedLive("a unit that fails is reported as an exit event with its exit status", () =>
    Effect.gen(function* () {
      const { root, systemctl, settings } = yield* setup
      const { vms } = yield* prepare(root, settings, "web")
      const events = yield* vms.subscribe
      yield* vms.start(vmName("web"))
      systemctl.setState("microvm@web", "failed", 3)
      const exit = yield* Stream.runHead(events).pipe(Effect.timeout("20 seconds"))
      expect(Option.getOrThrow(exit)).toMatchObject({ name: "web", process: "vm", exitCode: 3 })
      expect(yield* vms.status(vmName("web"))).toMatchObject({ _tag: "Exited", exitCode: 3 })
    }))

  it.scopedLive("a failing systemctl start is a BackendFailed with its output and where to look", () =>
    Effect.gen(function* () {
      const { root, systemctl, settings } = yield* setup
      const { vms } = yield* prepare(root, settings, "bad")
      const error = yield* Effect.flip(vms.start(vmName("bad")))
      expect(error).toMatchObject({ _tag: "BackendFailed", subject: "bad", node })
      expect(error.message).toContain("systemctl start microvm@bad failed on node 2 (exit code 1)")
      expect(error.message).toContain("the control process exited with error code")
      expect(error.message).toContain("journalctl -u microvm@bad")

      const unprepared = yield* Effect.flip(vms.start(vmName("ghost")))
      expect(unprepared.message).toContain('VM "ghost" is not prepared on node 2')
      expect(systemctl.calls().some((c) => c.includes("ghost"))).toBe(false)
    }))

  it.scopedLive("a stop that outlasts the timeout is followed by systemctl kill --signal=SIGKILL", () =>
    Effect.gen(function* () {
      const { root, systemctl, settings } = yield* setup
      const { vms } = yield* prepare(root, settings, "slow")
      yield* vms.start(vmName("slow"))
      yield* vms.stop(vmName("slow"), "300 millis")
      expect(systemctl.calls()).toContain("kill --signal=SIGKILL microvm@slow")
      expect(yield* vms.status(vmName("slow"))).toMatchObject({ _tag: "Absent" })
    }))

  it.scopedLive("remove stops the unit and deletes the state directory", () =>
    Effect.gen(function* () {
      const { root, systemctl, settings } = yield* setup
      const { vms } = yield* prepare(root, settings, "web")
      yield* vms.start(vmName("web"))
      yield* vms.remove(vmName("web"))
      expect(systemctl.calls()).toContain("stop microvm@web")
      expect(fs.existsSync(path.join(settings.stateDir, "web"))).toBe(false)
      expect(yield* vms.list).toEqual([])
    }))
})

describe("VmBackend, systemd mode on a stalled state directory (the fencing watchdog's, with readWait)", () => {
  it("systemctl list-units' running microvm@ units are the VMs listed", () => {
    const lines = [
      "microvm@web.service loaded active running MicroVM 'web'",
      "microvm@db.service loaded deactivating stop-sigterm MicroVM 'db'",
      "microvm@old.service loaded failed failed MicroVM 'old'",
      "microvm@Bad_Name.service loaded active running MicroVM",
      "microvm-virtiofsd@web.service loaded active running virtiofsd"
    ]
    expect(runningUnits(lines)).toEqual(["web", "db"])
  })

  it.scopedLive("markers that never answer hold up neither the listing nor the stops; a declared VM's unit (Restart=always) is left alone", () =>
    Effect.gen(function* () {
      const { root, systemctl, settings } = yield* setup
      const { vms } = yield* prepare(root, settings, "web")
      yield* vms.prepare(VmSpec.make({ name: vmName("db"), source: RunnerConfig.make({ path: makeRunner(root, "db", { run: sleeper }).dir }) }))
      yield* vms.start(vmName("web"))
      yield* vms.start(vmName("db"))
      // The host's declarative VM: systemd runs it with microvm.nix's Restart=always.
      systemctl.setState("microvm@host", "active")
      systemctl.setRestart("microvm@host", "always")
      yield* stalledFile(path.join(settings.stateDir, "web", "blixard.json"))
      yield* stalledFile(path.join(settings.stateDir, "host", "blixard.json"))

      const watchdogs = yield* backend({ ...settings, readWait: Duration.millis(100), commandTimeout: Duration.seconds(5) })
      const listed = yield* watchdogs.list.pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => "the listing hung" }))
      expect(listed.map((o) => [o.name, o.state._tag])).toEqual([
        ["db", "Running"],
        ["web", "Running"]
      ])
      expect(systemctl.calls()).toContain("list-units --plain --no-legend --full microvm@*")
      for (const name of ["web", "db"]) {
        yield* watchdogs.stop(vmName(name), "5 seconds").pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => `stopping ${name} hung` }))
        expect(systemctl.calls()).toContain(`stop microvm@${name}`)
      }
      const refused = yield* Effect.flip(watchdogs.stop(vmName("host"), "5 seconds"))
      expect(refused).toMatchObject({ _tag: "VmDirForeign" })
      expect(refused.message).toContain("Restart=always")
      expect(systemctl.calls()).not.toContain("stop microvm@host")
      expect(yield* watchdogs.list).toEqual([])
    }))

  it.scopedLive("a unit whose marker stops answering is judged as last read under its current invocation: a VM made by hand (Restart=no) is left alone until it is restarted", () =>
    Effect.gen(function* () {
      const { root, systemctl, settings } = yield* setup
      const { vms } = yield* prepare(root, settings, "web")
      yield* vms.start(vmName("web"))
      // A VM made by hand (`microvm -c`): its directory has no Blixard marker, its unit Restart=no as Blixard's.
      fs.mkdirSync(path.join(settings.stateDir, "hand"), { recursive: true })
      systemctl.setState("microvm@hand", "active")
      // A wait far above a healthy read's, even on a loaded machine: the stalled reads below never answer anyway.
      const watchdogSettings = { ...settings, readWait: Duration.seconds(1), commandTimeout: Duration.seconds(5) }
      const names = (listed: ReadonlyArray<{ readonly name: string }>) => listed.map((o) => o.name)
      // The watchdog's survey, while the disk answers: each running unit's verdict read for its invocation.
      expect(names(yield* (yield* backend(watchdogSettings)).list)).toEqual(["web"])
      expect(systemctl.calls()).toContain("show --property=InvocationID --value microvm@hand")

      // The disk stalls: neither directory's marker answers a read any more.
      yield* stalledFile(path.join(settings.stateDir, "web", "blixard.json"))
      yield* stalledFile(path.join(settings.stateDir, "hand", "blixard.json"))
      const round = yield* backend(watchdogSettings)
      const inTime = { duration: "10 seconds", onTimeout: () => "it hung" } as const
      expect(names(yield* round.list.pipe(Effect.timeoutFail(inTime)))).toEqual(["web"])
      const refused = yield* Effect.flip(round.stop(vmName("hand"), "5 seconds").pipe(Effect.timeoutFail(inTime)))
      expect(refused).toMatchObject({ _tag: "VmDirForeign" })
      expect(String((refused as { readonly message?: unknown }).message)).toContain("no Blixard marker")
      yield* round.stop(vmName("web"), "5 seconds").pipe(Effect.timeoutFail(inTime))
      expect(systemctl.calls()).toContain("stop microvm@web")
      expect(systemctl.calls()).not.toContain("stop microvm@hand")

      // Restarted by hand: a new invocation whose marker was never read, judged by its Restart=no (the window left).
      systemctl.setState("microvm@hand", "active")
      expect(names(yield* round.list.pipe(Effect.timeoutFail(inTime)))).toEqual(["hand"])
    }))
})

/**
 * microvm.nix's `microvm@NAME` runs as `User=microvm Group=kvm` with `WorkingDirectory` the VM's
 * directory, its `microvm-set-booted@NAME` replaces `booted` there as that user, and the hypervisor
 * creates its sockets there. The fake systemctl does exactly that as the unit's user (an unused
 * uid and gid, through util-linux's `setpriv`), under the daemon's `UMask=0077`.
 */
const unitUser = { uid: 64_123, gid: 64_124 }
const canSwitchUser = process.getuid?.() === 0 && spawnSync("setpriv", ["--version"]).status === 0
/** Whether any user may run `file`: every directory above it may be passed through, and it run. */
const everyoneMayRun = (file: string): boolean => {
  const real = fs.realpathSync(file)
  for (let dir = path.dirname(real); ; dir = path.dirname(dir)) {
    if ((fs.statSync(dir).mode & 0o001) === 0) return false
    if (dir === path.dirname(dir)) break
  }
  return (fs.statSync(real).mode & 0o001) !== 0
}
// The check creates its socket with this Node.js, so the unit's user must be able to run it (not so
// for one kept under a directory only root may enter, such as root's home).
const canRunNode = canSwitchUser && everyoneMayRun(process.execPath)
if (!canSwitchUser) {
  console.log("SystemdBackend.test.ts: skipping the unit-user check: it needs root and util-linux's setpriv to run a command as another user")
} else if (!canRunNode) {
  console.log(`SystemdBackend.test.ts: skipping the unit-user check: uid ${unitUser.uid} cannot run ${process.execPath} (put Node.js where every user may run it)`)
}

describe("VmBackend, systemd mode: the unit's user can use the VM directory", () => {
  it.scopedLive.skipIf(!canRunNode)("chdir, replace booted and create a socket, as microvm@NAME's user", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("vm-systemd-user")
      fs.chmodSync(root, 0o755) // as /var/lib is: the unit's user may pass through
      const check = path.join(root, "unit-check.sh")
      fs.writeFileSync(
        check,
        `set -e\ncd "$1"\nrm -f booted\nln -s "$(readlink current)" booted\n` +
          `exec ${JSON.stringify(process.execPath)} -e 'require("net").createServer().listen("control.sock", () => process.exit(0))'\n`
      )
      fs.chmodSync(check, 0o755)
      const stateDir = path.join(root, "microvms")
      const systemctl = fakeSystemctl(root, {
        onStart: `setpriv --reuid=${unitUser.uid} --regid=${unitUser.gid} --clear-groups -- /bin/sh ${check} ${stateDir}/"$VM"`
      })
      const previousUmask = process.umask(0o077) // the daemon's unit's
      yield* Effect.addFinalizer(() => Effect.sync(() => process.umask(previousUmask)))
      const runner = makeRunner(root, "web", { run: sleeper })
      const source = RunnerConfig.make({ path: runner.dir })

      // Without the owner (what the daemon passed before): the unit cannot use the directory.
      const bare = yield* backend({ stateDir, node, systemctl: systemctl.file, allowedRunnerPrefixes: [root] })
      yield* bare.prepare(VmSpec.make({ name: vmName("plain"), source }))
      const refused = yield* Effect.flip(bare.start(vmName("plain")))
      expect(refused.message).toContain(`can't cd to ${stateDir}/plain`)

      const vms = yield* backend({ stateDir, node, systemctl: systemctl.file, owner: unitUser, allowedRunnerPrefixes: [root] })
      yield* vms.prepare(VmSpec.make({ name: vmName("web"), source }))
      const dir = path.join(stateDir, "web")
      expect(fs.statSync(dir)).toMatchObject({ uid: unitUser.uid, gid: unitUser.gid })
      expect(fs.statSync(dir).mode & 0o777).toBe(0o755)
      expect(fs.lstatSync(path.join(dir, "current"))).toMatchObject({ uid: unitUser.uid, gid: unitUser.gid })
      expect(yield* vms.start(vmName("web"))).toBe(4242)
      expect(fs.lstatSync(path.join(dir, "booted")).uid).toBe(unitUser.uid)
      expect(fs.readlinkSync(path.join(dir, "booted"))).toBe(runner.dir)
      expect(fs.lstatSync(path.join(dir, "control.sock")).isSocket()).toBe(true)
      // Blixard's own files stay the daemon's.
      expect(fs.lstatSync(path.join(dir, "blixard.json")).uid).toBe(0)
    }))
})
