/**
 * Tailscale discovery with real `blixard node` processes and a fake `tailscale` binary: a small
 * script per node that prints, for `tailscale status --json`, a status document (the documented
 * `ipnstate.Status` shape) from a file the test rewrites. The "tailnet addresses" are distinct
 * loopback addresses (127.0.0.11–13) sharing one port, as the members of a real cluster share one
 * port on their tailnet addresses. No node is given a peer.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { spawn } from "node:child_process"
import { describe, expect, it } from "vitest"
import { bin, BlixardNode, cliJson, clustersPerTest, freePort, root, waitFor } from "./harness.js"

const tag = "tag:blixard"

class TailnetNode extends BlixardNode {
  constructor(id: number, port: number, dataDir: string, secretFile: string, readonly ip: string) {
    super(id, port, dataDir, secretFile, [])
  }

  override get addr(): string {
    return `${this.ip}:${this.port}`
  }
}

interface Machine {
  readonly id: number
  readonly ip: string
  readonly online: boolean
  readonly tags: ReadonlyArray<string>
}

const peerStatus = (m: Machine) => ({
  ID: `n${m.id}`,
  PublicKey: `nodekey:${String(m.id).padStart(4, "0")}`,
  HostName: `host-${m.id}`,
  DNSName: `host-${m.id}.tail0000.ts.net.`,
  OS: "linux",
  UserID: 1,
  TailscaleIPs: [m.ip, `fd7a:115c:a1e0::${m.id}`],
  ...(m.tags.length > 0 ? { Tags: m.tags } : {}),
  Online: m.online,
  Relay: "fra",
  LastSeen: "2026-12-06T00:00:00Z"
})

/** What `tailscale status --json` prints on machine `self`, seeing `machines`. */
const statusDocument = (self: Machine, machines: ReadonlyArray<Machine>) => ({
  Version: "1.76.6-fake",
  BackendState: "Running",
  TailscaleIPs: [self.ip, `fd7a:115c:a1e0::${self.id}`],
  Self: peerStatus(self),
  Health: [],
  MagicDNSSuffix: "tail0000.ts.net",
  Peer: machines.length === 0 ? null : Object.fromEntries(machines.filter((m) => m.id !== self.id).map((m) => [`nodekey:${m.id}`, peerStatus(m)]))
})

/** A fake `tailscale`: `status --json` prints the file; anything else is a usage error, as the real one. */
const fakeTailscale = (dir: string, id: number): { binary: string; statusFile: string } => {
  const binary = path.join(dir, `tailscale-${id}`)
  const statusFile = path.join(dir, `tailscale-status-${id}.json`)
  fs.writeFileSync(
    binary,
    `#!/bin/sh\nif [ "$1" = status ] && [ "$2" = --json ]; then exec cat ${JSON.stringify(statusFile)}; fi\necho "fake tailscale: unexpected arguments: $*" >&2\nexit 2\n`,
    { mode: 0o755 }
  )
  return { binary, statusFile }
}

/** Replaces a file at once (the binary never reads half of it). */
const writeAtomically = (file: string, text: string): void => {
  fs.writeFileSync(`${file}.tmp`, text)
  fs.renameSync(`${file}.tmp`, file)
}

const newCluster = clustersPerTest()

