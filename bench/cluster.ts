/**
 * Three real `blixard node` processes on loopback with full durability, measured over the REST API:
 * committed writes/s and latency with 1 and 64 concurrent clients (closed loop, keep-alive, each
 * write a VM create of ~150 bytes sent to the leader), and the time from kill -9 of the leader to
 * the next successful write (sent to a survivor, retried until it succeeds). Before the measured runs
 * the cluster takes `seconds` of 64-client writes that are not counted: a node process starts with
 * unoptimized code (the JIT compiles the hot paths within the first few thousand writes), and what
 * a cluster does for its whole life is what we want to know, not its first seconds.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { freePort } from "../src/node/FreePort.js"

const root = path.resolve(import.meta.dirname, "../..")
export const bin = path.join(root, "bin/blixard.js")


export const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })

/**
 * What a benchmark client needs to speak TLS to a system under test: the CA that signed the servers'
 * certificates and, for a server that demands one (etcd's `--client-cert-auth`), a client certificate.
 */
export interface ClientTls {
  readonly ca: string
  readonly cert?: string
  readonly key?: string
}

const tlsAgents = new WeakMap<ClientTls, https.Agent>()

/** One keep-alive HTTPS agent per client identity, as `agent` is for plain HTTP. */
const agentFor = (client: ClientTls): https.Agent => {
  let found = tlsAgents.get(client)
  if (found === undefined) {
    found = new https.Agent({ keepAlive: true, maxSockets: 256, ...client })
    tlsAgents.set(client, found)
  }
  return found
}

/** The benchmarks' admin token, given to every node they start (`benchTokenFile`) and sent with every request. */
export const benchToken = randomBytes(32).toString("base64url")

/** Writes the benchmarks' admin token into `dir` and answers the file, for the nodes' `apiTokenFile`. */
export const benchTokenFile = (dir: string): string => {
  const file = path.join(dir, "api-token")
  fs.writeFileSync(file, `${benchToken}\n`, { mode: 0o600 })
  return file
}

/**
 * One request through Node's HTTP client; `options.token: false` sends it without the benchmarks'
 * token, `options.bearer` with another credential (a node's) instead; `options.tls` over HTTPS.
 */
export const request = (
  port: number,
  method: string,
  pathname: string,
  body?: unknown,
  options: { readonly timeoutMs?: number; readonly token?: boolean; readonly bearer?: string; readonly tls?: ClientTls | undefined } = {}
): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body)
    const req = (options.tls === undefined ? http : https).request(
      {
        host: "127.0.0.1",
        port,
        method,
        path: pathname,
        agent: options.tls === undefined ? agent : agentFor(options.tls),
        headers: {
          ...(options.token === false ? {} : { authorization: `Bearer ${options.bearer ?? benchToken}` }),
          ...(data ? { "content-type": "application/json", "content-length": Buffer.byteLength(data) } : {})
        }
      },
      (res) => {
        let text = ""
        res.on("data", (c: Buffer) => (text += c.toString()))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }))
      }
    )
    req.on("error", reject)
    req.setTimeout(options.timeoutMs ?? 5000, () => req.destroy(new Error("timeout")))
    if (data) req.write(data)
    req.end()
  })

/**
 * One keep-alive HTTP/1.1 connection sending POSTs one at a time (a closed-loop client), written
 * directly on a socket: the load generator shares the two cores with the three nodes, and Node's
 * `http` client spent ~0.07 ms of CPU per request (about 15 % of everything the machine did per
 * write at 64 clients), much of it in machinery a fixed-format client does not need. Our server always
 * answers with a `Content-Length`, which is all this reader relies on. With `client` the connection
 * is TLS (server certificate checked against `client.ca`, and its host name against 127.0.0.1).
 */
export class Connection {
  private readonly socket: net.Socket
  private buffered: Buffer = Buffer.alloc(0)
  private waiting: ((response: { status: number; body: string }) => void) | undefined
  private failed: ((error: Error) => void) | undefined

