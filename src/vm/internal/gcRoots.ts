/**
 * Nix garbage-collector roots for a VM's runners, in microvm.nix's layout (`microvm -c` makes the
 * same two links):
 *
 *   ${gcRootDir}/${name}          → ${stateDir}/${name}/current
 *   ${gcRootDir}/booted-${name}   → ${stateDir}/${name}/booted
 *
 * with `gcRootDir` normally `/nix/var/nix/gcroots/microvm`. They are indirect roots: Nix follows
 * each link to the VM's `current`/`booted` link and keeps the store path that points to, so they
 * follow every rebuild and every boot without being rewritten, and a missing `booted` (a VM not
 * running) is simply no root. `nix build -o current` registers its own root for `current`; a
 * runner given as a path, and `booted`, get none without these.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { VmName } from "../../domain/VmName.js"
import { readLink, replaceSymlink, type VmPaths } from "./stateDir.js"

export const gcRootPaths = (gcRootDir: string, name: VmName): { readonly current: string; readonly booted: string } => ({
  current: path.join(gcRootDir, name),
  booted: path.join(gcRootDir, `booted-${name}`)
})

/**
 * Makes both roots (replacing links of the same name, as `microvm -c` does). Answers false, and
 * makes nothing, when the directory above `gcRootDir` does not exist: there is no Nix store with a
 * garbage collector to protect against on this host.
 */
export const addGcRoots = (gcRootDir: string, name: VmName, paths: VmPaths): boolean => {
  if (!fs.existsSync(path.dirname(gcRootDir))) return false
  fs.mkdirSync(gcRootDir, { recursive: true })
  const roots = gcRootPaths(gcRootDir, name)
  for (const [root, target] of [[roots.current, path.resolve(paths.current)], [roots.booted, path.resolve(paths.booted)]] as const) {
    if (readLink(root) !== target) replaceSymlink(target, root)
  }
  return true
}

/** Removes the roots that point into this VM's directory (a link of the same name pointing elsewhere is not ours). */
export const removeGcRoots = (gcRootDir: string, name: VmName, paths: VmPaths): void => {
  const roots = gcRootPaths(gcRootDir, name)
  if (readLink(roots.current) === path.resolve(paths.current)) fs.rmSync(roots.current, { force: true })
  if (readLink(roots.booted) === path.resolve(paths.booted)) fs.rmSync(roots.booted, { force: true })
}