describe("tailscale discovery (fake tailscale binary, real nodes)", () => {
  // Four real nodes on two shared cores: each step has its own deadline, the whole a generous one.
  it("forms a 3-node cluster from the tailnet alone: the bootstrap node founds, a node started before its peers joins once they appear", { timeout: 360_000 }, async () => {
    const cluster = newCluster()
    const port = await freePort()
    const machines: Array<Machine> = [1, 2, 3, 4].map((id) => ({ id, ip: `127.0.0.${10 + id}`, online: true, tags: [tag] }))
    // Machines the nodes must not ask: offline, untagged, tagged otherwise (nothing listens there).
    const decoys: Array<Machine> = [
      { id: 5, ip: "127.0.0.15", online: false, tags: [tag] },
      { id: 6, ip: "127.0.0.16", online: true, tags: [] },
      { id: 7, ip: "127.0.0.17", online: true, tags: ["tag:other"] }
    ]
    const fakes = machines.map((m) => fakeTailscale(cluster.dir, m.id))
    const publish = (visible: ReadonlyArray<Machine>) =>
      machines.forEach((m, i) => writeAtomically(fakes[i]!.statusFile, JSON.stringify(statusDocument(m, visible))))
    const nodes = machines.map((m, i) => {
      const node = new TailnetNode(m.id, port, path.join(cluster.dir, `node-${m.id}`), cluster.secretFile, m.ip)
      // Nodes 1 and 4 are given --bootstrap; node 4 comes when the cluster runs, and must join it.
      node.args = ["--discovery", "tailscale", "--tailscale-binary", fakes[i]!.binary, ...(m.id === 1 || m.id === 4 ? ["--bootstrap"] : [])]
      cluster.nodes.push(node)
      return node
    })

    // Node 2 starts first, alone on the tailnet: it must neither found a cluster nor give up.
    publish([])
    nodes[1]!.start()
    await waitFor("node 2 to say it found no peers yet", async () => (nodes[1]!.output.includes("found no online machine tagged tag:blixard") ? true : undefined), 60_000)
    expect(nodes[1]!.running, cluster.logs()).toBe(true)
    expect(nodes[1]!.output).not.toContain("founded a new cluster")

    // The others come onto the tailnet; node 1 (bootstrap) and node 3 start.
    publish([...machines.slice(0, 3), ...decoys])
    nodes[0]!.start()
    nodes[2]!.start()
    const leader = await cluster.converged([1, 2, 3], 120_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${cluster.logs()}`)
    })
    expect([1, 2, 3]).toContain(leader)

    // Every member is known by its tailnet address (what each advertised), on the shared port.
    const status = await cliJson<{ clusterId?: string; members: Array<{ id: number; address: string }> }>(nodes[2]!.addr, ["cluster", "status"])
    expect(Object.fromEntries(status.members.map((m) => [m.id, m.address])), cluster.logs()).toEqual({
      1: `127.0.0.11:${port}`,
      2: `127.0.0.12:${port}`,
      3: `127.0.0.13:${port}`
    })
    // One cluster: node 1 founded it, the others joined it.
    expect(nodes[0]!.output).toContain("founded a new cluster")
    for (const node of [nodes[1]!, nodes[2]!]) expect(node.output, `node ${node.id}`).not.toContain("founded a new cluster")
    const ids = await Promise.all(nodes.slice(0, 3).map((n) => cliJson<{ clusterId?: string }>(n.addr, ["cluster", "status"])))
    expect(new Set(ids.map((s) => s.clusterId)).size).toBe(1)
    // The decoys were never asked.
    for (const node of nodes) expect(node.output).not.toMatch(/127\.0\.0\.1[567]/)

    // The cluster takes writes.
    const runner = cluster.runnerFixture("tailnet-vm")
    const created = await cliJson<{ spec: { name: string } }>(nodes[1]!.addr, ["vm", "create", "--name", "web", "--runner", runner])
    expect(created.spec.name).toBe("web")

    // A fresh node given --bootstrap while the cluster runs joins it rather than founding another.
    publish([...machines, ...decoys])
    nodes[3]!.start()
    await cluster.converged([1, 2, 3, 4], 120_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${cluster.logs()}`)
    })
    expect(nodes[3]!.output).not.toContain("founded a new cluster")
    const fourth = await cliJson<{ clusterId?: string }>(nodes[3]!.addr, ["cluster", "status"])
    expect(fourth.clusterId).toBe(ids[0]!.clusterId)
  })

  /** Runs a node with the given fake binary and returns how it ended. */
  const runUntilExit = (args: ReadonlyArray<string>, dir: string) =>
    new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn(process.execPath, [bin, "node", "--id", "1", "--bind", "127.0.0.1:1", "--data-dir", path.join(dir, "data"), "--discovery", "tailscale", ...args], {
        cwd: root,
        stdio: ["ignore", "pipe", "pipe"],
        env: { PATH: process.env.PATH ?? "" }
      })
      let output = ""
      child.stdout.on("data", (d: Buffer) => (output += d.toString()))
      child.stderr.on("data", (d: Buffer) => (output += d.toString()))
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
      child.on("exit", (code) => {
        clearTimeout(timer)
        resolve({ code, output })
      })
    })

  it("stops with BLX_DISCOVERY_FAILED, saying what to do, when the binary is missing or prints no status", async () => {
    const cluster = newCluster()
    const missing = await runUntilExit(["--tailscale-binary", path.join(cluster.dir, "no-such-tailscale")], cluster.dir)
    expect(missing.code, missing.output).toBe(1)
    expect(missing.output).toContain("BLX_DISCOVERY_FAILED")
    expect(missing.output).toContain("was not found; install Tailscale")

    const { binary, statusFile } = fakeTailscale(cluster.dir, 9)
    fs.writeFileSync(statusFile, "<html>not json</html>")
    const garbage = await runUntilExit(["--tailscale-binary", binary], cluster.dir)
    expect(garbage.code, garbage.output).toBe(1)
    expect(garbage.output).toContain("BLX_DISCOVERY_FAILED")
    expect(garbage.output).toContain("is not JSON")
  })
})
