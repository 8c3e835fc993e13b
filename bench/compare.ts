/**
 * `npm run bench -- compare`: etcd and Blixard side by side, in one run, on this machine, driven by
 * the same load generator (`Connection`: closed-loop clients, HTTP/1.1 keep-alive on raw sockets,
 * each write a POST sent to the leader). Absolute figures do not travel between machines; the
 * ratios printed at the end do, because both systems shared these cores, this disk and this
 * generator within minutes of each other.
 *
 * What is compared, like with like:
 * - three members on loopback, each with its own data directory on the same disk, full durability
 *   (etcd fsyncs its WAL per batch; Blixard its SQLite log, `synchronous=FULL`);
 * - a write of the same size on both sides: Blixard's VM create body, and an etcd `put` through its
 *   HTTP gateway (`/v3/kv/put`) whose JSON body is padded to the same byte length;
 * - the same request headers on both sides but Blixard's bearer token (etcd with its auth off
 *   refuses any token), which etcd's requests go without;
 * - the same transport security on both sides, in two modes (`BENCH_TLS=0`: plaintext only, `1`: TLS
 *   only, unset: both, one after the other). Plaintext: etcd on `http://` URLs, Blixard with
 *   `--insecure-plaintext`. TLS: etcd with client and peer TLS and client-certificate checks on both
 *   (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, and their `--peer-`
 *   twins), from a CA and certificates the benchmark makes with the project's own CA code
 *   (`src/net/Tls.ts`; ECDSA P-256, as Blixard's); Blixard in its default mode, where the founder
 *   makes the cluster CA and the others get certificates from it, peers speak mutual TLS and the API
 *   HTTPS. The load generator speaks TLS to both and checks each server against its CA; it presents a
 *   client certificate to etcd, which demands one, and its bearer token to Blixard, whose API
 *   authenticates by token. Connections are kept alive, so handshakes are not what is measured;
 * - each system's shipped timing defaults (etcd: 100 ms heartbeats, 1 s election timeout; Blixard:
 *   50 ms ticks, 10–20 ticks to an election), since that is what a user gets.
 *
 * etcd comes from Debian's `etcd-server` (`apt-get install etcd-server`); without an `etcd` binary on
 * the PATH the benchmark says so and measures nothing.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { randomUUID } from "node:crypto"
import * as Tls from "../src/net/Tls.js"
import { freePort } from "../src/node/FreePort.js"
import { benchToken, benchTokenFile, bin, type ClientTls, Connection, cpuMs, leaderOf, request, until } from "./cluster.js"

/** One member process of either system. */
export interface Member {
  readonly id: number
  readonly port: number
  readonly peerPort: number
  readonly dataDir: string
  child: ChildProcess | undefined
}

/** What the load generator and the measurements need of a system under test. */
export interface System {
  readonly name: string
  readonly members: ReadonlyArray<Member>
  /** Starts (or restarts) member `m`. */
  readonly start: (m: Member) => void
  /** The member currently leading, or undefined while there is none. */
  readonly leader: () => Promise<Member | undefined>
  /** The path and body of the n-th write; every body has the same length. */
  readonly write: (n: number) => { readonly path: string; readonly body: string }
  readonly ok: (status: number) => boolean
  /** Extra request header lines for the load generator (CRLF-terminated), and whether they hold the token. */
  readonly headers: string
  readonly token: boolean
  /** Further processes that belong to a member (Blixard's fencing watchdog). */
  readonly companions: (m: Member) => ReadonlyArray<number>
  /** Whether it runs with TLS, and then what a client needs (undefined until the system has a CA). */
  readonly tls: boolean
  readonly client: () => ClientTls | undefined
}

/** A request to `system`, over HTTPS when it runs with TLS. */
export const requestTo = (
  system: System,
  port: number,
  method: string,
  pathname: string,
  body?: unknown,
  options: { readonly timeoutMs?: number; readonly token?: boolean } = {}
) => request(port, method, pathname, body, { ...options, tls: system.client() })

