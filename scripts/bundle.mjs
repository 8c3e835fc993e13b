// `npm run bundle`: the compiled CLI (dist/src, from `tsc`) bundled for start-up.
//
// - dist/bundle/: ES modules split per entry — `main.js` (the CLI) and `watchdog.js` (the fencing
//   watchdog) — what `bin/blixard.js` imports. Emptied first, so no chunk of an earlier build stays.
// - dist/snapshot/: the client commands as one CommonJS script (`cli.cjs`) and, built from it by
//   this very Node.js (`node --build-snapshot`), its start-up snapshot `cli.blob` with `cli.node`, the
//   size and modification time of the Node.js binary that built it (the same in a Nix store path on
//   every machine) (see src/cli/SnapshotMain.ts and bin/blixard.js,
//   which use the blob only with that binary). BLIXARD_NO_SNAPSHOT=1 skips the blob.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as esbuild from "esbuild"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const dist = path.join(root, "dist")

fs.rmSync(path.join(dist, "bundle"), { recursive: true, force: true })
await esbuild.build({
  entryPoints: { main: "dist/src/cli/main.js", watchdog: "dist/src/node/WatchdogMain.js" },
  absWorkingDir: root,
  bundle: true,
  splitting: true,
  platform: "node",
  format: "esm",
  outdir: "dist/bundle",
  external: ["better-sqlite3"],
  logLevel: "warning",
  banner: { js: "import { createRequire as __blixardRequire } from 'node:module'; const require = __blixardRequire(import.meta.url);" }
})

// What the client commands never load — the daemon and its watchdog (which bin/blixard.js starts
// from the bundle above), the simulator, a snapshot restore — is left out of the snapshot: it would
// only make the blob larger, and every run pays for reading the blob. Should a run from the snapshot
// need one of them after all (`blixard --json node …`, which bin/blixard.js does not recognise as
// the daemon), the module left in its place runs the command again as `node bin/blixard.js ARGS…`
// (argv[1] is bin/blixard.js, see there; BLIXARD_RERUN keeps it from starting the snapshot again),
// replacing the process where Node.js can.
const leftOut = /\/(node\/(Daemon|HostDaemon|WatchdogMain|SnapshotRestore)|sim\/(Explorer|OrchestrationStack|FullService))\.js$/
const leaveOut = {
  name: "leave-out",
  setup(build) {
    build.onResolve({ filter: /\.js$/ }, (args) => {
      const resolved = path.resolve(args.resolveDir, args.path)
      return args.kind === "dynamic-import" && leftOut.test(resolved) ? { path: resolved, namespace: "left-out" } : undefined
    })
    build.onLoad({ filter: /.*/, namespace: "left-out" }, () => ({
      contents: `const [bin, ...args] = process.argv.slice(1)
const env = { ...process.env, BLIXARD_RERUN: "1" }
if (typeof process.execve === "function") process.execve(process.execPath, [process.execPath, bin, ...args], env)
const run = require("node:child_process").spawnSync(process.execPath, [bin, ...args], { stdio: "inherit", env })
process.exit(run.status ?? 1)`,
      loader: "js"
    }))
  }
}

// Node.js cannot snapshot a heap that has loaded its HTTP and TLS modules (they hold native state),
// so in the snapshot these are objects whose properties load the module on first use, after start.
// Their names are this Node.js's: the one that builds and runs the snapshot.
const lateBuiltins = ["http", "https", "tls"]
const loadLate = {
  name: "load-late",
  setup(build) {
    const filter = new RegExp(`^(node:)?(${lateBuiltins.join("|")})$`)
    build.onResolve({ filter }, (args) =>
      args.namespace === "load-late" ? { path: args.path, external: true } : { path: args.path.replace(/^node:/, ""), namespace: "load-late" }
    )
    build.onLoad({ filter: /.*/, namespace: "load-late" }, async (args) => {
      const names = Object.keys(await import(`node:${args.path}`)).filter((name) => name !== "default")
      return {
        contents: `const load = () => require("node:${args.path}")
for (const name of ${JSON.stringify(names)}) Object.defineProperty(exports, name, { enumerable: true, get: () => load()[name] })`,
        loader: "js"
      }
    })
  }
}

const snapshot = path.join(dist, "snapshot")
fs.rmSync(snapshot, { recursive: true, force: true })
await esbuild.build({
  entryPoints: ["dist/src/cli/SnapshotMain.js"],
  absWorkingDir: root,
  bundle: true,
  platform: "node",
  format: "cjs",
  outfile: "dist/snapshot/cli.cjs",
  external: ["better-sqlite3"],
  // Node.js defines `FormData` lazily: the first look at it loads its fetch implementation (undici,
  // tens of milliseconds), and @effect/platform looks at it for every request it sends
  // (`payload instanceof FormData`). In the snapshot, `FormData` is a stand-in that answers such a
  // question without loading it, unless the value is a FormData; `new FormData()` makes a real one.
  banner: {
    js: `var __blixardFormData = class FormData {
  constructor(...args) { return new globalThis.FormData(...args) }
  static [Symbol.hasInstance](value) { return value?.[Symbol.toStringTag] === "FormData" && value instanceof globalThis.FormData }
};`
  },
  define: { FormData: "__blixardFormData" },
  // Whitespace and syntax only: names stay as written, for stack traces.
  minifyWhitespace: true,
  minifySyntax: true,
  plugins: [leaveOut, loadLate],
  logLevel: "warning"
})
if (process.env.BLIXARD_NO_SNAPSHOT !== "1") {
  // Its warnings (built-in modules "not yet fully verified" in a snapshot) are shown only if it fails.
  try {
    execFileSync(process.execPath, ["--snapshot-blob", path.join(snapshot, "cli.blob"), "--build-snapshot", path.join(snapshot, "cli.cjs")], {
      stdio: ["ignore", "inherit", "pipe"]
    })
  } catch (error) {
    console.error(`bundle: building the CLI's start-up snapshot failed (BLIXARD_NO_SNAPSHOT=1 builds without it):\n${error.stderr ?? error}`)
    process.exit(1)
  }
  const node = fs.statSync(process.execPath)
  fs.writeFileSync(path.join(snapshot, "cli.node"), `${node.size} ${Math.floor(node.mtimeMs / 1000)}\n`)
}