  /** `headers`: extra header lines, each ending in CRLF (by default the benchmarks' bearer token). */
  constructor(
    readonly port: number,
    private readonly headers = `Authorization: Bearer ${benchToken}\r\n`,
    client?: ClientTls
  ) {
    this.socket =
      client === undefined
        ? net.connect({ host: "127.0.0.1", port, noDelay: true })
        : tls.connect({ host: "127.0.0.1", port, ...client }).setNoDelay(true)
    this.socket.on("data", (chunk: Buffer) => this.read(chunk))
    this.socket.on("error", (error) => this.failed?.(error))
    this.socket.on("close", () => this.failed?.(new Error("connection closed")))
  }

  post(pathname: string, body: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      this.waiting = resolve
      this.failed = reject
      this.socket.write(
        `POST ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\n${this.headers}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
      )
    })
  }

  private read(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
    const end = this.buffered.indexOf("\r\n\r\n")
    if (end < 0) return
    const head = this.buffered.subarray(0, end).toString("latin1")
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
    if (this.buffered.length < end + 4 + length) return
    const body = this.buffered.subarray(end + 4, end + 4 + length).toString()
    this.buffered = this.buffered.subarray(end + 4 + length)
    const resolve = this.waiting
    this.waiting = undefined
    this.failed = undefined
    resolve?.({ status: Number(head.slice(9, 12)), body })
  }

  close(): void {
    this.socket.destroy()
  }
}

/** Declared only (`start: false`): the runner does not exist, and a write benchmark should not make the agents try it. */
const spec = (name: string) => ({
  spec: { name, source: { _tag: "Runner", path: "/nix/store/bench-runner" }, vcpus: 1, memoryMiB: 16, labels: {}, constraints: [], restartPolicy: "never" },
  start: false
})

interface Node {
  id: number
  port: number
  child: ChildProcess | undefined
  dataDir: string
}

export const until = async <A>(what: string, f: () => Promise<A | undefined>, ms = 30_000): Promise<A> => {
  const end = Date.now() + ms
  for (;;) {
    try {
      const v = await f()
      if (v !== undefined) return v
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`bench: timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** CPU time (user + system, all threads) a process has used so far, in ms (Linux `/proc`). */
export const cpuMs = (pid: number | undefined): number => {
  if (pid === undefined) return 0
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return (Number(fields[11]) + Number(fields[12])) * 10
  } catch {
    return 0
  }
}

export const leaderOf = async (port: number, client?: ClientTls): Promise<number | undefined> => {
  const r = await request(port, "GET", "/v1/cluster", undefined, { tls: client })
  return r.status === 200 ? (JSON.parse(r.body) as { leader?: number }).leader : undefined
}

export const benchCluster = async (seconds = 5, failovers = 10) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-bench-cluster-"))
  const secret = path.join(dir, "secret")
  fs.writeFileSync(secret, "bench-secret")
  const tokenFile = benchTokenFile(dir)
  const nodes: Array<Node> = []
  const start = (n: Node, peers: ReadonlyArray<Node>) => {
    n.child = spawn(
      process.execPath,
      [bin, "node", "--id", String(n.id), "--bind", `127.0.0.1:${n.port}`, "--insecure-plaintext", "--data-dir", n.dataDir, "--cluster-secret-file", secret, "--api-token-file", tokenFile, "--log-level", "warning", ...peers.flatMap((p) => ["--peer", `${p.id}:127.0.0.1:${p.port}`])],
      { stdio: "ignore" }
    )
  }
  try {
    for (const id of [1, 2, 3]) nodes.push({ id, port: await freePort(), child: undefined, dataDir: path.join(dir, `n${id}`) })
    start(nodes[0]!, [])
    await until("node 1", () => leaderOf(nodes[0]!.port))
    start(nodes[1]!, [nodes[0]!])
    start(nodes[2]!, [nodes[0]!])
    await until("3 voters", async () => {
      const r = await request(nodes[0]!.port, "GET", "/v1/cluster")
      const s = JSON.parse(r.body) as { members: Array<{ role: string }> }
      return s.members.filter((m) => m.role === "leader" || m.role === "follower").length === 3 ? true : undefined
    })
    let counter = 0
    const results: Array<Record<string, unknown>> = []
    const writeLoop = async (port: number, clients: number, deadline: number, latencies: Array<number>) => {
      let errors = 0
      await Promise.all(
        Array.from({ length: clients }, async () => {
          const connection = new Connection(port)
          try {
            while (performance.now() < deadline) {
              const t0 = performance.now()
              const r = await connection.post("/v1/vms", JSON.stringify(spec(`b${++counter}`)))
              if (r.status === 201) latencies.push(performance.now() - t0)
              else errors++
            }
          } finally {
            connection.close()
          }
        })
      )
      return errors
    }
    await writeLoop(nodes[(await until("a leader", () => leaderOf(nodes[0]!.port))) - 1]!.port, 64, performance.now() + seconds * 1000, [])
    for (const clients of [1, 64]) {
      const leader = await until("a leader", () => leaderOf(nodes[0]!.port))
      const port = nodes[leader - 1]!.port
      const latencies: Array<number> = []
      const cpuBefore = nodes.map((n) => cpuMs(n.child?.pid))
      const clientBefore = process.cpuUsage()
      const errors = await writeLoop(port, clients, performance.now() + seconds * 1000, latencies)
      const client = process.cpuUsage(clientBefore)
      latencies.sort((a, b) => a - b)
      const q = (p: number) => Number((latencies[Math.floor(p * (latencies.length - 1))] ?? 0).toFixed(2))
      // Where the CPU went: per committed write, the leader's process and each follower's.
      const cpuPerWrite = nodes.map((n, i) => Number(((cpuMs(n.child?.pid) - cpuBefore[i]!) / Math.max(1, latencies.length)).toFixed(2)))
      results.push({
        name: `3 nodes, writes through the API, ${clients} client(s)`,
        writesPerSecond: Math.round(latencies.length / seconds),
        p50Ms: q(0.5),
        p99Ms: q(0.99),
        errors,
        cpuMsPerWrite: {
          leader: cpuPerWrite[leader - 1],
          followers: cpuPerWrite.filter((_, i) => i !== leader - 1),
          loadGenerator: Number(((client.user + client.system) / 1000 / Math.max(1, latencies.length)).toFixed(3))
        }
      })
    }
    const failoverMs: Array<number> = []
    for (let i = 0; i < failovers; i++) {
      const leader = await until("a leader", () => leaderOf(nodes[0]!.port).catch(() => leaderOf(nodes[1]!.port)))
      const victim = nodes[leader - 1]!
      const survivor = nodes.find((n) => n !== victim)!
      const killed = performance.now()
      victim.child!.kill("SIGKILL")
      await until("a write after the kill", async () => {
        const r = await request(survivor.port, "POST", "/v1/vms", spec(`f${++counter}`))
        return r.status === 201 ? true : undefined
      })
      failoverMs.push(performance.now() - killed)
      start(victim, nodes.filter((n) => n !== victim))
      await until("the victim to rejoin", async () => ((await leaderOf(victim.port)) !== undefined ? true : undefined))
    }
    failoverMs.sort((a, b) => a - b)
    results.push({ name: `kill -9 of the leader → next successful write (${failovers} runs)`, medianMs: Math.round(failoverMs[Math.floor(failoverMs.length / 2)]!), minMs: Math.round(failoverMs[0]!), maxMs: Math.round(failoverMs.at(-1)!) })
    return results
  } finally {
    for (const n of nodes) n.child?.kill("SIGKILL")
    agent.destroy()
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  }
}
