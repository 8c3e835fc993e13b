/**
 * `vm create` starts unless `--no-start`; `vm list` and `node list` ask the server for a page and
 * for filters; `cluster snapshot save` writes a file only once the whole of it is verified.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as SnapshotFile from "../../src/cluster/SnapshotFile.js"
import { ClusterState } from "../../src/cluster/ClusterState.js"
import { Unavailable } from "../../src/domain/Errors.js"
import { NodeId } from "../../src/domain/NodeId.js"
import type { VmQuery } from "../../src/domain/ListQuery.js"
import { fakeClient, nodeInfo, runBlixard, tempDir, vmRecord } from "./harness.js"

const created = vmRecord("web", { phase: "pending" })

describe("vm create", () => {
  it.effect("starts the VM by default; --no-start only declares it", () =>
    Effect.gen(function* () {
      const client = fakeClient({ createVm: () => Effect.succeed(created) })
      const base = ["vm", "create", "--name", "web", "--runner", "/nix/store/x-web"]
      expect((yield* runBlixard(base, { client: client.layer })).code).toBe(0)
      expect((yield* runBlixard([...base, "--no-start"], { client: client.layer })).code).toBe(0)
      expect(client.calls.map((c) => c.args[2])).toEqual([{ start: true }, { start: false }])
    })
  )
})

describe("vm list", () => {
  const vms = (names: ReadonlyArray<string>) => names.map((name) => vmRecord(name, { node: 1 }))
  const many = Array.from({ length: 2_500 }, (_, i) => `vm-${String(i).padStart(4, "0")}`)

  /** A server of `many` VMs answering pages as the API does. */
  const server = () =>
    fakeClient({
      listVms: (_, query?: VmQuery) =>
        Effect.sync(() => {
          const from = query?.after === undefined ? 0 : many.findIndex((n) => n > query.after!)
          return vms(many.slice(from === -1 ? many.length : from, query?.limit === undefined ? undefined : from + query.limit))
        })
    })

  it.effect("shows the first 100 and says on stderr how to get the rest", () =>
    Effect.gen(function* () {
      const client = server()
      const { code, stdout, stderr } = yield* runBlixard(["vm", "list", "--json"], { client: client.layer })
      expect(code).toBe(0)
      expect((JSON.parse(stdout) as Array<unknown>).length).toBe(100)
      expect(stderr).toContain("more follow: --after vm-0099 for the next page, --all for every one")
      expect(client.calls.map((c) => c.args[1])).toEqual([{ limit: 101 }])
    })
  )

  it.effect("--limit and --after choose the page; the last page says nothing more", () =>
    Effect.gen(function* () {
      const client = server()
      const { stdout, stderr } = yield* runBlixard(["vm", "list", "--json", "--limit", "10", "--after", "vm-2495"], { client: client.layer })
      expect((JSON.parse(stdout) as Array<{ spec: { name: string } }>).map((vm) => vm.spec.name)).toEqual(["vm-2496", "vm-2497", "vm-2498", "vm-2499"])
      expect(stderr).toBe("")
      expect(client.calls.map((c) => c.args[1])).toEqual([{ limit: 11, after: "vm-2495" }])
    })
  )

  it.effect("--all fetches every page", () =>
    Effect.gen(function* () {
      const client = server()
      const { stdout } = yield* runBlixard(["vm", "list", "--json", "--all"], { client: client.layer })
      expect((JSON.parse(stdout) as Array<{ spec: { name: string } }>).map((vm) => vm.spec.name)).toEqual(many)
      expect(client.calls.map((c) => c.args[1])).toEqual([{ limit: 1000 }, { limit: 1000, after: "vm-0999" }, { limit: 1000, after: "vm-1999" }])
    })
  )

  it.effect("--node, --phase and --label are filters the server applies", () =>
    Effect.gen(function* () {
      const client = fakeClient({ listVms: () => Effect.succeed(vms(["web"])) })
      const { code } = yield* runBlixard(["vm", "list", "--node", "2", "--phase", "running", "--label", "tier=web", "--label", "zone!=eu-1"], {
        client: client.layer
      })
      expect(code).toBe(0)
      expect(client.calls[0]?.args[1]).toEqual({
        node: 2,
        phase: "running",
        label: [
          { key: "tier", op: "eq", value: "web" },
          { key: "zone", op: "neq", value: "eu-1" }
        ],
        limit: 101
      })
    })
  )

  it.effect("a bad --label, --limit, --after or --node exits 2 before any request", () =>
    Effect.gen(function* () {
      const client = fakeClient({})
      for (const [args, flag] of [
        [["--label", "tier"], "--label"],
        [["--limit", "0"], "--limit"],
        [["--after", "Bad_Name"], "--after"],
        [["--node", "0"], "--node"]
      ] as const) {
        const { code, stderr } = yield* runBlixard(["vm", "list", ...args], { client: client.layer })
        expect(code, flag).toBe(2)
        expect(stderr).toMatch(new RegExp(`^BLX_INVALID_ARGUMENT: ${flag} `))
      }
      expect(client.calls).toEqual([])
    })
  )
})

