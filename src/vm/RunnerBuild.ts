/**
 * `prepare` for both microvm.nix layers: make `${stateDir}/${name}/current`, the runner link.
 *
 * - `Runner` source: link `current` to the given directory (it must have `bin/microvm-run`).
 * - `Flake` source `FLAKE#NAME`:
 *   `nix build -o ${stateDir}/${name}/current FLAKE#nixosConfigurations.NAME.config.microvm.declaredRunner`
 * - `Inline` source (a microvm.nix NixOS module): a flake is generated into `${stateDir}/${name}/flake/`
 *   (`flake.nix` + the module as `vm.nix`) importing `microvm.nixosModules.microvm` and the module,
 *   then built as above. Its inputs `nixpkgs` and `microvm` come from `NixSettings.nixpkgsUrl` and
 *   `microvmUrl`. Locking them needs the node's `nix` to reach those URLs (network), or URLs that
 *   resolve locally: a pinned `path:/nix/store/…-source`, or a flake-registry entry the host
 *   pins (`nix.registry.nixpkgs.flake = inputs.nixpkgs;` on NixOS, then `nixpkgsUrl = "flake:nixpkgs"`).
 *
 * `nix` is spawned without a shell; each progress line goes to `onProgress` and to the VM's log.
 *
 * Nothing here touches the disk from the JavaScript thread: the state directory's reads go through
 * `internal/diskReads.ts`, its writes (the directory and its marker, `current`, `toplevel`, owners and
 * modes, the inline flake) through `fs.promises`, the log's lines through a `lineWriter`. On a stalled
 * disk `prepare` waits, but the daemon's event loop — which runs its fencing — goes on. A build
 * ends once its log lines are written; the writer is one for every VM (so a stalled disk holds one
 * of libuv's threads with it, not one per VM), so a build may wait for another VM's lines too, and
 * beyond its bound lines queued behind a hung write are dropped, saying how many.
 */
