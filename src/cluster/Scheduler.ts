/**
 * Placement: which node should host a VM. Pure and deterministic — it runs inside the replicated
 * state machine, so every node computes the same answer from the same state.
 *
 * A node is a candidate when it is up, `active` (not cordoned or draining), satisfies every label
 * constraint, has the free vcpus and memory (capacity minus what VMs already placed there reserve),
 * and hosts no other VM of the same anti-affinity group. Among candidates the scheduler spreads:
 * the node with the most free memory (as a fraction of its capacity) wins, then the fewest VMs,
 * then the lowest id.
 */
import type { NodeId } from "../domain/NodeId.js"
import type { NodeInfo } from "../domain/NodeInfo.js"
import type { VmSpec } from "../domain/VmSpec.js"

/** What is placed where: enough of a VM record for the scheduler. */
export interface Placed {
  readonly spec: VmSpec
  readonly node?: NodeId | undefined
}

export type Placement =
  | { readonly _tag: "Placed"; readonly node: NodeId }
  | { readonly _tag: "Unplaceable"; readonly reason: string }

interface Usage {
  vcpus: number
  memoryMiB: number
  count: number
  groups: Set<string>
}

const usageByNode = (vms: Iterable<Placed>, skip: string): Map<number, Usage> => {
  const usage = new Map<number, Usage>()
  for (const vm of vms) {
    if (vm.node === undefined || vm.spec.name === skip) continue
    let u = usage.get(vm.node)
    if (u === undefined) {
      u = { vcpus: 0, memoryMiB: 0, count: 0, groups: new Set() }
      usage.set(vm.node, u)
    }
    u.vcpus += vm.spec.vcpus
    u.memoryMiB += vm.spec.memoryMiB
    u.count += 1
    if (vm.spec.antiAffinity !== undefined) u.groups.add(vm.spec.antiAffinity)
  }
  return usage
}

/** Why `node` cannot host `spec`, or undefined if it can. */
const refusal = (spec: VmSpec, node: NodeInfo, usage: Usage | undefined): string | undefined => {
  if (node.health === "down") return "down"
  if (node.state !== "active") return node.state
  for (const c of spec.constraints) {
    const has = node.labels[c.key]
    if (c.op === "eq" && has !== c.value) return `needs label ${c.key}=${c.value}${has === undefined ? "" : ` (has ${has})`}`
    if (c.op === "neq" && has === c.value) return `must not have label ${c.key}=${c.value}`
  }
  const freeVcpus = node.capacity.vcpus - (usage?.vcpus ?? 0)
  const freeMemory = node.capacity.memoryMiB - (usage?.memoryMiB ?? 0)
  if (freeVcpus < spec.vcpus) return `not enough vcpus (${freeVcpus} free, needs ${spec.vcpus})`
  if (freeMemory < spec.memoryMiB) return `not enough memory (${freeMemory} MiB free, needs ${spec.memoryMiB} MiB)`
  if (spec.antiAffinity !== undefined && usage?.groups.has(spec.antiAffinity)) {
    return `already hosts a VM of anti-affinity group ${spec.antiAffinity}`
  }
  return undefined
}

/**
 * Chooses a node for `spec` among `nodes`, given the VMs already placed (`vms`; the VM itself, if
 * listed, is ignored, so a VM can be re-placed). `avoid` excludes a node (the one being drained).
 */
export const place = (
  spec: VmSpec,
  nodes: Iterable<NodeInfo>,
  vms: Iterable<Placed>,
  avoid?: NodeId
): Placement => {
  const usage = usageByNode(vms, spec.name)
  const sorted = [...nodes].sort((a, b) => a.id - b.id)
  if (sorted.length === 0) return { _tag: "Unplaceable", reason: "no nodes have joined the cluster" }
  let best: { node: NodeInfo; free: number; count: number } | undefined
  const reasons: Array<string> = []
  for (const node of sorted) {
    const u = usage.get(node.id)
    const why = node.id === avoid ? "being drained" : refusal(spec, node, u)
    if (why !== undefined) {
      reasons.push(`node ${node.id}: ${why}`)
      continue
    }
    const free = (node.capacity.memoryMiB - (u?.memoryMiB ?? 0) - spec.memoryMiB) / node.capacity.memoryMiB
    const count = u?.count ?? 0
    if (best === undefined || free > best.free || (free === best.free && count < best.count)) {
      best = { node, free, count }
    }
  }
  return best !== undefined
    ? { _tag: "Placed", node: best.node.id }
    : { _tag: "Unplaceable", reason: `no node can host ${spec.name} — ${reasons.join("; ")}` }
}
