/**
 * Real `blixard node` processes on loopback, each with its own data directory, and the real CLI
 * talking to them. Everything waits on conditions with deadlines; nothing sleeps a fixed time.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as https from "node:https"
import * as os from "node:os"
import * as path from "node:path"
import { afterEach, vi } from "vitest"
import { WebSocket } from "ws"
import { deriveKey, sign, toQuery } from "../../src/net/PeerAuth.js"
import { freePort } from "../../src/node/FreePort.js"
import { removeDir } from "../support/TempDir.js"

export { freePort }

export const root = path.resolve(import.meta.dirname, "../..")
export const bin = path.join(root, "bin/blixard.js")

/** Polls `check` until it returns a value (not undefined), or fails after `deadlineMs` saying what it waited for. */
export const waitFor = async <A>(what: string, check: () => Promise<A | undefined>, deadlineMs = 30_000): Promise<A> => {
  const until = Date.now() + deadlineMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value !== undefined) return value
    } catch (error) {
      last = error
    }
    if (Date.now() > until) {
      throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}${last !== undefined ? ` (last error: ${String(last)})` : ""}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Each started node's data directory by address: the CLI finds the node's admin token there. */
const dataDirs = new Map<string, string>()

/** The admin token of the node started at `addr` (made in its data directory on its first start). */
export const adminTokenOf = (addr: string): string => {
  const dataDir = dataDirs.get(addr)
  if (dataDir === undefined) throw new Error(`no node was started at ${addr}`)
  return fs.readFileSync(path.join(dataDir, "api-token"), "utf8").trim()
}

/** The cluster CA's file in the data directory of the node started at `addr` (made when it founded or joined). */
export const caFileOf = (addr: string): string => {
  const dataDir = dataDirs.get(addr)
  if (dataDir === undefined) throw new Error(`no node was started at ${addr}`)
  return path.join(dataDir, "tls", "ca.crt")
}

/** The cluster CA (PEM) of the node started at `addr`. */
export const caOf = (addr: string): string => fs.readFileSync(caFileOf(addr), "utf8")

/** A GET over HTTPS to the node at `addr` (its certificate checked against the cluster CA), the answer as text. */
export const getText = (
  addr: string,
  pathname: string,
  headers: Record<string, string> = {}
): Promise<{ status: number; contentType: string | undefined; text: string }> =>
  new Promise((resolve, reject) => {
    const req = https.get(`https://${addr}${pathname}`, { ca: caOf(addr), checkServerIdentity: () => undefined, headers }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("end", () =>
        resolve({ status: response.statusCode ?? 0, contentType: response.headers["content-type"], text: Buffer.concat(chunks).toString("utf8") })
      )
    })
    req.on("error", reject)
  })

/** One HTTPS request to the node at `addr`, its certificate checked against the cluster CA. */
export const request = (
  addr: string,
  method: string,
  pathname: string,
  body?: unknown,
  token?: string
): Promise<{ status: number; json: Record<string, unknown> | undefined }> =>
  new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body)
    const req = https.request(
      `https://${addr}${pathname}`,
      {
        method,
        ca: caOf(addr),
        // The nodes' certificates name them by their cluster URI; host names are not what is checked.
        checkServerIdentity: () => undefined,
        headers: { ...(text !== undefined ? { "content-type": "application/json" } : {}), ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) }
      },
      (response) => {
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("end", () => {
          let json: Record<string, unknown> | undefined
          try {
            json = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>
          } catch {
            json = undefined
          }
          resolve({ status: response.statusCode ?? 0, json })
        })
      }
    )
    req.on("error", reject)
    req.end(text)
  })

/** Runs the CLI against `addr`, with the admin token of the node there (`--data-dir`) unless `auth` says otherwise. */
export const cli = (addr: string, args: ReadonlyArray<string>, timeoutMs = 20_000, auth?: ReadonlyArray<string>): Promise<CliResult> =>
  new Promise((resolve) => {
    const dataDir = dataDirs.get(addr)
    execFile(
      process.execPath,
      [bin, ...args, "--addr", addr, ...(auth ?? (dataDir !== undefined ? ["--data-dir", dataDir] : []))],
      {
        cwd: root,
        timeout: timeoutMs,
        // The cluster CA, when the node has one: tests that give other credentials (`auth`) still verify the node.
        env: { PATH: process.env.PATH ?? "", ...(dataDir !== undefined && auth !== undefined && fs.existsSync(path.join(dataDir, "tls", "ca.crt")) ? { BLIXARD_CA_FILE: path.join(dataDir, "tls", "ca.crt") } : {}) }
      },
      (error, stdout, stderr) => {
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
      }
    )
  })

