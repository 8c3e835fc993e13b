/**
 * `npm run demo`: a local three-node Blixard cluster on loopback — real `blixard node` processes,
 * each with its own SQLite data directory — running demo VMs whose runners honour microvm.nix's
 * runner contract (`bin/microvm-run` in the foreground; here a shell script, since this machine
 * may have no KVM). It shows placement, status, a node killed with kill -9, its VMs stopped there by
 * the node's fencing watchdog and coming back on the survivors, while `blixard events` follows the
 * cluster's events through it all (lines starting with `event`). Everything is cleaned up at the end.
 */
import { Duration, Effect, Schedule } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Client from "../api/Client.js"
import { freePort } from "./FreePort.js"
import { formatError, type BlixardError } from "../domain/Errors.js"
import { RunnerConfig, VmSpec } from "../domain/VmSpec.js"
import { VmName } from "../domain/VmName.js"
import type { VmRecord } from "../domain/VmStatus.js"
import { readStat } from "../vm/internal/procfs.js"

const bin = path.resolve(import.meta.dirname, "../../../bin/blixard.js")
const say = (line: string) => Effect.sync(() => console.log(line))


interface DemoNode {
  readonly id: number
  readonly addr: string
  readonly config: string
  child: ChildProcess | undefined
}

const table = (vms: ReadonlyArray<VmRecord>) =>
  vms
    .map(
      (vm) =>
        `  ${vm.spec.name.padEnd(6)} ${String(vm.spec.memoryMiB).padStart(5)} MiB  ${vm.status.phase.padEnd(8)} ${
          vm.node !== undefined ? `node ${vm.node}` : `pending: ${vm.pendingReason ?? ""}`
        }${vm.status.pid !== undefined ? `  (pid ${vm.status.pid})` : ""}`
    )
    .join("\n")

