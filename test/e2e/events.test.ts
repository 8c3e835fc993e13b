/**
 * `GET /v1/events` on real node processes, read by a real SSE client (`node:http`, parsing the
 * framing) and by `blixard events`: the stream survives the leader's death — the client reconnects
 * to another node with Last-Event-ID and the indices it gets have no gap and no repeat — every node
 * streams the same events, and an index the node no longer keeps begins the stream with a resync.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { bin, caFileOf, caOf, type Cluster, cli, cliJson, clustersPerTest, threeNodesOf, root, waitFor } from "./harness.js"
import { connect, type SseConnection, type SseMessage } from "../support/SseClient.js"

interface Batch {
  readonly index: number
  readonly term: number
  readonly events: ReadonlyArray<{ readonly type: string; readonly vm?: string; readonly leader?: number; readonly term?: number }>
}

const newCluster = clustersPerTest()

const leaderOf = async (addr: string): Promise<number | undefined> => (await cliJson<{ leader?: number }>(addr, ["cluster", "status"])).leader

const threeNodes = threeNodesOf(newCluster)

const batches = (messages: ReadonlyArray<SseMessage>): Array<Batch> =>
  messages.filter((m) => m.event === "message").map((m) => {
    const batch = JSON.parse(m.data) as Batch
    expect(m.id).toBe(String(batch.index))
    return batch
  })

const createVm = (c: Cluster, via: number, name: string) =>
  waitFor(`VM ${name} to be created through node ${via}`, async () => {
    const r = await cli(c.node(via).addr, ["vm", "create", "--name", name, "--runner", "/nix/store/fixture"])
    return r.code === 0 ? true : undefined
  })

/** `blixard events --json` as a child process; its stdout lines, parsed. */
const followWithCli = (args: ReadonlyArray<string>, token: string) => {
  const lines: Array<Batch & { resync?: unknown }> = []
  let stderr = ""
  let pending = ""
  // Every node's certificate is from the one cluster CA: the first node's file will do.
  const ca = caFileOf(args[args.indexOf("--addr") + 1]!)
  const child: ChildProcess = spawn(process.execPath, [bin, "events", "--json", ...args], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env.PATH ?? "", BLIXARD_API_TOKEN: token, BLIXARD_CA_FILE: ca }
  })
  child.stdout!.on("data", (d: Buffer) => {
    pending += d.toString()
    const parts = pending.split("\n")
    pending = parts.pop()!
    for (const line of parts) if (line.trim() !== "") lines.push(JSON.parse(line))
  })
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()))
  return { lines, stderr: () => stderr, child }
}