/** Runs the CLI with `--json` and parses the answer; fails with its stderr otherwise. */
export const cliJson = async <A = unknown>(addr: string, args: ReadonlyArray<string>): Promise<A> => {
  const r = await cli(addr, [...args, "--json"])
  if (r.code !== 0) throw new Error(`blixard ${args.join(" ")} --addr ${addr} exited ${r.code}: ${r.stderr.trim()}`)
  return JSON.parse(r.stdout) as A
}

export class BlixardNode {
  child: ChildProcess | undefined
  output = ""
  /** Further flags and environment variables of every start (set before the first). */
  args: ReadonlyArray<string> = []
  env: Readonly<Record<string, string>> = {}
  constructor(
    readonly id: number,
    readonly port: number,
    readonly dataDir: string,
    readonly secretFile: string,
    readonly peers: ReadonlyArray<BlixardNode>
  ) {}

  get addr(): string {
    return `127.0.0.1:${this.port}`
  }

  start(extra: ReadonlyArray<string> = this.args): void {
    const args = [
      bin,
      "node",
      "--id",
      String(this.id),
      "--bind",
      this.addr,
      "--data-dir",
      this.dataDir,
      // An empty secret file name: the node starts with no security settings at all.
      ...(this.secretFile === "" ? [] : ["--cluster-secret-file", this.secretFile]),
      // Runner fixtures live beside the data directories (`Cluster.runnerFixture`).
      "--allowed-runner-prefix",
      "/nix/store",
      "--allowed-runner-prefix",
      path.join(this.dataDir, "..", "runners"),
      "--microvm-state-dir",
      path.join(this.dataDir, "..", `microvms-${this.id}`),
      // GC roots of the test's runners stay in the test's directory, not the host's Nix store.
      "--gc-root-dir",
      path.resolve(this.dataDir, "..", `gcroots-${this.id}`),
      ...this.peers.flatMap((p) => ["--peer", `${p.id}:${p.addr}`]),
      ...extra
    ]
    this.output = ""
    dataDirs.set(this.addr, this.dataDir)
    const child = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "", ...this.env } })
    child.stdout!.on("data", (d: Buffer) => (this.output += d.toString()))
    child.stderr!.on("data", (d: Buffer) => (this.output += d.toString()))
    this.child = child
  }

  /** Sends `signal` and waits for the process to exit; returns its exit code. */
  async stop(signal: NodeJS.Signals = "SIGKILL"): Promise<number | null> {
    const child = this.child
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
    child.kill(signal)
    const code = await exited
    this.child = undefined
    return code
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null
  }

  /** Whether the process runs, or how it ended (for a failing test's message). */
  get state(): string {
    const child = this.child
    if (child === undefined) return "not running"
    if (child.signalCode !== null) return `pid ${child.pid}, killed by ${child.signalCode}`
    if (child.exitCode !== null) return `pid ${child.pid}, exited ${child.exitCode}`
    return `pid ${child.pid}, running`
  }
}

/** A cluster of `n` nodes: node 1 founds it, the others join through node 1. */
export class Cluster {
  readonly nodes: Array<BlixardNode> = []
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-e2e-"))
  readonly secretFile = path.join(this.dir, "cluster-secret")

  constructor() {
    fs.writeFileSync(this.secretFile, "e2e-cluster-secret\n", { mode: 0o600 })
  }

  /** Adds and starts the next node; `setup` may set its `args` and `env` first. */
  async add(setup?: (node: BlixardNode) => void): Promise<BlixardNode> {
    const id = this.nodes.length + 1
    const peers = this.nodes.length === 0 ? [] : [this.nodes[0]!]
    const node = new BlixardNode(id, await freePort(), path.join(this.dir, `node-${id}`), this.secretFile, peers)
    setup?.(node)
    this.nodes.push(node)
    node.start()
    return node
  }

  node(id: number): BlixardNode {
    return this.nodes[id - 1]!
  }

