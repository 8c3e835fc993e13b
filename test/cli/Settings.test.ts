import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import * as fc from "fast-check"
import { ConfigInvalid } from "../../src/domain/Errors.js"
import type { NodeConfig } from "../../src/node/Config.js"
import {
  defaultDataDir,
  environmentVariables,
  type NodeFlags,
  resolveNodeSettings
} from "../../src/node/Settings.js"

const file = (settings: unknown, path = "/etc/blixard.json") => ({ path, contents: JSON.stringify(settings) })

const ok = (result: Either.Either<NodeConfig, ConfigInvalid>): NodeConfig => {
  if (Either.isLeft(result)) throw new Error(`expected valid settings, got ${result.left.message}`)
  return result.right
}

const problems = (result: Either.Either<NodeConfig, ConfigInvalid>): ReadonlyArray<string> => {
  if (Either.isRight(result)) throw new Error(`expected invalid settings, got ${JSON.stringify(result.right)}`)
  expect(result.left).toBeInstanceOf(ConfigInvalid)
  expect(result.left.code).toBe("BLX_CONFIG_INVALID")
  return result.left.message.split("; ")
}

describe("resolveNodeSettings: merging", () => {
  it("takes flags alone, with the schema's defaults and the hand-started data dir", () => {
    const config = ok(resolveNodeSettings(undefined, {}, { id: 3, bind: "127.0.0.1:7003" }))
    expect(config).toMatchObject({
      id: 3,
      bind: "127.0.0.1:7003",
      dataDir: "./blixard-data/node-3",
      peers: [],
      vmBackend: "process",
      microvmStateDir: "/var/lib/microvms",
      logLevel: "info",
      labels: {},
      timeouts: { tickMs: 50, fencingMs: 3000, nodeDownMs: 6000, requestMs: 5000 }
    })
  })

  it("lets the environment override the file and flags override both", () => {
    const config = ok(
      resolveNodeSettings(
        file({ id: 1, bind: "0.0.0.0:7001", dataDir: "/var/lib/blixard", vmBackend: "systemd", logLevel: "error" }),
        { BLIXARD_BIND: "0.0.0.0:7101", BLIXARD_LOG_LEVEL: "warning", BLIXARD_ID: "2" },
        { bind: "10.0.0.5:7201", id: 5 }
      )
    )
    expect(config.id).toBe(5) // flag over environment over file
    expect(config.bind).toBe("10.0.0.5:7201") // flag over environment over file
    expect(config.logLevel).toBe("warning") // environment over file
    expect(config.vmBackend).toBe("systemd") // file only
    expect(config.dataDir).toBe("/var/lib/blixard") // the file's, not the default
  })

  it("merges labels key by key and replaces peers as a whole", () => {
    const config = ok(
      resolveNodeSettings(
        file({ id: 1, bind: "h:1", labels: { zone: "a", rack: "r1" }, peers: [{ id: 2, address: "h2:1" }] }),
        { BLIXARD_LABELS: "zone=b, disk=ssd", BLIXARD_PEERS: "3:h3:1,4:h4:1" },
        { labels: ["disk=nvme"], peers: ["5:[::1]:7005"] }
      )
    )
    expect(config.labels).toEqual({ zone: "b", rack: "r1", disk: "nvme" })
    expect(config.peers).toEqual([{ id: 5, address: "[::1]:7005" }])
  })

  it("reads peers from the environment when no flag gives them", () => {
    const config = ok(resolveNodeSettings(undefined, { BLIXARD_PEERS: "2:10.0.0.2:7001, 3:10.0.0.3:7001" }, { id: 1, bind: "h:1" }))
    expect(config.peers).toEqual([
      { id: 2, address: "10.0.0.2:7001" },
      { id: 3, address: "10.0.0.3:7001" }
    ])
  })

  it("treats an empty variable as unset", () => {
    const config = ok(resolveNodeSettings(undefined, { BLIXARD_BIND: "", BLIXARD_PEERS: "" }, { id: 1, bind: "h:1" }))
    expect(config.bind).toBe("h:1")
    expect(config.peers).toEqual([])
  })

  it("keeps the file's nested settings", () => {
    const config = ok(
      resolveNodeSettings(file({ id: 1, bind: "h:1", timeouts: { fencingMs: 2000 }, capacity: { vcpus: 4, memoryMiB: 4096 } }), {}, {})
    )
    expect(config.timeouts).toEqual({ tickMs: 50, fencingMs: 2000, nodeDownMs: 6000, requestMs: 5000 })
    expect(config.capacity).toEqual({ vcpus: 4, memoryMiB: 4096 })
  })

  it("defaults the data dir to ./blixard-data/node-<id> for any id", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (id) => {
        expect(ok(resolveNodeSettings(undefined, {}, { id, bind: "h:1" })).dataDir).toBe(`./blixard-data/node-${id}`)
        expect(defaultDataDir(id)).toBe(`./blixard-data/node-${id}`)
      })
    )
  })

  it("lets the highest source win for every scalar setting", () => {
    fc.assert(
      fc.property(fc.subarray(["file", "env", "flag"] as const, { minLength: 1 }), (given) => {
        const addresses = { file: "f:1", env: "e:2", flag: "g:3" }
        const config = ok(
          resolveNodeSettings(
            given.includes("file") ? file({ id: 1, bind: addresses.file }) : file({ id: 1 }),
            given.includes("env") ? { BLIXARD_BIND: addresses.env } : {},
            given.includes("flag") ? { bind: addresses.flag } : {}
          )
        )
        const winner = given.includes("flag") ? "flag" : given.includes("env") ? "env" : "file"
        expect(config.bind).toBe(addresses[winner])
      })
    )
  })

  it("resolves the VM user, group and GC root directory from file, environment and flags", () => {
    // Unset, the daemon uses microvm.nix's names and GC root directory (Config.ts's defaults).
    const plain = ok(resolveNodeSettings(undefined, {}, { id: 1, bind: "h:1" }))
    expect([plain.vmUser, plain.vmGroup, plain.gcRootDir]).toEqual([undefined, undefined, undefined])
    const config = ok(
      resolveNodeSettings(
        file({ id: 1, bind: "h:1", vmUser: "vmrunner", vmGroup: "hv" }),
        { BLIXARD_VM_GROUP: "kvm2", BLIXARD_GC_ROOT_DIR: "/srv/gcroots" },
        { vmUser: "vm-user" }
      )
    )
    expect(config).toMatchObject({ vmUser: "vm-user", vmGroup: "kvm2", gcRootDir: "/srv/gcroots" })
    expect(problems(resolveNodeSettings(undefined, {}, { id: 1, bind: "h:1", gcRootDir: "gcroots" }))).toEqual([
      '--gc-root-dir "gcroots": must be an absolute path'
    ])
    expect(problems(resolveNodeSettings(undefined, { BLIXARD_VM_USER: "a b" }, { id: 1, bind: "h:1" }))[0]).toContain(
      'BLIXARD_VM_USER "a b": a user or group name'
    )
  })

  it("allowed runner prefixes default to /nix/store; flags replace the environment's, which replace the file's; flake prefixes are unset unless given", () => {
    const base = { id: 1, bind: "h:1" }
    const defaults = ok(resolveNodeSettings(undefined, {}, base))
    // Unset here; the runner policy applies /nix/store (RunnerPolicy.defaultAllowedRunnerPrefixes).
    expect(defaults.allowedRunnerPrefixes).toBeUndefined()
    expect(defaults.allowedFlakePrefixes).toBeUndefined()
    const fromFile = ok(resolveNodeSettings(file({ ...base, allowedRunnerPrefixes: ["/srv/runners"], allowedFlakePrefixes: ["github:org/"] }), {}, {}))
    expect(fromFile.allowedRunnerPrefixes).toEqual(["/srv/runners"])
    expect(fromFile.allowedFlakePrefixes).toEqual(["github:org/"])
    const fromEnv = ok(
      resolveNodeSettings(file({ ...base, allowedRunnerPrefixes: ["/srv/runners"] }), { BLIXARD_ALLOWED_RUNNER_PREFIXES: "/a, /b", BLIXARD_ALLOWED_FLAKE_PREFIXES: "github:x/" }, {})
    )
    expect(fromEnv.allowedRunnerPrefixes).toEqual(["/a", "/b"])
    expect(fromEnv.allowedFlakePrefixes).toEqual(["github:x/"])
    const fromFlags = ok(resolveNodeSettings(undefined, { BLIXARD_ALLOWED_RUNNER_PREFIXES: "/a" }, { ...base, allowedRunnerPrefixes: ["/c"] }))
    expect(fromFlags.allowedRunnerPrefixes).toEqual(["/c"])
    expect(problems(resolveNodeSettings(undefined, {}, { ...base, allowedRunnerPrefixes: ["/ok", "relative"] }))).toEqual([
      `--allowed-runner-prefix "relative": must be an absolute path`
    ])
    expect(problems(resolveNodeSettings(undefined, { BLIXARD_ALLOWED_FLAKE_PREFIXES: "-bad" }, base))).toEqual([
      `BLIXARD_ALLOWED_FLAKE_PREFIXES entry "-bad": a flake prefix must not start with '-'`
    ])
  })

  it("servers (a host that is not a Raft member): from the file, the environment or --server; each HOST:PORT; member-only settings refused beside them", () => {
    const base = { id: 101, bind: "10.0.0.101:7001" }
    expect(ok(resolveNodeSettings(undefined, {}, base)).servers).toBeUndefined()
    expect(ok(resolveNodeSettings(file({ ...base, servers: ["10.0.0.1:7001"] }), {}, {})).servers).toEqual(["10.0.0.1:7001"])
    expect(ok(resolveNodeSettings(undefined, { BLIXARD_SERVERS: "10.0.0.1:7001, 10.0.0.2:7001" }, base)).servers).toEqual(["10.0.0.1:7001", "10.0.0.2:7001"])
    expect(ok(resolveNodeSettings(undefined, { BLIXARD_SERVERS: "10.0.0.1:7001" }, { ...base, servers: ["10.0.0.3:7001"] })).servers).toEqual(["10.0.0.3:7001"])
    expect(problems(resolveNodeSettings(undefined, {}, { ...base, servers: ["10.0.0.1:7001", "nonsense"] }))[0]).toMatch(/^--server "nonsense": /)
    expect(problems(resolveNodeSettings(file({ ...base, servers: [] }), {}, {}))[0]).toContain(`key "servers"`)
    const host = { ...base, servers: ["10.0.0.1:7001"] }
    expect(problems(resolveNodeSettings(undefined, {}, { ...host, peers: ["1:10.0.0.1:7001"] }))[0]).toMatch(
      /^--peer: a node given servers \(--server\) is a host that is not a Raft member, and peers apply to members only/
    )
    expect(problems(resolveNodeSettings(undefined, {}, { ...host, discovery: "tailscale" }))[0]).toContain("discovery apply to members only")
    expect(problems(resolveNodeSettings(undefined, {}, { ...host, tlsCertFile: "c", tlsKeyFile: "k" }))[0]).toContain("tlsCertFile, tlsKeyFile apply to members only")
    expect(ok(resolveNodeSettings(undefined, {}, { ...host, tlsCaFile: "ca.crt" })).tlsCaFile).toBe("ca.crt")
  })

  it("plain mode is off unless a source turns it on; an unset flag does not turn the file's off; the environment takes true/false/1/0", () => {
    const base = { id: 1, bind: "127.0.0.1:7001" }
    expect(ok(resolveNodeSettings(undefined, {}, base)).insecurePlaintext).toBeUndefined()
    expect(ok(resolveNodeSettings(undefined, {}, { ...base, insecurePlaintext: true, insecurePlaintextNonLoopback: true }))).toMatchObject({
      insecurePlaintext: true,
      insecurePlaintextNonLoopback: true
    })
    // The CLI hands `false` for a boolean flag not given: the file's setting stands.
    expect(ok(resolveNodeSettings(file({ insecurePlaintext: true }), {}, { ...base, insecurePlaintext: false })).insecurePlaintext).toBe(true)
    expect(ok(resolveNodeSettings(undefined, { BLIXARD_INSECURE_PLAINTEXT: "1" }, base)).insecurePlaintext).toBe(true)
    expect(ok(resolveNodeSettings(file({ insecurePlaintext: true }), { BLIXARD_INSECURE_PLAINTEXT: "false" }, base)).insecurePlaintext).toBe(false)
    expect(problems(resolveNodeSettings(undefined, { BLIXARD_INSECURE_PLAINTEXT: "yes" }, base))).toEqual(['BLIXARD_INSECURE_PLAINTEXT "yes": true or false'])
  })

  it("lists every variable it reads", () => {
    expect(environmentVariables).toEqual(
      expect.arrayContaining([
        "BLIXARD_ID",
        "BLIXARD_BIND",
        "BLIXARD_DATA_DIR",
        "BLIXARD_PEERS",
        "BLIXARD_LABELS",
        "BLIXARD_CONFIG",
        "BLIXARD_ALLOWED_RUNNER_PREFIXES",
        "BLIXARD_ALLOWED_FLAKE_PREFIXES",
        "BLIXARD_INSECURE_PLAINTEXT",
        "BLIXARD_INSECURE_PLAINTEXT_NON_LOOPBACK"
      ])
    )
  })
})

