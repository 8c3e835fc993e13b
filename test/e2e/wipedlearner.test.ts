/**
 * A learner whose data directory is lost while it catches up, with real processes.
 *
 * Node 4 joins a three-node cluster whose log is over 1 MiB (so the leader sends it in more than one
 * message) on a slow disk: the disk-fault library (`staller.ts`) makes each of its flushes take
 * `SlowMs`, so after its first save it has acknowledged entries but not caught up, and the leader
 * lists it as a learner with `match > 0` for about that long. It is killed then (kill -9) and started
 * again on an emptied data directory, where the leader's progress still holds what the lost log
 * acknowledged. It must not start as it is: it asks the leader to remove it, deletes the
 * certificate that removal revokes, and exits saying to start it again; started again, it joins as
 * a new learner, is promoted, and holds the cluster's VMs.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { adminTokenOf, clustersPerTest, request, threeNodesOf, waitFor } from "./harness.js"
import { buildStaller, hasCompiler } from "./staller.js"

/** How long each of node 4's flushes takes on its slow disk (under the `storageStallMs` a node reports). */
const SlowMs = 1000
/** VMs created before node 4 joins: with 64 labels each, about 6 KiB per entry, 1.5 MiB in all. */
const Vms = 250

interface Member {
  readonly id: number
  readonly role: string
  readonly match: number
}
interface StatusJson {
  readonly leader?: number
  readonly node: number
  readonly members: ReadonlyArray<Member>
}

const newCluster = clustersPerTest()

describe("a learner whose data directory is lost while it catches up", () => {
  it.skipIf(!hasCompiler)("removes itself, deletes its certificate and exits; started again it joins as a new learner and becomes a voter", { timeout: 240_000 }, async () => {
    const c = await threeNodesOf(newCluster)()
    const staller = buildStaller(c.dir)
    if (staller.library === undefined) throw new Error(staller.why)
    const leaderId = await c.converged([1, 2, 3])
    const leader = c.node(leaderId).addr
    const token = adminTokenOf(leader)

    const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`filler-${i}`, "x".repeat(63)]))
    // As a client would: a 503 (no answer in time on a loaded machine) is asked again; a retry of one
    // that was applied after all finds the VM there (409).
    const create = (name: string) =>
      waitFor(`VM ${name} to be created`, async () => {
        const answer = await request(leader, "POST", "/v1/vms", { spec: { name, source: { _tag: "Runner", path: "/nix/store/fixture-filler" }, labels }, start: false }, token)
        return answer.status === 503 ? undefined : answer.status
      })
    for (let i = 0; i < Vms; i += 25) {
      const created = await Promise.all(Array.from({ length: 25 }, (_, j) => create(`filler-${i + j}`)))
      expect(created.every((status) => status === 201 || status === 409)).toBe(true)
    }

    const slow = path.join(c.dir, "slow-4")
    fs.writeFileSync(slow, "")
    const four = await c.add((node) => {
      node.env = {
        LD_PRELOAD: staller.library!,
        STALL_FSYNC_DIR: path.resolve(node.dataDir),
        STALL_SLOW_TRIGGER: slow,
        STALL_SLOW_MS: String(SlowMs),
        // The library sees libc's calls only: none of libuv's file operations may go through io_uring.
        UV_USE_IO_URING: "0"
      }
    })
    const status = async (): Promise<StatusJson> => {
      const answer = await request(leader, "GET", "/v1/cluster", undefined, token)
      return answer.json as unknown as StatusJson
    }
    const acknowledged = await waitFor(
      "the leader to list node 4 as a learner that acknowledged entries",
      async () => (await status()).members.find((m) => m.id === 4 && m.role === "learner" && m.match > 0),
      120_000
    )
    await four.stop("SIGKILL")
    // It had not caught up (else it would have been promoted): the window this test needs.
    expect((await status()).members.find((m) => m.id === 4)?.role).toBe("learner")

    // Back on an emptied data directory, on a disk as fast as the others'.
    fs.rmSync(four.dataDir, { recursive: true, force: true })
    fs.rmSync(slow)
    four.env = {}
    four.start()
    await waitFor("node 4 to exit (not to start as it is)", async () => (four.running ? undefined : true), 90_000)
    expect(four.child?.exitCode).toBe(1)
    expect(four.output).toMatch(new RegExp(`node 4 has no Raft state .* lists it as a learner that acknowledged entries up to index \\d+`))
    expect(four.output).toMatch(/BLX_MEMBER_AMNESIA: node 4 removed itself as a learner whose data directory was emptied; .*start it again/)
    expect(fs.existsSync(path.join(four.dataDir, "tls"))).toBe(false)
    expect((await status()).members.map((m) => m.id)).not.toContain(4)
    expect(acknowledged.match).toBeGreaterThan(0)

    // Started again: a new learner, caught up from nothing, then a voter with every VM.
    four.start()
    await c.converged([1, 2, 3, 4], 120_000)
    const vms = await waitFor("node 4 to list every VM", async () => {
      const listed = await request(four.addr, "GET", `/v1/vms?limit=${Vms + 1}&stale=true`, undefined, adminTokenOf(four.addr))
      const count = Array.isArray(listed.json) ? listed.json.length : -1
      if (count !== Vms) throw new Error(`node 4 answers ${listed.status} with ${count} VMs`)
      return listed.json
    })
    expect(vms).toHaveLength(Vms)
  })
})
