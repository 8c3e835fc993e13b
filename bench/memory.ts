/**
 * `npm run bench -- memory`: where a Blixard member's resident memory goes after `compare`'s write
 * phases. Three nodes are formed as `compare` forms them (`--insecure-plaintext`), take the same
 * writes (64 clients for `seconds` to warm up, then 1, 16 and 64 clients for `seconds` each), and
 * then each process (daemon and fencing watchdog) is read twice: 12 s after the writes (when `compare`
 * reads its idle RSS) and `idleSeconds` later. Per process: RSS, split from `/proc/PID/smaps` into
 * the malloc heap (`[heap]`), anonymous mappings (V8's spaces and glibc's per-thread arenas), files
 * (code) and stacks; its thread count; and, for the daemons, V8's view (`process.memoryUsage()`,
 * heap spaces) read through the inspector (SIGUSR1, one daemon at a time, after the RSS reading).
 * `BENCH_MEMORY_TRIM=1` then asks glibc to give back its free memory (`malloc_trim(0)` through
 * gdb, if installed) and reads RSS again: what that frees is malloc memory held free, not in use.
 * `BENCH_MEMORY_WRITES=N` goes on writing (64 clients) until N writes in all: a member takes its
 * first state snapshot after 10,000 entries, which a loaded machine does not reach in the timed
 * phases alone.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import WebSocket from "ws"
import { load, rssMb, type System, formed, withSystem } from "./compare.js"
import { until } from "./cluster.js"

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const progress = (what: string) => process.env.BENCH_VERBOSE === "1" && console.error(`${new Date().toISOString()} memory: ${what}`)

interface Breakdown {
  readonly rssMb: number
  readonly heapMb: number
  readonly anonMb: number
  readonly fileMb: number
  readonly stackMb: number
  readonly threads: number
  /** Anonymous mappings over 1 MB resident: "size/rss" in MB. */
  readonly bigAnon: ReadonlyArray<string>
}

const mb = (kb: number) => Number((kb / 1024).toFixed(1))

