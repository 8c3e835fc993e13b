/**
 * systemd mode's VM user: microvm.nix's `microvm@NAME` runs each VM as `User=microvm Group=kvm`
 * (its host module's names) in the VM's directory, where it replaces `booted` and creates its
 * sockets. The daemon (root) makes those directories, so at start-up it resolves the configured
 * `vmUser`/`vmGroup` to ids and the backend hands each VM directory to them (`RunnerBuild.ts`), as
 * microvm.nix's own `install-microvm-NAME` does.
 *
 * Names are resolved with `getent` (so NSS sources count, as for systemd), or from `/etc/passwd`
 * and `/etc/group` where there is no `getent`.
 */
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import { ConfigInvalid } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"

export interface LookupOptions {
  /** The `getent` executable (default `getent` on PATH). */
  readonly getent?: string
  /** The files read where `getent` is missing (default `/etc/passwd`, `/etc/group`). */
  readonly passwdFile?: string
  readonly groupFile?: string
}

const idOf = (line: string | undefined): number | undefined => {
  const id = line?.split(":")[2]
  return id !== undefined && /^[0-9]+$/.test(id) ? Number(id) : undefined
}

/** The numeric id of a user (`passwd`) or group (`group`) by name; undefined when there is none. */
export const lookupId = (database: "passwd" | "group", name: string, options: LookupOptions = {}): number | undefined => {
  const run = spawnSync(options.getent ?? "getent", [database, name], { encoding: "utf8", timeout: 10_000 })
  if (run.error === undefined) return run.status === 0 ? idOf(run.stdout.split("\n")[0]) : undefined
  const file = database === "passwd" ? (options.passwdFile ?? "/etc/passwd") : (options.groupFile ?? "/etc/group")
  let text: string
  try {
    text = fs.readFileSync(file, "utf8")
  } catch {
    return undefined
  }
  return idOf(text.split("\n").find((line) => line.split(":")[0] === name))
}

/** Resolves `vmUser` and `vmGroup`; a missing one stops the daemon with what to do. */
export const resolveVmOwner = (
  config: { readonly id: NodeId; readonly vmUser: string; readonly vmGroup: string },
  options: LookupOptions = {}
): Effect.Effect<{ readonly uid: number; readonly gid: number }, ConfigInvalid> =>
  Effect.gen(function* () {
    const missing = (what: "user" | "group", name: string, setting: string, flag: string, variable: string) =>
      new ConfigInvalid({
        node: config.id,
        subject: name,
        message:
          `node ${config.id}: systemd mode runs VMs as microvm.nix's ${what} "${name}", which does not exist on this host. ` +
          `Enable microvm.nix's host module on it (microvm.host.enable creates the user microvm in the group kvm), ` +
          `or set ${setting} (${flag}, ${variable}) to the ${what} microvm@.service runs as`
      })
    const uid = lookupId("passwd", config.vmUser, options)
    if (uid === undefined) return yield* missing("user", config.vmUser, "vmUser", "--vm-user", "BLIXARD_VM_USER")
    const gid = lookupId("group", config.vmGroup, options)
    if (gid === undefined) return yield* missing("group", config.vmGroup, "vmGroup", "--vm-group", "BLIXARD_VM_GROUP")
    return { uid, gid }
  })