const program = Effect.gen(function* () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-demo-"))
  const secret = path.join(dir, "cluster-secret")
  fs.writeFileSync(secret, "demo-cluster-secret\n", { mode: 0o600 })
  // One admin token for the three nodes, as a deployment shares one through apiTokenFile.
  const tokenFile = path.join(dir, "api-token")
  fs.writeFileSync(tokenFile, `${randomBytes(32).toString("base64url")}\n`, { mode: 0o600 })
  const token = fs.readFileSync(tokenFile, "utf8").trim()
  const nodes: Array<DemoNode> = []
  const runnerPids: Array<number> = []
  let events: ChildProcess | undefined

  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      events?.kill("SIGKILL")
      for (const n of nodes) n.child?.kill("SIGKILL")
      for (const pid of runnerPids) {
        try {
          process.kill(-pid, "SIGKILL")
        } catch {
          // already gone
        }
      }
      fs.rmSync(dir, { recursive: true, force: true })
    })
  )

  // The nodes serve HTTPS with certificates from the cluster CA node 1 makes when it founds the cluster.
  const caFile = path.join(dir, "node-1", "tls", "ca.crt")
  const clientOf = (addr: string) =>
    Client.make({ addr, token, scheme: "https" }).pipe(Effect.provide(Client.layerHttpClient({ ca: fs.readFileSync(caFile, "utf8") })))
  const start = (n: DemoNode) =>
    Effect.sync(() => {
      n.child = spawn(process.execPath, [bin, "node", "--config", n.config, "--log-level", "warning"], { stdio: "ignore" })
    })

  for (const id of [1, 2, 3]) {
    const addr = `127.0.0.1:${yield* Effect.promise(freePort)}`
    const config = path.join(dir, `node-${id}.json`)
    fs.writeFileSync(
      config,
      JSON.stringify({
        id,
        bind: addr,
        dataDir: path.join(dir, `node-${id}`),
        microvmStateDir: path.join(dir, `microvms-${id}`),
        // The demo's runners are throwaway: their GC roots stay in the demo's directory.
        gcRootDir: path.resolve(dir, `gcroots-${id}`),
        clusterSecretFile: secret,
        apiTokenFile: tokenFile,
        // The demo's runners are shell scripts in its directory, not Nix store paths.
        allowedRunnerPrefixes: [path.join(dir, "runners")],
        capacity: { vcpus: 4, memoryMiB: 4096 },
        labels: { zone: id === 3 ? "b" : "a" },
        ...(id === 1 ? {} : { peers: [{ id: 1, address: nodes[0]!.addr }] }),
        // A shorter reschedule timeout than the default 6 s, so the demo is quick.
        timeouts: { tickMs: 50, fencingMs: 3000, nodeDownMs: 4500 }
      })
    )
    nodes.push({ id, addr, config, child: undefined })
  }

  yield* say(`Starting three blixard nodes on loopback (data in ${dir}) …`)
  yield* start(nodes[0]!)
  yield* Effect.retry(
    Effect.try(() => fs.readFileSync(caFile, "utf8")),
    Schedule.spaced(Duration.millis(100)).pipe(Schedule.upTo(Duration.seconds(30)))
  )
  const one = yield* clientOf(nodes[0]!.addr)
  yield* Effect.retry(one.health(), Schedule.spaced(Duration.millis(100)).pipe(Schedule.upTo(Duration.seconds(30))))
  yield* start(nodes[1]!)
  yield* start(nodes[2]!)
  const status = yield* one.clusterStatus().pipe(
    Effect.filterOrFail((s) => s.members.filter((m) => m.role === "follower" || m.role === "leader").length === 3 && s.members.every((m) => m.role !== "learner")),
    Effect.retry(Schedule.spaced(Duration.millis(200)).pipe(Schedule.upTo(Duration.seconds(60))))
  )
  yield* say(`Node ${status.leader} leads term ${status.term}; members: ${status.members.map((m) => `${m.id}@${m.address} (${m.role})`).join(", ")}`)
  yield* Effect.retry(
    Effect.flatMap(one.listNodes(), (ns) => (ns.length === 3 ? Effect.void : Effect.fail("not yet" as const))),
    Schedule.spaced(Duration.millis(200)).pipe(Schedule.upTo(Duration.seconds(30)))
  )

  // `blixard events`, as an operator would run it beside: it reconnects to another node if its own dies.
  // From the index the cluster had reached: what happens while the CLI starts is not missed.
  const since = String((yield* one.clusterStatus()).applied)
  const following = ["events", "--since", since, "--addr", nodes[0]!.addr, ...nodes.slice(1).flatMap((n) => ["--fallback", n.addr]), "--token-file", tokenFile, "--ca-file", caFile]
  yield* say(`Following the cluster's events: blixard ${following.join(" ")}`)
  events = spawn(process.execPath, [bin, ...following], { stdio: ["ignore", "pipe", "pipe"] })
  for (const stream of [events.stdout!, events.stderr!]) {
    stream.setEncoding("utf8")
    stream.on("data", (text: string) => {
      for (const line of text.split("\n")) if (line !== "") console.log(`  event  ${line}`)
    })
  }

  const vms = [
    { name: "web", memoryMiB: 1024 },
    { name: "db", memoryMiB: 2048 },
    { name: "cache", memoryMiB: 512 },
    { name: "big", memoryMiB: 8192 }
  ]
  yield* say(`Creating VMs ${vms.map((v) => v.name).join(", ")} through node 2 (a write to a follower is forwarded); a created VM starts once placed …`)
  const two = yield* clientOf(nodes[1]!.addr)
  for (const vm of vms) {
    const runner = path.join(dir, "runners", vm.name)
    fs.mkdirSync(path.join(runner, "bin"), { recursive: true })
    fs.writeFileSync(path.join(runner, "bin", "microvm-run"), "#!/bin/sh\necho \"microvm $BLIXARD_VM up\"\nexec sleep 3600\n", { mode: 0o755 })
    const spec = new VmSpec({ name: VmName.make(vm.name), source: new RunnerConfig({ path: runner }), memoryMiB: vm.memoryMiB, restartPolicy: "always" })
    yield* two.createVm(spec)
  }
  const settled = (client: Client.ApiClientShape, ok: (vms: ReadonlyArray<VmRecord>) => boolean) =>
    client.listVms().pipe(
      Effect.filterOrFail(ok, () => "not yet" as const),
      Effect.retry(Schedule.spaced(Duration.millis(200)).pipe(Schedule.upTo(Duration.seconds(60))))
    )
  const placed = yield* settled(one, (list) => list.filter((v) => v.node !== undefined).every((v) => v.status.phase === "running"))
  for (const vm of placed) if (vm.status.pid !== undefined) runnerPids.push(vm.status.pid)
  yield* say(table(placed))

  const web = placed.find((v) => v.spec.name === "web")!
  const victim = nodes[web.node! - 1]!
  const survivor = nodes.find((n) => n !== victim)!
  yield* say(`\nkill -9 node ${victim.id}, which hosts "web" …`)
  const killedAt = Date.now()
  victim.child?.kill("SIGKILL")
  const back = yield* clientOf(survivor.addr)
  const moved = yield* settled(back, (list) => list.filter((v) => v.spec.name !== "big").every((v) => v.node !== victim.id && v.status.phase === "running"))
  for (const vm of moved) if (vm.status.pid !== undefined) runnerPids.push(vm.status.pid)
  const after = yield* back.clusterStatus()
  yield* say(`Node ${after.leader} leads term ${after.term}. After ${((Date.now() - killedAt) / 1000).toFixed(1)} s node ${victim.id} was marked down and its VMs run elsewhere:`)
  yield* say(table(moved))
  // The killed daemon's runner of "web" outlived it; the node's fencing watchdog did not.
  const stat = web.status.pid === undefined ? undefined : readStat(web.status.pid)
  const stopped = stat === undefined || stat.state === "Z" || stat.state === "X"
  yield* say(
    stopped
      ? `\nOn node ${victim.id}, whose daemon is dead, "web" (pid ${web.status.pid}) is stopped: the node's fencing watchdog stopped it\nonce the daemon's lease ran out, before the cluster started it elsewhere (see "Timing" in the README).`
      : `\nOn node ${victim.id}, whose daemon is dead, "web" (pid ${web.status.pid}) STILL RUNS: the node's fencing watchdog did not stop it\n(see ${path.join(dir, `node-${victim.id}`, "fencing", "watchdog.log")}).`
  )

  // `vm update` (microvm -u): the new runner is made ready while the old one runs, then swapped in.
  const db = moved.find((v) => v.spec.name === "db")!
  const next = path.join(dir, "runners", "db-v2")
  fs.mkdirSync(path.join(next, "bin"), { recursive: true })
  fs.writeFileSync(path.join(next, "bin", "microvm-run"), "#!/bin/sh\necho \"microvm $BLIXARD_VM v2 up\"\nexec sleep 3600\n", { mode: 0o755 })
  yield* say(`\nvm update db --runner ${next} (through node ${survivor.id}) …`)
  yield* back.updateVm(db.spec.name, { source: new RunnerConfig({ path: next }) })
  const updated = yield* settled(back, (list) => list.some((v) => v.spec.name === "db" && v.status.phase === "running" && v.status.generation === 1))
  const db2 = updated.find((v) => v.spec.name === "db")!
  if (db2.status.pid !== undefined) runnerPids.push(db2.status.pid)
  yield* say(`"db" now runs generation ${db2.status.generation} on node ${db2.node}: its new runner was made ready while pid ${db.status.pid} ran on, then it was restarted onto it (pid ${db2.status.pid}; \`blixard vm logs db\` shows both).`)
  yield* say("Stopping the cluster and cleaning up.")
})

Effect.runPromiseExit(Effect.scoped(program)).then((exit) => {
  if (exit._tag === "Failure") {
    const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
    console.error(
      failure !== undefined && typeof failure === "object" && "code" in (failure as object)
        ? formatError(failure as BlixardError)
        : `demo failed: ${String(exit.cause)}`
    )
    process.exitCode = 1
  }
})