export const breakdown = (pid: number): Breakdown | undefined => {
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/smaps`, "utf8")
  } catch {
    return undefined
  }
  let heap = 0, anon = 0, file = 0, stack = 0
  const big: Array<string> = []
  let name = ""
  let size = 0
  for (const line of text.split("\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line)
    if (head !== null) {
      name = head[1] ?? ""
      continue
    }
    const sz = /^Size:\s+(\d+)/.exec(line)
    if (sz !== null) size = Number(sz[1])
    const rss = /^Rss:\s+(\d+)/.exec(line)
    if (rss === null) continue
    const kb = Number(rss[1])
    if (name === "[heap]") heap += kb
    else if (name.startsWith("[stack")) stack += kb
    else if (name === "" || name.startsWith("[anon")) {
      anon += kb
      if (kb > 1024) big.push(`${mb(size)}/${mb(kb)}`)
    } else file += kb
  }
  const threads = fs.readdirSync(`/proc/${pid}/task`).length
  return { rssMb: rssMb(pid), heapMb: mb(heap), anonMb: mb(anon), fileMb: mb(file), stackMb: mb(stack), threads, bigAnon: big }
}

/** V8's figures of `pid` through its inspector (opened with SIGUSR1, closed afterwards). */
const v8View = async (pid: number): Promise<unknown> => {
  process.kill(pid, "SIGUSR1")
  const list = await until("the inspector", async () => {
    const r = await fetch("http://127.0.0.1:9229/json/list").catch(() => undefined)
    if (r === undefined) return undefined
    const l = (await r.json()) as Array<{ webSocketDebuggerUrl: string }>
    return l.length > 0 ? l : undefined
  }, 10_000)
  const ws = new WebSocket(list[0]!.webSocketDebuggerUrl)
  await new Promise((resolve, reject) => (ws.once("open", resolve), ws.once("error", reject)))
  let id = 0
  const call = (method: string, params: unknown) =>
    new Promise<any>((resolve) => {
      const mine = ++id
      const on = (data: Buffer) => {
        const msg = JSON.parse(data.toString())
        if (msg.id === mine) {
          ws.off("message", on)
          resolve(msg.result)
        }
      }
      ws.on("message", on)
      ws.send(JSON.stringify({ id: mine, method, params }))
    })
  const expression = `(() => {
    const v8 = process.getBuiltinModule("v8")
    const m = process.memoryUsage()
    const MB = (n) => Math.round(n / 104857.6) / 10
    const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, MB(s.space_size) + "/" + MB(s.space_used_size)]))
    return JSON.stringify({ rss: MB(m.rss), heapTotal: MB(m.heapTotal), heapUsed: MB(m.heapUsed), external: MB(m.external), arrayBuffers: MB(m.arrayBuffers), spaces })
  })()`
  const r = await call("Runtime.evaluate", { expression, returnByValue: true })
  // Closed after this call has returned: closing from inside an evaluation waits on itself.
  ws.send(JSON.stringify({ id: ++id, method: "Runtime.evaluate", params: { expression: `setTimeout(() => process.getBuiltinModule("inspector").close(), 100)` } }))
  await sleep(300)
  ws.terminate()
  await sleep(500)
  return JSON.parse(r?.result?.value ?? "null")
}

const trim = (pid: number) => spawnSync("gdb", ["-p", String(pid), "-batch", "-ex", "call (int) malloc_trim(0)"], { stdio: "ignore" })

const snapshot = async (system: System, withV8: boolean) => {
  const out: Array<unknown> = []
  for (const m of system.members) {
    const pid = m.child?.pid
    if (pid === undefined) continue
    const daemon = breakdown(pid)
    const watchdog = system.companions(m).map(breakdown)[0]
    out.push({ id: m.id, daemon, watchdog, ...(withV8 ? { v8: await v8View(pid).catch((e) => String(e)) } : {}) })
  }
  return out
}

export const benchMemory = async (seconds = 5, idleSeconds = 30, minWrites = 0): Promise<ReadonlyArray<unknown>> =>
  withSystem("blixard", "memory", async (system) => {
    progress("forming")
    await formed(system)
    progress("formed")
    const idleFromStart = await snapshot(system, false)
    const leader = await until("a leader", () => system.leader())
    let writes = 0
    for (const clients of [64, 1, 16]) writes += (await load(system, leader.port, clients, performance.now() + seconds * 1000)).latencies.length
    const { latencies } = await load(system, leader.port, 64, performance.now() + seconds * 1000)
    writes += latencies.length
    while (writes < minWrites) writes += (await load(system, leader.port, 64, performance.now() + seconds * 1000)).latencies.length
    progress("writes done")
    await sleep(12_000)
    const afterWrites = await snapshot(system, false)
    await sleep(idleSeconds * 1000)
    const afterIdle = await snapshot(system, process.env.BENCH_MEMORY_V8 === "1")
    const results: Array<unknown> = [
      { name: "formed, before writes", loadAverage: os.loadavg(), members: idleFromStart },
      { name: "12 s after the writes", writes, writesPerSecondAt64: Math.round(latencies.length / seconds), members: afterWrites },
      { name: `${idleSeconds} s later`, loadAverage: os.loadavg(), members: afterIdle }
    ]
    if (process.env.BENCH_MEMORY_TRIM === "1") {
      for (const m of system.members) {
        for (const pid of [m.child?.pid, ...system.companions(m)]) if (pid !== undefined) trim(pid)
      }
      results.push({ name: "after malloc_trim(0)", members: await snapshot(system, false) })
    }
    const perMember = (snap: Array<any>) => Math.round(snap.reduce((a, s) => a + (s.daemon?.rssMb ?? 0) + (s.watchdog?.rssMb ?? 0), 0) / snap.length)
    results.push({ name: "RSS per member (daemon + watchdog)", before: perMember(idleFromStart), afterWrites: perMember(afterWrites), afterIdle: perMember(afterIdle) })
    return results
  })
