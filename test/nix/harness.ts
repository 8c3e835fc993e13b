/**
 * What the test/nix suites share: running `nix-instantiate` without a store (`--store dummy://`),
 * finding nixpkgs' lib through BLIXARD_NIXPKGS_LIB, and the daemon's config schema.
 *
 * Needs `nix-instantiate` and BLIXARD_NIXPKGS_LIB, a checkout of nixpkgs' lib (e.g.
 * nix-community/nixpkgs.lib, or nixpkgs itself: a directory holding lib/default.nix). Without them
 * the suites are skipped and say why.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Either } from "effect"
import { decodeNodeConfig } from "../../src/node/Config.js"

export const root = path.resolve(import.meta.dirname, "..", "..")

export const nix = (args: ReadonlyArray<string>) =>
  spawnSync("nix-instantiate", ["--store", "dummy://", ...args], {
    cwd: root,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024
  })

const installed = (command: string): boolean => {
  try {
    return spawnSync(command, ["--version"], { encoding: "utf8" }).status === 0
  } catch {
    return false
  }
}

export const nixInstalled = installed("nix-instantiate")
export const pythonInstalled = installed("python3")

export const nixpkgsLib = process.env["BLIXARD_NIXPKGS_LIB"] ?? ""

/** Why the suites that evaluate with nixpkgs' lib cannot run here, or undefined when they can. */
export const skipReason: string | undefined = !nixInstalled
  ? "nix-instantiate is not installed"
  : nixpkgsLib === ""
    ? "BLIXARD_NIXPKGS_LIB is not set (point it at a checkout of nixpkgs' lib, e.g. github:nix-community/nixpkgs.lib)"
    : !fs.existsSync(path.join(nixpkgsLib, "lib", "default.nix"))
      ? `BLIXARD_NIXPKGS_LIB=${nixpkgsLib} holds no lib/default.nix`
      : undefined

export const reportSkip = (file: string, what: string): void => {
  if (skipReason !== undefined) console.log(`${file}: skipping ${what}: ${skipReason}`)
}

/** `nix-instantiate --eval --strict --json FILE --argstr nixpkgsLib …`, parsed; throws with nix's stderr. */
export const evalJson = <A>(file: string, extra: ReadonlyArray<string> = []): A => {
  const run = nix(["--eval", "--strict", "--json", file, "--argstr", "nixpkgsLib", nixpkgsLib, ...extra])
  if (run.status !== 0) throw new Error(`nix-instantiate ${file} failed:\n${run.stderr}`)
  return JSON.parse(run.stdout) as A
}

/** The daemon's own reading of a config file's JSON. */
export const decode = (value: unknown) => Effect.runSync(Effect.either(decodeNodeConfig(value)))

export const decodeError = (value: unknown): string => {
  const result = decode(value)
  if (Either.isRight(result)) throw new Error(`the schema accepted ${JSON.stringify(value)}`)
  return result.left.message
}
