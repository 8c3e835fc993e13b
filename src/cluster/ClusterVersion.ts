/**
 * The cluster's log version: which commands, and which meanings of them, every replica can apply.
 * What etcd calls its cluster version, for Blixard's replicated log.
 *
 * Every replica that applies the log — each Raft member, voter or learner — must decode each entry
 * and give it the same meaning, or the states diverge silently: a replica of an older release skips
 * a command kind it cannot decode (`entry N is not a valid command; it was skipped`), and applies
 * others with its older semantics. So:
 *
 * - `LogVersion` is the log version this release applies. Each command kind (`commandLogVersion`)
 *   and each change of meaning (`TwoStepMoves`) names the log version it needs.
 * - Each node advertises the log version it runs in its registration (`NodeInfo.logVersion`). A
 *   record without one is from a release before log versions: `OldestLogVersion`.
 * - The cluster's log version is replicated state (`ClusterState.clusterVersion`, in snapshots too;
 *   a snapshot without it is `OldestLogVersion`). A cluster founded by this release starts at
 *   `LogVersion`: the founder writes it into the bootstrap snapshot every replica starts from.
 * - The leader raises it (`SetClusterVersion`) once every Raft member — voters and learners, every
 *   replica that applies the log — has registered a log version at least the new one
 *   (`versionToRaise`); it is never lowered. Hosts (nodes that only run VMs, not Raft members) do
 *   not count: they never apply the log, they read the state through the API. (How a host's agent
 *   takes part in two-step moves is its own capability, `releases-moves`, see `NodeInfo.ts`.) The
 *   entry lists the members it was checked against, and every replica checks their registrations
 *   again when applying it, so a registration that changed meanwhile refuses it on every replica.
 * - A proposal (the API's, and the leader's own) of a command needing a newer log version than the
 *   cluster's is refused before it enters the log (`versionRefusal`, `BLX_CLUSTER_VERSION`, naming
 *   the members that lag: upgrade them). Should one reach the log anyway (an older leader's own
 *   proposal, or one made before the version was read), every replica refuses it alike when
 *   applying it: no state changes and its request id is not remembered, exactly as a replica that
 *   cannot decode it skips it.
 * - Changes of meaning follow the recorded cluster version, never the replica's own release: while
 *   the cluster is below `TwoStepMoves`, a drain or a resize that no longer fits moves VMs in one
 *   step, as the older members do; from it on, in two.
 * - A node whose release is older than the cluster's recorded version stops (`releaseTooOld`,
 *   `BLX_RELEASE_TOO_OLD`, naming its data directory and both versions): at start-up, once its
 *   snapshot is restored, and when an entry raises the version beyond its own. Since the leader
 *   proposes a command only once the cluster's version covers it, and raises the version only once
 *   every member runs it, such a node meets the raise before any entry it could not decode.
 *
 * Log versions:
 * 1. The releases before log versions (and before two-step moves): every command kind up to
 *    `ConsumeJoinToken`, and certificate records (kept as version 1: a joining node's certificate
 *    is recorded before any member could raise the version; an older replica that skips them lacks
 *    only the certificate list, which it does not use); a VM leaves a live node in one step.
 * 2. Two-step moves (`released`), CA rotation (an older member could not take part: a finished
 *    rotation would cut it off), `SetClusterVersion`.
 * 3. This release: `ReportVmStatuses`, many VMs' statuses in one entry (`BatchedStatusReports`). An
 *    agent reports one VM per entry while the cluster is below it.
 *
 * The simulator plays releases of older log versions with this code (`ClusterState.release`,
 * `releaseTooOld`'s `release`, the registration's log version): a rolling upgrade, and a rollback,
 * under faults (`blixard sim --full --workload orchestration --profile upgrade`).
 *
 * UNSAFE, for the simulator only: `unsafeVersionToRaiseEarly` (`--bug raise-version-early`) is the
 * raise with a majority's registrations, not every member's.
 *
 * Limits: an older release that joins a cluster already above its version cannot know it (it
 * predates this check): it shows in `blixard cluster status` with its lower log version; remove or
 * upgrade it. Builds between two-step moves and log versions advertise `releases-moves` but no log
 * version: they count as version 1 while applying two-step moves, so do not mix them with this
 * release; upgrade them together.
 */
import type { Command } from "../domain/Command.js"
import { ClusterVersionTooLow, ReleaseTooOld } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import type { NodeInfo } from "../domain/NodeInfo.js"

/** The log version of a release that advertises none (and of a snapshot that records none). */
export const OldestLogVersion = 1

/** The log version this release applies. */
export const LogVersion = 3

/** From this cluster version on, a VM leaves a live node in two steps (`released`); before it, in one. */
export const TwoStepMoves = 2

/** From this cluster version on, an agent reports its VMs' statuses many to an entry (`ReportVmStatuses`). */
export const BatchedStatusReports = 3

/** The log version each command kind needs (see the list above). */
const needs: { readonly [K in Command["_tag"]]: number } = {
  CreateVm: 1,
  StartVm: 1,
  StopVm: 1,
  DeleteVm: 1,
  SetVmLabels: 1,
  UpdateVm: 1,
  ReportVmStatus: 1,
  ReportVmStatuses: 3,
  RegisterNode: 1,
  SetNodeState: 1,
  SetNodeHealth: 1,
  RemoveNode: 1,
  CreateApiToken: 1,
  RevokeApiToken: 1,
  CreateJoinToken: 1,
  RevokeJoinToken: 1,
  ConsumeJoinToken: 1,
  RecordCertificate: 1,
  RevokeCertificate: 1,
  StartCaRotation: 2,
  CaRotationMoved: 2,
  FinishCaRotation: 2,
  // Proposed only once every member it lists runs its target version, which decodes it: its own
  // check (`setRefusal`) stands in for the cluster version's.
  SetClusterVersion: 1
}

