/**
 * The rest of the Nix side, evaluated on this machine without nixpkgs' package set: flake.nix's
 * outputs (called with stand-in inputs), nix/package.nix (with stand-ins for its arguments),
 * nix/npm-lock.nix (on the real package-lock.json), the NixOS VM tests' node configurations and
 * scripts, and a syntax check of every Nix file (this one needs only nix). See ./harness.ts.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Either } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import {
  decode,
  evalJson,
  nix,
  nixInstalled,
  nixpkgsLib,
  pythonInstalled,
  reportSkip,
  root,
  skipReason
} from "./harness.js"

reportSkip(
  "test/nix/flake.test.ts",
  `the flake, package and VM test evaluations${nixInstalled ? "" : " and the Nix syntax checks"}`
)

describe.skipIf(skipReason !== undefined)("the flake's outputs, evaluated with nixpkgs' lib", () => {
  it("flake.nix: outputs for both systems, called with stand-in inputs", () => {
    const flake = evalJson<{
      inputs: Record<string, { url: string; inputs?: { nixpkgs?: { follows?: string } } }>
      packages: Record<string, Array<string>>
      packageName: Record<string, string>
      apps: Record<string, Record<string, { type: string; program: string }>>
      nixosModules: Array<string>
      overlayPackage: string
      checks: Record<string, Array<string>>
      devShellPackages: Record<string, Array<string>>
      formatter: Record<string, string>
      modulePackage: string
      moduleExecStart: string
    }>("test/nix/flake-eval.nix")
    expect(flake.inputs["microvm"]?.url).toBe("github:astro/microvm.nix")
    expect(flake.inputs["microvm"]?.inputs?.nixpkgs?.follows).toBe("nixpkgs")
    expect(flake.inputs["nixpkgs"]?.url).toMatch(/^github:NixOS\/nixpkgs\//)
    const systems = ["aarch64-linux", "x86_64-linux"]
    for (const record of [flake.packages, flake.apps, flake.checks, flake.devShellPackages, flake.formatter])
      expect(Object.keys(record).sort()).toEqual(systems)
    for (const system of systems) {
      expect(flake.packages[system]).toEqual(["blixard", "default"])
      expect(flake.packageName[system]).toBe(`blixard-0.1.0-${system}`)
      for (const app of ["blixard", "default"]) {
        expect(flake.apps[system]?.[app]).toEqual({
          type: "app",
          program: `/nix/store/00000000000000000000000000000000-blixard-0.1.0-${system}/bin/blixard`
        })
      }
      expect(flake.checks[system]).toEqual(["module-eval", "package", "test-suite", "vm-cluster", "vm-microvm"])
      expect(flake.devShellPackages[system]).toEqual(["nodejs-20.19.5", "python3", "gcc", "nix"])
      expect(flake.formatter[system]).toBe("nixfmt")
    }
    expect(flake.nixosModules).toEqual(["blixard", "default"])
    expect(flake.overlayPackage).toBe("blixard-0.1.0-x86_64-linux")
    // The flake's module runs the flake's package for the host's system.
    expect(flake.modulePackage).toBe("blixard-0.1.0-aarch64-linux")
    expect(flake.moduleExecStart).toMatch(
      /-blixard-0\.1\.0-aarch64-linux\/bin\/blixard node --config \S+-blixard\.json$/
    )
  })

  describe("nix/package.nix, evaluated with stand-ins for its package arguments", () => {
    interface PackageEval {
      readonly pname: string
      readonly nodejs: string
      readonly hookNodejs: string
      readonly env: Record<string, string>
      readonly installPhase: string
      readonly doInstallCheck: boolean
      readonly installCheckPhase: string
      readonly meta: { readonly mainProgram: string }
      readonly npmDeps: {
        readonly packageName: string
        readonly packages: number
        readonly withoutResolved: ReadonlyArray<string>
      }
    }
    let pkg: PackageEval

    beforeAll(() => {
      pkg = evalJson<PackageEval>("test/nix/package-eval.nix")
    })

    it("builds, compiles better-sqlite3 and runs on one Node.js: nodejs_20", () => {
      expect(pkg.pname).toBe("blixard")
      expect(pkg.nodejs).toMatch(/^nodejs-20\./)
      // The npm hook's node-gyp headers are those of the runtime Node.js (the addon's ABI).
      expect(pkg.hookNodejs).toBe(pkg.nodejs)
      expect(pkg.env["npm_config_nodedir"]).toMatch(new RegExp(`-${pkg.nodejs}$`))
      // better-sqlite3 goes straight to node-gyp: no download attempt in the sandbox.
      expect(pkg.env["npm_config_build_from_source"]).toBe("better-sqlite3")
      expect(pkg.installPhase).toMatch(new RegExp(`makeWrapper \\S*-${pkg.nodejs}/bin/node "\\$out/bin/blixard"`))
      expect(pkg.installPhase).toContain('--add-flags "$app/bin/blixard.js"')
      expect(pkg.meta.mainProgram).toBe("blixard")
    })

    it("installs bin/, dist/, package.json and production node_modules, without build-time store paths", () => {
      expect(pkg.installPhase).toContain("npm prune --omit=dev")
      expect(pkg.installPhase).toContain('cp -r bin dist node_modules "$app/"')
      expect(pkg.installPhase).toContain('cp package.json "$app/package.json"')
      expect(pkg.installPhase).toContain("rm -f node_modules/.package-lock.json")
      expect(pkg.doInstallCheck).toBe(true)
      expect(pkg.installCheckPhase).toContain("better-sqlite3")
    })

    it("hands importNpmLock every locked package with a URL to fetch", () => {
      const lock = JSON.parse(fs.readFileSync(path.join(root, "package-lock.json"), "utf8")) as { packages: object }
      expect(pkg.npmDeps.packageName).toBe("blixard")
      expect(pkg.npmDeps.packages).toBe(Object.keys(lock.packages).length)
      expect(pkg.npmDeps.withoutResolved).toEqual([])
    })
  })

  describe("nix/npm-lock.nix gives the lockfile's packages their registry URLs", () => {
    interface LockEntry {
      readonly version?: string
      readonly resolved?: string
      readonly integrity?: string
      readonly name?: string
      readonly link?: boolean
    }
    const lockOf = (expression: string): Record<string, LockEntry> => {
      const run = nix([
        "--eval",
        "--strict",
        "--json",
        "--expr",
        `let lib = import (${JSON.stringify(nixpkgsLib)} + "/lib"); in ` +
          `(import ./nix/npm-lock.nix { inherit lib; } { lockfile = ${expression}; }).packages`
      ])
      if (run.status !== 0) throw new Error(run.stderr)
      return JSON.parse(run.stdout) as Record<string, LockEntry>
    }

    it("for every package of package-lock.json, from its name and version, keeping its integrity", () => {
      const original = JSON.parse(fs.readFileSync(path.join(root, "package-lock.json"), "utf8")) as {
        packages: Record<string, LockEntry>
      }
      const patched = lockOf("lib.importJSON ./package-lock.json")
      expect(Object.keys(patched).sort()).toEqual(Object.keys(original.packages).sort())
      for (const [where, entry] of Object.entries(original.packages)) {
        const got = patched[where]!
        if (where === "") {
          expect(got.resolved).toBeUndefined()
          continue
        }
        const name = entry.name ?? where.slice(where.lastIndexOf("node_modules/") + "node_modules/".length)
        const basename = name.slice(name.lastIndexOf("/") + 1)
        expect(got.resolved ?? entry.resolved).toBe(
          entry.resolved ?? `https://registry.npmjs.org/${name}/-/${basename}-${entry.version}.tgz`
        )
        expect(got.integrity).toBe(entry.integrity)
      }
      // Checked against the registry when this test was written.
      expect(patched["node_modules/better-sqlite3"]?.resolved).toMatch(
        /^https:\/\/registry\.npmjs\.org\/better-sqlite3\/-\/better-sqlite3-\d+\.\d+\.\d+\.tgz$/
      )
      expect(patched["node_modules/@effect/cli"]?.resolved).toMatch(
        /^https:\/\/registry\.npmjs\.org\/@effect\/cli\/-\/cli-\d+\.\d+\.\d+\.tgz$/
      )
    })

    it("for nested, scoped and aliased packages; not for links or entries that say where they come from", () => {
      const patched = lockOf(`{ packages = {
        "" = { name = "app"; version = "1.0.0"; };
        "node_modules/a/node_modules/@s/b" = { version = "2.0.0"; integrity = "sha512-x"; };
        "node_modules/alias" = { name = "real"; version = "3.0.0"; integrity = "sha512-y"; };
        "node_modules/local" = { resolved = "packages/local"; link = true; };
        "node_modules/git" = {
          version = "1.0.0"; resolved = "git+ssh://git@example.org/g.git#abc"; integrity = "sha512-z";
        };
        "node_modules/bundled" = { version = "1.0.0"; inBundle = true; };
      }; }`)
      expect(patched["node_modules/a/node_modules/@s/b"]?.resolved).toBe(
        "https://registry.npmjs.org/@s/b/-/b-2.0.0.tgz"
      )
      expect(patched["node_modules/alias"]?.resolved).toBe("https://registry.npmjs.org/real/-/real-3.0.0.tgz")
      expect(patched["node_modules/local"]?.resolved).toBe("packages/local")
      expect(patched["node_modules/git"]?.resolved).toBe("git+ssh://git@example.org/g.git#abc")
      expect(patched["node_modules/bundled"]?.resolved).toBeUndefined()
      expect(patched[""]?.resolved).toBeUndefined()
    })
  })

  describe("the NixOS VM tests (nix/tests), as far as they evaluate here", () => {
    interface VmTest {
      readonly name: string
      readonly testScript: string
      readonly nodes: Record<string, { readonly rendered: string; readonly failedAssertions: ReadonlyArray<string> }>
    }
    let vmTests: Record<"cluster" | "microvm", VmTest>

    beforeAll(() => {
      vmTests = evalJson<Record<"cluster" | "microvm", VmTest>>("test/nix/vm-tests.nix")
    })

    it("configure nodes that pass the module's assertions, with files the daemon accepts", () => {
      expect(Object.keys(vmTests.cluster.nodes).sort()).toEqual(["node1", "node2", "node3"])
      expect(Object.keys(vmTests.microvm.nodes)).toEqual(["host"])
      const ids = new Set<unknown>()
      for (const test of Object.values(vmTests)) {
        for (const [node, { rendered, failedAssertions }] of Object.entries(test.nodes)) {
          expect(failedAssertions, `${test.name} ${node}`).toEqual([])
          const decoded = decode(JSON.parse(rendered))
          if (Either.isLeft(decoded)) throw new Error(`${test.name} ${node}: ${decoded.left.message}`)
          if (test === vmTests.cluster) {
            ids.add(decoded.right.id)
            // Each member lists the two others, at the addresses they advertise.
            expect(decoded.right.peers.map((p) => p.id).sort()).toHaveLength(2)
            expect(decoded.right.peers.map((p) => p.id)).not.toContain(decoded.right.id)
            expect(decoded.right.advertise).toBe(`${node}:7001`)
          } else {
            expect(decoded.right.vmBackend).toBe("systemd")
          }
        }
      }
      expect([...ids].sort()).toEqual([1, 2, 3])
    })

    if (!pythonInstalled && skipReason === undefined)
      console.log("test/nix/flake.test.ts: python3 is not installed; the VM test scripts are not parsed")

    it.skipIf(!pythonInstalled)("have test scripts that are valid Python and drive Blixard through its CLI", () => {
      for (const test of Object.values(vmTests)) {
        const parsed = spawnSync("python3", ["-c", "import ast, sys; ast.parse(sys.stdin.read())"], {
          input: test.testScript,
          encoding: "utf8"
        })
        expect(parsed.status, `${test.name}: ${parsed.stderr}`).toBe(0)
        expect(test.testScript).toMatch(/^PORT = 7001$/m)
        expect(test.testScript).toContain("vm create --name web --runner")
        expect(test.testScript).toContain('"cluster status"')
      }
      expect(vmTests.cluster.testScript).toContain(".crash()")
      expect(vmTests.microvm.testScript).toContain("microvm@web.service")
    })
  })
})

describe.skipIf(!nixInstalled)("the Nix files parse (no nixpkgs needed)", () => {
  const nixFiles = (dir: string): Array<string> =>
    fs
      .readdirSync(path.join(root, dir), { withFileTypes: true })
      .flatMap((entry) =>
        entry.isDirectory()
          ? nixFiles(path.join(dir, entry.name))
          : entry.name.endsWith(".nix")
            ? [path.join(dir, entry.name)]
            : []
      )
  const files = ["flake.nix", ...nixFiles("nix"), ...nixFiles("modules"), ...nixFiles(path.join("test", "nix"))]

  it("include the flake, the package, the module, the checks and the VM tests", () => {
    expect(files).toEqual(
      expect.arrayContaining([
        "flake.nix",
        "nix/package.nix",
        "nix/npm-lock.nix",
        "nix/checks/default.nix",
        "nix/checks/test-suite.nix",
        "nix/checks/module-eval.nix",
        "nix/tests/cluster.nix",
        "nix/tests/microvm.nix",
        "modules/blixard.nix"
      ])
    )
  })

  it.each(files)("%s", (file) => {
    const run = nix(["--parse", file])
    expect(run.status, run.stderr).toBe(0)
  })
})
