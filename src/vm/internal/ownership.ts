/**
 * Which VM directories under the state directory are Blixard's. The state directory is shared with
 * microvm.nix's own tools (`microvm -c`, declarative `microvm.vms`), so a directory is Blixard's
 * only when it holds the marker Blixard writes when it creates it, `blixard.json`, naming the VM,
 * the node and (once known) the cluster. Everything else is FOREIGN: never started, stopped,
 * changed or removed, only listed (the node's status shows it).
 *
 * A marker of another node or cluster is foreign too: a node re-created with another id, or another
 * cluster's daemon sharing the host, keeps its own VMs. The cluster is compared only when both the
 * marker and the reader know it (a node that is still joining does not, nor does the fencing
 * watchdog process).
 *
 * Every read of a marker is off the JavaScript thread (`readOwnership`, `scanStateDir`): the fencing
 * watchdog lists and stops VMs on a disk that may be stalled (waiting for the answer only so long),
 * and the daemon's start, prepare and remove paths must not stop its event loop there either.
 */
import { Option, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { NodeId } from "../../domain/NodeId.js"
import { VmName } from "../../domain/VmName.js"
import * as DiskReads from "./diskReads.js"
import { writeFileAtomic } from "./stateDir.js"

export const MarkerFileName = "blixard.json"

/** `${stateDir}/${name}/blixard.json`. */
export class VmMarker extends Schema.Class<VmMarker>("VmMarker")({
  vm: VmName,
  node: NodeId,
  cluster: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(64)), { exact: true }),
  /** Epoch milliseconds. */
  createdAt: Schema.Int
}) {}

/** Who this process acts for. */
export interface Owner {
  readonly node: NodeId
  /** The cluster's id as known now (undefined or "" while unknown). */
  readonly cluster?: (() => string | undefined) | undefined
}

export type Ownership =
  | { readonly _tag: "Absent" }
  | { readonly _tag: "Ours"; readonly marker: VmMarker }
  | { readonly _tag: "Foreign"; readonly reason: string }

const decodeMarker = Schema.decodeUnknownEither(Schema.parseJson(VmMarker))
const encodeMarker = Schema.encodeSync(VmMarker)

const clusterOf = (owner: Owner): string | undefined => {
  const cluster = owner.cluster?.()
  return cluster === undefined || cluster === "" ? undefined : cluster
}

const unreadable = (e: unknown): Ownership => ({ _tag: "Foreign", reason: `it cannot be read (${(e as Error).message})` })
const notADirectory: Ownership = { _tag: "Foreign", reason: "it is not a directory" }
const noMarker: Ownership = {
  _tag: "Foreign",
  reason: `it has no Blixard marker (${MarkerFileName}): microvm.nix or someone else made it`
}
const markerUnreadable = (e: unknown): Ownership => ({
  _tag: "Foreign",
  reason: `its marker ${MarkerFileName} cannot be read (${(e as Error).message})`
})

/** Whose a directory is, from its marker's text. */
const judgeMarker = (text: string, name: string, owner: Owner): Ownership => {
  const decoded = decodeMarker(text)
  if (decoded._tag === "Left") return { _tag: "Foreign", reason: `its marker ${MarkerFileName} is not valid` }
  const marker = decoded.right
  if (marker.vm !== name) return { _tag: "Foreign", reason: `its marker names the VM "${marker.vm}"` }
  if (marker.node !== owner.node) return { _tag: "Foreign", reason: `it belongs to node ${marker.node}` }
  const cluster = clusterOf(owner)
  if (cluster !== undefined && marker.cluster !== undefined && marker.cluster !== cluster) {
    return { _tag: "Foreign", reason: `it belongs to cluster ${marker.cluster}` }
  }
  return { _tag: "Ours", marker }
}

/**
 * Whose the directory `dir` (of the VM `name`) is. Read off the JavaScript thread (`diskReads.ts`,
 * low lane): the stop path and listings must not hang the process on a stalled disk, nor the
 * daemon's start, prepare and remove paths its event loop. The marker is never read through a link.
 */
export const readOwnership = async (dir: string, name: string, owner: Owner): Promise<Ownership> => {
  let stat: fs.Stats | undefined
  try {
    stat = await DiskReads.lstat(dir, "low")
  } catch (e) {
    return unreadable(e)
  }
  if (stat === undefined) return { _tag: "Absent" }
  if (!stat.isDirectory()) return notADirectory
  let text: string | undefined
  try {
    text = await DiskReads.readText(path.join(dir, MarkerFileName), "low", { noFollow: true })
  } catch (e) {
    return markerUnreadable(e)
  }
  return text === undefined ? noMarker : judgeMarker(text, name, owner)
}

/**
 * Creates the VM's directory with its marker; fails if anything is at `dir` already (the caller
 * checked it is absent: `mkdir` without `recursive` makes the claim exclusive). Off the JavaScript
 * thread (the daemon's prepare path must not stop its event loop on a stalled disk).
 */
export const createOwnedDir = async (dir: string, name: VmName, owner: Owner, now: number): Promise<void> => {
  await fs.promises.mkdir(path.dirname(dir), { recursive: true })
  await fs.promises.mkdir(dir)
  const cluster = clusterOf(owner)
  const marker = new VmMarker({ vm: name, node: owner.node, ...(cluster !== undefined ? { cluster } : {}), createdAt: now })
  await writeFileAtomic(path.join(dir, MarkerFileName), `${JSON.stringify(encodeMarker(marker))}\n`)
}

/** A directory under the state directory that is not Blixard's. */
export interface ForeignDir {
  readonly name: string
  readonly reason: string
}

/**
 * The state directory's entries, split: the VM names Blixard owns, and the foreign directories
 * (hidden entries and plain files are not VMs and are left out, as `microvm -l` does). Read off the
 * JavaScript thread (`readOwnership`).
 */
export const scanStateDir = async (
  stateDir: string,
  owner: Owner
): Promise<{ readonly ours: ReadonlyArray<VmName>; readonly foreign: ReadonlyArray<ForeignDir> }> => {
  const ours: Array<VmName> = []
  const foreign: Array<ForeignDir> = []
  const entries = await DiskReads.readDir(stateDir, "low")
  if (entries === undefined) return { ours, foreign }
  const dirs = entries.filter((entry) => !entry.name.startsWith(".") && entry.isDirectory())
  const owners = await Promise.all(dirs.map((entry) => readOwnership(path.join(stateDir, entry.name), entry.name, owner)))
  dirs.forEach((entry, i) => {
    const ownership = owners[i]!
    if (ownership._tag === "Ours" && Option.isSome(Schema.validateOption(VmName)(entry.name))) ours.push(ownership.marker.vm)
    else if (ownership._tag === "Foreign") foreign.push({ name: entry.name, reason: ownership.reason })
  })
  ours.sort()
  foreign.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  return { ours, foreign }
}