describe("resolveNodeSettings: problems name their source", () => {
  it("names the flag and its value", () => {
    expect(problems(resolveNodeSettings(undefined, {}, { id: 0, bind: "x" }))).toEqual([
      "--id 0: a node id is a positive integer (1, 2, 3, …)",
      `--bind "x": an address is HOST:PORT, e.g. 127.0.0.1:7001 or [::1]:7001`
    ])
    const error = Either.getLeft(resolveNodeSettings(undefined, {}, { id: 1, bind: "abc" }))
    expect(error._tag === "Some" && error.value.subject).toBe("--bind")
  })

  it("names the variable and its value", () => {
    expect(
      problems(resolveNodeSettings(undefined, { BLIXARD_ID: "one", BLIXARD_BIND: "h:70000", BLIXARD_VM_BACKEND: "qemu" }, {}))
    ).toEqual([
      `BLIXARD_ID "one": a node id is a positive integer (1, 2, 3, …)`,
      `BLIXARD_BIND "h:70000": the port must be from 1 to 65535`,
      `BLIXARD_VM_BACKEND "qemu": one of "process", "systemd" (got "qemu")`
    ])
  })

  it("names the entry of a list variable or repeated flag", () => {
    expect(problems(resolveNodeSettings(undefined, { BLIXARD_PEERS: "2:h:1,oops" }, { id: 1, bind: "h:1" }))).toEqual([
      `BLIXARD_PEERS entry "oops": a peer is ID:HOST:PORT, e.g. 2:10.0.0.2:7001`
    ])
    expect(problems(resolveNodeSettings(undefined, {}, { id: 1, bind: "h:1", peers: ["2:h:1", "0:h:2"] }))).toEqual([
      `--peer "0:h:2": a node id is a positive integer (1, 2, 3, …)`
    ])
    expect(problems(resolveNodeSettings(undefined, {}, { id: 1, bind: "h:1", peers: ["2:nohost"] }))).toEqual([
      `--peer "2:nohost": an address is HOST:PORT, e.g. 127.0.0.1:7001 or [::1]:7001`
    ])
    expect(problems(resolveNodeSettings(undefined, {}, { id: 1, bind: "h:1", labels: ["zone=eu 1", "bad"] }))).toEqual([
      `--label "bad": a label is KEY=VALUE, e.g. zone=eu-1`,
      expect.stringMatching(/^--label "zone=eu 1": a label value is letters, digits/)
    ])
  })

  it("names the config file and the key, nested keys with dots", () => {
    expect(
      problems(resolveNodeSettings(file({ id: 1, bind: "h:1", timeouts: { fencingMs: 5 } }), {}, {}))
    ).toEqual([`config file /etc/blixard.json: key "timeouts.fencingMs": Expected a number greater than or equal to 100, actual 5`])
    expect(
      problems(resolveNodeSettings(file({ id: 1, bind: "h:1", timeouts: { fencingMs: 6000 } }), {}, {}))
    ).toEqual([expect.stringMatching(/^config file \/etc\/blixard.json: key "timeouts": timeouts.nodeDownMs \(6000\) must be at least/)])
    // 200 ms ticks: an election timeout is 2 s, so a follower's ReadIndex-proven contact may trail by
    // about 4 s while the cluster is healthy, more than the default 3 s of fencing.
    expect(
      problems(resolveNodeSettings(file({ id: 1, bind: "h:1", timeouts: { tickMs: 200, nodeDownMs: 8000 } }), {}, {}))
    ).toEqual([
      expect.stringMatching(/^config file \/etc\/blixard.json: key "timeouts": timeouts.fencingMs \(3000\) must be at least three election timeouts \(6000 ms\)/)
    ])
    expect(problems(resolveNodeSettings(file({ id: 1, bind: "h:1", peers: [{ id: 2, address: "x" }] }), {}, {}))).toEqual([
      `config file /etc/blixard.json: key "peers[0].address": an address is HOST:PORT, e.g. 127.0.0.1:7001 or [::1]:7001`
    ])
  })

  it("refuses an unknown key in the file rather than ignoring a typo", () => {
    expect(problems(resolveNodeSettings(file({ id: 1, bind: "h:1", dataDri: "/x" }), {}, {}))).toEqual([
      expect.stringMatching(/^config file \/etc\/blixard.json: key "dataDri": unknown setting \(known: id, bind, .*dataDir/)
    ])
  })

  it("refuses a file that is not a JSON object", () => {
    expect(problems(resolveNodeSettings({ path: "/x.json", contents: "{ id: 1" }, {}, { id: 1, bind: "h:1" }))).toEqual([
      expect.stringMatching(/^config file \/x.json: not valid JSON \(/)
    ])
    expect(problems(resolveNodeSettings({ path: "/x.json", contents: "[1]" }, {}, { id: 1, bind: "h:1" }))).toEqual([
      expect.stringMatching(/^config file \/x.json: must hold a JSON object/)
    ])
  })

  it("says how to give a required setting that no source gives", () => {
    expect(problems(resolveNodeSettings(undefined, {}, {}))).toEqual([
      `the node id is required: pass --id N, set BLIXARD_ID or put "id" in the config file`,
      `the bind address is required: pass --bind HOST:PORT, set BLIXARD_BIND or put "bind" in the config file`
    ])
  })

  it("does not call a rejected value missing", () => {
    expect(problems(resolveNodeSettings(undefined, { BLIXARD_ID: "x" }, { bind: "h:1" }))).toEqual([
      `BLIXARD_ID "x": a node id is a positive integer (1, 2, 3, …)`
    ])
  })

  it("reports a value overridden by a higher source not at all", () => {
    const flags: NodeFlags = { bind: "h:1" }
    expect(ok(resolveNodeSettings(file({ id: 1, bind: "bad" }), { BLIXARD_BIND: "also bad" }, flags)).bind).toBe("h:1")
  })
})

describe("resolveNodeSettings: joining with a join token", () => {
  const token = `K10${"ab".repeat(32)}::0123456789abcdef.${"x".repeat(43)}`
  const base = { id: 4, bind: "127.0.0.1:7004" }

  it("takes --join addresses and the token from flags, the environment or the file", () => {
    const fromFlags = ok(resolveNodeSettings(undefined, {}, { ...base, join: ["10.0.0.1:7001", "10.0.0.2:7001"], joinToken: token }))
    expect(fromFlags.join).toEqual(["10.0.0.1:7001", "10.0.0.2:7001"])
    expect(fromFlags.joinToken).toBe(token)
    const fromEnv = ok(resolveNodeSettings(undefined, { BLIXARD_JOIN: "10.0.0.1:7001", BLIXARD_JOIN_TOKEN_FILE: "/run/token" }, base))
    expect(fromEnv.join).toEqual(["10.0.0.1:7001"])
    expect(fromEnv.joinTokenFile).toBe("/run/token")
    const fromFile = ok(resolveNodeSettings(file({ ...base, join: ["10.0.0.1:7001"], joinTokenFile: "/run/token" }), {}, {}))
    expect(fromFile.joinTokenFile).toBe("/run/token")
    // Without a token, --join is a peer given by address alone.
    expect(ok(resolveNodeSettings(undefined, {}, { ...base, join: ["10.0.0.1:7001"] })).joinToken).toBeUndefined()
  })

  it("refuses a malformed token, saying what one looks like", () => {
    expect(problems(resolveNodeSettings(undefined, {}, { ...base, join: ["10.0.0.1:7001"], joinToken: token.slice(0, -1) }))[0]).toMatch(
      /^--join-token \(value not shown\): a join token is K10<64 hex digits>::<16 hex digits>\.<43 characters>/
    )
    // The token (a secret) is not repeated in the message, which ends up in logs.
    expect(problems(resolveNodeSettings(undefined, { BLIXARD_JOIN_TOKEN: token.slice(0, -1) }, { ...base, join: ["10.0.0.1:7001"] })).join(" ")).not.toContain("x".repeat(42))
    expect(problems(resolveNodeSettings(undefined, {}, { ...base, join: ["nope"] }))[0]).toMatch(/^--join "nope": /)
  })

  it("refuses what contradicts it: no member to join through, both token and file, a cluster secret file, plain mode, tailscale with --join", () => {
    expect(problems(resolveNodeSettings(undefined, {}, { ...base, joinToken: token }))[0]).toMatch(/^--join-token .*add --join HOST:PORT/)
    expect(problems(resolveNodeSettings(undefined, {}, { ...base, join: ["10.0.0.1:7001"], joinToken: token, joinTokenFile: "/t" }))[0]).toMatch(/not both/)
    expect(problems(resolveNodeSettings(undefined, {}, { ...base, join: ["10.0.0.1:7001"], joinTokenFile: "/t", clusterSecretFile: "/s" }))[0]).toMatch(
      /receives the cluster secret.*drop the cluster secret file \(--cluster-secret-file "\/s"\)/
    )
    expect(problems(resolveNodeSettings(undefined, {}, { ...base, join: ["10.0.0.1:7001"], joinTokenFile: "/t", insecurePlaintext: true }))[0]).toMatch(
      /needs TLS: drop --insecure-plaintext/
    )
    expect(problems(resolveNodeSettings(undefined, {}, { ...base, join: ["10.0.0.1:7001"], discovery: "tailscale" }))[0]).toMatch(/^--join: .*so drop --join/)
    // With peers from the tailnet, a token needs no --join.
    expect(ok(resolveNodeSettings(undefined, {}, { ...base, discovery: "tailscale", joinTokenFile: "/t" })).joinTokenFile).toBe("/t")
  })
})