/** etcd's TLS files for a run: one CA, a certificate per member (server and peer), one for the load generator. */
interface EtcdCerts {
  readonly caFile: string
  readonly member: (m: Member) => { readonly certFile: string; readonly keyFile: string }
  readonly client: ClientTls
}

/**
 * Makes etcd's certificates in `dir` with the project's CA code. Each names 127.0.0.1 and localhost
 * (etcd checks a peer's certificate against its address) and serves both ends of a connection, as
 * etcd's peers and its gateway, which dials its own gRPC port with `--cert-file`, need.
 */
const etcdCerts = async (dir: string, members: ReadonlyArray<Member>): Promise<EtcdCerts> => {
  const tlsDir = path.join(dir, "tls")
  fs.mkdirSync(tlsDir, { recursive: true, mode: 0o700 })
  const clusterId = randomUUID()
  const ca = await Effect.runPromise(Tls.createCa(clusterId))
  const issue = async (node: number) => {
    const request = await Effect.runPromise(Tls.createRequest(node))
    const cert = await Effect.runPromise(Tls.signRequest({ ...ca, clusterId, node, csr: request.csr, names: ["127.0.0.1", "localhost"] }))
    return { cert, key: request.key }
  }
  const write = (name: string, text: string) => {
    const file = path.join(tlsDir, name)
    fs.writeFileSync(file, text, { mode: 0o600 })
    return file
  }
  const caFile = write("ca.crt", ca.ca)
  const files = new Map<number, { certFile: string; keyFile: string }>()
  for (const m of members) {
    const issued = await issue(m.id)
    files.set(m.id, { certFile: write(`e${m.id}.crt`, issued.cert), keyFile: write(`e${m.id}.key`, issued.key) })
  }
  const client = await issue(1000)
  return { caFile, member: (m) => files.get(m.id)!, client: { ca: ca.ca, cert: client.cert, key: client.key } }
}

const bodyBytes = (s: string) => Buffer.byteLength(s)

const blixardWrite = (n: number): { path: string; body: string } => ({
  path: "/v1/vms",
  body: JSON.stringify({
    spec: {
      name: `b${n}`,
      source: { _tag: "Runner", path: "/nix/store/bench-runner" },
      vcpus: 1,
      memoryMiB: 16,
      labels: {},
      constraints: [],
      restartPolicy: "never"
    },
    // Declared only: the runner does not exist, and the agents must not spend the run trying it.
    start: false
  })
})

/** An etcd put whose body is as long as Blixard's n-th write: the value is padded to match. */
const etcdWrite = (n: number): { path: string; body: string } => {
  const target = bodyBytes(blixardWrite(n).body)
  const key = Buffer.from(`/bench/b${n}`).toString("base64")
  const frame = (value: string) => JSON.stringify({ key, value })
  // base64 grows in steps of 4 characters per 3 bytes: pad the raw value, then trim with spaces in
  // the JSON (whitespace is legal between tokens and costs the same bytes on the wire).
  let raw = 1
  while (bodyBytes(frame(Buffer.alloc(raw + 3, 120).toString("base64"))) <= target) raw += 3
  const body = frame(Buffer.alloc(raw, 120).toString("base64"))
  return { path: "/v3/kv/put", body: body.length < target ? body.replace("{", "{" + " ".repeat(target - body.length)) : body }
}

