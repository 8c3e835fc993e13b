#!/bin/sh
":" /*
# The `blixard` executable, a shell script and an ES module in one file. Run as a program it is the
# shell script below; `node bin/blixard.js` runs the module after the comment.
#
# Every command but the daemon starts from the CLI's start-up snapshot (dist/snapshot/cli.blob,
# see src/cli/SnapshotMain.ts): Node.js begins with the CLI's modules loaded and evaluated, not read
# and compiled. Node.js refuses a blob another Node.js built (it exits), so the blob is used only while
# `node` is the binary that built it, as far as its size and modification time (cli.node) tell (a
# package that pins its Node.js sets `node` below to it), and without NODE_OPTIONS (a V8 flag there,
# such as --max-old-space-size, makes Node.js refuse the blob too). Otherwise, and for the daemon and
# its watchdog, Node.js runs this file as a module.
node=node
case "$1:$2" in
  node: | node:-* | node:watchdog) ;;
  *)
    if [ -z "${NODE_OPTIONS-}" ] && self=$(readlink -f -- "$0") && snapshot="${self%/bin/*}/dist/snapshot" && [ -f "$snapshot/cli.blob" ] &&
      read -r built < "$snapshot/cli.node" && [ "$built" = "$(stat -L -c '%s %Y' -- "$(command -v "$node")" 2>/dev/null)" ]; then
      exec "$node" --snapshot-blob "$snapshot/cli.blob" "$self" "$@"
    fi ;;
esac
exec "$node" "$0" "$@"
*/
// The `blixard` executable run as a module: the compiled CLI, bundled so that start-up loads a few
// modules instead of hundreds (`npm run build`; `npm ci` builds it through `prepare`). `blixard node
// watchdog …`, the long-lived fencing watchdog every node runs, has its own entry that loads none of
// the CLI.
import module from "node:module"

const [command, sub] = process.argv.slice(2)
const watchdog = command === "node" && sub === "watchdog"
const daemon = command === "node" && (sub === undefined || sub.startsWith("-"))

// The daemon's V8 heap: a young generation of 2 MiB semi-spaces instead of V8's default of up to
// 16 (Node.js 20) or 32 MiB (Node.js 24), which an idle node fills with short-lived garbage and
// keeps resident (bench/RESULTS.md: idle RSS 183 -> 127 MB on Node.js 24). V8 reads it only at
// start-up, and NODE_OPTIONS would hand it to every process the daemon starts, so the daemon
// replaces itself (same pid, so systemd and whoever started it see no difference) with a Node.js
// started with the flag, where Node.js can (process.execve: 22.15+ and 23.11+; the Nix package runs
// 24). Heap flags given to Node.js explicitly (command line or NODE_OPTIONS) win.
const daemonHeapFlags = ["--max-semi-space-size=2"]
const heapFlag = /--(max-semi-space-size|max-old-space-size|max-heap-size)\b/
if (
  daemon &&
  typeof process.execve === "function" &&
  !process.execArgv.some((flag) => heapFlag.test(flag)) &&
  !heapFlag.test(process.env.NODE_OPTIONS ?? "")
) {
  try {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, ...daemonHeapFlags, ...process.argv.slice(1)])
  } catch (error) {
    console.error(`blixard: could not restart Node.js with ${daemonHeapFlags.join(" ")} (${error?.message ?? error}); running with V8's default heap sizes`)
  }
}

// Any other command runs from the CLI's start-up snapshot when this Node.js built it (see the shell
// script above), here by replacing this process with a Node.js started from the snapshot (where
// Node.js can replace a process: 22.15+ and 23.11+): one more Node.js start-up, far less than
// loading the CLI's modules. Not when the snapshot has handed the command back to this file
// (BLIXARD_RERUN, set by the snapshot's stand-in for a module it leaves out; unset here so that
// nothing this process starts sees it), nor when Node.js was given flags (a V8 flag makes Node.js
// refuse the blob).
const rerun = process.env.BLIXARD_RERUN === "1"
delete process.env.BLIXARD_RERUN
const nodeFlags = process.execArgv.length > 0 || (process.env.NODE_OPTIONS ?? "") !== ""
if (!daemon && !watchdog && !rerun && !nodeFlags && typeof process.execve === "function") {
  const snapshot = new URL("../dist/snapshot/", import.meta.url)
  try {
    const { readFileSync, statSync } = await import("node:fs")
    const node = statSync(process.execPath)
    if (readFileSync(new URL("cli.node", snapshot), "utf8") === `${node.size} ${Math.floor(node.mtimeMs / 1000)}\n`) {
      const self = new URL(import.meta.url).pathname
      process.execve(process.execPath, [process.execPath, "--snapshot-blob", new URL("cli.blob", snapshot).pathname, self, ...process.argv.slice(2)])
    }
  } catch {
    // No snapshot (or no stamp): the bundle below.
  }
}

// Node 22.1+ can cache compiled code between runs, a large part of start-up; Node 20 has no such
// cache and skips this.
module.enableCompileCache?.()

const entry = new URL(watchdog ? "../dist/bundle/watchdog.js" : "../dist/bundle/main.js", import.meta.url)
try {
  await import(entry.href)
} catch (error) {
  if (error?.code === "ERR_MODULE_NOT_FOUND" && String(error.message).includes(entry.pathname)) {
    console.error(`blixard is not built: run \`npm run build\` (or \`npm ci\`) first; ${entry.pathname} is missing`)
    process.exitCode = 1
  } else {
    throw error
  }
}