/** The log version `command` needs. */
export const commandLogVersion = (command: { readonly _tag: Command["_tag"] }): number => needs[command._tag]

/** The log version `node` registered (`OldestLogVersion` for a release before log versions). */
export const nodeLogVersion = (node: NodeInfo | undefined): number => node?.logVersion ?? OldestLogVersion

/** What the version checks read of the replicated state. */
export interface VersionView {
  readonly clusterVersion: number
  readonly nodes: ReadonlyMap<number, NodeInfo>
  readonly members: ReadonlyMap<number, string>
}

/** The members among `members` whose registration is below `version` (or missing), in id order. */
export const lagging = (nodes: ReadonlyMap<number, NodeInfo>, members: Iterable<number>, version: number): Array<number> =>
  [...new Set(members)].sort((a, b) => a - b).filter((id) => nodes.get(id) === undefined || nodeLogVersion(nodes.get(id)) < version)

const describeLag = (nodes: ReadonlyMap<number, NodeInfo>, ids: ReadonlyArray<number>): string =>
  ids.map((id) => (nodes.get(id) === undefined ? `node ${id} (not registered yet)` : `node ${id} (log version ${nodeLogVersion(nodes.get(id))})`)).join(", ")

/**
 * Why `command` may not enter the log of a cluster at `state`'s version, if it may not: the
 * leader's check before proposing, and every replica's when applying (`ClusterState.apply`).
 */
export const versionRefusal = (state: VersionView, command: { readonly _tag: Command["_tag"] }, node?: number): ClusterVersionTooLow | undefined => {
  const needed = commandLogVersion(command)
  if (needed <= state.clusterVersion) return undefined
  const behind = lagging(state.nodes, state.members.keys(), needed)
  const who =
    behind.length > 0
      ? `members below it: ${describeLag(state.nodes, behind)}; upgrade them to a release of log version ${needed} or later (the leader raises the cluster's version once every member has registered it)`
      : `every member has registered it, so the leader raises the cluster's version within seconds: retry then`
  return new ClusterVersionTooLow({
    ...(node !== undefined ? { node: NodeId.make(node) } : {}),
    subject: command._tag,
    message: `${command._tag} needs log version ${needed}, but the cluster runs at log version ${state.clusterVersion} (\`blixard cluster status\` shows each member's); ${who}`
  })
}

/**
 * The version the leader should raise the cluster to, if any: the lowest log version the `members`
 * (the Raft configuration's voters and learners) registered, when it is above the cluster's.
 */
export const versionToRaise = (state: VersionView, members: ReadonlyArray<number>): number | undefined => {
  if (members.length === 0) return undefined
  const lowest = Math.min(...members.map((id) => (state.nodes.has(id) ? nodeLogVersion(state.nodes.get(id)) : OldestLogVersion)))
  return lowest > state.clusterVersion ? lowest : undefined
}

/**
 * UNSAFE, re-injects a bug for the simulator only (`--bug raise-version-early`): the highest log
 * version a majority of `members` registered, when above the cluster's, with that majority as the
 * members the raise lists (and every replica checks). A member still on an older release then
 * meets the raise: it stops (`releaseTooOld`) in the middle of a rolling upgrade, or — were it
 * to go on — would apply the newer log with its older meanings.
 */
export const unsafeVersionToRaiseEarly = (
  state: VersionView,
  members: ReadonlyArray<number>
): { readonly version: number; readonly members: ReadonlyArray<number> } | undefined => {
  const registered = members.map((id) => ({ id, version: state.nodes.has(id) ? nodeLogVersion(state.nodes.get(id)) : OldestLogVersion }))
  for (const version of [...new Set(registered.map((r) => r.version))].sort((a, b) => b - a)) {
    if (version <= state.clusterVersion) return undefined
    const ahead = registered.filter((r) => r.version >= version).map((r) => r.id)
    if (ahead.length > members.length / 2) return { version, members: ahead }
  }
  return undefined
}

/** Why raising the cluster to `version`, checked against `members`, is refused now, if it is. */
export const setRefusal = (state: VersionView, version: number, members: ReadonlyArray<number>): ClusterVersionTooLow | undefined => {
  const behind = lagging(state.nodes, members, version)
  if (behind.length === 0) return undefined
  return new ClusterVersionTooLow({
    subject: "SetClusterVersion",
    message: `the cluster's log version stays at ${state.clusterVersion}, not ${version}: ${describeLag(state.nodes, behind)} registered a lower one; upgrade them first`
  })
}

/**
 * Why a release of log version `release` (this one's, unless the simulator plays an older one) may
 * not apply a log whose cluster version is `clusterVersion`, if it may not: the cluster has moved
 * to a newer log than this binary applies.
 */
export const releaseTooOld = (
  clusterVersion: number,
  where: { readonly node?: number | undefined; readonly location?: string | undefined },
  release: number = LogVersion
): ReleaseTooOld | undefined => {
  if (clusterVersion <= release) return undefined
  const { node, location } = where
  const who = `${node !== undefined ? `node ${node}` : "this node"}${location !== undefined ? ` (data directory ${location})` : ""}`
  return new ReleaseTooOld({
    ...(node !== undefined ? { node: NodeId.make(node) } : {}),
    ...(location !== undefined ? { subject: location } : {}),
    message: `${who} runs a release of log version ${release}, but the cluster's log is at version ${clusterVersion}: this release would apply it wrongly, so it stops. Upgrade the node's blixard binary to a release of log version ${clusterVersion} or later and start it again on the same data directory (do not delete it)`
  })
}