export const etcdSystem = (dir: string, members: ReadonlyArray<Member>, certs?: EtcdCerts): System => {
  const scheme = certs === undefined ? "http" : "https"
  const cluster = members.map((m) => `e${m.id}=${scheme}://127.0.0.1:${m.peerPort}`).join(",")
  const client = certs?.client
  const tlsFlags = (m: Member) => {
    if (certs === undefined) return []
    const { certFile, keyFile } = certs.member(m)
    return [
      "--cert-file", certFile, "--key-file", keyFile, "--trusted-ca-file", certs.caFile, "--client-cert-auth",
      "--peer-cert-file", certFile, "--peer-key-file", keyFile, "--peer-trusted-ca-file", certs.caFile, "--peer-client-cert-auth"
    ]
  }
  return {
    name: "etcd",
    members,
    tls: certs !== undefined,
    client: () => client,
    start: (m) => {
      const fresh = !fs.existsSync(path.join(m.dataDir, "member"))
      m.child = spawn(
        "etcd",
        [
          "--name", `e${m.id}`,
          "--data-dir", m.dataDir,
          "--listen-client-urls", `${scheme}://127.0.0.1:${m.port}`,
          "--advertise-client-urls", `${scheme}://127.0.0.1:${m.port}`,
          "--listen-peer-urls", `${scheme}://127.0.0.1:${m.peerPort}`,
          "--initial-advertise-peer-urls", `${scheme}://127.0.0.1:${m.peerPort}`,
          "--initial-cluster", cluster,
          "--initial-cluster-token", path.basename(dir),
          "--initial-cluster-state", fresh ? "new" : "existing",
          "--log-level", "error",
          "--logger", "zap",
          ...tlsFlags(m)
        ],
        { stdio: "ignore" }
      )
    },
    leader: async () => {
      for (const m of members) {
        if (m.child === undefined || m.child.exitCode !== null || m.child.signalCode !== null) continue
        const r = await request(m.port, "POST", "/v3/maintenance/status", {}, { token: false, tls: client }).catch(() => undefined)
        if (r?.status !== 200) continue
        const s = JSON.parse(r.body) as { header?: { member_id?: string }; leader?: string }
        if (s.leader !== undefined && s.leader === s.header?.member_id) return m
      }
      return undefined
    },
    write: etcdWrite,
    headers: "",
    token: false,
    ok: (status) => status === 200,
    companions: () => []
  }
}

/**
 * Blixard in plain mode (`tls` false), as etcd beside it then runs, or in its default TLS mode: node 1
 * founds the cluster and makes its CA, which the clients then trust.
 */
export const blixardSystem = (dir: string, members: ReadonlyArray<Member>, tls = false): System => {
  const secret = path.join(dir, "secret")
  fs.writeFileSync(secret, "bench-secret")
  const tokenFile = benchTokenFile(dir)
  let trusted: ClientTls | undefined
  const caFile = path.join(Tls.tlsDir(members[0]!.dataDir), Tls.caFileName)
  const client = () => {
    if (tls && trusted === undefined && fs.existsSync(caFile)) trusted = { ca: fs.readFileSync(caFile, "utf8") }
    return trusted
  }
  return {
    name: "blixard",
    members,
    tls,
    client,
    start: (m) => {
      const peers = m.id === 1 && !fs.existsSync(m.dataDir) ? [] : members.filter((p) => p !== m)
      m.child = spawn(
        process.execPath,
        [
          bin, "node", "--id", String(m.id), "--bind", `127.0.0.1:${m.port}`, "--data-dir", m.dataDir,
          "--cluster-secret-file", secret, "--api-token-file", tokenFile, "--log-level", "warning",
          // Plain HTTP on loopback when etcd beside it runs without TLS.
          ...(tls ? [] : ["--insecure-plaintext"]),
          ...peers.flatMap((p) => ["--peer", `${p.id}:127.0.0.1:${p.port}`])
        ],
        { stdio: "ignore" }
      )
    },
    leader: async () => {
      for (const m of members) {
        const id = await leaderOf(m.port, client()).catch(() => undefined)
        if (id !== undefined && id !== 0) return members.find((x) => x.id === id)
      }
      return undefined
    },
    write: blixardWrite,
    headers: `Authorization: Bearer ${benchToken}\r\n`,
    token: true,
    ok: (status) => status === 201,
    companions: (m) => {
      try {
        // The watchdog's record (`WatchdogRecord`): its process identity names its pid.
        const record = JSON.parse(fs.readFileSync(path.join(m.dataDir, "fencing", "watchdog.json"), "utf8")) as { process?: { pid?: unknown } }
        return typeof record.process?.pid === "number" ? [record.process.pid] : []
      } catch {
        return []
      }
    }
  }
}

