/**
 * A concurrent client workload against three real nodes, across a kill -9 of the leader, checked
 * with the project's linearizability checker. Each VM is a register: a write sets its label `v`, a
 * read (linearizable, through any node) returns it.
 */
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import * as Client from "../../src/api/Client.js"
import { RunnerConfig, VmSpec } from "../../src/domain/VmSpec.js"
import { VmName } from "../../src/domain/VmName.js"
import { History } from "../../src/sim/History.js"
import { checkLinearizability, formatResult, registerModel, type RegisterInput, type RegisterOutput } from "../../src/sim/Linearizability.js"
import { adminTokenOf, caOf, cliJson, clustersPerTest, waitFor } from "./harness.js"

const newCluster = clustersPerTest()

const clients = new Map<string, Client.ApiClientShape>()
const clientOf = (addr: string): Client.ApiClientShape => {
  let client = clients.get(addr)
  if (client === undefined) {
    client = Effect.runSync(
      Client.make({ addr, token: adminTokenOf(addr), timeout: "3 seconds", scheme: "https" }).pipe(Effect.provide(Client.layerHttpClient({ ca: caOf(addr) })))
    )
    clients.set(addr, client)
  }
  return client
}

describe("linearizability of the API across a leader failure", () => {
  it("reads and writes from 4 concurrent clients, leader killed mid-way: the history is linearizable", async () => {
    const c = newCluster()
    await c.add()
    await waitFor("node 1", async () => ((await cliJson<{ leader?: number }>(c.node(1).addr, ["cluster", "status"])).leader === 1 ? true : undefined))
    await c.add()
    await c.add()
    const leader = await c.converged([1, 2, 3])
    const keys = ["k0", "k1", "k2"]
    const admin = clientOf(c.node(1).addr)
    for (const key of keys) {
      // Declared only: the registers are labels, and the fixture runner does not exist.
      await Effect.runPromise(admin.createVm(new VmSpec({ name: VmName.make(key), source: new RunnerConfig({ path: "/nix/store/fixture" }) }), { start: false }))
    }

    const history = new History<RegisterInput, RegisterOutput>()
    const started = Date.now()
    const now = () => Date.now() - started
    const killAt = 3_000
    const endAt = 9_000
    let killed = false
    const live = () => c.nodes.filter((n) => n.running && !(killed && n.id === leader))
    let ops = 0

    const runClient = async (id: number) => {
      let seq = 0
      let pick = id
      while (now() < endAt) {
        const nodes = live()
        const node = nodes[pick++ % nodes.length]!
        const api = clientOf(node.addr)
        const key = keys[(id + seq) % keys.length]!
        if ((seq + id) % 2 === 0) {
          const value = `c${id}-${++seq}`
          const op = history.invoke(id, { _tag: "write", key, value }, now())
          const r = await Effect.runPromise(Effect.either(api.setVmLabels(VmName.make(key), { v: value })))
          // A failed write may still have been applied (e.g. the answer was lost): unknown outcome.
          if (Either.isRight(r)) history.ok(op, null, now())
          else history.unknown(op)
        } else {
          seq++
          const op = history.invoke(id, { _tag: "read", key }, now())
          const r = await Effect.runPromise(Effect.either(api.getVm(VmName.make(key))))
          if (Either.isRight(r)) history.ok(op, r.right.spec.labels["v"] ?? null, now())
          else history.fail(op)
        }
        ops++
      }
    }

    const killer = (async () => {
      await waitFor("the kill time", async () => (now() >= killAt ? true : undefined), killAt + 5_000)
      killed = true
      await c.node(leader).stop("SIGKILL")
    })()
    await Promise.all([killer, ...[0, 1, 2, 3].map(runClient)])

    const operations = history.operations()
    const completed = operations.filter((o) => o.ret !== Infinity)
    // The workload did run on both sides of the failover.
    expect(completed.filter((o) => o.call < killAt).length).toBeGreaterThan(10)
    expect(completed.filter((o) => o.call > killAt + 2_000).length).toBeGreaterThan(10)
    expect(ops).toBeGreaterThan(50)
    const result = checkLinearizability(registerModel, operations)
    if (result._tag !== "Ok") console.log(formatResult(registerModel, result))
    expect(result._tag).toBe("Ok")
  })
})