  /** Waits until every running node reports the same leader, and `voters` are all members. */
  async converged(voters: ReadonlyArray<number>, deadlineMs = 60_000): Promise<number> {
    return waitFor(
      `nodes ${voters.join(", ")} to agree on a leader`,
      async () => {
        const running = this.nodes.filter((n) => n.running)
        const statuses = await Promise.all(running.map((n) => cliJson<{ leader?: number; members: Array<{ id: number; role: string }> }>(n.addr, ["cluster", "status"])))
        const leader = statuses[0]?.leader
        if (leader === undefined || !statuses.every((s) => s.leader === leader)) return undefined
        const members = statuses[0]!.members.filter((m) => m.role !== "learner").map((m) => m.id).sort((a, b) => a - b)
        return JSON.stringify(members) === JSON.stringify([...voters].sort((a, b) => a - b)) ? leader : undefined
      },
      deadlineMs
    )
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop("SIGKILL")))
  }

  /** A runner honouring microvm.nix's contract: `bin/microvm-run` runs in the foreground. */
  runnerFixture(name: string): string {
    const dir = path.join(this.dir, "runners", name)
    fs.mkdirSync(path.join(dir, "bin"), { recursive: true })
    fs.writeFileSync(path.join(dir, "bin", "microvm-run"), "#!/bin/sh\necho \"microvm $BLIXARD_VM up\"\nexec sleep 1000\n", { mode: 0o755 })
    return dir
  }

  /** The nodes' combined output, for a failing test's message. */
  logs(): string {
    return this.nodes.map((n) => `--- node ${n.id} (${n.state}) ---\n${n.output.slice(-4000)}`).join("\n")
  }
}

/**
 * For a test file: a function giving each test a fresh cluster that is stopped after the test, its
 * directory removed (kept, and its nodes' logs printed, if the test failed). Several real processes
 * share two cores with everything else, so each step waits on a condition with its own deadline and
 * a test may take two minutes.
 */
/**
 * Runner process groups a test saw started (push their pids): each is killed after the test, since a
 * runner runs in its own process group, with its children, and outlives a killed node.
 */
export const runnersPerTest = (): Array<number> => {
  const pids: Array<number> = []
  afterEach(() => {
    for (const pid of pids.splice(0)) {
      try {
        process.kill(-pid, "SIGKILL")
      } catch {
        // already gone
      }
    }
  })
  return pids
}

/** Node 1 founds a cluster, nodes 2 and 3 join it; resolves once all three are voters. */
export const threeNodesOf = (newCluster: () => Cluster) => async (): Promise<Cluster> => {
  const c = newCluster()
  await c.add()
  await waitFor("node 1 to found the cluster", async () => ((await cliJson<{ leader?: number }>(c.node(1).addr, ["cluster", "status"])).leader === 1 ? true : undefined))
  await c.add()
  await c.add()
  await c.converged([1, 2, 3])
  return c
}

export const clustersPerTest = (): (() => Cluster) => {
  vi.setConfig({ testTimeout: 120_000 })
  let current: Cluster | undefined
  afterEach(async (context) => {
    if (current === undefined) return
    const failed = context.task.result?.state === "fail"
    if (failed) console.log(`${current.logs()}\n(the cluster's files are kept in ${current.dir})`)
    await current.stopAll()
    if (!failed) removeDir(current.dir)
    current = undefined
  })
  return () => {
    current = new Cluster()
    return current
  }
}

/** Opens `/raft` at `addr` as node `from` with a valid handshake and `client`'s certificate: "open", or the refusal. */
export const peerWith = (addr: string, ca: string, secret: string, clusterId: string, from: number, to: number, client: { cert: string; key: string }) =>
  new Promise<string>((resolve) => {
    const socket = new WebSocket(`wss://${addr}/raft?${toQuery(sign(deriveKey(secret), clusterId, from, to, Date.now()))}`, {
      ca,
      ...client,
      checkServerIdentity: (() => undefined) as never
    })
    socket.on("open", () => {
      socket.close()
      resolve("open")
    })
    socket.on("unexpected-response", (_request, response) => {
      let body = ""
      response.on("data", (chunk: Buffer) => (body += chunk.toString()))
      response.on("end", () => resolve(`${response.statusCode} ${body}`))
    })
    socket.on("error", (error) => resolve(error.message))
  })
