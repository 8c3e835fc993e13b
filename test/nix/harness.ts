/**
 * What the test/nix suites share: running `nix-instantiate` without a store (`--store dummy://`),
 * finding the Nix sources they evaluate against, and the daemon's config schema.
 *
 * The sources: BLIXARD_NIXPKGS_LIB, a checkout of nixpkgs' lib (nix-community/nixpkgs.lib, or
 * nixpkgs itself: a directory holding lib/default.nix), and BLIXARD_MICROVM_NIX, a checkout of
 * microvm.nix (its host module is evaluated together with ours). Without them, or without
 * `nix-instantiate`, the suites are skipped and say why — unless BLIXARD_NIX_TESTS=required (set by
 * CI), which turns every such skip into a failure.
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

/** Absolute (nix-instantiate runs from the project root, and Nix wants absolute paths). */
const source = (variable: string): string => {
  const value = process.env[variable] ?? ""
  return value === "" ? "" : path.resolve(value)
}
export const nixpkgsLib = source("BLIXARD_NIXPKGS_LIB")
export const microvmNix = source("BLIXARD_MICROVM_NIX")

/** Whether a missing prerequisite fails the suites instead of skipping them (CI). */
export const required = process.env["BLIXARD_NIX_TESTS"] === "required"

const missing = (variable: string, value: string, holds: string, what: string): string | undefined =>
  value === ""
    ? `${variable} is not set (point it at a checkout of ${what})`
    : !fs.existsSync(path.join(value, holds))
      ? `${variable}=${value} holds no ${holds}`
      : undefined

/** Why the suites that evaluate Nix code cannot run here, or undefined when they can. */
export const skipReason: string | undefined = !nixInstalled
  ? "nix-instantiate is not installed"
  : (missing("BLIXARD_NIXPKGS_LIB", nixpkgsLib, "lib/default.nix", "nixpkgs' lib, e.g. github:nix-community/nixpkgs.lib") ??
    missing("BLIXARD_MICROVM_NIX", microvmNix, "nixos-modules/host/default.nix", "github:microvm-nix/microvm.nix"))

if (required && skipReason !== undefined)
  throw new Error(`BLIXARD_NIX_TESTS=required, but the Nix evaluation tests cannot run: ${skipReason}`)

export const reportSkip = (file: string, what: string): void => {
  if (skipReason !== undefined) console.log(`${file}: skipping ${what}: ${skipReason}`)
}

/** The sources every evaluation file takes, as `--argstr` arguments. */
export const sourceArgs = (): ReadonlyArray<string> => ["--argstr", "nixpkgsLib", nixpkgsLib, "--argstr", "microvmNix", microvmNix]

/** `nix-instantiate --eval --strict --json FILE --argstr nixpkgsLib … --argstr microvmNix …`, parsed; throws with nix's stderr. */
export const evalJson = <A>(file: string, extra: ReadonlyArray<string> = []): A => {
  const run = nix(["--eval", "--strict", "--json", file, ...sourceArgs(), ...extra])
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
