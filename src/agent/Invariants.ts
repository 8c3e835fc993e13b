/**
 * Safety invariants of the agents, checked by the simulator after every event: no VM runs on two
 * nodes at once (fencing and the reschedule timeout exist for this one).
 */
import { Effect } from "effect"
import { InvariantViolated } from "../domain/Errors.js"
import type { VmName } from "../domain/VmName.js"
import type { SimulatedHypervisor } from "../vm/SimulatedHypervisor.js"

export interface DoubleRun {
  readonly name: VmName
  /** The nodes running it, ascending. */
  readonly nodes: ReadonlyArray<number>
}

/** Every VM running on more than one of the given hosts (node id → its hypervisor), by name. */
export const vmsRunningTwice = (hosts: Iterable<readonly [number, SimulatedHypervisor]>): ReadonlyArray<DoubleRun> => {
  const where = new Map<VmName, Array<number>>()
  for (const [node, hypervisor] of hosts) {
    for (const name of hypervisor.runningVms()) where.set(name, [...(where.get(name) ?? []), node])
  }
  return [...where.entries()]
    .filter(([, nodes]) => nodes.length > 1)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, nodes]) => ({ name, nodes: [...nodes].sort((x, y) => x - y) }))
}

/** Fails with `InvariantViolated` naming the VM and the nodes if any VM runs on two nodes. */
export const checkNoVmRunsTwice = (
  hosts: Iterable<readonly [number, SimulatedHypervisor]>
): Effect.Effect<void, InvariantViolated> =>
  Effect.suspend(() => {
    const twice = vmsRunningTwice(hosts)
    const first = twice[0]
    if (first === undefined) return Effect.void
    return Effect.fail(
      new InvariantViolated({
        subject: first.name,
        message: twice.map((d) => `VM "${d.name}" runs on nodes ${d.nodes.join(", ")} at once`).join("; ")
      })
    )
  })
