/**
 * The NixOS module (modules/blixard.nix), evaluated on this machine with nixpkgs' `lib` and
 * microvm.nix's real host module: every sample of test/nix/samples.nix through test/nix/eval.nix
 * (stand-ins only for NixOS' option declarations and `pkgs`), every config file it renders read back
 * with the daemon's own schema (`decodeNodeConfig`), the unit's shutdown script run with stand-in
 * commands, and the flake check nix/checks/module-eval.nix run against the same stand-ins. See
 * ./harness.ts for what it needs.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Either, Schema } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { NodeConfig, WatchdogConfig } from "../../src/node/Config.js"
import { watchdogArgs } from "../../src/node/HostFence.js"
import { decode, decodeError, evalJson, nix, reportSkip, root, skipReason, sourceArgs } from "./harness.js"

reportSkip("test/nix/module.test.ts", "the NixOS module tests")

// ---- what test/nix/eval.nix answers ------------------------------------------------------------

interface UnitExpect {
  readonly extraArgs: string
  readonly loadCredential: ReadonlyArray<string>
  readonly stateDirectory: string | null
  readonly firewall: ReadonlyArray<number>
  readonly cliAddr: string
  readonly readWritePaths?: ReadonlyArray<string>
  readonly tmpfiles?: ReadonlyArray<string>
  readonly deviceAllow?: ReadonlyArray<string>
  readonly capabilities?: ReadonlyArray<string>
  /** Exact values of these serviceConfig keys. */
  readonly sandbox?: Record<string, unknown>
}

interface MicrovmExpect {
  readonly restart: Record<string, string | null>
  readonly template?: { readonly User: string; readonly Group: string; readonly WorkingDirectory: string }
}

interface Expect {
  readonly settings?: Record<string, unknown>
  readonly assertions?: ReadonlyArray<string>
  readonly evalError?: string
  readonly schemaAccepts?: boolean
  readonly unit?: UnitExpect
  readonly microvm?: MicrovmExpect
}

interface Result {
  readonly rendered: string
  readonly configFilePath: string
  readonly packagePath: string
  readonly failedAssertions: ReadonlyArray<string>
  readonly serviceConfig: Record<string, unknown>
  readonly environment: Record<string, string>
  readonly wantedBy: ReadonlyArray<string>
  readonly after: ReadonlyArray<string>
  readonly path: ReadonlyArray<string>
  readonly firewall: ReadonlyArray<number>
  readonly tmpfiles: ReadonlyArray<string>
  readonly cliAddr: string | null
  readonly systemPackages: ReadonlyArray<string>
  readonly postStop: string
  readonly microvm: Partial<MicrovmExpect> & { readonly stateDirTmpfiles?: Record<string, unknown> }
}

interface Sample {
  readonly expect: Expect
  readonly refused: boolean
  readonly result?: Result
}

interface Disabled {
  readonly services: ReadonlyArray<string>
  readonly microvmRestart: string | null
  readonly assertions: number
  readonly firewall: ReadonlyArray<number>
  readonly systemPackages: ReadonlyArray<string>
}

interface Evaluation {
  readonly samples: Record<string, Sample>
  readonly disabled: Disabled
  readonly disabledWithMicrovmHost: Disabled
}


