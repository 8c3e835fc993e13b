/**
 * How the CLI prints answers: aligned tables and key/value blocks for people, JSON (the schemas'
 * encoded form, so it round-trips) with `--json`. Pure functions of the values.
 */
import { Schema } from "effect"
import type { Labels } from "../domain/Labels.js"
import type { NodeId } from "../domain/NodeId.js"
import { NodeInfo } from "../domain/NodeInfo.js"
import type { ConfigSource, Constraint } from "../domain/VmSpec.js"
import { VmRecord } from "../domain/VmStatus.js"
import { ClusterStatus } from "../domain/ClusterStatus.js"

/** Columns padded to their widest cell, separated by three spaces, no trailing blanks. */
export const renderTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const all = [header, ...rows]
  const widths = header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? "").length)))
  return all
    .map((row) => header.map((_, column) => (row[column] ?? "").padEnd(widths[column] ?? 0)).join("   ").trimEnd())
    .join("\n")
}

const json = <A, I>(schema: Schema.Schema<A, I, never>, value: A): string =>
  JSON.stringify(Schema.encodeSync(schema)(value), null, 2)

export const formatLabels = (labels: Labels): string =>
  Object.entries(labels)
    .map(([key, value]) => `${key}=${value}`)
    .join(",")

export const formatConstraints = (constraints: ReadonlyArray<Constraint>): string =>
  constraints.map((c) => `${c.key}${c.op === "eq" ? "=" : "!="}${c.value}`).join(",")

export const formatSource = (source: ConfigSource): string => {
  switch (source._tag) {
    case "Inline":
      return `inline module (${Buffer.byteLength(source.module, "utf8")} bytes)`
    case "Flake":
      return `flake ${source.ref}`
    case "Runner":
      return `runner ${source.path}`
  }
}

const nodeText = (node: NodeId | undefined): string => (node === undefined ? "-" : String(node))

/** What a person most needs to know beyond the phase: why it is pending, or its last error. */
const noteOf = (record: VmRecord): string =>
  record.pendingReason ?? (record.moving !== undefined ? movingText(record) : record.status.lastError) ?? ""

/**
 * A VM moving off its live node: that node stops it first, then it is placed elsewhere — or why it
 * waits (a node of an older version never stops it for a move).
 */
const movingText = (record: VmRecord): string => `moving off node ${nodeText(record.node)}: ${record.movingReason ?? "stopping it there first"}`

export const vmTableHeader = ["NAME", "DESIRED", "PHASE", "NODE", "VCPUS", "MEMORY", "RESTARTS", "NOTE"] as const

/** `vm list`: one row per VM, sorted by name; `--json`: the records as an array. */
export const formatVmList = (records: ReadonlyArray<VmRecord>, asJson: boolean): string => {
  if (asJson) return json(Schema.Array(VmRecord), records)
  if (records.length === 0) return "No VMs."
  const rows = [...records]
    .sort((a, b) => (a.spec.name < b.spec.name ? -1 : a.spec.name > b.spec.name ? 1 : 0))
    .map((record) => [
      record.spec.name,
      record.desired,
      record.status.phase,
      nodeText(record.node),
      String(record.spec.vcpus),
      `${record.spec.memoryMiB} MiB`,
      String(record.status.restarts),
      noteOf(record)
    ])
  return renderTable(vmTableHeader, rows)
}

/** `vm status`: every field of one VM, one per line; `--json`: the record. */
export const formatVm = (record: VmRecord, asJson: boolean): string => {
  if (asJson) return json(VmRecord, record)
  const { spec, status } = record
  const lines: Array<readonly [string, string]> = [
    ["name", spec.name],
    ["desired", record.desired],
    ["phase", `${status.phase} since ${new Date(status.since).toISOString()}`],
    ["node", record.node === undefined ? "- (not placed)" : String(record.node)]
  ]
  if (record.pendingReason !== undefined) lines.push(["pending", record.pendingReason])
  if (record.moving !== undefined) {
    lines.push(["moving", `${movingText(record)}${record.movingReason === undefined ? ", then placed on another node" : ""} (since revision ${record.moving})`])
  }
  if (status.pid !== undefined) lines.push(["pid", String(status.pid)])
  if (status.exitCode !== undefined) lines.push(["exit code", String(status.exitCode)])
  if (status.lastError !== undefined) lines.push(["last error", status.lastError])
  if (status.build !== undefined) {
    const build = status.build
    lines.push([
      "build",
      `${build.state} generation ${build.generation} since ${new Date(build.startedAt).toISOString()}${build.lastLine !== undefined ? `: ${build.lastLine}` : ""}`
    ])
  }
  lines.push(["generation", `${record.generation ?? 0} (running: ${status.generation ?? "-"})`])
  lines.push(
    ["restarts", String(status.restarts)],
    ["source", formatSource(spec.source)],
    ["vcpus", String(spec.vcpus)],
    ["memory", `${spec.memoryMiB} MiB`],
    ["labels", formatLabels(spec.labels) || "-"],
    ["constraints", formatConstraints(spec.constraints) || "-"],
    ["anti-affinity", spec.antiAffinity ?? "-"],
    ["restart", spec.restartPolicy],
    ["revision", String(record.revision)],
    ["created", new Date(record.createdAt).toISOString()]
  )
  const width = Math.max(...lines.map(([key]) => key.length)) + 1
  return lines.map(([key, value]) => `${`${key}:`.padEnd(width)} ${value}`).join("\n")
}

