/**
 * Placement: which node should host a VM. Pure and deterministic — it runs inside the replicated
 * state machine, so every node computes the same answer from the same state.
 *
 * A node is a candidate when it is up, `active` (not cordoned or draining), satisfies every label
 * constraint, has the free vcpus and memory (capacity minus what VMs already placed there reserve),
 * hosts no other VM of the same anti-affinity group, and has no foreign VM directory of the VM's
 * name (`NodeInfo.foreignVms`: a microvm.nix VM the node would refuse to touch). Among candidates the scheduler spreads:
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

/** What the VMs placed on one node reserve. */
export interface Usage {
  vcpus: number
  memoryMiB: number
  count: number
  /** Anti-affinity group → how many of its VMs the node hosts. */
  readonly groups: Map<string, number>
}

/**
 * What every node's placed VMs reserve, kept up to date as VMs are placed, moved and removed, so
 * placing a VM costs O(nodes) rather than a walk over every VM in the cluster.
 */
export class Ledger {
  private readonly byNode = new Map<number, Usage>()

  get(node: number): Usage | undefined {
    return this.byNode.get(node)
  }

  add(vm: Placed): void {
    if (vm.node === undefined) return
    let u = this.byNode.get(vm.node)
    if (u === undefined) {
      u = { vcpus: 0, memoryMiB: 0, count: 0, groups: new Map() }
      this.byNode.set(vm.node, u)
    }
    u.vcpus += vm.spec.vcpus
    u.memoryMiB += vm.spec.memoryMiB
    u.count += 1
    const group = vm.spec.antiAffinity
    if (group !== undefined) u.groups.set(group, (u.groups.get(group) ?? 0) + 1)
  }

  remove(vm: Placed): void {
    if (vm.node === undefined) return
    const u = this.byNode.get(vm.node)
    if (u === undefined) return
    u.vcpus -= vm.spec.vcpus
    u.memoryMiB -= vm.spec.memoryMiB
    u.count -= 1
    const group = vm.spec.antiAffinity
    if (group !== undefined) {
      const n = (u.groups.get(group) ?? 0) - 1
      if (n > 0) u.groups.set(group, n)
      else u.groups.delete(group)
    }
    if (u.count === 0) this.byNode.delete(vm.node)
  }
}

/** Why `node` lacks the vcpus or memory `spec` asks for (`usage`: what the other VMs there reserve), or undefined. */
export const shortfall = (spec: VmSpec, node: NodeInfo, usage: Usage | undefined): string | undefined => {
  const freeVcpus = node.capacity.vcpus - (usage?.vcpus ?? 0)
  const freeMemory = node.capacity.memoryMiB - (usage?.memoryMiB ?? 0)
  if (freeVcpus < spec.vcpus) return `not enough vcpus (${freeVcpus} free, needs ${spec.vcpus})`
  if (freeMemory < spec.memoryMiB) return `not enough memory (${freeMemory} MiB free, needs ${spec.memoryMiB} MiB)`
  return undefined
}

/** Why `node` cannot host `spec`, or undefined if it can. */
const refusal = (spec: VmSpec, node: NodeInfo, usage: Usage | undefined): string | undefined => {
  if (node.health === "down") return "down"
  if (node.state !== "active") return node.state
  if (node.foreignVms?.includes(spec.name) === true) {
    return `holds a VM directory "${spec.name}" that is not Blixard's (microvm.nix's own VM; Blixard leaves it alone)`
  }
  for (const c of spec.constraints) {
    const has = node.labels[c.key]
    if (c.op === "eq" && has !== c.value) return `needs label ${c.key}=${c.value}${has === undefined ? "" : ` (has ${has})`}`
    if (c.op === "neq" && has === c.value) return `must not have label ${c.key}=${c.value}`
  }
  const short = shortfall(spec, node, usage)
  if (short !== undefined) return short
  if (spec.antiAffinity !== undefined && usage?.groups.has(spec.antiAffinity) === true) {
    return `already hosts a VM of anti-affinity group ${spec.antiAffinity}`
  }
  return undefined
}

/**
 * Chooses a node for `spec` among `nodes`, given what the VMs already placed reserve (`ledger`,
 * which must not count the VM being placed). `avoid` excludes a node (the one being drained).
 */
export const place = (spec: VmSpec, nodes: Iterable<NodeInfo>, ledger: Ledger, avoid?: NodeId): Placement => {
  const sorted = [...nodes].sort((a, b) => a.id - b.id)
  if (sorted.length === 0) return { _tag: "Unplaceable", reason: "no nodes have joined the cluster" }
  let best: { node: NodeInfo; free: number; count: number } | undefined
  const reasons: Array<string> = []
  for (const node of sorted) {
    const u = ledger.get(node.id)
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
