/**
 * The NixOS module (modules/blixard.nix), evaluated on this machine with nixpkgs' `lib` only: every
 * sample of test/nix/samples.nix through test/nix/eval.nix (stub NixOS options and `pkgs`), every
 * config file it renders read back with the daemon's own schema (`decodeNodeConfig`), and the flake
 * check nix/checks/module-eval.nix run against the same stubs. See ./harness.ts for what it needs.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Either } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { decode, decodeError, evalJson, nix, nixpkgsLib, reportSkip, root, skipReason } from "./harness.js"

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
}

interface Expect {
  readonly settings?: Record<string, unknown>
  readonly assertions?: ReadonlyArray<string>
  readonly evalError?: string
  readonly schemaAccepts?: boolean
  readonly unit?: UnitExpect
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
}

interface Sample {
  readonly expect: Expect
  readonly refused: boolean
  readonly result?: Result
}

interface Evaluation {
  readonly samples: Record<string, Sample>
  readonly disabled: {
    readonly services: ReadonlyArray<string>
    readonly assertions: number
    readonly firewall: ReadonlyArray<number>
    readonly systemPackages: number
  }
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
  apiTokenFile: "api-token"
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

  it("defines nothing when services.blixard is not enabled", () => {
    expect(evaluation.disabled).toEqual({ services: [], assertions: 0, firewall: [], systemPackages: 0 })
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
      // `nix` (runner builds) and `systemctl` (microvm@ units) are on the unit's PATH.
      expect(r.path).toEqual(expect.arrayContaining(["nix", "systemd"]))
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
        ProtectKernelTunables: true,
        ProtectKernelModules: true,
        ProtectKernelLogs: true,
        ProtectControlGroups: true,
        LockPersonality: true,
        RestrictSUIDSGID: true,
        RestrictNamespaces: true,
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
        // VMs run in microvm@NAME units: no devices, no network administration here.
        expect(sc["PrivateDevices"]).toBe(true)
        expect(sc["DeviceAllow"]).toBeUndefined()
        expect(capabilities).not.toContain("CAP_NET_ADMIN")
        expect(families).not.toContain("AF_NETLINK")
        expect(families).toContain("AF_UNIX")
      }
      expect(capabilities).not.toContain("CAP_SYS_ADMIN")
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
        ...["--argstr", "nixpkgsLib", nixpkgsLib, "--argstr", "sample", name]
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