const alive = (m: Member) => m.child !== undefined && m.child.exitCode === null && m.child.signalCode === null

/** Resident memory of a process in MB (Linux `/proc`), 0 if it is gone. */
export const rssMb = (pid: number | undefined): number => {
  if (pid === undefined) return 0
  try {
    const kb = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0)
    return Math.round(kb / 1024)
  } catch {
    return 0
  }
}

/**
 * Proportional set size of a process in MB (`/proc/PID/smaps_rollup`), 0 if it is gone: its private
 * pages plus its share of pages mapped by several processes. A member's daemon and watchdog are both
 * `node` and map the same ~37 MB of its code: the sum of their RSS counts those pages twice, the
 * sum of their PSS once — what the machine spends on the member.
 */
export const pssMb = (pid: number | undefined): number => {
  if (pid === undefined) return 0
  try {
    const kb = Number(/^Pss:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0)
    return Math.round(kb / 1024)
  } catch {
    return 0
  }
}

export const formed = async (system: System) => {
  if (system.name === "etcd") {
    for (const m of system.members) system.start(m)
  } else {
    // Blixard: node 1 founds, the others join it.
    system.start(system.members[0]!)
    await until("node 1 to lead", () => system.leader())
    for (const m of system.members.slice(1)) system.start(m)
  }
  // Formed: a write succeeds through the leader, and every member answers.
  let n = 0
  await until(`${system.name} to accept writes`, async () => {
    const leader = await system.leader()
    if (leader === undefined) return undefined
    const w = system.write(--n)
    const r = await requestTo(system, leader.port, "POST", w.path, JSON.parse(w.body), { token: system.token })
    return system.ok(r.status) ? true : undefined
  }, 60_000)
  if (system.name === "blixard") {
    await until("3 voters", async () => {
      const r = await requestTo(system, system.members[0]!.port, "GET", "/v1/cluster")
      const s = JSON.parse(r.body) as { members: Array<{ role: string }> }
      return s.members.filter((m) => m.role === "leader" || m.role === "follower").length === 3 ? true : undefined
    }, 60_000)
  }
}

let counter = 0

/** Closed-loop clients writing to `port` until `deadline`; the latencies of the writes that succeeded. */
export const load = async (system: System, port: number, clients: number, deadline: number) => {
  const latencies: Array<number> = []
  let errors = 0
  await Promise.all(
    Array.from({ length: clients }, async () => {
      const connection = new Connection(port, system.headers, system.client())
      try {
        while (performance.now() < deadline) {
          const w = system.write(++counter)
          const t0 = performance.now()
          const r = await connection.post(w.path, w.body)
          if (system.ok(r.status)) latencies.push(performance.now() - t0)
          else errors++
        }
      } finally {
        connection.close()
      }
    })
  )
  return { latencies, errors }
}

interface Measured {
  writes: Record<string, { perSecond: number; p50Ms: number; p99Ms: number; errors: number; cpuMsPerWrite: number }>
  idle: { cpuMsPerSecondPerMember: number; rssMbPerMember: number; pssMbPerMember: number }
  failover: { medianMs: number; minMs: number; maxMs: number }
}

const pids = (system: System) => system.members.flatMap((m) => [m.child?.pid, ...system.companions(m)]).filter((p): p is number => p !== undefined)

