/**
 * The rest of the Nix side, evaluated on this machine without nixpkgs' package set: flake.nix's
 * outputs (called with nixpkgs' real lib and microvm.nix's real flake outputs, the package set stood
 * in for), flake.lock (the revisions it pins are the sources evaluated here, and the inline VMs'
 * defaults), nix/package.nix (with stand-ins for its arguments), nix/npm-lock.nix (on the real
 * package-lock.json), the NixOS VM tests' node configurations and scripts, and a syntax check of
 * every Nix file (this one needs only nix). See ./harness.ts.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Either } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { defaultMicrovmUrl, defaultNixpkgsUrl } from "../../src/vm/RunnerBuild.js"
import {
  decode,
  evalJson,
  microvmNix,
  nix,
  nixInstalled,
  nixpkgsLib,
  pythonInstalled,
  reportSkip,
  required,
  root,
  skipReason
} from "./harness.js"

interface LockNode {
  readonly inputs?: Record<string, string | ReadonlyArray<string>>
  readonly locked?: Record<string, string | number | boolean>
  readonly original?: Record<string, string>
  readonly flake?: boolean
}
interface Lock {
  readonly nodes: Record<string, LockNode>
  readonly root: string
  readonly version: number
}
const readLock = (file: string): Lock => JSON.parse(fs.readFileSync(file, "utf8")) as Lock

reportSkip(
  "test/nix/flake.test.ts",
  `the flake, package and VM test evaluations${nixInstalled ? "" : " and the Nix syntax checks"}`
)

describe.skipIf(skipReason !== undefined)("the flake's outputs, evaluated with nixpkgs' lib", () => {
  it("flake.nix: outputs for both systems, with nixpkgs' lib and microvm.nix's own outputs", () => {
    const flake = evalJson<{
      inputs: Record<string, { url: string; inputs?: { nixpkgs?: { follows?: string } } }>
      packages: Record<string, Array<string>>
      packageName: Record<string, string>
      packageNodejs: Record<string, string>
      moduleEvalScript: string
      microvmHostModule: string
      devShellNodedir: Record<string, string>
      apps: Record<string, Record<string, { type: string; program: string }>>
      nixosModules: Array<string>
      overlayPackage: string
      checks: Record<string, Array<string>>
      devShellPackages: Record<string, Array<string>>
      formatter: Record<string, string>
      modulePackage: string
      moduleExecStart: string
    }>("test/nix/flake-eval.nix")
    // microvm.nix's home since it left astro/.
    expect(flake.inputs["microvm"]?.url).toBe("github:microvm-nix/microvm.nix")
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
      // A Node.js nixpkgs ships (24 LTS), in the shell, its headers for node-gyp, and in the package.
      expect(flake.devShellPackages[system]).toEqual(["nodejs-24.13.0", "python3", "gcc", "nix"])
      expect(flake.devShellNodedir[system]).toBe("nodejs-24.13.0")
      expect(flake.packageNodejs[system]).toBe("nodejs-24.13.0")
      expect(flake.formatter[system]).toBe("nixfmt")
    }
    expect(flake.nixosModules).toEqual(["blixard", "default"])
    expect(flake.overlayPackage).toBe("blixard-0.1.0-x86_64-linux")
    // The flake's module runs the flake's package for the host's system.
    expect(flake.modulePackage).toBe("blixard-0.1.0-aarch64-linux")
    expect(flake.moduleExecStart).toMatch(
      /-blixard-0\.1\.0-aarch64-linux\/bin\/blixard node --config \S+-blixard\.json$/
    )
    // checks.module-eval through the flake's own wiring, with microvm.nix's real host module.
    expect(flake.microvmHostModule).toBe(path.join(microvmNix, "nixos-modules", "host"))
    expect(flake.moduleEvalScript).toContain('echo "== systemd-backend"')
    expect(flake.moduleEvalScript).toContain("# secret-through-settings: assertions fire as expected")
  })

  describe("flake.lock", () => {
    const lock = readLock(path.join(root, "flake.lock"))
    const node = (name: string): LockNode => {
      const found = lock.nodes[name]
      if (found === undefined) throw new Error(`flake.lock has no node ${name}`)
      return found
    }

    it("pins every input, and every input of an input, to a revision and its narHash", () => {
      expect(lock.version).toBe(7)
      expect(node(lock.root).inputs).toEqual({ microvm: "microvm", nixpkgs: "nixpkgs" })
      // microvm.nix's nixpkgs follows ours (flake.nix says so); its other input is locked as its own lock does.
      expect(node("microvm").inputs).toEqual({ nixpkgs: ["nixpkgs"], spectrum: "spectrum" })
      for (const [name, n] of Object.entries(lock.nodes)) {
        if (name === lock.root) continue
        expect(n.locked?.["rev"], name).toMatch(/^[0-9a-f]{40}$/)
        expect(n.locked?.["narHash"], name).toMatch(/^sha256-[A-Za-z0-9+/]{43}=$/)
        for (const input of Object.values(n.inputs ?? {}))
          if (typeof input === "string") expect(lock.nodes[input], `${name} -> ${input}`).toBeDefined()
      }
      expect(node("nixpkgs").original).toEqual({ owner: "NixOS", ref: "nixos-unstable", repo: "nixpkgs", type: "github" })
      expect(node("microvm").original).toEqual({ owner: "microvm-nix", repo: "microvm.nix", type: "github" })
    })

    it("pins the microvm.nix the tests evaluate (its tree's narHash), and the nixpkgs and spectrum it is tested with", () => {
      const hash = spawnSync(
        "nix",
        ["--store", "dummy://", "--extra-experimental-features", "nix-command", "hash", "path", microvmNix],
        { encoding: "utf8" }
      )
      expect(hash.status, hash.stderr).toBe(0)
      expect(node("microvm").locked?.["narHash"], `${microvmNix} is not the microvm.nix flake.lock pins`).toBe(
        hash.stdout.trim()
      )
      const theirs = readLock(path.join(microvmNix, "flake.lock"))
      const pinned = (n: LockNode | undefined) => [n?.locked?.["rev"], n?.locked?.["narHash"]]
      expect(pinned(node("nixpkgs"))).toEqual(pinned(theirs.nodes["nixpkgs"]))
      expect(node("spectrum")).toEqual(theirs.nodes["spectrum"])
    })

    it("inline VMs build with the same pinned revisions by default", () => {
      const github = (n: LockNode) => `github:${n.locked?.["owner"]}/${n.locked?.["repo"]}/${n.locked?.["rev"]}`
      expect(defaultNixpkgsUrl).toBe(github(node("nixpkgs")))
      expect(defaultMicrovmUrl).toBe(github(node("microvm")))
    })
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

    it("builds, compiles better-sqlite3 and runs on one Node.js: nodejs_24", () => {
      expect(pkg.pname).toBe("blixard")
      expect(pkg.nodejs).toMatch(/^nodejs-24\./)
      // The npm hook's node-gyp headers are those of the runtime Node.js (the addon's ABI).
      expect(pkg.hookNodejs).toBe(pkg.nodejs)
      expect(pkg.env["npm_config_nodedir"]).toMatch(new RegExp(`-${pkg.nodejs}$`))
      // better-sqlite3 goes straight to node-gyp: no download attempt in the sandbox.
      expect(pkg.env["npm_config_build_from_source"]).toBe("better-sqlite3")
      // `blixard` is bin/blixard.js run as a program, with this Node.js (and the tools its shell part
      // uses) written in by store path; the start-up snapshot that Node.js built is there.
      expect(pkg.installPhase).toMatch(new RegExp(`--replace-fail 'node=node' 'node=\\S*-${pkg.nodejs}/bin/node'`))
      expect(pkg.installPhase).toMatch(/--replace-fail 'stat -L' '\S*-coreutils-[^/]*\/bin\/stat -L'/)
      expect(pkg.installPhase).toContain('test -s "$app/dist/snapshot/cli.blob"')
      expect(pkg.installPhase).toContain('ln -s "$app/bin/blixard.js" "$out/bin/blixard"')
      expect(pkg.meta.mainProgram).toBe("blixard")
    })

    it("installs bin/, dist/, package.json and production node_modules, without build-time store paths", () => {
      expect(pkg.installPhase).toContain("npm prune --omit=dev")
      expect(pkg.installPhase).toContain('cp -r bin dist node_modules "$app/"')
      expect(pkg.installPhase).toContain('cp package.json "$app/package.json"')
      expect(pkg.installPhase).toContain("rm -f node_modules/.package-lock.json")
      // Completions for bash, zsh and fish, written by the installed CLI itself.
      expect(pkg.installPhase).toContain('$out/bin/blixard --completions "$shell"')
      expect(pkg.installPhase).toContain("installShellCompletion --cmd blixard")
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

    // Under BLIXARD_NIX_TESTS=required (CI) a missing python3 fails the test rather than skipping it.
    it.skipIf(!pythonInstalled && !required)("have test scripts that are valid Python and drive Blixard through its CLI", () => {
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
      // What the fixes claim, checked on a real host by the VM test.
      expect(vmTests.microvm.testScript).toContain("stat -c %U:%G /var/lib/microvms/web)\\\" = microvm:kvm")
      expect(vmTests.microvm.testScript).toContain("/nix/var/nix/gcroots/microvm/web")
      expect(vmTests.microvm.testScript).toContain("foreign_intact()")
      expect(vmTests.microvm.testScript).toContain("systemctl show -P Restart microvm@web.service")
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

describe("package.json", () => {
  it("states the Node.js floor of what the code uses (zlib.crc32 came in Node.js 20.15)", () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { engines: { node: string } }
    expect(fs.readFileSync(path.join(root, "src", "storage", "Checksum.ts"), "utf8")).toMatch(
      /import \{ crc32 \} from "node:zlib"/
    )
    expect(pkg.engines.node).toBe(">=20.15")
    const [major = 0, minor = 0] = process.versions.node.split(".").map(Number)
    expect(major > 20 || (major === 20 && minor >= 15)).toBe(true)
  })
})
