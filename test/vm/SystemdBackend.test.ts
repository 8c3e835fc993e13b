/**
 * Systemd mode against a fake `systemctl`: a /bin/sh script that records each call's arguments and
 * keeps each unit's state in a file (`active`, `inactive`, `failed`), as microvm.nix tests its
 * command against injected fakes.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Option, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { make, type SystemdSettings } from "../../src/vm/SystemdBackend.js"
import { makeRunner, scopedTempDir, sleeper, vmName } from "./fixtures.js"

const node = Schema.decodeSync(NodeId)(2)

const fakeSystemctl = (root: string) => {
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
    echo active > "$UNITS/$2"; exit 0 ;;
  stop)
    if [ "$2" = "microvm@slow" ]; then sleep 1000; fi
    echo inactive > "$UNITS/$2"; exit 0 ;;
  kill) echo inactive > "$UNITS/$3"; exit 0 ;;
  is-active)
    s=$(state "$2"); echo "$s"; [ "$s" = active ] && exit 0; exit 3 ;;
  show)
    unit="$4"
    case "$2" in
      --property=MainPID) if [ "$(state "$unit")" = active ]; then echo 4242; else echo 0; fi ;;
      --property=ExecMainStatus) cat "$UNITS/$unit.status" 2>/dev/null || echo 0 ;;
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
      if (exitStatus !== undefined) fs.writeFileSync(path.join(units, `${unit}.status`), `${exitStatus}\n`)
    }
  }
}

const setup = Effect.gen(function* () {
  const root = yield* scopedTempDir("vm-systemd")
  const systemctl = fakeSystemctl(root)
  const settings: SystemdSettings = {
    stateDir: path.join(root, "microvms"),
    node,
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
