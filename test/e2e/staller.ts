/**
 * The disk-fault library for real-process tests (`test/fixtures/stall-fsync.c`, its header says
 * what it holds and what it does not model), built here with `cc`. Tests that need it skip, saying
 * so, on a machine without a C compiler.
 */
import { execFileSync } from "node:child_process"
import * as path from "node:path"
import { root } from "./harness.js"

/** Builds the fsync-stalling library into `dir`; undefined (and why) without a C compiler. */
export const buildStaller = (dir: string): { readonly library?: string; readonly why?: string } => {
  const library = path.join(dir, "stall-fsync.so")
  try {
    execFileSync("cc", ["-shared", "-fPIC", "-O2", "-o", library, path.join(root, "test/fixtures/stall-fsync.c"), "-ldl"], { stdio: "pipe" })
    return { library }
  } catch (e) {
    return { why: `cannot build the LD_PRELOAD library with cc: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}` }
  }
}

export const hasCompiler = (() => {
  try {
    execFileSync("cc", ["--version"], { stdio: "pipe" })
    return true
  } catch {
    console.log("no C compiler (cc) on PATH: the disk-fault tests are skipped (they build an LD_PRELOAD library)")
    return false
  }
})()
