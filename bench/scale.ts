/**
 * Scale (`npm run bench -- scale`): three real `blixard node` processes (the Raft members, cordoned
 * so they place nothing) and `BENCH_HOSTS` (default 100) lightweight simulated hosts that are not
 * Raft members, as Nomad's clients are not: each registers over the API with its node credential
 * (`PUT /v1/nodes/ID`), heartbeats every second (`POST /v1/nodes/ID/heartbeat`, to the members in
 * turn; the leader answers after a ReadIndex round) and reports `running` for every VM placed on it
 * (`PUT /v1/nodes/ID/statuses`, the statuses waiting on one host in one request, up to 256, as an
 * agent sends them). The VM count grows in steps (`BENCH_STEPS`, default 10k, 50k and
 * 100k); at each step:
 * - placements/s: VM creates (desired running) from 64 closed-loop clients to the leader, each placed
 *   when it applies; then how long until every one is reported running;
 * - the leader's and a follower's RSS, and per VM (the growth over the empty cluster);
 * - leader CPU per placement (create + placement + the report that follows);
 * - `vm list`'s first page (100) through the API and through the CLI (a whole `blixard` process);
 * - `cluster snapshot save`: its size and time; a follower's kill -9 and restart: until it serves a
 *   linearizable read again;
 * - the host with the most VMs stops (no more heartbeats or reports, as a dead machine): until every
 *   one of its VMs is reported running elsewhere. This includes `nodeDownMs` (default 6 s), the
 *   failure detector's wait before it may move them. Then it comes back, empty.
 *
 * Diagnostics: `BENCH_SCALE_LOGS=DIR` appends each member's output to DIR/node-ID.log. `BENCH_NODE_ARGS` (space-separated) are Node.js flags for the members (e.g.
 * `--max-semi-space-size=2`); `BENCH_SCALE_HEAP=DIR` then, after each step's RSS reading, writes a
 * heap snapshot of the leader into DIR (the members run with `--heapsnapshot-signal=SIGUSR2`) and
 * reports each member's resident memory split from `/proc/PID/smaps` (malloc heap, anonymous
 * mappings — V8's spaces among them —, files) before and after it (a heap snapshot collects
 * garbage first).
 *
 * What the simulated hosts do not do: run anything, or fence. They learn their placements from one
 * shared event stream (`GET /v1/events` on a follower) instead of one watch each, so the members serve
 * one stream where a real deployment would serve one per host; the heartbeats and registrations
 * are all there, one HTTP request each, and the reports one request per host and batch.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { nodeCredential } from "../src/api/Auth.js"
import { freePort } from "../src/node/FreePort.js"
import { agent, Connection, benchTokenFile, bin, cpuMs, leaderOf, request, until } from "./cluster.js"
import { rssMb } from "./compare.js"
import { breakdown } from "./memory.js"

interface Member {
  readonly id: number
  readonly port: number
  readonly dataDir: string
  child: ChildProcess | undefined
}

interface Host {
  readonly id: number
  readonly credential: string
  alive: boolean
  readonly vms: Set<string>
  /** When (bench clock, `performance.now()`) its last heartbeat was answered. */
  lastBeat: number
}

/** What the event stream and the reporters saw of a dead host's VMs (bench clock, `performance.now()`). */
interface DeathWatch {
  readonly host: number
  readonly vms: ReadonlySet<string>
  /** `node.down`: when the leader proposed it (its clock, as the bench's) and when it arrived here. */
  downProposedAt?: number
  downSeenAt?: number
  /** The Raft entries whose batches moved its VMs, how many moved, and when the last arrived. */
  readonly movedIn: Set<number>
  moved: number
  lastMovedAt?: number
  /** Its VMs' `running` reports: sent, failed (and retried), and when the first was sent. */
  reports: number
  reportFailures: number
  firstReportAt?: number
}

const secretText = "bench-scale-secret"

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0
const round = (x: number, digits = 1) => Number(x.toFixed(digits))

