/**
 * Tests that start real processes run the compiled daemon and the bundled CLI from `dist/`. Build
 * once before the run when any source is newer than the build (`npm test` has just built, so this
 * is then a no-op).
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")

const newest = (dir: string): number => {
  let max = 0
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    max = Math.max(max, entry.isDirectory() ? newest(full) : fs.statSync(full).mtimeMs)
  }
  return max
}

export default function setup(): void {
  const stamp = path.join(root, "dist", "bundle", "main.js")
  const built = fs.existsSync(stamp) ? fs.statSync(stamp).mtimeMs : 0
  const sources = Math.max(newest(path.join(root, "src")), newest(path.join(root, "bench")))
  if (built >= sources) return
  try {
    execFileSync(process.execPath, [path.join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"], {
      cwd: root,
      stdio: "inherit"
    })
  } catch {
    // tsc still emits JavaScript when it finds type errors; `npm test` type-checks before running
    // the tests, so a type error fails the run there. Here, go on with what was emitted.
    console.warn("globalSetup: tsc reported errors (see above); running the tests against the emitted JavaScript")
  }
  try {
    execFileSync("npm", ["run", "--silent", "bundle"], { cwd: root, stdio: "inherit" })
  } catch {
    console.warn("globalSetup: bundling the CLI failed (see above)")
  }
}