const measure = async (system: System, seconds: number, failovers: number): Promise<Measured> => {
  await formed(system)
  const writes: Measured["writes"] = {}
  const warmLeader = await until("a leader", () => system.leader())
  await load(system, warmLeader.port, 64, performance.now() + seconds * 1000)
  for (const clients of [1, 16, 64]) {
    const leader = await until("a leader", () => system.leader())
    const before = pids(system).map(cpuMs)
    const { latencies, errors } = await load(system, leader.port, clients, performance.now() + seconds * 1000)
    const cpu = pids(system).map(cpuMs).reduce((a, b) => a + b, 0) - before.reduce((a, b) => a + b, 0)
    latencies.sort((a, b) => a - b)
    const q = (p: number) => Number((latencies[Math.floor(p * (latencies.length - 1))] ?? 0).toFixed(2))
    writes[`${clients}`] = {
      perSecond: Math.round(latencies.length / seconds),
      p50Ms: q(0.5),
      p99Ms: q(0.99),
      errors,
      cpuMsPerWrite: Number((cpu / Math.max(1, latencies.length)).toFixed(3))
    }
  }
  // Idle: nothing is sent for a while, then CPU is counted over a quiet window.
  await new Promise((r) => setTimeout(r, 2_000))
  const quietMs = 10_000
  const idleBefore = pids(system).map(cpuMs)
  const t0 = performance.now()
  await new Promise((r) => setTimeout(r, quietMs))
  const idleCpu = pids(system).map(cpuMs).reduce((a, b) => a + b, 0) - idleBefore.reduce((a, b) => a + b, 0)
  const elapsed = (performance.now() - t0) / 1000
  const perMember = (of: (pid: number | undefined) => number) => {
    const each = system.members.map((m) => [m.child?.pid, ...system.companions(m)].reduce<number>((sum, pid) => sum + of(pid), 0))
    return Math.round(each.reduce((a, b) => a + b, 0) / each.length)
  }
  const idle = {
    cpuMsPerSecondPerMember: Number((idleCpu / elapsed / system.members.length).toFixed(1)),
    rssMbPerMember: perMember(rssMb),
    pssMbPerMember: perMember(pssMb)
  }
  const times: Array<number> = []
  for (let i = 0; i < failovers; i++) {
    const victim = await until("a leader", () => system.leader(), 60_000)
    const survivor = system.members.find((m) => m !== victim && alive(m))!
    const killed = performance.now()
    victim.child!.kill("SIGKILL")
    // Short attempts, retried: a write that waits out a long client timeout would measure the
    // client, not the failover (etcd holds a request while it has no leader).
    await until("a write after the kill", async () => {
      const w = system.write(++counter)
      const r = await requestTo(system, survivor.port, "POST", w.path, JSON.parse(w.body), { timeoutMs: 250, token: system.token })
      return system.ok(r.status) ? true : undefined
    }, 60_000)
    times.push(performance.now() - killed)
    await new Promise<void>((resolve) => (victim.child!.exitCode !== null || victim.child!.signalCode !== null ? resolve() : victim.child!.once("exit", () => resolve())))
    system.start(victim)
    await until("the victim to rejoin", async () => {
      const leader = await system.leader()
      if (leader === undefined) return undefined
      const w = system.write(++counter)
      const r = await requestTo(system, victim.port, "POST", w.path, JSON.parse(w.body), { token: system.token }).catch(() => undefined)
      return r !== undefined && system.ok(r.status) ? true : undefined
    }, 60_000)
  }
  times.sort((a, b) => a - b)
  return {
    writes,
    idle,
    failover: { medianMs: Math.round(times[Math.floor(times.length / 2)] ?? 0), minMs: Math.round(times[0] ?? 0), maxMs: Math.round(times.at(-1) ?? 0) }
  }
}

/**
 * Three members of `name` in a new temporary directory, handed to `use`; afterwards every member and
 * its companion processes (Blixard's watchdogs) are killed and the directory removed. `tls`: both
 * systems with TLS (see the module comment), else both in plaintext.
 */
export const withSystem = async <A>(name: "etcd" | "blixard", bench: string, use: (system: System) => Promise<A>, tls = false): Promise<A> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `blixard-bench-${bench}-${name}-`))
  const members: Array<Member> = []
  for (const id of [1, 2, 3]) members.push({ id, port: await freePort(), peerPort: await freePort(), dataDir: path.join(dir, `m${id}`), child: undefined })
  const system = name === "etcd" ? etcdSystem(dir, members, tls ? await etcdCerts(dir, members) : undefined) : blixardSystem(dir, members, tls)
  try {
    return await use(system)
  } finally {
    for (const m of members) {
      const extra = system.companions(m)
      m.child?.kill("SIGKILL")
      for (const pid of extra) {
        try {
          process.kill(pid, "SIGKILL")
        } catch {
          // already gone
        }
      }
    }
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  }
}

