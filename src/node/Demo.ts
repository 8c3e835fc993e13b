/**
 * `npm run demo`: what Blixard can do today, shown on a three-node cluster inside this one process
 * — real Raft nodes on real SQLite files, an in-process network, the replicated cluster state and
 * its scheduler. (The daemon, its network transport and the VM agents are still being built; when
 * they land this demo starts real `blixard node` processes instead.)
 */
import { Context, Duration, Effect, Exit, Layer, Schema, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ClusterStateHolder } from "../cluster/ClusterStateMachine.js"
import * as C from "../domain/Command.js"
import { formatError } from "../domain/Errors.js"
import { HostPort, NodeInfo } from "../domain/NodeInfo.js"
import { NodeId } from "../domain/NodeId.js"
import { Resources } from "../domain/Resources.js"
import { RunnerConfig, VmSpec } from "../domain/VmSpec.js"
import { VmName } from "../domain/VmName.js"
import { MemoryNetwork } from "../net/Transport.js"
import * as RaftNode from "../raft/RaftNode.js"
import { layerFile } from "../storage/RaftStorage.js"

const ids = [1, 2, 3] as const
const say = (line: string) => Effect.sync(() => console.log(line))

const program = Effect.gen(function* () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-demo-"))
  const net = new MemoryNetwork()
  const nodes = new Map<number, { raft: RaftNode.RaftNodeShape; state: ClusterStateHolder; scope: Scope.CloseableScope }>()

  yield* say(`Starting a 3-node cluster in this process (data in ${dir}) …`)
  for (const id of ids) {
    fs.mkdirSync(path.join(dir, `node-${id}`))
    const state = new ClusterStateHolder()
    const scope = yield* Scope.make()
    const layer = RaftNode.layer({ id, tickMs: 50, requestTimeoutMs: 5_000, bootstrap: [...ids] }).pipe(
      Layer.provide(
        Layer.mergeAll(layerFile({ filename: path.join(dir, `node-${id}`, "blixard.db"), node: NodeId.make(id) }), net.layer(id), state.layer())
      )
    )
    const raft = Context.get(yield* Layer.buildWithScope(layer, scope), RaftNode.RaftNode)
    nodes.set(id, { raft, state, scope })
  }

  const leader = Effect.gen(function* () {
    for (;;) {
      for (const [id, n] of nodes) if ((yield* n.raft.role) === "leader") return id
      yield* Effect.sleep(Duration.millis(20))
    }
  })
  const run = (command: C.Command) =>
    Effect.gen(function* () {
      const lead = yield* leader
      const envelope = new C.CommandEnvelope({ command, proposedAt: Date.now() })
      return yield* nodes.get(lead)!.raft.propose(Schema.encodeSync(C.CommandEnvelopeJson)(envelope))
    })

  const first = yield* leader
  yield* say(`Node ${first} was elected leader (term ${(yield* nodes.get(first)!.raft.status).term}).`)

  for (const id of ids) {
    yield* run(
      new C.RegisterNode({
        info: new NodeInfo({
          id: NodeId.make(id),
          address: HostPort.make(`127.0.0.1:${7000 + id}`),
          capacity: new Resources({ vcpus: 4, memoryMiB: 4096 }),
          labels: { zone: id === 3 ? "b" : "a" },
          state: "active",
          health: "up"
        })
      })
    )
  }
  yield* say("Each node registered 4 vcpus and 4096 MiB. Creating and starting VMs …")
  const vms = [
    { name: "web", memoryMiB: 1024 },
    { name: "db", memoryMiB: 2048 },
    { name: "cache", memoryMiB: 512 },
    { name: "huge", memoryMiB: 8192 }
  ]
  for (const vm of vms) {
    const spec = new VmSpec({ name: VmName.make(vm.name), source: new RunnerConfig({ path: `/nix/store/demo-${vm.name}-runner` }), memoryMiB: vm.memoryMiB })
    yield* run(new C.CreateVm({ spec }))
    yield* run(new C.StartVm({ name: spec.name }))
  }
  const table = Effect.gen(function* () {
    const state = nodes.get(yield* leader)!.state.current
    for (const vm of [...state.vms.values()].sort((a, b) => (a.spec.name < b.spec.name ? -1 : 1))) {
      const where = vm.node !== undefined ? `node ${vm.node}` : `pending: ${vm.pendingReason}`
      yield* say(`  ${vm.spec.name.padEnd(6)} ${String(vm.spec.memoryMiB).padStart(5)} MiB  desired ${vm.desired.padEnd(8)} ${where}`)
    }
  })
  yield* table

  const web = nodes.get(yield* leader)!.state.current.vms.get("web")!
  const victim = web.node!
  yield* say(`\nKilling node ${victim}, which hosts "web" …`)
  yield* Scope.close(nodes.get(victim)!.scope, Exit.void)
  nodes.delete(victim)
  const next = yield* leader
  yield* say(`Node ${next} leads (term ${(yield* nodes.get(next)!.raft.status).term}); it marks node ${victim} down and the scheduler moves its VMs:`)
  yield* run(new C.SetNodeHealth({ id: NodeId.make(victim), health: "down", at: Date.now() }))
  yield* table

  // Followers apply a moment after the leader: wait (with a deadline) for the replicas to converge.
  const converged = Effect.gen(function* () {
    for (let waited = 0; waited < 5_000; waited += 20) {
      const states = [...nodes.values()].map((n) => n.state.current.snapshot())
      if (states.every((s) => s === states[0])) return true
      yield* Effect.sleep(Duration.millis(20))
    }
    return false
  })
  yield* say(`\nThe surviving replicas hold identical state: ${yield* converged}.`)
  yield* say("The daemon, the network transport and the VM agents come next; see the README.")
  for (const n of nodes.values()) yield* Scope.close(n.scope, Exit.void)
  fs.rmSync(dir, { recursive: true, force: true })
})

Effect.runPromiseExit(program).then((exit) => {
  if (Exit.isFailure(exit)) {
    const cause = exit.cause
    const error = cause._tag === "Fail" ? cause.error : undefined
    console.error(error !== undefined && typeof error === "object" && "code" in error ? formatError(error as never) : String(cause))
    process.exitCode = 1
  }
})
