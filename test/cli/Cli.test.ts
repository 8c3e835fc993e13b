import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { VmNotFound } from "../../src/domain/Errors.js"
import { NodeInfo } from "../../src/domain/NodeInfo.js"
import { VmRecord } from "../../src/domain/VmStatus.js"
import type { VmSpec } from "../../src/domain/VmSpec.js"
import { version } from "../../src/cli/Cli.js"
import { resolveClientContext } from "../../src/cli/GlobalOptions.js"
import { freePort } from "../../src/node/FreePort.js"
import { clusterStatus, fakeClient, nodeId, nodeInfo, runBlixard, tempDir, vmRecord } from "./harness.js"

const commands = [
  "node",
  "vm create",
  "vm start",
  "vm stop",
  "vm delete",
  "vm status",
  "vm list",
  "cluster status",
  "cluster join",
  "cluster leave"
]

describe("help and usage errors", () => {
  it.effect("--help lists every command with its description and exits 0", () =>
    Effect.gen(function* () {
      const { code, stdout } = yield* runBlixard(["--help"])
      expect(code).toBe(0)
      for (const command of commands) expect(stdout).toMatch(new RegExp(`^\\s+- ${command}\\b.*\\S{3,}`, "m"))
      expect(stdout).toContain("--addr HOST:PORT")
      expect(stdout).toContain("BLIXARD_ADDR")
    })
  )

  it.effect("every command's own help describes its options", () =>
    Effect.gen(function* () {
      const { code, stdout } = yield* runBlixard(["vm", "create", "--help"])
      expect(code).toBe(0)
      for (const flag of ["--name NAME", "--config FILE", "--flake REF", "--runner PATH", "--vcpus N", "--memory MIB", "--label KEY=VALUE", "--constraint", "--anti-affinity GROUP", "--restart", "--addr HOST:PORT", "--json"]) {
        expect(stdout).toContain(flag)
      }
      expect(stdout).toContain("Declare a new VM")
      const node = yield* runBlixard(["node", "--help"])
      for (const flag of ["--id N", "--bind HOST:PORT", "--peer ID:HOST:PORT", "--data-dir DIR", "--config FILE", "--vm-backend", "$BLIXARD_PEERS"]) {
        expect(node.stdout).toContain(flag)
      }
    })
  )

  it.effect("--version prints the package's version", () =>
    Effect.gen(function* () {
      const pkg = JSON.parse(fs.readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
      expect(version).toBe(pkg.version)
      const { code, stdout } = yield* runBlixard(["--version"])
      expect(code).toBe(0)
      expect(stdout.trim()).toBe(pkg.version)
    })
  )

  it.effect("an unknown command, an unknown option, a missing argument and a bad choice exit 2", () =>
    Effect.gen(function* () {
      const unknownCommand = yield* runBlixard(["frobnicate"])
      expect(unknownCommand.code).toBe(2)
      expect(unknownCommand.stderr).toMatch(/Invalid subcommand for blixard/)
      const unknownOption = yield* runBlixard(["vm", "list", "--bogus"])
      expect(unknownOption.code).toBe(2)
      expect(unknownOption.stderr).toContain("--bogus")
      expect((yield* runBlixard(["vm", "start"])).code).toBe(2)
      expect((yield* runBlixard(["vm", "create", "--name", "web", "--runner", "/x", "--restart", "sometimes"])).code).toBe(2)
      expect((yield* runBlixard(["vm", "create", "--name", "web", "--runner", "/x", "--vcpus", "two"])).code).toBe(2)
    })
  )
})

describe("input validation", () => {
  it.effect("a bad VM name exits 2 with BLX_INVALID_ARGUMENT naming the flag, before any request", () =>
    Effect.gen(function* () {
      const client = fakeClient({})
      const { code, stderr } = yield* runBlixard(["vm", "create", "--name", "Bad_Name", "--runner", "/x"], { client: client.layer })
      expect(code).toBe(2)
      expect(stderr).toMatch(/^BLX_INVALID_ARGUMENT: --name "Bad_Name": a VM name is a lowercase DNS label/)
      expect(client.calls).toEqual([])
      const start = yield* runBlixard(["vm", "start", "Web"], { client: client.layer })
      expect(start.code).toBe(2)
      expect(start.stderr).toMatch(/^BLX_INVALID_ARGUMENT: NAME "Web": /)
      expect(client.calls).toEqual([])
    })
  )

  it.effect("a missing --config file exits 2 naming the file", () =>
    Effect.gen(function* () {
      const { code, stderr } = yield* runBlixard(["vm", "create", "--name", "web", "--config", "/nonexistent/web.nix"])
      expect(code).toBe(2)
      expect(stderr).toMatch(/^BLX_INVALID_ARGUMENT: --config "\/nonexistent\/web.nix": cannot read the file/)
    })
  )

  it.effect("a bad --addr or BLIXARD_ADDR exits 2 naming which", () =>
    Effect.gen(function* () {
      const flag = yield* runBlixard(["vm", "list", "--addr", "nowhere"])
      expect(flag.code).toBe(2)
      expect(flag.stderr).toMatch(/^BLX_INVALID_ARGUMENT: --addr "nowhere": an address is HOST:PORT/)
      const env = yield* runBlixard(["cluster", "status"], { env: { BLIXARD_ADDR: "h:0" } })
      expect(env.code).toBe(2)
      expect(env.stderr).toMatch(/^BLX_INVALID_ARGUMENT: BLIXARD_ADDR "h:0": the port must be from 1 to 65535/)
    })
  )

  it.effect("cluster join and leave check the node id and address", () =>
    Effect.gen(function* () {
      const join = yield* runBlixard(["cluster", "join", "--id", "0", "--address", "x"])
      expect(join.code).toBe(2)
      expect(join.stderr).toBe(
        `BLX_INVALID_ARGUMENT: --id 0: a node id is a positive integer (1, 2, 3, …); --address "x": an address is HOST:PORT, e.g. 127.0.0.1:7001 or [::1]:7001`
      )
      expect((yield* runBlixard(["cluster", "leave", "--id", "-3"])).code).toBe(2)
    })
  )
})

describe("with no node listening", () => {
  const cases: ReadonlyArray<ReadonlyArray<string>> = [
    ["vm", "create", "--name", "web", "--flake", "github:me/vms#web"],
    ["vm", "start", "web"],
    ["vm", "stop", "web"],
    ["vm", "delete", "web"],
    ["vm", "status", "web"],
    ["vm", "list"],
    ["cluster", "status"],
    ["cluster", "join", "--id", "4", "--address", "127.0.0.1:7004"],
    ["cluster", "leave", "--id", "4"]
  ]
  for (const args of cases) {
    it.effect(`${args.slice(0, 2).join(" ")} exits 1 with BLX_UNAVAILABLE naming the address and how to point elsewhere`, () =>
      Effect.gen(function* () {
        const port = yield* Effect.promise(freePort)
        const { code, stdout, stderr } = yield* runBlixard([...args, "--addr", `127.0.0.1:${port}`])
        expect(code).toBe(1)
        expect(stdout).toBe("")
        expect(stderr).toBe(
          `BLX_UNAVAILABLE: no Blixard node answers at 127.0.0.1:${port}; is it running? (--addr / BLIXARD_ADDR)`
        )
      })
    )
  }

  it.effect("the address comes from BLIXARD_ADDR when no flag gives it", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const { stderr } = yield* runBlixard(["vm", "list"], { env: { BLIXARD_ADDR: `127.0.0.1:${port}` } })
      expect(stderr).toContain(`answers at 127.0.0.1:${port};`)
    })
  )
})