describe("the event stream of real nodes", () => {
  it("a client follows through the leader's death on another node with Last-Event-ID: no gap, no repeat; every node streams the same", async () => {
    const c = await threeNodes()
    const leader = (await c.converged([1, 2, 3]))
    const reader = await cliJson<{ token: string }>(c.node(leader).addr, ["token", "create", "--role", "read-only", "--name", "events"])
    const auth = { authorization: `Bearer ${reader.token}` }
    await createVm(c, leader, "before-1")
    await createVm(c, leader, "before-2")

    // A real SSE client on the leader, from the beginning of the log; and the CLI, from now on, with the others to fall back on.
    const first: SseConnection = await connect(`https://${c.node(leader).addr}/v1/events?since=0`, auth, caOf(c.node(leader).addr))
    expect(first.status).toBe(200)
    const others = [1, 2, 3].filter((id) => id !== leader)
    const follower = followWithCli(["--addr", c.node(leader).addr, ...others.flatMap((id) => ["--fallback", c.node(id).addr])], reader.token)
    try {
      await waitFor("the replay of the VMs created so far", async () =>
        batches(first.messages).some((b) => b.events.some((e) => e.type === "vm.created" && e.vm === "before-2")) ? true : undefined
      )
      await createVm(c, others[0]!, "live-1")
      await waitFor("the CLI to print the live VM", async () => (follower.lines.some((l) => l.events?.some((e) => e.vm === "live-1")) ? true : undefined))

      await c.node(leader).stop("SIGKILL")
      await waitFor("the stream from the killed leader to end", async () => (first.ended ? true : undefined))
      const received = batches(first.messages)
      const lastId = first.messages.at(-1)!.id
      const next = others[0]!
      const second = await connect(`https://${c.node(next).addr}/v1/events`, { ...auth, "last-event-id": lastId }, caOf(c.node(next).addr))
      expect(second.status).toBe(200)
      const newLeader = await waitFor("a new leader", async () => {
        const l = await leaderOf(c.node(next).addr)
        return l !== undefined && l !== leader ? l : undefined
      })
      await createVm(c, others[1]!, "after-1")
      await createVm(c, next, "after-2")
      await waitFor("the VMs created after the failover on the resumed stream", async () =>
        batches(second.messages).some((b) => b.events.some((e) => e.vm === "after-2")) ? true : undefined
      )
      await waitFor("the CLI to print them too", async () => (follower.lines.some((l) => l.events?.some((e) => e.vm === "after-2")) ? true : undefined))
      const resumed = batches(second.messages)
      second.close()
      first.close()

      const upTo = resumed.at(-1)!.index
      // The whole history, as each survivor has it (a fresh client from index 0), at least as far as the resumed stream went.
      // The cluster goes on writing meanwhile (the agents report the fixture VMs' phases), so one replay may end later than the other.
      const replays = await Promise.all(
        others.map(async (id) => {
          const full = await connect(`https://${c.node(id).addr}/v1/events?since=0`, auth, caOf(c.node(id).addr))
          await waitFor(`node ${id}'s replay to reach index ${upTo}`, async () => ((batches(full.messages).at(-1)?.index ?? 0) >= upTo ? true : undefined))
          full.close()
          return batches(full.messages)
        })
      )
      // Followers derive the same events, entry by entry, as the node the client first read: compared as far as both replays went.
      const common = Math.min(...replays.map((r) => r.at(-1)!.index))
      const histories = replays.map((r) => r.filter((b) => b.index <= common))
      expect(histories[0]).toEqual(histories[1])
      const history = histories[0]!
      const expected = history.filter((b) => b.index <= upTo)
      const got = [...received, ...resumed]
      // No gap, no repeat: the two connections together are exactly the history, in order.
      expect(got.map((b) => b.index)).toEqual(expected.map((b) => b.index))
      expect(got).toEqual(expected)
      expect(received.length).toBeGreaterThan(0)
      expect(resumed.length).toBeGreaterThan(0)
      // The failover itself is in the stream: the new leader's first entry, of a later term.
      const change = resumed.flatMap((b) => b.events).find((e) => e.type === "leader.changed")
      expect(change).toMatchObject({ leader: newLeader })
      const types = new Set(history.flatMap((b) => b.events.map((e) => e.type)))
      for (const type of ["node.joined", "node.promoted", "node.registered", "leader.changed", "token.created", "vm.created", "vm.placed"]) expect(types).toContain(type)

      // The CLI reconnected on its own, and printed each index once, in order, with nothing missing.
      const printed = follower.lines.filter((l) => l.resync === undefined)
      const fromCli = printed.map((l) => l.index).filter((index) => index <= common)
      expect(fromCli).toEqual(history.filter((b) => b.index >= fromCli[0]! && b.index <= fromCli.at(-1)!).map((b) => b.index))
      expect(follower.stderr()).toContain("reconnecting to")
    } finally {
      follower.child.kill("SIGKILL")
    }
  })

  it("an index the node no longer keeps begins the stream with a resync, then the stream goes on", async () => {
    const c = newCluster()
    const config = path.join(c.dir, "events.json")
    fs.writeFileSync(config, JSON.stringify({ events: { history: 4, heartbeatMs: 200 } }))
    const node = await c.add((n) => (n.env = { BLIXARD_CONFIG: config }))
    await waitFor("the node to lead", async () => ((await leaderOf(node.addr)) === 1 ? true : undefined))
    for (let i = 1; i <= 8; i++) await createVm(c, 1, `vm-${i}`)
    const token = (await cliJson<{ token: string }>(node.addr, ["token", "create", "--role", "read-only"])).token
    const stream = await connect(`https://${node.addr}/v1/events?since=1`, { authorization: `Bearer ${token}` }, caOf(node.addr))
    try {
      await waitFor("the resync", async () => (stream.messages.length > 0 ? true : undefined))
      const resync = stream.messages[0]!
      expect(resync.event).toBe("resync")
      const data = JSON.parse(resync.data) as { index: number; reason: string }
      expect(data.reason).toBe("compacted")
      expect(resync.id).toBe(String(data.index))
      await waitFor("a heartbeat", async () => (stream.comments > 0 ? true : undefined))
      await createVm(c, 1, "vm-after")
      await waitFor("the live event after the resync", async () => (batches(stream.messages).some((b) => b.events.some((e) => e.vm === "vm-after")) ? true : undefined))
      expect(Number(stream.messages.at(-1)!.id)).toBeGreaterThan(data.index)

      // `vm list --watch` prints the list, then the list again as it changes.
      const watch = spawn(process.execPath, [bin, "vm", "list", "--watch", "--json", "--addr", node.addr], {
        cwd: root,
        stdio: ["ignore", "pipe", "pipe"],
        env: { PATH: process.env.PATH ?? "", BLIXARD_API_TOKEN: token, BLIXARD_CA_FILE: caFileOf(node.addr) }
      })
      let watched = ""
      watch.stdout!.on("data", (d: Buffer) => (watched += d.toString()))
      try {
        const lists = () => watched.split("\n").filter((l) => l.trim() !== "").map((l) => (JSON.parse(l) as Array<{ spec: { name: string } }>).map((vm) => vm.spec.name))
        await waitFor("the first list", async () => (lists().length > 0 ? true : undefined))
        expect(lists()[0]).toHaveLength(9)
        expect(lists()[0]).not.toContain("vm-watched")
        await createVm(c, 1, "vm-watched")
        await waitFor("a list with the new VM", async () => (lists().at(-1)?.includes("vm-watched") ? true : undefined))
        await cli(node.addr, ["vm", "delete", "vm-1"])
        await waitFor("a list without the deleted VM", async () => (lists().at(-1)?.includes("vm-1") === false ? true : undefined))
      } finally {
        watch.kill("SIGKILL")
      }

      // An anonymous client is refused with the API's error; with --json, the CLI's own errors are JSON.
      const anonymous = await connect(`https://${node.addr}/v1/events`, {}, caOf(node.addr))
      expect(anonymous.status).toBe(401)
      const cliRun = await cli(node.addr, ["events", "--since", "1", "--json"], 3_000, ["--token-file", "/nonexistent"])
      expect(cliRun.code).toBe(2)
      expect(JSON.parse(cliRun.stderr)).toMatchObject({ error: { code: "BLX_INVALID_ARGUMENT" } })
    } finally {
      stream.close()
    }
  })
})
