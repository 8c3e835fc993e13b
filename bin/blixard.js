#!/usr/bin/env node
// The `blixard` executable: the compiled CLI, bundled so that start-up loads a few modules instead of
// hundreds (`npm run build`; `npm ci` builds it through `prepare`). `blixard node watchdog …`, the
// long-lived fencing watchdog every node runs, has its own entry that loads none of the CLI.
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