/** The sample names, known without nix (the test list must not depend on the skip). */
const sampleNames = (kind: "valid" | "inconsistent" | "refused"): ReadonlyArray<string> => {
  const text = fs.readFileSync(path.join(root, "test", "nix", "samples.nix"), "utf8")
  const names: Array<string> = []
  const blocks = text.split(/\n {2}(?=[a-z][a-z0-9-]* = \{)/)
  for (const block of blocks.slice(1)) {
    const name = /^([a-z][a-z0-9-]*) = \{/.exec(block)?.[1]
    if (name === undefined) continue
    const isRefused = /expect\.evalError =/.test(block)
    const isValid = !isRefused && /\n {6}settings = \{/.test(block)
    const isKind = kind === "refused" ? isRefused : kind === "valid" ? isValid : !isRefused && !isValid
    if (isKind) names.push(name)
  }
  return names
}

const credentialName: Record<string, string> = {
  clusterSecretFile: "cluster-secret",
  joinTokenFile: "join-token",
  apiTokenFile: "api-token",
  tlsCaFile: "tls-ca",
  tlsCertFile: "tls-cert",
  tlsKeyFile: "tls-key"
}

describe.skipIf(skipReason !== undefined)("NixOS module services.blixard, evaluated with nixpkgs' lib", () => {
  let evaluation: Evaluation

  beforeAll(() => {
    evaluation = evalJson<Evaluation>("test/nix/eval.nix")
  })

  const sample = (name: string): Sample => {
    const found = evaluation.samples[name]
    if (found === undefined) throw new Error(`no sample ${name} in test/nix/samples.nix`)
    return found
  }
  const result = (name: string): Result => {
    const found = sample(name).result
    if (found === undefined) throw new Error(`sample ${name} did not evaluate`)
    return found
  }

  it("knows every sample, and each says what it expects", () => {
    const all = [...sampleNames("valid"), ...sampleNames("inconsistent"), ...sampleNames("refused")]
    expect(Object.keys(evaluation.samples).sort()).toEqual([...all].sort())
    expect(sampleNames("valid").length).toBeGreaterThanOrEqual(4)
    expect(sampleNames("inconsistent").length).toBeGreaterThanOrEqual(8)
    expect(sampleNames("refused").length).toBeGreaterThanOrEqual(4)
    for (const name of sampleNames("inconsistent")) expect(sample(name).expect.assertions?.length).toBeGreaterThan(0)
  })

  it("defines nothing when services.blixard is not enabled, and leaves microvm.nix's units alone", () => {
    const nothing = { services: [], assertions: 0, firewall: [], systemPackages: [] }
    expect(evaluation.disabled).toEqual({ ...nothing, microvmRestart: null })
    expect(evaluation.disabledWithMicrovmHost).toEqual({ ...nothing, microvmRestart: "always" })
  })

  describe.each(sampleNames("valid"))("valid sample %s", (name) => {
    it("renders exactly the expected config file, and nothing fails", () => {
      const s = sample(name)
      expect(s.refused).toBe(false)
      expect(result(name).failedAssertions).toEqual([])
      expect(JSON.parse(result(name).rendered)).toEqual(s.expect.settings)
    })

    it("renders a file the daemon's schema accepts and reads back unchanged", () => {
      const rendered: unknown = JSON.parse(result(name).rendered)
      const decoded = decode(rendered)
      if (Either.isLeft(decoded)) throw new Error(`decodeNodeConfig rejected ${name}: ${decoded.left.message}`)
      // Every key is written explicitly, so no schema default fills in anything the module meant otherwise.
      expect(decoded.right).toEqual(rendered)
      expect(sample(name).expect.schemaAccepts).toBe(true)
    })

    it("starts `blixard node --config FILE` with the extra flags, shell-quoted", () => {
      const r = result(name)
      const unit = sample(name).expect.unit!
      expect(r.serviceConfig["ExecStart"]).toBe(
        `${r.packagePath}/bin/blixard node --config ${r.configFilePath}${unit.extraArgs}`
      )
      expect(r.configFilePath).toMatch(/-blixard\.json$/)
      expect(r.wantedBy).toContain("multi-user.target")
      expect(r.serviceConfig["Restart"]).toBe("on-failure")
      // A daemon restart or death must not kill the node's fencing watchdog, nor process-mode
      // runners (the next daemon adopts them).
      expect(r.serviceConfig["KillMode"]).toBe("process")
      expect(r.systemPackages).toContain("blixard-0.1.0")
      expect(r.cliAddr).toBe(unit.cliAddr)
      // `nix` (runner builds), `git` (flake references) and `systemctl` (microvm@ units) are on the unit's PATH.
      expect(r.path).toEqual(expect.arrayContaining(["nix", "git", "systemd"]))
      // No BLIXARD_* variable: it would override the config file.
      expect(Object.keys(r.environment).filter((key) => key.startsWith("BLIXARD_"))).toEqual([])
      expect(r.environment["NIX_REMOTE"]).toBe("daemon")
    })

    it("hands secrets over as systemd credentials; the store holds only their credential paths", () => {
      const r = result(name)
      const unit = sample(name).expect.unit!
      const config = JSON.parse(r.rendered) as Record<string, unknown>
      expect(r.serviceConfig["LoadCredential"]).toEqual(unit.loadCredential)
      const loaded = new Map(
        unit.loadCredential.map((entry) => [entry.slice(0, entry.indexOf(":")), entry.slice(entry.indexOf(":") + 1)])
      )
      for (const [key, credential] of Object.entries(credentialName)) {
        const value = config[key]
        if (value === undefined) {
          expect(loaded.has(credential)).toBe(false)
          continue
        }
        expect(value).toBe(`/run/credentials/blixard.service/${credential}`)
        const source = loaded.get(credential)
        expect(source).toBeDefined()
        // The secret file's own path (and so its content) never enters the rendered file.
        expect(r.rendered).not.toContain(source)
      }
    })

    it("is hardened, loosened only where its VM backend needs it", () => {
      const r = result(name)
      const unit = sample(name).expect.unit!
      const sc = r.serviceConfig
      const config = JSON.parse(r.rendered) as { vmBackend: string; microvmStateDir: string; dataDir: string }
      expect(sc).toMatchObject({
        ProtectSystem: "strict",
        ProtectHome: true,
        PrivateTmp: true,
        NoNewPrivileges: true,
        ProtectKernelLogs: true,
        ProtectControlGroups: true,
        LockPersonality: true,
        RestrictSUIDSGID: true,
        SystemCallArchitectures: "native",
        UMask: "0077"
      })
      expect(sc["StateDirectory"] ?? null).toBe(unit.stateDirectory)
      expect(r.firewall).toEqual(unit.firewall)
      // Writable: the VMs' state directories (and the data directory when it is not a StateDirectory).
      const writable = sc["ReadWritePaths"] as ReadonlyArray<string>
      expect(writable).toContain(config.microvmStateDir)
      if (unit.stateDirectory === null) expect(writable).toContain(config.dataDir)
      if (unit.readWritePaths !== undefined) expect(writable).toEqual(unit.readWritePaths)
      if (unit.tmpfiles !== undefined) expect(r.tmpfiles).toEqual(unit.tmpfiles)
      if (unit.deviceAllow !== undefined) expect(sc["DeviceAllow"]).toEqual(unit.deviceAllow)
      if (unit.capabilities !== undefined) expect(sc["CapabilityBoundingSet"]).toEqual(unit.capabilities)
      for (const [key, value] of Object.entries(unit.sandbox ?? {})) expect(sc[key], key).toEqual(value)

      const families = sc["RestrictAddressFamilies"] as ReadonlyArray<string>
      const capabilities = sc["CapabilityBoundingSet"] as ReadonlyArray<string>
      if (config.vmBackend === "process") {
        // Hypervisors run inside this unit: /dev/kvm, taps (CAP_NET_ADMIN, netlink).
        expect(sc["PrivateDevices"]).toBe(false)
        expect(sc["DevicePolicy"]).toBe("closed")
        expect(sc["DeviceAllow"]).toEqual(expect.arrayContaining(["/dev/kvm rw", "/dev/net/tun rw"]))
        expect(capabilities).toContain("CAP_NET_ADMIN")
        expect(families).toContain("AF_NETLINK")
      } else {
        // VMs run in microvm@NAME units: no devices, no network administration, no helpers here.
        expect(sc).toMatchObject({ ProtectKernelTunables: true, ProtectKernelModules: true, RestrictNamespaces: true })
        expect(sc["PrivateDevices"]).toBe(true)
        expect(sc["DeviceAllow"]).toBeUndefined()
        expect(capabilities).not.toContain("CAP_NET_ADMIN")
        expect(families).not.toContain("AF_NETLINK")
        expect(families).toContain("AF_UNIX")
      }
      // CAP_SYS_ADMIN only for virtiofsd, which also needs namespaces.
      expect(capabilities.includes("CAP_SYS_ADMIN")).toBe(sc["RestrictNamespaces"] !== true)
    })
  })

  describe.each(sampleNames("valid"))("valid sample %s, beside microvm.nix's host module", (name) => {
    it("leaves microvm.nix's units as the sample expects", () => {
      const wanted = sample(name).expect.microvm
      if (wanted === undefined) return
      const got = result(name).microvm
      expect(got.restart).toEqual(wanted.restart)
      if (wanted.template !== undefined) expect(got.template).toEqual(wanted.template)
      // Blixard's state root is the one microvm.nix's units run in, created by microvm.nix for its user.
      const config = JSON.parse(result(name).rendered) as { microvmStateDir: string }
      expect(got.template?.WorkingDirectory).toBe(`${config.microvmStateDir}/%i`)
      expect(got.stateDirTmpfiles?.[config.microvmStateDir]).toEqual({
        d: { user: got.template?.User, group: got.template?.Group, mode: "0775" }
      })
    })
  })

  describe("process backend at host power-off", () => {
    const processSamples = () =>
      sampleNames("valid").filter(
        (name) => (JSON.parse(result(name).rendered) as { vmBackend: string }).vmBackend === "process"
      )

    /** A process in the background, not a child of this one (its exit is reaped at once), whose command line is `args`. */
    const background = (args: ReadonlyArray<string>): number => {
      const quoted = args.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ")
      const run = spawnSync("sh", ["-c", `${quoted} </dev/null >/dev/null 2>&1 & echo $!`], { encoding: "utf8" })
      return Number(run.stdout.trim())
    }
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }

    /**
     * Runs the unit's postStop with a `systemctl` answering `state`, a `blixard` that records its
     * arguments, and the node's data directory in a temporary directory whose watchdog record
     * names `recordPid` (the detached watchdog the daemon left, or not).
     */
    const runPostStop = (name: string, state: string, recordPid: (dataDir: string) => number | undefined) => {
      const r = result(name)
      const config = JSON.parse(r.rendered) as { id: number; dataDir: string }
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-poststop-"))
      try {
        const bin = path.join(dir, "bin")
        const dataDir = path.join(dir, "data")
        fs.mkdirSync(bin)
        fs.mkdirSync(path.join(dataDir, "fencing"), { recursive: true })
        const pid = recordPid(dataDir)
        if (pid !== undefined) {
          const record = { node: config.id, process: { pid, startTime: "1", bootId: "b" }, program: "x", startedAt: 0, phase: "watching", since: 0 }
          fs.writeFileSync(path.join(dataDir, "fencing", "watchdog.json"), JSON.stringify(record))
        }
        fs.writeFileSync(path.join(bin, "systemctl"), `#!/bin/sh\necho ${state}\n[ ${state} = running ]\n`, { mode: 0o755 })
        fs.writeFileSync(path.join(bin, "blixard"), `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > ${dir}/args\n`, {
          mode: 0o755
        })
        // The script runs the package's own bin/blixard on the node's data directory: point them here.
        const script = r.postStop
          .replaceAll(`${r.packagePath}/bin/blixard`, path.join(bin, "blixard"))
          .replaceAll(config.dataDir, dataDir)
        const run = spawnSync("bash", ["-e", "-c", script], { encoding: "utf8", env: { PATH: `${bin}:${process.env["PATH"] ?? ""}` } })
        const args = fs.existsSync(path.join(dir, "args"))
          ? fs.readFileSync(path.join(dir, "args"), "utf8").split("\n").slice(0, -1)
          : undefined
        return { status: run.status, stdout: run.stdout, stderr: run.stderr, args, dataDir }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }

    /** A stand-in for the detached watchdog the daemon started: its command line, a process that only waits. */
    const oldWatchdog = (id: number) => (dataDir: string) =>
      background([process.execPath, "-e", "setInterval(() => {}, 1000)", "node", "watchdog", "--id", String(id), "--data-dir", dataDir, "--vm-backend", "process"])

    it("there are such samples", () => expect(processSamples().length).toBeGreaterThanOrEqual(3))

    it.each(["minimal", "custom-data-dir"])("%s: a restart of the unit leaves the VMs and the watchdog running", (name) => {
      let watchdog = 0
      const run = runPostStop(name, "running", (dataDir) => (watchdog = oldWatchdog(1)(dataDir)))
      try {
        expect(run.status, run.stderr).toBe(0)
        expect(run.args).toBeUndefined()
        expect(run.stdout).toContain("leaving the VMs running")
        expect(alive(watchdog)).toBe(true)
      } finally {
        process.kill(watchdog, "SIGKILL")
      }
    })

    it("a shutdown ends the detached watchdog first, and only a process that is this node's watchdog", () => {
      const id = (JSON.parse(result("minimal").rendered) as { id: number }).id
      let watchdog = 0
      const stopped = runPostStop("minimal", "stopping", (dataDir) => (watchdog = oldWatchdog(id)(dataDir)))
      expect(stopped.status, stopped.stderr).toBe(0)
      expect(alive(watchdog)).toBe(false)
      // A record naming a process that is not the node's watchdog (a reused pid, another node's).
      let other = 0
      let unrelated = 0
      const spared = runPostStop("minimal", "stopping", (dataDir) => {
        unrelated = background(["sleep", "60"])
        other = oldWatchdog(id + 1)(dataDir)
        return unrelated
      })
      try {
        expect(spared.status, spared.stderr).toBe(0)
        expect(alive(unrelated)).toBe(true)
        expect(alive(other)).toBe(true)
      } finally {
        for (const pid of [unrelated, other]) if (alive(pid)) process.kill(pid, "SIGKILL")
      }
    })

    it.each(["minimal", "custom-data-dir"])(
      "%s: a system shutdown stops them as the node's watchdog does, with a guest's grace, in the unit's time",
      (name) => {
        const run = runPostStop(name, "stopping", () => undefined)
        expect(run.status, run.stderr).toBe(0)
        const config = JSON.parse(result(name).rendered) as {
          id: number
          microvmStateDir: string
          timeouts: { fencingMs: number }
        }
        const stopTimeoutMs = 150_000
        // The same command line the daemon starts its watchdog with (src/node/HostFence.ts).
        expect(run.args).toEqual(
          watchdogArgs(
            Schema.decodeUnknownSync(WatchdogConfig)({
              id: config.id,
              dataDir: run.dataDir,
              vmBackend: "process",
              microvmStateDir: config.microvmStateDir,
              fencingMs: config.timeouts.fencingMs,
              stopTimeoutMs
            })
          )
        )
        const sc = result(name).serviceConfig
        // Only the daemon is signalled at stop: the runners outlive a restart …
        expect(sc["KillMode"]).toBe("process")
        // … and the unit waits for the lease to run out and a guest's shutdown.
        expect(sc["TimeoutStopSec"] as number).toBeGreaterThanOrEqual((stopTimeoutMs + config.timeouts.fencingMs) / 1000)
      }
    )

    it("the systemd backend has no such step (microvm.nix's units stop their VMs)", () => {
      for (const name of sampleNames("valid")) {
        if (processSamples().includes(name)) expect(result(name).postStop, name).toContain("node watchdog")
        else expect(result(name).postStop, name).toBe("")
      }
    })
  })

  describe.each(sampleNames("inconsistent"))("inconsistent sample %s", (name) => {
    it("fails the module's assertions with the expected messages", () => {
      const s = sample(name)
      expect(s.refused).toBe(false)
      const failed = result(name).failedAssertions
      const wanted = s.expect.assertions ?? []
      expect(failed).toHaveLength(wanted.length)
      wanted.forEach((text, index) => expect(failed[index]).toContain(text))
      for (const message of failed) expect(message).toMatch(/^services\.blixard\./)
    })

    it("renders a file the daemon's schema judges as the sample says", () => {
      const accepted = Either.isRight(decode(JSON.parse(result(name).rendered)))
      expect(accepted).toBe(sample(name).expect.schemaAccepts)
    })
  })

  it("with Tailscale discovery, starts after tailscaled with its CLI on the unit's PATH (and only then)", () => {
    const tailscaleSamples = sampleNames("valid").filter(
      (name) => (JSON.parse(result(name).rendered) as { discovery?: string }).discovery === "tailscale"
    )
    expect(tailscaleSamples.length).toBeGreaterThanOrEqual(2)
    for (const name of sampleNames("valid")) {
      const r = result(name)
      const tailscale = tailscaleSamples.includes(name)
      expect(r.after.includes("tailscaled.service"), name).toBe(tailscale)
      // The stand-in for NixOS' services.tailscale.package (test/nix/stubs.nix) is named "tailscale".
      expect(r.path.includes("tailscale"), name).toBe(tailscale)
      const config = JSON.parse(r.rendered) as { peers: ReadonlyArray<unknown>; tailscaleBinary?: string }
      if (tailscale) expect(config.peers, name).toEqual([])
      // Found on PATH: the rendered file names no tailscale binary.
      expect(config.tailscaleBinary, name).toBeUndefined()
    }
  })

  it("never lets a configuration through whose file the daemon would reject", () => {
    // For every sample that evaluates: schema rejects the file => the module's assertions fire.
    for (const [name, s] of Object.entries(evaluation.samples)) {
      if (s.result === undefined) continue
      const accepted = Either.isRight(decode(JSON.parse(s.result.rendered)))
      if (!accepted) expect(s.result.failedAssertions, name).not.toEqual([])
    }
  })

  describe.each(sampleNames("refused"))("refused sample %s", (name) => {
    it("stops evaluation with an error naming the option", () => {
      expect(sample(name).refused).toBe(true)
      const run = nix([
        ...["--eval", "--strict", "--json", "test/nix/eval.nix"],
        ...sourceArgs(),
        ...["--argstr", "sample", name]
      ])
      expect(run.status).not.toBe(0)
      expect(run.stderr).toContain(sample(name).expect.evalError)
      expect(run.stderr).toMatch(/is not of type/)
    })
  })

  describe("the daemon's schema rejects what the module must never render", () => {
    const base = () => JSON.parse(result("minimal").rendered) as Record<string, unknown>

    it("an unknown key (a typo is an error, not a silent default)", () => {
      expect(decodeError({ ...base(), listen: "0.0.0.0:7001" })).toContain("listen")
      expect(decodeError({ ...base(), timeouts: { ...(base()["timeouts"] as object), electionMs: 500 } })).toContain(
        "electionMs"
      )
    })

    it.each([
      ["bad-bind", { bind: "localhost" }],
      ["bad-port", { bind: "10.0.0.1:70000" }],
      ["bad-peer-address", { bind: "10.0.0.1:7001", peers: [{ id: 2, address: "10.0.0.2" }] }]
    ])("the address the module refuses in sample %s", (name, patch) => {
      expect(sample(name).refused).toBe(true)
      expect(decodeError({ ...base(), ...patch })).toMatch(/HOST:PORT|port/)
    })

    it("null for an optional key (the module leaves unset keys out)", () => {
      expect(JSON.parse(result("minimal").rendered)).not.toHaveProperty("advertise")
      expect(decodeError({ ...base(), advertise: null })).toContain("advertise")
    })

    it("a nodeDownMs too close to fencingMs (the rule the module's assertion mirrors)", () => {
      const timeouts = { tickMs: 50, fencingMs: 5000, nodeDownMs: 5500, requestMs: 5000 }
      expect(decodeError({ ...base(), timeouts })).toContain("nodeDownMs")
    })
  })

  it("passes the flake check's own comparisons (nix/checks/module-eval.nix) against the stub NixOS", () => {
    const { name, script } = evalJson<{ name: string; script: string }>("test/nix/checks-eval.nix")
    expect(name).toBe("blixard-module-eval")
    // At build time it diffs each valid sample's file rendered by the real pkgs.formats.json …
    for (const sampleName of sampleNames("valid")) {
      expect(script).toContain(`echo "== ${sampleName}"`)
      expect(script).toContain(`${sampleName}-expected.json`)
    }
    // … and everything else was settled during evaluation.
    for (const sampleName of sampleNames("inconsistent"))
      expect(script).toContain(`# ${sampleName}: assertions fire as expected`)
    for (const sampleName of sampleNames("refused")) expect(script).toContain(`# ${sampleName}: refused`)
  })
})

describe("the module knows the daemon's settings", () => {
  // The module refuses settings keys it does not list (a typo is an error); the list must follow
  // the daemon's config schema, or a new setting cannot be set through the module at all.
  it("lists exactly the config file's top-level keys (read without nix)", () => {
    const text = fs.readFileSync(path.join(root, "modules", "blixard.nix"), "utf8")
    const block = /\n {2}knownKeys = \[([^\]]*)\];/.exec(text)?.[1]
    expect(block, "knownKeys in modules/blixard.nix").toBeDefined()
    const listed = [...block!.matchAll(/"([A-Za-z]+)"/g)].map((m) => m[1]!)
    expect([...listed].sort()).toEqual(Object.keys(NodeConfig.fields).sort())
  })
})
