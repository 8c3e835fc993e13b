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
 *
 * Asynchronous (libuv's threads): `/nix/var` may sit on a disk that stalls, and the prepare and
 * remove paths must not stop the daemon's event loop meanwhile.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { VmName } from "../../domain/VmName.js"
import type { VmPaths } from "./stateDir.js"

export const gcRootPaths = (gcRootDir: string, name: VmName): { readonly current: string; readonly booted: string } => ({
  current: path.join(gcRootDir, name),
  booted: path.join(gcRootDir, `booted-${name}`)
})

/** Where a link points, resolved against its directory; undefined when it is not there (or not a link). */
const linkTarget = (link: string): Promise<string | undefined> =>
  fs.promises.readlink(link).then(
    (target) => path.resolve(path.dirname(link), target),
    () => undefined
  )

/**
 * Makes both roots (replacing links of the same name, as `microvm -c` does). Answers false, and
 * makes nothing, when the directory above `gcRootDir` does not exist: there is no Nix store with a
 * garbage collector to protect against on this host.
 */
export const addGcRoots = async (gcRootDir: string, name: VmName, paths: VmPaths): Promise<boolean> => {
  const parent = await fs.promises.stat(path.dirname(gcRootDir)).then(() => true, () => false)
  if (!parent) return false
  await fs.promises.mkdir(gcRootDir, { recursive: true })
  const roots = gcRootPaths(gcRootDir, name)
  for (const [root, target] of [[roots.current, path.resolve(paths.current)], [roots.booted, path.resolve(paths.booted)]] as const) {
    if ((await linkTarget(root)) === target) continue
    // A new link renamed over the old one: replaced atomically.
    const tmp = `${root}.tmp-${process.pid}`
    await fs.promises.rm(tmp, { force: true })
    await fs.promises.symlink(target, tmp)
    await fs.promises.rename(tmp, root)
  }
  return true
}

/** Removes the roots that point into this VM's directory (a link of the same name pointing elsewhere is not ours). */
export const removeGcRoots = async (gcRootDir: string, name: VmName, paths: VmPaths): Promise<void> => {
  const roots = gcRootPaths(gcRootDir, name)
  if ((await linkTarget(roots.current)) === path.resolve(paths.current)) await fs.promises.rm(roots.current, { force: true })
  if ((await linkTarget(roots.booted)) === path.resolve(paths.booted)) await fs.promises.rm(roots.booted, { force: true })
}