describe("global options", () => {
  const records = [vmRecord("web", { node: 2 }), vmRecord("db", { phase: "pending", pendingReason: "no capacity" })]

  const listWith = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
    Effect.gen(function* () {
      const client = fakeClient({ listVms: () => Effect.succeed(records) })
      const result = yield* runBlixard(args, { client: client.layer, env })
      return { ...result, calls: client.calls }
    })

  it.effect("are accepted after the subcommand, before it, and mixed", () =>
    Effect.gen(function* () {
      for (const [args, addr] of [
        [["vm", "list", "--json", "--addr", "10.0.0.2:7001"], "10.0.0.2:7001"],
        [["--json", "--addr", "10.0.0.3:7001", "vm", "list"], "10.0.0.3:7001"],
        [["--addr", "10.0.0.4:7001", "vm", "list", "--json"], "10.0.0.4:7001"]
      ] as const) {
        const { code, stdout, calls } = yield* listWith(args)
        expect(code).toBe(0)
        // The first page (and one more, to tell whether more follow).
        expect(calls).toEqual([{ method: "listVms", args: [{ addr }, { limit: 101 }] }])
        expect(Schema.decodeUnknownSync(Schema.Array(VmRecord))(JSON.parse(stdout))).toEqual(records)
      }
    })
  )

  it.effect("the subcommand's --addr wins over the root's, which wins over BLIXARD_ADDR", () =>
    Effect.gen(function* () {
      const both = yield* listWith(["--addr", "10.0.0.1:7001", "vm", "list", "--addr", "10.0.0.2:7001"], {
        BLIXARD_ADDR: "10.0.0.3:7001"
      })
      expect(both.calls[0]?.args[0]).toEqual({ addr: "10.0.0.2:7001" })
      const root = yield* listWith(["--addr", "10.0.0.1:7001", "vm", "list"], { BLIXARD_ADDR: "10.0.0.3:7001" })
      expect(root.calls[0]?.args[0]).toEqual({ addr: "10.0.0.1:7001" })
    })
  )

  it.effect("without --json a person gets a table", () =>
    Effect.gen(function* () {
      const { code, stdout } = yield* listWith(["vm", "list"])
      expect(code).toBe(0)
      expect(stdout.split("\n")[0]).toMatch(/^NAME\s+DESIRED\s+PHASE\s+NODE/)
      expect(stdout).toMatch(/^db\s+running\s+pending\s+-\s.*no capacity$/m)
    })
  )

  it("resolve purely: flag, root flag, environment, default", () => {
    const none = { addr: Option.none<string>(), json: false }
    expect(resolveClientContext(none, none, {})).toEqual(Either.right({ target: { addr: "127.0.0.1:7001" }, json: false }))
    expect(resolveClientContext(none, { addr: Option.some("r:1"), json: true }, { BLIXARD_ADDR: "e:1" })).toEqual(
      Either.right({ target: { addr: "r:1" }, json: true })
    )
    expect(resolveClientContext(none, none, { BLIXARD_ADDR: "e:1" })).toEqual(Either.right({ target: { addr: "e:1" }, json: false }))
    expect(resolveClientContext(none, none, { BLIXARD_ADDR: "" })).toEqual(
      Either.right({ target: { addr: "127.0.0.1:7001" }, json: false })
    )
  })
})