describe("node list", () => {
  it.effect("pages by id and filters by state, health and label", () =>
    Effect.gen(function* () {
      const client = fakeClient({ listNodes: () => Effect.succeed([nodeInfo(3, "127.0.0.1:7003", { zone: "a" })]) })
      const { code, stdout } = yield* runBlixard(["node", "list", "--state", "cordoned", "--health", "up", "--label", "zone=a", "--after", "2", "--limit", "5"], {
        client: client.layer
      })
      expect(code).toBe(0)
      expect(stdout.split("\n")[1]).toMatch(/^3\s+127\.0\.0\.1:7003/)
      expect(client.calls[0]?.args[1]).toEqual({ state: "cordoned", health: "up", label: [{ key: "zone", op: "eq", value: "a" }], limit: 6, after: 2 })
    })
  )
})

describe("cluster snapshot save", () => {
  const snapshotBytes = () => {
    const state = new ClusterState()
    state.clusterId = "c1"
    state.appliedIndex = 42
    const header = new SnapshotFile.SnapshotHeader({
      magic: SnapshotFile.SnapshotMagic,
      format: SnapshotFile.SnapshotFormat,
      clusterId: "c1",
      index: 42,
      term: 5,
      node: NodeId.make(2),
      createdAt: "2026-12-06T06:00:00.000Z"
    })
    return Buffer.from([...SnapshotFile.encode(header, state.snapshotView())].join(""))
  }
  const chunks = (bytes: Buffer) =>
    Stream.fromIterable(Array.from({ length: Math.ceil(bytes.length / 100) }, (_, i) => bytes.subarray(i * 100, i * 100 + 100)))

  it.effect("writes the verified snapshot to FILE and says what it holds", () =>
    Effect.gen(function* () {
      const file = path.join(tempDir(), "cluster.snap")
      const bytes = snapshotBytes()
      const client = fakeClient({ downloadSnapshot: () => chunks(bytes) })
      const { code, stdout } = yield* runBlixard(["cluster", "snapshot", "save", file, "--json"], { client: client.layer })
      expect(code).toBe(0)
      expect(JSON.parse(stdout)).toMatchObject({ file, clusterId: "c1", index: 42, term: 5, node: 2, vms: 0, bytes: bytes.length })
      expect(fs.readFileSync(file)).toEqual(bytes)
      expect(fs.readdirSync(path.dirname(file))).toEqual(["cluster.snap"])
    })
  )

  it.effect("an answer cut short leaves FILE as it was and nothing beside it", () =>
    Effect.gen(function* () {
      const file = path.join(tempDir(), "cluster.snap")
      fs.writeFileSync(file, "the previous backup")
      const bytes = snapshotBytes()
      const client = fakeClient({ downloadSnapshot: () => chunks(bytes.subarray(0, bytes.length - 20)) })
      const { code, stderr } = yield* runBlixard(["cluster", "snapshot", "save", file], { client: client.layer })
      expect(code).toBe(1)
      expect(stderr).toMatch(/^BLX_SNAPSHOT_INVALID: the snapshot from 127\.0\.0\.1:7001: .*truncated or damaged/)
      expect(fs.readFileSync(file, "utf8")).toBe("the previous backup")
      expect(fs.readdirSync(path.dirname(file))).toEqual(["cluster.snap"])
    })
  )

  it.effect("the node's refusal is printed with its code", () =>
    Effect.gen(function* () {
      const file = path.join(tempDir(), "cluster.snap")
      const client = fakeClient({ downloadSnapshot: () => Stream.fail(new Unavailable({ message: "no Blixard node answers at 127.0.0.1:7001" })) })
      const { code, stderr } = yield* runBlixard(["cluster", "snapshot", "save", file], { client: client.layer })
      expect(code).toBe(1)
      expect(stderr).toMatch(/^BLX_UNAVAILABLE: /)
      expect(fs.existsSync(file)).toBe(false)
    })
  )
})
