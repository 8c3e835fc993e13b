/**
 * What a VM may run: its runner must lie under one of the node's `allowedRunnerPrefixes` (default
 * `/nix/store`), and, when the node sets `allowedFlakePrefixes`, its flake reference must start with
 * one of them. A runner is a program the node executes as the daemon's user (root under the NixOS
 * module), so without this anyone allowed to create a VM could run any file on any node.
 *
 * Checked twice. The node that takes `POST /v1/vms` checks the spec as written (`admitSource`: the
 * path normalised, `..` resolved, against its own settings), so a refused request changes nothing.
 * The hosting node checks again right before it links and runs the runner (`resolveRunner`, against
 * its own settings), after resolving symlinks, so a link under an allowed prefix that points
 * elsewhere is refused too; it then runs the resolved directory, not the link.
 */
import * as DiskReads from "./internal/diskReads.js"
import * as path from "node:path"
import { FlakeNotAllowed, RunnerNotAllowed } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { VmSpec } from "../domain/VmSpec.js"

export const defaultAllowedRunnerPrefixes: ReadonlyArray<string> = ["/nix/store"]

export interface SourcePolicy {
  /** Absolute directories; a runner must be one of them or below one (default `/nix/store`). */
  readonly allowedRunnerPrefixes?: ReadonlyArray<string> | undefined
  /** When set, a flake reference must start with one of these (e.g. `github:my-org/`). */
  readonly allowedFlakePrefixes?: ReadonlyArray<string> | undefined
}

const onNode = (node: NodeId | undefined) => (node !== undefined ? ` of node ${node}` : "")

/** `/a/b` is `prefix` or below it, component by component (`/nix/storex` is not below `/nix/store`). */
const isUnder = (file: string, prefix: string): boolean => {
  const base = prefix.length > 1 && prefix.endsWith("/") ? prefix.slice(0, -1) : prefix
  return file === base || file.startsWith(base === "/" ? "/" : `${base}/`)
}

const runnerRefused = (name: string, runner: string, prefixes: ReadonlyArray<string>, node: NodeId | undefined, resolved?: string) =>
  new RunnerNotAllowed({
    subject: name,
    ...(node !== undefined ? { node } : {}),
    message:
      `VM "${name}": the runner ${runner}${resolved !== undefined && resolved !== runner ? ` (resolved: ${resolved})` : ""} is not under the allowed runner prefixes${onNode(node)} ` +
      `(allowedRunnerPrefixes: ${prefixes.join(", ") || "none"}); build the runner into the Nix store, or add its directory to allowedRunnerPrefixes (--allowed-runner-prefix) on every node that may host the VM`
  })

/** The spec's source as written against `policy` (no file is read): the API node's check. */
export const admitSource = (policy: SourcePolicy, spec: VmSpec, node?: NodeId): RunnerNotAllowed | FlakeNotAllowed | undefined => {
  const source = spec.source
  if (source._tag === "Runner") {
    const prefixes = policy.allowedRunnerPrefixes ?? defaultAllowedRunnerPrefixes
    const normal = path.posix.normalize(source.path)
    return prefixes.some((prefix) => isUnder(normal, path.posix.normalize(prefix))) ? undefined : runnerRefused(spec.name, source.path, prefixes, node)
  }
  if (source._tag === "Flake") {
    const prefixes = policy.allowedFlakePrefixes
    if (prefixes !== undefined && !prefixes.some((prefix) => source.ref.startsWith(prefix))) {
      return new FlakeNotAllowed({
        subject: spec.name,
        ...(node !== undefined ? { node } : {}),
        message: `VM "${spec.name}": the flake ${JSON.stringify(source.ref)} does not start with an allowed flake prefix${onNode(node)} (allowedFlakePrefixes: ${prefixes.join(", ") || "none"}); use an allowed flake, or add its prefix to allowedFlakePrefixes (--allowed-flake-prefix)`
      })
    }
  }
  return undefined
}

/** The path with its links resolved (as written when it does not exist), off the JavaScript thread (`diskReads.ts`). */
const realOrSelf = async (file: string): Promise<string> => (await DiskReads.realPath(file, "low")) ?? path.resolve(file)

/**
 * The runner directory to run for `runner`, with every symlink resolved, if it lies under an allowed
 * prefix (each resolved too: `/tmp` may itself be a link); the hosting node's check. Resolved off the
 * JavaScript thread: the runner (the Nix store) may be on a stalled disk.
 */
export const resolveRunner = async (
  policy: SourcePolicy,
  name: string,
  runner: string,
  node?: NodeId
): Promise<{ readonly resolved: string } | { readonly refused: RunnerNotAllowed }> => {
  const prefixes = policy.allowedRunnerPrefixes ?? defaultAllowedRunnerPrefixes
  const resolved = await realOrSelf(runner)
  const allowed = await Promise.all(prefixes.map(realOrSelf))
  return allowed.some((prefix) => isUnder(resolved, prefix))
    ? { resolved }
    : { refused: runnerRefused(name, runner, prefixes, node, resolved) }
}
