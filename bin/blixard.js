#!/usr/bin/env node
// The `blixard` executable: the compiled CLI, bundled into one file so that start-up loads one module
// instead of hundreds (`npm run build`; `npm ci` builds it through `prepare`).
import module from "node:module"

// Node 22.1+ can cache compiled code between runs, a large part of start-up; Node 20 has no such
// cache and skips this.
module.enableCompileCache?.()

const entry = new URL("../dist/bundle/main.js", import.meta.url)
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
