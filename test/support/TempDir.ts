/**
 * Temporary directories of a test file, removed once the file's tests are done (importing this
 * module registers the removal in the importing file).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll } from "vitest"

const dirs: Array<string> = []

/** Deletes a directory (best effort: a killed process may still be writing in it). */
export const removeDir = (dir: string): void => {
  try {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  } catch {
    // Left for the OS's temp cleaner.
  }
}

afterAll(() => {
  for (const dir of dirs.splice(0)) removeDir(dir)
})

/** A fresh directory `blixard-<prefix>-…` under the system's temporary directory. */
export const tempDir = (prefix: string): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `blixard-${prefix}-`))
  dirs.push(dir)
  return dir
}