/** One request with a node credential instead of the benchmarks' admin token. */
const asNode = (port: number, credential: string, method: string, pathname: string, body?: unknown) =>
  request(port, method, pathname, body, { bearer: credential, timeoutMs: 30_000 })

interface StreamEvent {
  readonly type: string
  readonly vm?: string
  readonly node?: number
  readonly to?: number
  readonly phase?: string
}

/** A batch of events: the Raft entry's index, and when the leader proposed it (its clock). */
interface StreamBatch {
  readonly index: number
  readonly at?: number
}

/** Follows `GET /v1/events` and hands every event to `onEvent`, with its batch; resolves to a stop function. */
const followEvents = (port: number, token: string, onEvent: (event: StreamEvent, batch: StreamBatch) => void) =>
  new Promise<() => void>((resolve, reject) => {
    let stopped = false
    const req = http.get(
      { host: "127.0.0.1", port, path: "/v1/events", headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" } },
      (res) => {
        if (res.statusCode !== 200) return reject(new Error(`GET /v1/events: ${res.statusCode}`))
        let buffered = ""
        res.on("error", (error) => {
          if (stopped) return
          throw new Error(`bench: the event stream from port ${port} failed (${error.message}); the result would be wrong`)
        })
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => {
          buffered += chunk
          let end: number
          while ((end = buffered.indexOf("\n\n")) >= 0) {
            const message = buffered.slice(0, end)
            buffered = buffered.slice(end + 2)
            if (message.includes("event: resync")) throw new Error("bench: the event stream asked for a resync; the result would be wrong")
            const data = message.split("\n").find((line) => line.startsWith("data: "))
            if (data === undefined) continue
            const batch = JSON.parse(data.slice(6)) as StreamBatch & { events: Array<StreamEvent> }
            for (const event of batch.events) onEvent(event, batch)
          }
        })
        resolve(() => {
          stopped = true
          req.destroy()
        })
      }
    )
    req.on("error", reject)
  })

/**
 * Where a restarted member's time went, from its info log (`raft/Recovery.ts` writes these lines;
 * `at`: milliseconds after the bench spawned it, as the lines arrived): the process up to its first
 * line (Node.js, the program's modules), recovery from its data directory (opening and verifying the
 * log, reading the snapshot and the log, restoring the state), serving (listening), its own log's
 * committed entries applied again, a snapshot installed from the leader, the first linearizable read.
 */
const restartSplit = (log: ReadonlyArray<{ at: number; message: string }>) => {
  const find = (re: RegExp) => {
    for (const { at, message } of log) {
      const m = re.exec(message)
      if (m !== null) return { at: Math.round(at), n: m.slice(1).map((x) => (x === undefined ? undefined : Number(x))) }
    }
    return undefined
  }
  const started = find(/^starting /)
  const recovered = find(/recovered its Raft state in (\d+) ms: storage opened in (\d+) ms, (?:snapshot at index (\d+) \(([\d.]+) MB, read in (\d+) ms, state restored in (\d+) ms\)|no snapshot), log (?:\[(\d+), (\d+)\] \((\d+) entries, read and verified in (\d+) ms\)|empty); (\d+) committed entries to apply again/)
  const serving = find(/serving peers and the API/)
  const replayed = find(/applied the (\d+) committed entries of its own log again, (\d+) ms/)
  const installed = find(/installed a snapshot from the leader at index (\d+) \(([\d.]+) MB\) in (\d+) ms/)
  const firstRead = find(/answered its first linearizable read (\d+) ms after its Raft node started; from the leader until then: (\d+) entries \(([\d.]+) MB\), (\d+) snapshot/)
  const r = recovered?.n
  return {
    firstLogLineAt: started?.at,
    recovery:
      recovered === undefined || r === undefined
        ? undefined
        : {
            doneAt: recovered.at,
            ms: r[0],
            openMs: r[1],
            snapshot: r[2] === undefined ? undefined : { index: r[2], mb: r[3], readMs: r[4], restoreMs: r[5] },
            log: r[8] === undefined ? undefined : { entries: r[8], readMs: r[9] },
            toApplyAgain: r[10]
          },
    servingAt: serving?.at,
    appliedAgainAt: replayed?.at,
    snapshotFromLeader: installed === undefined ? undefined : { at: installed.at, index: installed.n[0], mb: installed.n[1], restoreMs: installed.n[2] },
    firstReadAt: firstRead?.at,
    fromLeader: firstRead === undefined ? undefined : { entries: firstRead.n[1], mb: firstRead.n[2], snapshots: firstRead.n[3] }
  }
}