/** The one-line answer of a VM write (`vm create|start|stop`); `--json`: the record. */
export const formatVmChange = (verb: "created" | "started" | "stopped" | "updated", record: VmRecord, asJson: boolean): string => {
  if (asJson) return json(VmRecord, record)
  const where =
    record.node !== undefined
      ? `on node ${record.node}${record.moving !== undefined ? `, ${movingText(record)}` : ""}`
      : `pending placement${record.pendingReason !== undefined ? `: ${record.pendingReason}` : ""}`
  return `${verb} VM ${record.spec.name} (desired ${record.desired}, ${where})`
}

export const formatVmDeleted = (name: string, asJson: boolean): string =>
  asJson ? JSON.stringify({ deleted: name }) : `deleted VM ${name}`

export const nodeTableHeader = ["ID", "ADDRESS", "STATE", "HEALTH", "VCPUS", "MEMORY", "LABELS"] as const

/** `cluster status`: the leader line, then one row per member; `--json`: the status. */
export const formatNodeList = (nodes: ReadonlyArray<NodeInfo>, asJson: boolean): string => {
  if (asJson) return json(Schema.Array(NodeInfo), nodes)
  const rows = [...nodes]
    .sort((a, b) => a.id - b.id)
    .map((n) => [
      String(n.id),
      n.address,
      n.state,
      n.health,
      String(n.capacity.vcpus),
      `${n.capacity.memoryMiB} MiB`,
      formatLabels(n.labels)
    ])
  if (rows.length === 0) return "No nodes have registered yet."
  const foreign = [...nodes]
    .sort((a, b) => a.id - b.id)
    .filter((n) => (n.foreignVms?.length ?? 0) > 0)
    .map((n) => `node ${n.id}: VM directories not Blixard's (left alone): ${(n.foreignVms ?? []).join(", ")}`)
  return [renderTable(nodeTableHeader, rows), ...foreign].join("\n")
}

export const formatNodeChange = (node: NodeInfo, asJson: boolean): string =>
  asJson ? json(NodeInfo, node) : `node ${node.id} is now ${node.state} (${node.health})`

export const memberTableHeader = ["ID", "ADDRESS", "ROLE", "MATCH", "LAG", "LAST CONTACT", "LOG VERSION"] as const

export const formatClusterStatus = (status: ClusterStatus, asJson: boolean): string => {
  if (asJson) return json(ClusterStatus, status)
  const leader =
    status.leader === undefined ? "no leader (election in progress)" : `leader: node ${status.leader}`
  const version = status.clusterVersion === undefined ? "" : `, log version ${status.clusterVersion}`
  const head = `${leader}, term ${status.term}, commit ${status.commit}, applied ${status.applied}${version} (answered by node ${status.node})`
  const rows = [...status.members]
    .sort((a, b) => a.id - b.id)
    .map((m) => [
      `${m.id}${m.id === status.leader ? "*" : ""}`,
      m.address === "" ? "-" : m.address,
      m.role,
      String(m.match),
      String(m.lag),
      m.lastContactMs === undefined ? "-" : `${m.lastContactMs} ms ago`,
      m.logVersion === undefined ? "-" : status.clusterVersion !== undefined && m.logVersion < status.clusterVersion ? `${m.logVersion} (behind)` : String(m.logVersion)
    ])
  return rows.length === 0 ? `${head}\nNo members.` : `${head}\n${renderTable(memberTableHeader, rows)}`
}
