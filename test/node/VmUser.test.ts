import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { NodeId } from "../../src/domain/NodeId.js"
import { lookupId, resolveVmOwner } from "../../src/node/VmUser.js"
import { scopedTempDir } from "../vm/fixtures.js"

const node = NodeId.make(5)

describe("systemd mode's VM user and group", () => {
  it.effect("are resolved by name through getent", () =>
    Effect.gen(function* () {
      expect(yield* resolveVmOwner({ id: node, vmUser: "root", vmGroup: "root" })).toEqual({ uid: 0, gid: 0 })
    }))

  it.effect("a missing user or group stops the daemon with the node, the name and what to do", () =>
    Effect.gen(function* () {
      const user = yield* Effect.flip(resolveVmOwner({ id: node, vmUser: "no-such-microvm-user", vmGroup: "root" }))
      expect(user).toMatchObject({ _tag: "ConfigInvalid", code: "BLX_CONFIG_INVALID", node, subject: "no-such-microvm-user" })
      expect(user.message).toContain(`node 5: systemd mode runs VMs as microvm.nix's user "no-such-microvm-user", which does not exist on this host`)
      expect(user.message).toContain("microvm.host.enable")
      expect(user.message).toContain("vmUser (--vm-user, BLIXARD_VM_USER)")
      const group = yield* Effect.flip(resolveVmOwner({ id: node, vmUser: "root", vmGroup: "no-such-kvm-group" }))
      expect(group.message).toContain(`group "no-such-kvm-group"`)
      expect(group.message).toContain("vmGroup (--vm-group, BLIXARD_VM_GROUP)")
    }))

  it.scoped("are read from passwd and group files where there is no getent", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("vm-user")
      const passwdFile = path.join(root, "passwd")
      const groupFile = path.join(root, "group")
      fs.writeFileSync(passwdFile, "root:x:0:0::/root:/bin/sh\nmicrovm:x:996:302::/var/empty:/sbin/nologin\n")
      fs.writeFileSync(groupFile, "root:x:0:\nkvm:x:302:microvm\n")
      const files = { getent: path.join(root, "no-getent"), passwdFile, groupFile }
      expect(lookupId("passwd", "microvm", files)).toBe(996)
      expect(lookupId("group", "kvm", files)).toBe(302)
      expect(lookupId("passwd", "micro", files)).toBeUndefined()
      expect(yield* resolveVmOwner({ id: node, vmUser: "microvm", vmGroup: "kvm" }, files)).toEqual({ uid: 996, gid: 302 })
    }))
})
