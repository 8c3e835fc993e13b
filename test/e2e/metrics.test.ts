/**
 * `GET /metrics` on real `blixard node` processes: scraped with a read-only token, parsed by a strict
 * Prometheus text parser, and its values follow what the cluster does (writes, VMs, their runners).
 * Every metric the sample Grafana dashboard queries is in a scrape.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { type Family, parse, sumOf, valueOf } from "../support/PrometheusText.js"
import { cli, cliJson, clustersPerTest, threeNodesOf, getText, root, waitFor } from "./harness.js"

const newCluster = clustersPerTest()

const threeNodes = threeNodesOf(newCluster)

const get = async (addr: string, token?: string) => {
  return getText(addr, "/metrics", token === undefined ? {} : { authorization: `Bearer ${token}` })
}

/** A strict parse of the node's exposition; fails the test on any malformed line. */
const scrape = async (addr: string, token: string): Promise<Map<string, Family>> => {
  const answer = await get(addr, token)
  expect(answer.status).toBe(200)
  expect(answer.contentType).toBe("text/plain; version=0.0.4; charset=utf-8")
  return parse(answer.text)
}

/** Every `blixard_…` series name a dashboard panel queries. */
const dashboardMetrics = (): Array<string> => {
  const dashboard = JSON.parse(fs.readFileSync(path.join(root, "nix/grafana/blixard-dashboard.json"), "utf8")) as {
    panels: Array<{ title: string; targets?: Array<{ expr: string }> }>
  }
  const names = new Set<string>()
  for (const panel of dashboard.panels) for (const target of panel.targets ?? []) for (const name of target.expr.match(/\bblixard_[a-z0-9_]+/g) ?? []) names.add(name)
  return [...names].sort()
}

