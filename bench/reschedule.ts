/**
 * kill -9 of the node hosting a VM → the VM running on another node, with the default timeouts
 * (fencing 3 s, reschedule 6 s): three real `blixard node` processes, a fixture runner honouring
 * microvm.nix's runner contract, median of `rounds` kills.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { freePort } from "../src/node/FreePort.js"
import { agent, benchTokenFile, bin, leaderOf, request, until } from "./cluster.js"

interface Host {
  readonly id: number
  readonly port: number
  readonly config: string
  child: ChildProcess | undefined
}

export const benchReschedule = async (rounds = 3) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-bench-reschedule-"))
  const secret = path.join(dir, "secret")
  fs.writeFileSync(secret, "bench-secret")
  const tokenFile = benchTokenFile(dir)
  const runner = path.join(dir, "runner")
  fs.mkdirSync(path.join(runner, "bin"), { recursive: true })
  fs.writeFileSync(path.join(runner, "bin", "microvm-run"), "#!/bin/sh\nexec sleep 3600\n", { mode: 0o755 })
  const hosts: Array<Host> = []
  const pids = new Set<number>()
  try {
    for (const id of [1, 2, 3]) {
      const port = await freePort()
      const config = path.join(dir, `n${id}.json`)
      hosts.push({ id, port, config, child: undefined })
      fs.writeFileSync(
        config,
        JSON.stringify({
          id,
          bind: `127.0.0.1:${port}`,
          dataDir: path.join(dir, `n${id}`),
          microvmStateDir: path.join(dir, `vms${id}`),
          clusterSecretFile: secret,
          apiTokenFile: tokenFile,
          // Loopback, plain HTTP: the benchmark measures rescheduling, and its requests are plain HTTP.
          insecurePlaintext: true,
          allowedRunnerPrefixes: [runner],
          capacity: { vcpus: 4, memoryMiB: 4096 },
          logLevel: "warning",
          ...(id === 1 ? {} : { peers: [{ id: 1, address: `127.0.0.1:${hosts[0]!.port}` }] })
        })
      )
    }
    const start = (h: Host) => (h.child = spawn(process.execPath, [bin, "node", "--config", h.config], { stdio: "ignore" }))
    start(hosts[0]!)
    await until("node 1", () => leaderOf(hosts[0]!.port))
    start(hosts[1]!)
    start(hosts[2]!)
    const vm = async (port: number) => JSON.parse((await request(port, "GET", "/v1/vms/web")).body) as { node?: number; status: { phase: string; pid?: number } }
    await until("3 registered nodes", async () => {
      const r = await request(hosts[0]!.port, "GET", "/v1/nodes")
      return r.status === 200 && (JSON.parse(r.body) as Array<unknown>).length === 3 ? true : undefined
    })
    const spec = { spec: { name: "web", source: { _tag: "Runner", path: runner }, vcpus: 1, memoryMiB: 256, labels: {}, constraints: [], restartPolicy: "always" } }
    // Created running (POST /v1/vms starts a VM unless `"start": false`).
    await request(hosts[0]!.port, "POST", "/v1/vms", spec)
    const times: Array<number> = []
    for (let round = 0; round < rounds; round++) {
      const asker = () => hosts.find((h) => h.child !== undefined && h.child.exitCode === null)!
      const running = await until("web to run", async () => {
        const v = await vm(asker().port)
        return v.status.phase === "running" && v.node !== undefined ? v : undefined
      }, 60_000)
      if (running.status.pid !== undefined) pids.add(running.status.pid)
      const victim = hosts[running.node! - 1]!
      const killed = performance.now()
      victim.child!.kill("SIGKILL")
      victim.child = undefined
      await until("web to run elsewhere", async () => {
        const v = await vm(asker().port)
        return v.node !== victim.id && v.status.phase === "running" ? v : undefined
      }, 60_000)
      times.push(performance.now() - killed)
      start(victim)
      await until("the victim back", async () => ((await leaderOf(victim.port)) !== undefined ? true : undefined), 60_000)
    }
    const v = await vm(hosts.find((h) => h.child !== undefined)!.port)
    if (v.status.pid !== undefined) pids.add(v.status.pid)
    times.sort((a, b) => a - b)
    return [
      {
        name: `kill -9 of a VM's host → the VM running elsewhere, default timeouts (${rounds} kills)`,
        medianMs: Math.round(times[Math.floor(times.length / 2)]!),
        minMs: Math.round(times[0]!),
        maxMs: Math.round(times.at(-1)!)
      }
    ]
  } finally {
    for (const h of hosts) h.child?.kill("SIGKILL")
    for (const pid of pids) {
      try {
        process.kill(-pid, "SIGKILL")
      } catch {
        // gone
      }
    }
    agent.destroy()
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  }
}