import type { CommandExecutor } from "@effect/platform"
import { Clock, Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { BackendFailed, FlakeNotAllowed, InvalidArgument, RunnerNotAllowed, VmDirForeign } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { VmName } from "../domain/VmName.js"
import type { VmSpec } from "../domain/VmSpec.js"
import { runCommand, showCommand } from "./internal/runCommand.js"
import { addGcRoots } from "./internal/gcRoots.js"
import { createOwnedDir, readOwnership } from "./internal/ownership.js"
import * as DiskReads from "./internal/diskReads.js"
import { lineWriter } from "./internal/lineWriter.js"
import { replaceSymlink, vmPaths, writeFileAtomic } from "./internal/stateDir.js"
import { admitSource, resolveRunner, type SourcePolicy } from "./RunnerPolicy.js"
import type { OnProgress } from "./VmBackend.js"

/** How `nix` is invoked on this node. */
export interface NixSettings {
  /** The `nix` executable (default `nix`, looked up on PATH). */
  readonly nix?: string
  /** Each becomes `--option NAME VALUE`, e.g. `{ substituters: "" }` on a host with no binary cache. */
  readonly options?: Readonly<Record<string, string>>
  /** Further arguments placed before `build` (e.g. `["--offline"]`). */
  readonly extraArgs?: ReadonlyArray<string>
  /** Inline VMs: the generated flake's `nixpkgs` input (default: the nixpkgs revision this project's flake.lock pins). */
  readonly nixpkgsUrl?: string
  /** Inline VMs: the generated flake's `microvm` input (default: the microvm.nix revision this project's flake.lock pins). */
  readonly microvmUrl?: string
  /** Inline VMs: the guest's `nixpkgs.hostPlatform` (default: this node's, e.g. `x86_64-linux`). */
  readonly system?: string
}

/**
 * What every microvm.nix layer is configured with; the `SourcePolicy` is checked right before a
 * runner is linked (default: runners from `/nix/store` only).
 */
export interface StateDirSettings extends SourcePolicy {
  /** Root of the VMs' state directories (`NodeConfig.microvmStateDir`, `/var/lib/microvms`). */
  readonly stateDir: string
  /** This node: written in the marker of each VM directory it makes (`internal/ownership.ts`), named in errors. */
  readonly node: NodeId
  /** The cluster's id as known now (undefined or "" while unknown): written in new markers, checked when known. */
  readonly cluster?: (() => string | undefined) | undefined
  readonly nix?: NixSettings
  /**
   * Where the runners' Nix GC roots go (`internal/gcRoots.ts`; the daemon's default is microvm.nix's
   * `/nix/var/nix/gcroots/microvm`). Absent: none are made.
   */
  readonly gcRootDir?: string | undefined
  /**
   * The user and group the VM's runner runs as, when not the daemon's: systemd mode's `microvm@NAME`
   * runs as microvm.nix's `microvm:kvm`, in the VM's directory, and replaces `booted` and creates
   * its sockets and volumes there. `prepare` then hands the directory and its `current` link to
   * them, as microvm.nix's `install-microvm-NAME` does (owner and group, mode 0755).
   */
  readonly owner?: { readonly uid: number; readonly gid: number } | undefined
}

/**
 * `NixSettings.options` for a root `nix` with no daemon, no `nixbld` build users and no reachable
 * binary cache (Debian's `nix-bin` in CI, an air-gapped builder): build as root unsandboxed, and
 * skip binary-cache lookups that cannot succeed (a trivial build drops from ~5 s to ~0.2 s).
 */
export const standaloneNixOptions: Readonly<Record<string, string>> = {
  substituters: "",
  "build-users-group": "",
  sandbox: "false"
}

// The revisions flake.lock pins (a test keeps them in step): a maintained nixpkgs and the
// microvm.nix tested with it, the same for every node and every build.
export const defaultNixpkgsUrl = "github:NixOS/nixpkgs/643809054d65fdd466a63e3155b8c498cb483c04"
export const defaultMicrovmUrl = "github:microvm-nix/microvm.nix/71beea0076cd46dafcee97a5a2e7d00cbba5bd2f"

export const hostSystem = (): string =>
  `${process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : process.arch}-linux`

/**
 * The arguments of `nix` before the subcommand: flakes enabled, the build sandbox on (a VM's
 * derivations are code from whoever created it) unless the settings choose otherwise, then the
 * settings' options.
 */
export const nixGlobalArgs = (nix: NixSettings | undefined): Array<string> => [
  "--extra-experimental-features",
  "nix-command flakes",
  ...(nix?.options?.sandbox === undefined ? ["--option", "sandbox", "true"] : []),
  ...Object.entries(nix?.options ?? {}).flatMap(([name, value]) => ["--option", name, value]),
  ...(nix?.extraArgs ?? [])
]

/** A Nix attribute name, quoted when it is not a plain identifier (`"my.vm"`). */
const nixAttr = (name: string): string => (/^[A-Za-z_][A-Za-z0-9_'-]*$/.test(name) ? name : `"${name}"`)

const nixUrl = (what: string, url: string): string => {
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:[^\s"\\$]+$/.test(url)) {
    throw new Error(`${what} ${JSON.stringify(url)} is not a flake URL (SCHEME:REST, no spaces, quotes, '\\' or '$')`)
  }
  return `"${url}"`
}

/** The generated `flake.nix` of an inline VM (its module is `./vm.nix` beside it). */
export const inlineFlake = (name: VmName, nix: NixSettings | undefined): string => `# Generated by Blixard for the VM "${name}"; rewritten by every prepare.
{
  description = "Blixard microVM ${name}";
  inputs.nixpkgs.url = ${nixUrl("nixpkgsUrl", nix?.nixpkgsUrl ?? defaultNixpkgsUrl)};
  inputs.microvm.url = ${nixUrl("microvmUrl", nix?.microvmUrl ?? defaultMicrovmUrl)};
  inputs.microvm.inputs.nixpkgs.follows = "nixpkgs";
  outputs = { self, nixpkgs, microvm }: {
    nixosConfigurations.${nixAttr(name)} = nixpkgs.lib.nixosSystem {
      modules = [
        microvm.nixosModules.microvm
        ./vm.nix
        ({ lib, ... }: {
          networking.hostName = lib.mkDefault "${name}";
          nixpkgs.hostPlatform = lib.mkDefault "${nix?.system ?? hostSystem()}";
        })
      ];
    };
  };
}
`

const failed = (settings: StateDirSettings, name: VmName, message: string) =>
  new BackendFailed({ message, subject: name, ...(settings.node !== undefined ? { node: settings.node } : {}) })

const onNode = (settings: StateDirSettings) => (settings.node !== undefined ? ` on node ${settings.node}` : "")

/** A change to the state directory, off the JavaScript thread; its error names the VM, the node and the step. */
const tryFs = <A>(settings: StateDirSettings, name: VmName, what: string, f: () => Promise<A>) =>
  Effect.tryPromise({
    try: f,
    catch: (e) =>
      failed(
        settings,
        name,
        `VM "${name}": ${what}${onNode(settings)} failed: ${e instanceof Error ? e.message : String(e)}. ` +
          `Check that disk on node ${settings.node} (space, permissions, a hung volume), then prepare the VM again.`
      )
  })

/** The VMs' logs (build output, prepare's notes), written off the JavaScript thread in order. */
const buildLog = lineWriter()

/** Waits until every queued log line is written (as long as the disk takes), off the JavaScript thread. */
const logWritten: Effect.Effect<void> = Effect.async<void>((resume) => buildLog.drained(() => resume(Effect.void)))

/** Builds `installable` into the `current` link with `nix build`, streaming its log. */
const nixBuild = (
  settings: StateDirSettings,
  name: VmName,
  installable: string,
  onProgress: OnProgress | undefined
): Effect.Effect<void, BackendFailed, CommandExecutor.CommandExecutor> =>
  Effect.gen(function* () {
    const paths = vmPaths(settings.stateDir, name)
    const nix = settings.nix?.nix ?? "nix"
    // `--`: the installable is never read as an option, whatever it starts with.
    const args = [...nixGlobalArgs(settings.nix), "build", "--print-build-logs", "-o", paths.current, "--", installable]
    const shown = showCommand(nix, args)
    const now = new Date(yield* Clock.currentTimeMillis).toISOString()
    buildLog.line(paths.log, `# blixard ${now}: prepare: ${shown}`)
    const result = yield* runCommand({
      command: nix,
      args,
      cwd: paths.dir,
      onLine: (line) =>
        Effect.zipRight(
          Effect.sync(() => buildLog.line(paths.log, line)),
          onProgress === undefined ? Effect.void : onProgress(line)
        )
    }).pipe(
      Effect.mapError((e) =>
        failed(
          settings,
          name,
          `VM "${name}": could not run ${nix}${onNode(settings)} (${e.message}). Install Nix on this node or set the backend's nix path.`
        )
      ),
      Effect.ensuring(logWritten)
    )
    if (result.exitCode !== 0) {
      return yield* failed(
        settings,
        name,
        `VM "${name}": building the runner${onNode(settings)} failed (exit code ${result.exitCode}): ${shown}\n` +
          `last output:\n${result.tail.join("\n")}\n` +
          `Fix the VM's configuration (try the same nix build on the node), then prepare again; the full log is ${paths.log}.`
      )
    }
    if (!(yield* executable(path.join(paths.current, "bin", "microvm-run")))) {
      return yield* failed(
        settings,
        name,
        `VM "${name}": ${installable} built, but the result has no executable bin/microvm-run: it is not a microvm.nix runner (use …config.microvm.declaredRunner).`
      )
    }
  })

/** Whether a runner's program is there to run; read off the JavaScript thread, as long as it takes (`diskReads.ts`). */
export const executable = (file: string): Effect.Effect<boolean> => Effect.promise(() => DiskReads.isExecutable(file, "low"))

/** Whose the VM's directory is, read off the JavaScript thread as long as it takes (`internal/ownership.ts`). */
const ownership = (settings: StateDirSettings, name: VmName) =>
  Effect.promise(() => readOwnership(vmPaths(settings.stateDir, name).dir, name, settings))

/** The error for a VM whose directory on this node is not Blixard's (`internal/ownership.ts`). */
export const foreignDirError = (settings: StateDirSettings, name: VmName, reason: string): VmDirForeign => {
  const dir = vmPaths(settings.stateDir, name).dir
  return new VmDirForeign({
    node: settings.node,
    subject: dir,
    message:
      `VM "${name}": the directory ${dir} on node ${settings.node} is not Blixard's (${reason}); Blixard never starts, stops, changes or removes it. ` +
      `Give the VM another name, or, if nothing uses that directory any more, remove it on node ${settings.node}: the VM is prepared again on the next try.`
  })
}

/**
 * Fails with `VmDirForeign`, touching nothing, when the VM's directory is not Blixard's; answers
 * whether it exists (a Blixard directory) or not.
 */
export const requireOwnDir = (settings: StateDirSettings, name: VmName): Effect.Effect<boolean, VmDirForeign> =>
  Effect.flatMap(ownership(settings, name), (owned) =>
    owned._tag === "Foreign" ? Effect.fail(foreignDirError(settings, name, owned.reason)) : Effect.succeed(owned._tag === "Ours")
  )

/** Makes the VM's directory with its marker when there is none; fails, touching nothing, when it is foreign. */
const claimDir = (settings: StateDirSettings, name: VmName): Effect.Effect<void, BackendFailed | VmDirForeign> =>
  Effect.gen(function* () {
    const paths = vmPaths(settings.stateDir, name)
    const owned = yield* ownership(settings, name)
    if (owned._tag === "Foreign") return yield* foreignDirError(settings, name, owned.reason)
    if (owned._tag === "Ours") return
    const now = yield* Clock.currentTimeMillis
    yield* tryFs(settings, name, `creating the state directory ${paths.dir}`, async () => {
      if ((await DiskReads.stat(settings.stateDir, "low").catch(() => undefined)) === undefined) {
        // As microvm.nix's tmpfiles rule makes it: the VMs' user must reach its VM directories.
        await fs.promises.mkdir(settings.stateDir, { recursive: true })
        await fs.promises.chmod(settings.stateDir, 0o755)
        if (settings.owner !== undefined) await fs.promises.chown(settings.stateDir, settings.owner.uid, settings.owner.gid)
      }
      await createOwnedDir(paths.dir, name, settings, now)
    })
  })

/** After `current` is linked: `toplevel` (for `microvm -l`/`-u`), the runner's user, the GC roots. */
const finishDir = (settings: StateDirSettings, name: VmName): Effect.Effect<void, BackendFailed> =>
  tryFs(settings, name, `finishing the state directory ${vmPaths(settings.stateDir, name).dir}`, async () => {
    const paths = vmPaths(settings.stateDir, name)
    // Undefined: a runner built with microvm.systemSymlink = false (or a test fixture).
    const system = await DiskReads.readLink(path.join(paths.current, "share", "microvm", "system"), "low")
    if (system === undefined) await fs.promises.rm(paths.toplevel, { force: true })
    else if ((await DiskReads.readLink(paths.toplevel, "low")) !== system) await replaceSymlink(system, paths.toplevel)
    const owner = settings.owner
    if (owner !== undefined) {
      await fs.promises.chown(paths.dir, owner.uid, owner.gid)
      await fs.promises.chmod(paths.dir, 0o755)
      await fs.promises.lchown(paths.current, owner.uid, owner.gid)
      if (system !== undefined) await fs.promises.lchown(paths.toplevel, owner.uid, owner.gid)
    }
  }).pipe(Effect.zipRight(gcRoots(settings, name)))

/** The VM's Nix GC roots (`internal/gcRoots.ts`), when the node makes them. */
const gcRoots = (settings: StateDirSettings, name: VmName): Effect.Effect<void, BackendFailed> => {
  const gcRootDir = settings.gcRootDir
  if (gcRootDir === undefined) return Effect.void
  const paths = vmPaths(settings.stateDir, name)
  return Effect.tryPromise({
    try: () => addGcRoots(gcRootDir, name, paths),
    catch: (e) => failed(settings, name, `VM "${name}": making its Nix GC roots in ${gcRootDir}${onNode(settings)} failed: ${e instanceof Error ? e.message : String(e)}`)
  }).pipe(
    Effect.flatMap((made) =>
      made
        ? Effect.void
        : Effect.zipRight(
            Effect.sync(() => buildLog.line(paths.log, `# blixard: no Nix GC roots made: ${path.dirname(gcRootDir)} does not exist on this host`)),
            logWritten
          )
    )
  )
}

/**
 * `prepare` of the microvm.nix layers (see the module comment): claims the VM's directory (a
 * foreign one is refused, untouched), links or builds `current`, then finishes the directory.
 */
export const prepareRunner = (
  settings: StateDirSettings,
  spec: VmSpec,
  onProgress?: OnProgress
): Effect.Effect<void, BackendFailed | InvalidArgument | RunnerNotAllowed | FlakeNotAllowed | VmDirForeign, CommandExecutor.CommandExecutor> =>
  Effect.gen(function* () {
    yield* claimDir(settings, spec.name)
    yield* linkRunner(settings, spec, onProgress)
    yield* finishDir(settings, spec.name)
  })

/** Makes `current`: links a `Runner`, builds a `Flake`'s or an `Inline` module's runner. */
const linkRunner = (
  settings: StateDirSettings,
  spec: VmSpec,
  onProgress: OnProgress | undefined
): Effect.Effect<void, BackendFailed | InvalidArgument | RunnerNotAllowed | FlakeNotAllowed, CommandExecutor.CommandExecutor> =>
  Effect.gen(function* () {
    const name = spec.name
    const paths = vmPaths(settings.stateDir, name)
    const source = spec.source
    switch (source._tag) {
      case "Runner": {
        // This node's own policy, on the path with its symlinks resolved; the resolved directory is
        // what gets linked and run, so changing the link afterwards changes nothing.
        const allowed = yield* Effect.promise(() => resolveRunner(settings, name, source.path, settings.node))
        if ("refused" in allowed) return yield* allowed.refused
        if (!(yield* executable(path.join(allowed.resolved, "bin", "microvm-run")))) {
          return yield* failed(
            settings,
            name,
            `VM "${name}": the runner ${source.path} has no executable bin/microvm-run${onNode(settings)}. ` +
              `Build it on this node first (nix build -o ${source.path} FLAKE#nixosConfigurations.${name}.config.microvm.declaredRunner) or give the VM a flake.`
          )
        }
        yield* tryFs(settings, name, `linking ${paths.current} to ${allowed.resolved}`, () =>
          replaceSymlink(allowed.resolved, paths.current)
        )
        return
      }
      case "Flake": {
        const at = source.ref.lastIndexOf("#")
        const flake = source.ref.slice(0, at)
        const configName = source.ref.slice(at + 1)
        // Refused at the API too; checked here again for entries committed before, and against
        // this node's own allowed flake prefixes.
        if (flake.startsWith("-")) {
          return yield* new FlakeNotAllowed({
            subject: name,
            ...(settings.node !== undefined ? { node: settings.node } : {}),
            message: `VM "${name}": the flake reference ${JSON.stringify(source.ref)} must not start with '-'`
          })
        }
        const refused = admitSource(settings, spec, settings.node)
        if (refused !== undefined) return yield* refused
        return yield* nixBuild(
          settings,
          name,
          `${flake}#nixosConfigurations.${nixAttr(configName)}.config.microvm.declaredRunner`,
          onProgress
        )
      }
      case "Inline": {
        const flakeText = yield* Effect.try({
          try: () => inlineFlake(name, settings.nix),
          catch: (e) =>
            failed(settings, name, `VM "${name}": the backend's nix settings are invalid${onNode(settings)}: ${(e as Error).message}`)
        })
        yield* tryFs(settings, name, `writing the generated flake in ${paths.flakeDir}`, async () => {
          // Never through a link planted in a directory the VMs' user owns.
          if ((await DiskReads.lstat(paths.flakeDir, "low"))?.isDirectory() !== true) {
            await fs.promises.rm(paths.flakeDir, { force: true })
            await fs.promises.mkdir(paths.flakeDir)
          }
          await writeFileAtomic(path.join(paths.flakeDir, "vm.nix"), source.module)
          await writeFileAtomic(path.join(paths.flakeDir, "flake.nix"), flakeText)
        })
        return yield* nixBuild(
          settings,
          name,
          `path:${paths.flakeDir}#nixosConfigurations.${nixAttr(name)}.config.microvm.declaredRunner`,
          onProgress
        )
      }
    }
  })