describe("GET /metrics on a three-node cluster", () => {
  it("needs a token, parses strictly, and follows writes, VMs and their runners; the dashboard's metrics all exist", async () => {
    const c = await threeNodes()
    const leader = await c.converged([1, 2, 3])
    const follower = [1, 2, 3].find((id) => id !== leader)!
    const reader = await cliJson<{ token: string; role: string }>(c.node(1).addr, ["token", "create", "--role", "read-only", "--name", "prometheus"])
    expect(reader.role).toBe("read-only")
    const token = reader.token

    // Unauthenticated or with a wrong token: 401, and no metrics in the answer.
    for (const wrong of [undefined, "blxt_nope_nope"]) {
      const refused = await get(c.node(2).addr, wrong)
      expect(refused.status).toBe(401)
      expect(refused.text).toContain("BLX_UNAUTHORIZED")
      expect(refused.text).not.toContain("blixard_raft_term")
    }

    // The replicated token reaches every node: each answers, with one leader among them.
    const before = await Promise.all(c.nodes.map((n) => waitFor(`node ${n.id} to accept the read-only token`, async () => {
      const answer = await get(n.addr, token)
      return answer.status === 200 ? parse(answer.text) : undefined
    })))
    expect(before.map((m) => valueOf(m, "blixard_raft_role", { role: "leader" }))).toEqual([1, 2, 3].map((id) => (id === leader ? 1 : 0)))
    for (const m of before) {
      expect(valueOf(m, "blixard_raft_term")).toBeGreaterThan(0)
      expect(valueOf(m, "blixard_raft_leader_id")).toBe(leader)
      expect(m.get("blixard_raft_leader_changes_total")?.type).toBe("counter")
      expect(m.get("blixard_raft_storage_flush_seconds")?.type).toBe("histogram")
      expect(valueOf(m, "blixard_process_resident_memory_bytes")).toBeGreaterThan(10 * 2 ** 20)
      expect(valueOf(m, "blixard_process_cpu_seconds_total")).toBeGreaterThan(0)
    }
    // The leader's peers are the two others, and it has sent them messages.
    const leaderBefore = before[leader - 1]!
    for (const peer of [1, 2, 3].filter((id) => id !== leader)) {
      expect(valueOf(leaderBefore, "blixard_peer_messages_sent_total", { peer: String(peer) })).toBeGreaterThan(0)
      expect(valueOf(leaderBefore, "blixard_peer_round_trip_seconds_count", { peer: String(peer) })).toBeGreaterThan(0)
    }
    // Summed over the nodes: whichever node leads counts the proposals it accepts (a slow machine may elect anew).
    const accepted = (scrapes: ReadonlyArray<Map<string, Family>>) => scrapes.reduce((total, m) => total + valueOf(m, "blixard_raft_proposals_total", { outcome: "accepted" }), 0)
    const proposedBefore = accepted(before)
    const commitBefore = before.map((m) => valueOf(m, "blixard_raft_commit_index"))
    expect(sumOf(leaderBefore, "blixard_vms")).toBe(0)

    // Three VMs created and started through a follower; their runners run on whichever nodes host them.
    const names = ["m1", "m2", "m3"]
    for (const name of names) {
      expect((await cli(c.node(follower).addr, ["vm", "create", "--name", name, "--runner", c.runnerFixture(name)])).code).toBe(0)
      expect((await cli(c.node(follower).addr, ["vm", "start", name])).code).toBe(0)
    }
    const after = await waitFor("every node's metrics to show three running VMs", async () => {
      const scrapes = await Promise.all(c.nodes.map((n) => scrape(n.addr, token)))
      return scrapes.every((m) => sumOf(m, "blixard_vms", { phase: "running" }) === 3) ? scrapes : undefined
    }, 90_000)
    const vms = await cliJson<Array<{ spec: { name: string }; node: number }>>(c.node(1).addr, ["vm", "list"])
    for (const m of after) {
      // By phase and hosting node, as the replicated state says.
      for (const id of [1, 2, 3]) {
        expect(sumOf(m, "blixard_vms", { phase: "running", node: String(id) })).toBe(vms.filter((vm) => vm.node === id).length)
      }
      expect(sumOf(m, "blixard_vms", { phase: "pending" })).toBe(0)
    }
    // The writes went through the leader's log: more accepted proposals, and every commit index rose.
    expect(accepted(after)).toBeGreaterThanOrEqual(proposedBefore + 6)
    after.forEach((m, i) => expect(valueOf(m, "blixard_raft_commit_index")).toBeGreaterThanOrEqual(commitBefore[i]! + 6))
    // The follower answered the creates (forwarding them to the leader) and counted them by route and
    // status (at least: the CLI may retry a request that failed on the way).
    expect(valueOf(after[follower - 1]!, "blixard_api_requests_total", { method: "POST", route: "/v1/vms", status: "201" })).toBeGreaterThanOrEqual(3)
    expect(valueOf(after[follower - 1]!, "blixard_api_request_duration_seconds_count", { method: "POST", route: "/v1/vms" })).toBeGreaterThanOrEqual(3)
    expect(valueOf(after[follower - 1]!, "blixard_api_requests_total", { method: "POST", route: "/v1/vms/:name/start", status: "200" })).toBeGreaterThanOrEqual(3)
    // Each runner was started once by its node's agent.
    expect(after.reduce((total, m) => total + valueOf(m, "blixard_agent_vm_starts_total", { result: "ok" }), 0)).toBe(3)

    // A stop: the hosting node's agent counts it, every node's gauge moves the VM to `stopped`.
    const host = vms.find((vm) => vm.spec.name === "m1")!.node
    expect((await cli(c.node(leader).addr, ["vm", "stop", "m1"])).code).toBe(0)
    const stopped = await waitFor("the metrics to show m1 stopped", async () => {
      const scrapes = await Promise.all(c.nodes.map((n) => scrape(n.addr, token)))
      return scrapes.every((m) => sumOf(m, "blixard_vms", { phase: "stopped" }) === 1 && sumOf(m, "blixard_vms", { phase: "running" }) === 2) &&
        valueOf(scrapes[host - 1]!, "blixard_agent_vm_stops_total") >= 1
        ? scrapes
        : undefined
    }, 60_000)
    expect(valueOf(stopped[host - 1]!, "blixard_vms", { phase: "running", node: String(host) })).toBe(vms.filter((vm) => vm.node === host).length - 1)

    // Every metric the sample dashboard queries is exposed.
    const exposed = new Set(stopped.flatMap((m) => [...m.values()].flatMap((family) => family.samples.map((sample) => sample.name))))
    const queried = dashboardMetrics()
    expect(queried.length).toBeGreaterThan(20)
    expect(queried.filter((name) => !exposed.has(name))).toEqual([])
  })
})