/** The members' resident memory split, a heap snapshot of the leader (SIGUSR2), and the split again. */
const heapSnapshot = async (dir: string, leader: Member, follower: Member) => {
  const before = { leader: breakdown(leader.child!.pid!), follower: breakdown(follower.child!.pid!) }
  const files = () => fs.readdirSync(dir).filter((f) => f.endsWith(".heapsnapshot"))
  const had = files().length
  const started = performance.now()
  process.kill(leader.child!.pid!, "SIGUSR2")
  await until("the leader's heap snapshot", async () => (files().length > had ? true : undefined), 600_000)
  // Written synchronously: the leader answers again once the file is complete.
  await until("the leader answers after its heap snapshot", async () => ((await request(leader.port, "GET", "/v1/cluster")).status === 200 ? true : undefined), 600_000)
  return { file: files().at(-1), ms: Math.round(performance.now() - started), before, after: { leader: breakdown(leader.child!.pid!), follower: breakdown(follower.child!.pid!) } }
}

export const benchScale = async (
  steps: ReadonlyArray<number> = (process.env.BENCH_STEPS ?? "10000,50000,100000").split(",").map(Number),
  hostCount = Number(process.env.BENCH_HOSTS ?? 100)
) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-bench-scale-"))
  const secret = path.join(dir, "secret")
  fs.writeFileSync(secret, secretText)
  const tokenFile = benchTokenFile(dir)
  const token = fs.readFileSync(tokenFile, "utf8").trim()
  const members: Array<Member> = []
  const heapDir = process.env.BENCH_SCALE_HEAP
  /** `BENCH_SCALE_LOGS=DIR`: every member's output (warnings, and the restarted member's info lines) appended to DIR/node-ID.log. */
  const logDir = process.env.BENCH_SCALE_LOGS
  const nodeArgs = [
    ...(process.env.BENCH_NODE_ARGS ?? "").split(" ").filter((a) => a !== ""),
    ...(heapDir !== undefined ? ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${heapDir}`] : [])
  ]
  /** Starts a member; with `watch`, at log level info in JSON, each line handed to `watch` as it arrives. */
  const startMember = (m: Member, peers: ReadonlyArray<Member>, watch?: (message: string) => void) => {
    m.child = spawn(
      process.execPath,
      [...nodeArgs, bin, "node", "--id", String(m.id), "--bind", `127.0.0.1:${m.port}`, "--insecure-plaintext", "--data-dir", m.dataDir, "--cluster-secret-file", secret, "--api-token-file", tokenFile, ...(watch === undefined ? ["--log-level", "warning"] : ["--log-level", "info", "--log-format", "json"]), ...peers.flatMap((p) => ["--peer", `${p.id}:127.0.0.1:${p.port}`])],
      { stdio: watch === undefined ? (logDir === undefined ? "ignore" : ["ignore", "pipe", "pipe"]) : ["ignore", "pipe", "pipe"] }
    )
    if (logDir !== undefined) {
      const file = fs.createWriteStream(path.join(logDir, `node-${m.id}.log`), { flags: "a" })
      m.child.stdout!.pipe(file)
      m.child.stderr!.pipe(file)
    }
    if (watch === undefined) return
    for (const stream of [m.child.stdout!, m.child.stderr!]) {
      readline.createInterface({ input: stream }).on("line", (line) => {
        try {
          const message = (JSON.parse(line) as { message?: unknown }).message
          watch(Array.isArray(message) ? message.join(" ") : String(message))
        } catch {
          watch(line)
        }
      })
    }
  }
  const timers: Array<NodeJS.Timeout> = []
  let stopEvents = () => {}
  try {
    for (const id of [1, 2, 3]) members.push({ id, port: await freePort(), child: undefined, dataDir: path.join(dir, `n${id}`) })
    startMember(members[0]!, [])
    await until("node 1 leads", () => leaderOf(members[0]!.port))
    startMember(members[1]!, [members[0]!])
    startMember(members[2]!, [members[0]!])
    await until("3 voters", async () => {
      const s = JSON.parse((await request(members[0]!.port, "GET", "/v1/cluster")).body) as { members: Array<{ role: string }> }
      return s.members.filter((m) => m.role === "leader" || m.role === "follower").length === 3 ? true : undefined
    })
    const leaderPort = async () => members[(await until("a leader", () => leaderOf(members[0]!.port))) - 1]!
    for (const m of members) {
      await until(`node ${m.id} registered`, async () => ((await request(m.port, "POST", `/v1/nodes/${m.id}/cordon`)).status === 200 ? true : undefined))
    }

    // The hosts: room for every VM of the last step with a fifth spare, so a dead host's VMs fit elsewhere.
    // (at most 1,024 vCPUs a host: the schema's bound; one dead host at a time must still leave room).
    const perHost = Math.min(1024, Math.ceil((Math.max(...steps) * 1.2) / hostCount))
    if ((hostCount - 1) * perHost < Math.max(...steps)) {
      throw new Error(`bench: ${hostCount} hosts of ${perHost} vCPUs cannot hold ${Math.max(...steps)} VMs with one host dead; set BENCH_HOSTS higher`)
    }
    const hosts = new Map<number, Host>()
    for (let k = 1; k <= hostCount; k++) {
      const id = 100 + k
      hosts.set(id, { id, credential: nodeCredential(secretText, id), alive: true, vms: new Set(), lastBeat: 0 })
    }
    const registerStarted = performance.now()
    for (const host of hosts.values()) {
      const info = { id: host.id, address: `127.0.0.1:${20000 + host.id}`, capacity: { vcpus: perHost, memoryMiB: perHost * 16 }, labels: { rack: `r${host.id % 10}` }, state: "active", health: "up" }
      // Retried on another member while there is no leader to answer (an election under load).
      let r = { status: 0, body: "" }
      for (let attempt = 0; attempt < 60 && r.status !== 200; attempt++) {
        r = await asNode(members[(host.id + attempt) % 3]!.port, host.credential, "PUT", `/v1/nodes/${host.id}`, info).catch((e: Error) => ({ status: 0, body: e.message }))
        if (r.status !== 200 && r.status !== 503 && r.status !== 0) break
        if (r.status !== 200) await new Promise((resolve) => setTimeout(resolve, 500))
      }
      if (r.status !== 200) throw new Error(`registering host ${host.id}: ${r.status} ${r.body}`)
    }
    const registerMs = performance.now() - registerStarted
    let heartbeatFailures = 0
    let heartbeats = 0
    for (const host of hosts.values()) {
      const beat = () => {
        if (!host.alive) return
        asNode(members[(host.id + heartbeats) % 3]!.port, host.credential, "POST", `/v1/nodes/${host.id}/heartbeat`).then(
          (r) => {
            if (r.status !== 200) return heartbeatFailures++
            heartbeats++
            host.lastBeat = performance.now()
          },
          () => heartbeatFailures++
        )
      }
      timers.push(setTimeout(() => timers.push(setInterval(beat, 1000)), (host.id * 10) % 1000))
    }

    // What the hosts learn and report: a placement → `running`, reported by the host it names.
    const placedOn = new Map<string, number>()
    const running = new Map<string, number>()
    /** Per host: the VMs whose `running` it has yet to report, in placement order. */
    const waiting = new Map<Host, Set<string>>()
    const wait = (host: Host, vms: Iterable<string>) => {
      const set = waiting.get(host) ?? new Set()
      for (const vm of vms) set.add(vm)
      waiting.set(host, set)
    }
    let reportFailures = 0
    const place = (vm: string, node: number | undefined) => {
      const before = placedOn.get(vm)
      if (before !== undefined) hosts.get(before)?.vms.delete(vm)
      running.delete(vm)
      if (node === undefined) return placedOn.delete(vm)
      placedOn.set(vm, node)
      const host = hosts.get(node)
      if (host === undefined) return
      host.vms.add(vm)
      if (host.alive) wait(host, [vm])
    }
    let death: DeathWatch | undefined
    /** Hosts marked down, every one (the dead host's and any other's: a host whose heartbeats were late). */
    const downs: Array<number> = []
    stopEvents = await followEvents(members[1]!.port, token, (e, batch) => {
      if (e.type === "node.down" && e.node !== undefined) downs.push(e.node)
      if (death !== undefined) {
        if (e.type === "node.down" && e.node === death.host) {
          death.downSeenAt = performance.now()
          if (batch.at !== undefined) death.downProposedAt = death.downSeenAt - (Date.now() - batch.at)
        } else if (e.type === "vm.moved" && e.vm !== undefined && death.vms.has(e.vm)) {
          death.movedIn.add(batch.index)
          death.moved++
          death.lastMovedAt = performance.now()
        }
      }
      if (e.vm === undefined) return
      if (e.type === "vm.placed") place(e.vm, e.node)
      else if (e.type === "vm.moved") place(e.vm, e.to)
      else if (e.type === "vm.phase" && e.phase === "running" && e.node !== undefined) running.set(e.vm, e.node)
    })
    let stopped = false
    // As a host's agent does: the statuses waiting on one host go in one request (one entry), up to
    // 256, one request in flight per host; 16 requests in flight in all.
    const inFlight = new Set<Host>()
    const reporters = Array.from({ length: 16 }, async () => {
      for (;;) {
        const host = [...waiting.keys()].find((h) => !inFlight.has(h))
        if (host === undefined) {
          if (stopped) return
          await new Promise((r) => setTimeout(r, 5))
          continue
        }
        const set = waiting.get(host)!
        const batch = [...set].slice(0, 256)
        for (const vm of batch) set.delete(vm)
        if (set.size === 0) waiting.delete(host)
        const live = batch.filter((vm) => host.alive && placedOn.get(vm) === host.id)
        if (live.length === 0) continue
        inFlight.add(host)
        const since = Date.now()
        const body = { reports: live.map((vm) => ({ name: vm, status: { phase: "running", since, pid: 1000 + (host.id % 1000), restarts: 0 } })) }
        const watched = live.filter((vm) => death !== undefined && death.vms.has(vm)).length
        if (watched > 0) {
          death!.reports += watched
          death!.firstReportAt ??= performance.now()
        }
        const r = await asNode(members[host.id % 3]!.port, host.credential, "PUT", `/v1/nodes/${host.id}/statuses`, body).catch(() => ({ status: 0, body: "" }))
        inFlight.delete(host)
        if (r.status !== 200 && r.status !== 204) {
          reportFailures += live.length
          if (watched > 0) death!.reportFailures += watched
          wait(host, live)
        }
      }
    })

    const baseline = { leader: 0, follower: 0 }
    {
      const leader = await leaderPort()
      baseline.leader = rssMb(leader.child?.pid)
      baseline.follower = rssMb(members.find((m) => m !== leader)!.child?.pid)
    }
    const results: Array<Record<string, unknown>> = [{ name: `${hostCount} simulated hosts registered over the API`, ms: Math.round(registerMs), vcpusPerHost: perHost }]
    let created = 0
    for (const target of steps) {
      const leader = await leaderPort()
      const cpuBefore = cpuMs(leader.child?.pid)
      const createdBefore = created
      const createStarted = performance.now()
      let errors = 0
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          const connection = new Connection(leader.port)
          try {
            while (created < target) {
              const name = `s${++created}`
              const spec = { name, source: { _tag: "Runner", path: "/nix/store/bench-runner" }, vcpus: 1, memoryMiB: 16, labels: {}, constraints: [], restartPolicy: "never" }
              const r = await connection.post("/v1/vms", JSON.stringify({ spec, start: true }))
              if (r.status !== 201) errors++
            }
          } finally {
            connection.close()
          }
        })
      )
      const createMs = performance.now() - createStarted
      await until(`${target} VMs reported running`, async () => (placedOn.size >= target && running.size >= placedOn.size ? true : undefined), 600_000)
      const allRunningMs = performance.now() - createStarted
      const leaderCpuMs = cpuMs(leader.child?.pid) - cpuBefore
      const follower = members.find((m) => m !== leader)!
      const leaderRss = rssMb(leader.child?.pid)
      const followerRss = rssMb(follower.child?.pid)
      const heap = heapDir === undefined ? undefined : await heapSnapshot(heapDir, leader, follower)

      const apiPage: Array<number> = []
      const cliPage: Array<number> = []
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now()
        const r = await request(follower.port, "GET", "/v1/vms?limit=100")
        if (r.status !== 200) throw new Error(`vm list: ${r.status} ${r.body.slice(0, 200)}`)
        apiPage.push(performance.now() - t0)
      }
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now()
        await new Promise<void>((resolve, reject) => {
          // The executable as installed (npm's .bin link and the Nix package run it so: from the
          // CLI's start-up snapshot), with this Node.js first on PATH.
          const cli = spawn(bin, ["vm", "list", "--addr", `127.0.0.1:${follower.port}`, "--token-file", tokenFile, "--limit", "100"], {
            stdio: ["ignore", "ignore", "pipe"],
            env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ""}` }
          })
          let stderr = ""
          cli.stderr!.on("data", (c: Buffer) => (stderr += c.toString()))
          cli.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`blixard vm list exited ${code}: ${stderr}`))))
        })
        cliPage.push(performance.now() - t0)
      }

      const snapStarted = performance.now()
      const snap = await new Promise<number>((resolve, reject) => {
        http
          .get({ host: "127.0.0.1", port: follower.port, path: "/v1/cluster/snapshot", headers: { authorization: `Bearer ${token}` } }, (res) => {
            let bytes = 0
            res.on("data", (c: Buffer) => (bytes += c.length))
            res.on("end", () => (res.statusCode === 200 ? resolve(bytes) : reject(new Error(`snapshot: ${res.statusCode}`))))
          })
          .on("error", reject)
      })
      const snapshotMs = performance.now() - snapStarted

      // How many snapshots each member took itself and received (`/metrics`): how much log a restart applies again.
      const snapshotsTaken: Record<number, Record<string, number>> = {}
      for (const m of members) {
        const text = (await request(m.port, "GET", "/metrics")).body
        snapshotsTaken[m.id] = Object.fromEntries(
          [...text.matchAll(/^blixard_raft_snapshots_total\{source="(\w+)"\} (\d+)/gm)].map((x) => [x[1]!, Number(x[2])])
        )
      }

      // A follower killed and started again: until it answers a linearizable read.
      const victim = members.find((m) => m !== leader && m !== members[1])!
      victim.child!.kill("SIGKILL")
      await until("the victim is gone", async () => (rssMb(victim.child?.pid) === 0 ? true : undefined))
      const restartStarted = performance.now()
      const restartLog: Array<{ at: number; message: string }> = []
      startMember(victim, members.filter((m) => m !== victim), (message) => restartLog.push({ at: performance.now() - restartStarted, message }))
      await until("the restarted follower serves a linearizable read", async () => ((await request(victim.port, "GET", "/v1/vms/s1")).status === 200 ? true : undefined), 300_000)
      const restartMs = performance.now() - restartStarted
      const restart = restartSplit(restartLog)

      // The host with the most VMs dies.
      const dead = [...hosts.values()].filter((h) => h.alive).sort((a, b) => b.vms.size - a.vms.size)[0]!
      const moving = [...dead.vms]
      death = { host: dead.id, vms: new Set(moving), movedIn: new Set(), moved: 0, reports: 0, reportFailures: 0 }
      dead.alive = false
      const deathStarted = performance.now()
      await until(
        `host ${dead.id}'s ${moving.length} VMs running elsewhere`,
        async () => (moving.every((vm) => { const at = running.get(vm); return at !== undefined && at !== dead.id }) ? true : undefined),
        300_000
      ).catch((error) => {
        const elsewhere = moving.filter((vm) => { const at = running.get(vm); return at !== undefined && at !== dead.id }).length
        const placedElsewhere = moving.filter((vm) => placedOn.get(vm) !== undefined && placedOn.get(vm) !== dead.id).length
        console.error(JSON.stringify({ deadHost: dead.id, vms: moving.length, runningElsewhere: elsewhere, placedElsewhere, queued: [...waiting.values()].reduce((n, set) => n + set.size, 0), heartbeatFailures, downs, downHosts: [...hosts.values()].filter((h) => h.alive && performance.now() - h.lastBeat > 6000).length, ...death }, (_, v) => (v instanceof Set ? v.size : v)))
        throw error
      })
      const movedMs = performance.now() - deathStarted
      const since = (t: number | undefined) => (t === undefined ? undefined : Math.round(t - deathStarted))
      const deadHostSplit = {
        lastHeartbeatAnsweredAt: since(dead.lastBeat),
        downProposedAt: since(death.downProposedAt),
        downSeenAt: since(death.downSeenAt),
        movedEntries: death.movedIn.size,
        movedSeen: death.moved,
        lastMovedSeenAt: since(death.lastMovedAt),
        firstReportAt: since(death.firstReportAt),
        reports: death.reports,
        reportFailures: death.reportFailures
      }
      death = undefined
      // It comes back empty (a rebooted machine): heartbeats again, marked up, and takes new VMs.
      dead.alive = true

      results.push({
        name: `${target} VMs on ${hostCount} hosts`,
        placementsPerSecond: Math.round((created - createdBefore - errors) / (createMs / 1000)),
        createErrors: errors,
        allReportedRunningMs: Math.round(allRunningMs),
        leaderCpuMsPerPlacement: round(leaderCpuMs / Math.max(1, created - createdBefore), 3),
        leaderRssMb: round(leaderRss),
        followerRssMb: round(followerRss),
        leaderKbPerVm: round(((leaderRss - baseline.leader) * 1024) / target, 2),
        vmListFirstPageApiMs: round(median(apiPage)),
        vmListFirstPageCliMs: Math.round(median(cliPage)),
        snapshotBytes: snap,
        snapshotSaveMs: Math.round(snapshotMs),
        followerRestartToReadMs: Math.round(restartMs),
        followerRestart: { victim: victim.id, ...restart },
        snapshotsTaken,
        deadHost: { id: dead.id, vms: moving.length, allRunningElsewhereMs: Math.round(movedMs), ...deadHostSplit },
        ...(heap !== undefined ? { heap } : {}),
        heartbeats,
        heartbeatFailures,
        reportFailures
      })
      console.error(JSON.stringify(results.at(-1)))
    }
    stopped = true
    await Promise.all(reporters)
    return results
  } finally {
    for (const t of timers) clearInterval(t)
    stopEvents()
    for (const m of members) m.child?.kill("SIGKILL")
    agent.destroy()
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  }
}