const run = (name: "etcd" | "blixard", seconds: number, failovers: number, tls: boolean): Promise<Measured> =>
  withSystem(name, "compare", (system) => measure(system, seconds, failovers), tls)

const ratio = (a: number, b: number) => (b === 0 ? null : Number((a / b).toFixed(2)))

/** The modes `BENCH_TLS` asks for: "0" plaintext, "1" TLS, unset both (plaintext first). */
export const compareModes = (setting: string | undefined): ReadonlyArray<boolean> => {
  if (setting === undefined || setting === "") return [false, true]
  if (setting === "0" || setting === "1") return [setting === "1"]
  throw new Error(`BENCH_TLS=${JSON.stringify(setting)}: give 0 (plaintext), 1 (TLS), or leave it unset for both`)
}

const compareMode = async (seconds: number, failovers: number, tls: boolean): Promise<ReadonlyArray<unknown>> => {
  const mode = tls ? "TLS" : "plaintext"
  const etcd = await run("etcd", seconds, failovers, tls)
  const blixard = await run("blixard", seconds, failovers, tls)
  const ratios = {
    "writes/s at 1 client (blixard ÷ etcd; target ≥ 2 at 64)": ratio(blixard.writes["1"]!.perSecond, etcd.writes["1"]!.perSecond),
    "writes/s at 16 clients": ratio(blixard.writes["16"]!.perSecond, etcd.writes["16"]!.perSecond),
    "writes/s at 64 clients (target ≥ 2)": ratio(blixard.writes["64"]!.perSecond, etcd.writes["64"]!.perSecond),
    "p50 at 1 client (target ≤ 1)": ratio(blixard.writes["1"]!.p50Ms, etcd.writes["1"]!.p50Ms),
    "p99 at 1 client": ratio(blixard.writes["1"]!.p99Ms, etcd.writes["1"]!.p99Ms),
    "CPU per write at 64 clients": ratio(blixard.writes["64"]!.cpuMsPerWrite, etcd.writes["64"]!.cpuMsPerWrite),
    "idle CPU per member (target ≤ 1.5)": ratio(blixard.idle.cpuMsPerSecondPerMember, etcd.idle.cpuMsPerSecondPerMember),
    "idle RSS per member, daemon + watchdog (target ≤ 2)": ratio(blixard.idle.rssMbPerMember, etcd.idle.rssMbPerMember),
    "idle PSS per member, daemon + watchdog (their shared pages once)": ratio(blixard.idle.pssMbPerMember, etcd.idle.pssMbPerMember),
    "failover median (target ≤ 1)": ratio(blixard.failover.medianMs, etcd.failover.medianMs)
  }
  return [
    { name: `etcd 3 members, ${mode}`, mode, version: spawnSync("etcd", ["--version"], { encoding: "utf8" }).stdout.split("\n")[0], ...etcd },
    { name: `blixard 3 nodes, ${mode}`, mode, ...blixard },
    { name: `blixard ÷ etcd, ${mode}`, mode, writeBodyBytes: bodyBytes(blixardWrite(1).body), ratios }
  ]
}

/** `npm run bench -- compare`: both systems in each mode of `modes` (see `compareModes`). */
export const benchCompare = async (seconds = 5, failovers = 5, modes: ReadonlyArray<boolean> = [false, true]): Promise<ReadonlyArray<unknown>> => {
  if (spawnSync("etcd", ["--version"], { stdio: "ignore" }).status !== 0) {
    return [{ name: "compare", skipped: "no etcd binary on the PATH (Debian: apt-get install etcd-server)" }]
  }
  const results: Array<unknown> = []
  for (const tls of modes) results.push(...(await compareMode(seconds, failovers, tls)))
  return results
}