describe("commands call the client", () => {
  it.effect("vm create sends the full spec, with the --config file's text inline", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      const file = path.join(dir, "web.nix")
      fs.writeFileSync(file, "{ microvm.mem = 1024; }\n")
      let sent: VmSpec | undefined
      const client = fakeClient({
        createVm: (_target, spec) => {
          sent = spec
          return Effect.succeed(vmRecord("web", { phase: "pending", pendingReason: "placing" }))
        }
      })
      const { code, stdout } = yield* runBlixard(
        ["vm", "create", "--name", "web", "--config", file, "--vcpus", "2", "--memory", "1024", "--label", "tier=web", "--constraint", "zone!=eu-2", "--anti-affinity", "web", "--restart", "always", "--addr", "10.0.0.2:7001"],
        { client: client.layer }
      )
      expect(code).toBe(0)
      expect(stdout).toBe("created VM web (desired running, pending placement: placing)")
      expect(client.calls[0]?.args[0]).toEqual({ addr: "10.0.0.2:7001" })
      expect(sent).toMatchObject({
        name: "web",
        source: { _tag: "Inline", module: "{ microvm.mem = 1024; }\n" },
        vcpus: 2,
        memoryMiB: 1024,
        labels: { tier: "web" },
        constraints: [{ key: "zone", op: "neq", value: "eu-2" }],
        antiAffinity: "web",
        restartPolicy: "always"
      })
    })
  )

  it.effect("vm start, stop, delete and status name the VM and print the answer", () =>
    Effect.gen(function* () {
      const client = fakeClient({
        startVm: (_, name) => Effect.succeed(vmRecord(name, { node: 2 })),
        stopVm: (_, name) => Effect.succeed(vmRecord(name, { node: 2, desired: "stopped" })),
        deleteVm: () => Effect.void,
        vmStatus: (_, name) => Effect.succeed(vmRecord(name, { node: 3 }))
      })
      const run = (...args: ReadonlyArray<string>) => runBlixard(args, { client: client.layer })
      expect(yield* run("vm", "start", "web")).toEqual({ code: 0, stdout: "started VM web (desired running, on node 2)", stderr: "" })
      expect((yield* run("vm", "stop", "web")).stdout).toBe("stopped VM web (desired stopped, on node 2)")
      expect((yield* run("vm", "delete", "web", "--json")).stdout).toBe(`{"deleted":"web"}`)
      expect((yield* run("vm", "status", "web")).stdout).toMatch(/^node:\s+3$/m)
      expect(client.calls.map((call) => [call.method, call.args[1]])).toEqual([
        ["startVm", "web"],
        ["stopVm", "web"],
        ["deleteVm", "web"],
        ["vmStatus", "web"]
      ])
    })
  )

  it.effect("cluster status, join and leave", () =>
    Effect.gen(function* () {
      const status = clusterStatus(1, [nodeInfo(1, "10.0.0.1:7001"), nodeInfo(4, "10.0.0.4:7001")])
      const client = fakeClient({
        clusterStatus: () => Effect.succeed(status),
        joinCluster: () => Effect.succeed(status),
        leaveCluster: () => Effect.succeed(status)
      })
      const run = (...args: ReadonlyArray<string>) => runBlixard(args, { client: client.layer })
      expect((yield* run("cluster", "status")).stdout).toMatch(/^leader: node 1, term 4/)
      expect((yield* run("cluster", "join", "--id", "4", "--address", "10.0.0.4:7001")).stdout).toBe(
        "node 4 (10.0.0.4:7001) joined the cluster"
      )
      expect((yield* run("cluster", "leave", "--id", "4")).stdout).toBe("node 4 left the cluster")
      expect(client.calls.map((call) => call.args.slice(1))).toEqual([[], [4, "10.0.0.4:7001"], [4]])
    })
  )

  it.effect("node list, cordon, uncordon, drain: each asks the node and prints the answer", () =>
    Effect.gen(function* () {
      const n1 = nodeInfo(1, "127.0.0.1:7001", { zone: "a" })
      const client = fakeClient({
        listNodes: () => Effect.succeed([n1]),
        setNodeState: (_, id, state) => Effect.succeed(new NodeInfo({ ...nodeInfo(id, "127.0.0.1:7001"), state }))
      })
      const run = (...args: ReadonlyArray<string>) => runBlixard(args, { client: client.layer })
      expect((yield* run("node", "list")).stdout.split("\n")[1]).toMatch(/^1\s+127\.0\.0\.1:7001\s+active\s+up\s+8\s+16384 MiB\s+zone=a$/)
      expect((yield* run("node", "cordon", "1")).stdout).toBe("node 1 is now cordoned (up)")
      expect((yield* run("node", "drain", "2")).stdout).toBe("node 2 is now draining (up)")
      expect(JSON.parse((yield* run("node", "uncordon", "3", "--json")).stdout)).toMatchObject({ id: 3, state: "active" })
      expect(client.calls.map((c) => [c.method, ...c.args.slice(1)])).toEqual([
        ["listNodes", { limit: 101 }],
        ["setNodeState", 1, "cordoned"],
        ["setNodeState", 2, "draining"],
        ["setNodeState", 3, "active"]
      ])
      const bad = yield* run("node", "cordon", "0")
      expect(bad.code).toBe(2)
      expect(bad.stderr).toMatch(/^BLX_INVALID_ARGUMENT: ID 0: a node id is a positive integer/)
    })
  )

  it.effect("an error from the node exits 1 with its code and message on stderr", () =>
    Effect.gen(function* () {
      const client = fakeClient({
        vmStatus: (_, name) => Effect.fail(new VmNotFound({ message: `no VM named "${name}"`, node: nodeId(2) }))
      })
      expect(yield* runBlixard(["vm", "status", "web"], { client: client.layer })).toEqual({
        code: 1,
        stdout: "",
        stderr: `BLX_VM_NOT_FOUND: no VM named "web" (node 2)`
      })
    })
  )

  it.effect("with --json, errors are JSON on stderr with the same exit codes: a node's error, bad input, a usage error, a defect", () =>
    Effect.gen(function* () {
      const client = fakeClient({
        vmStatus: (_, name) => Effect.fail(new VmNotFound({ message: `no VM named "${name}"`, subject: name, node: nodeId(2) }))
      })
      const parse = (stderr: string) => JSON.parse(stderr) as { error: { code: string; message: string; subject?: string; node?: number } }
      const notFound = yield* runBlixard(["vm", "status", "web", "--json"], { client: client.layer })
      expect(notFound.code).toBe(1)
      expect(notFound.stdout).toBe("")
      expect(parse(notFound.stderr)).toEqual({ error: { code: "BLX_VM_NOT_FOUND", message: `no VM named "web"`, subject: "web", node: 2 } })
      // --json before the subcommand counts too.
      const badName = yield* runBlixard(["--json", "vm", "create", "--name", "Bad_Name", "--runner", "/x"], { client: client.layer })
      expect(badName.code).toBe(2)
      expect(parse(badName.stderr).error).toMatchObject({ code: "BLX_INVALID_ARGUMENT", message: expect.stringContaining(`--name "Bad_Name"`) })
      const unknownOption = yield* runBlixard(["vm", "list", "--json", "--bogus"], { client: client.layer })
      expect(unknownOption.code).toBe(2)
      expect(parse(unknownOption.stderr).error).toMatchObject({ code: "BLX_INVALID_ARGUMENT", message: expect.stringContaining("--bogus") })
      const unknownCommand = yield* runBlixard(["--json", "frobnicate"])
      expect(unknownCommand.code).toBe(2)
      expect(parse(unknownCommand.stderr).error.code).toBe("BLX_INVALID_ARGUMENT")
      const defect = yield* runBlixard(["vm", "list", "--json"], { client: client.layer })
      expect(defect.code).toBe(1)
      expect(parse(defect.stderr).error).toMatchObject({ code: "BLX_UNEXPECTED", message: expect.stringContaining("listVms was not expected") })
    })
  )

  it.effect("a defect is reported as a bug and exits 1", () =>
    Effect.gen(function* () {
      const client = fakeClient({})
      const { code, stderr } = yield* runBlixard(["vm", "list"], { client: client.layer })
      expect(code).toBe(1)
      expect(stderr).toMatch(/^blixard: unexpected error \(a bug; please report it\):/)
      expect(stderr).toContain("listVms was not expected")
    })
  )
})

describe("blixard node", () => {
  it.effect("bad flags exit 2 with BLX_CONFIG_INVALID naming them", () =>
    Effect.gen(function* () {
      const { code, stderr } = yield* runBlixard(["node", "--id", "0", "--bind", "x"])
      expect(code).toBe(2)
      expect(stderr).toBe(
        `BLX_CONFIG_INVALID: --id 0: a node id is a positive integer (1, 2, 3, …); --bind "x": an address is HOST:PORT, e.g. 127.0.0.1:7001 or [::1]:7001`
      )
    })
  )

  it.effect("--check-config prints the merged settings: file < environment < flags", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      const file = path.join(dir, "blixard.json")
      fs.writeFileSync(file, JSON.stringify({ id: 1, bind: "0.0.0.0:7001", dataDir: "/var/lib/blixard", labels: { zone: "a" } }))
      const { code, stdout, stderr } = yield* runBlixard(
        ["node", "--config", file, "--bind", "10.0.0.1:7101", "--label", "disk=ssd", "--check-config"],
        { env: { BLIXARD_BIND: "10.0.0.1:7201", BLIXARD_VM_BACKEND: "systemd", BLIXARD_PEERS: "2:10.0.0.2:7001" } }
      )
      expect(stderr).toBe("")
      expect(code).toBe(0)
      expect(JSON.parse(stdout)).toMatchObject({
        id: 1,
        bind: "10.0.0.1:7101",
        dataDir: "/var/lib/blixard",
        vmBackend: "systemd",
        peers: [{ id: 2, address: "10.0.0.2:7001" }],
        labels: { zone: "a", disk: "ssd" },
        logLevel: "info"
      })
      const viaEnv = yield* runBlixard(["node", "--check-config"], { env: { BLIXARD_CONFIG: file } })
      expect(JSON.parse(viaEnv.stdout)).toMatchObject({ id: 1, bind: "0.0.0.0:7001" })
    })
  )

  it.effect("--log-level is honoured wherever it stands, over BLIXARD_LOG_LEVEL", () =>
    Effect.gen(function* () {
      const env = { BLIXARD_LOG_LEVEL: "error" }
      const base = ["--id", "1", "--bind", "127.0.0.1:7001", "--check-config"]
      for (const level of ["debug", "info", "warning", "error"]) {
        const first = yield* runBlixard(["node", "--log-level", level, ...base], { env })
        const last = yield* runBlixard(["node", ...base, "--log-level", level], { env })
        expect(JSON.parse(first.stdout).logLevel).toBe(level)
        expect(JSON.parse(last.stdout).logLevel).toBe(level)
      }
      const none = yield* runBlixard(["node", ...base], { env })
      expect(JSON.parse(none.stdout).logLevel).toBe("error")
      const unsupported = yield* runBlixard(["node", "--log-level", "trace", ...base], { env })
      expect(unsupported.code).toBe(2)
      expect(unsupported.stderr).toBe(
        `BLX_CONFIG_INVALID: --log-level "trace": one of "debug", "info", "warning", "error" (got "trace")`
      )
    })
  )

  it.effect("an unreadable config file exits 2 naming it", () =>
    Effect.gen(function* () {
      const { code, stderr } = yield* runBlixard(["node", "--config", "/nonexistent/blixard.json"])
      expect(code).toBe(2)
      expect(stderr).toMatch(/^BLX_CONFIG_INVALID: config file \/nonexistent\/blixard.json: cannot be read \(/)
    })
  )
})
