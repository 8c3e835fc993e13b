# The `blixard` package: the TypeScript build (tsc -> dist/) with its production node_modules,
# run by Node.js 24 (LTS; nixpkgs has dropped Node.js 20, which reached its end of life).
#
# Dependencies come from package-lock.json through nixpkgs' importNpmLock: every tarball is fetched
# by the lockfile's own integrity hash, so there is no npmDepsHash to keep up to date.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs_24,
  installShellFiles,
  coreutils,
}:

let
  nodejs = nodejs_24;
  packageJson = lib.importJSON ../package.json;
  # The lockfile carries no `resolved` URLs; ./npm-lock.nix restores them.
  packageLock = import ./npm-lock.nix { inherit lib; } {
    lockfile = lib.importJSON ../package-lock.json;
  };
in
buildNpmPackage {
  pname = packageJson.name;
  inherit (packageJson) version;
  inherit nodejs;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../tsconfig.json
      ../tsconfig.build.json
      ../bin
      ../scripts
      ../src
      (lib.fileset.maybeMissing ../bench)
    ];
  };

  npmDeps = importNpmLock {
    package = packageJson;
    inherit packageLock;
  };
  # The hook compiles native addons against the headers of the Node.js it is built with: the same
  # Node.js the program runs on (nixpkgs' default `nodejs` may be another major).
  npmConfigHook = importNpmLock.npmConfigHook.override { inherit nodejs; };

  env = {
    # node-gyp builds better-sqlite3 against these headers (the hook exports the same) …
    npm_config_nodedir = "${nodejs}";
    # … from source: its install script would first try to download a prebuilt binary, and the
    # sandbox has no network.
    npm_config_build_from_source = "better-sqlite3";
  };

  nativeBuildInputs = [ installShellFiles ];

  # `npm run build` (tsc -p tsconfig.build.json -> dist/) is buildNpmPackage's default build.

  installPhase = ''
    runHook preInstall

    npm prune --omit=dev --no-save $npmFlags "''${npmFlagsArray[@]}"

    # Keep better-sqlite3's compiled addon, not its sources and build tree (whose config.gypi
    # would keep the Node.js source tree in the closure).
    sqlite=node_modules/better-sqlite3
    find "$sqlite/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
    find "$sqlite/build/Release" -mindepth 1 -maxdepth 1 ! -name better_sqlite3.node -exec rm -rf {} +
    rm -rf "$sqlite/deps" "$sqlite/src"
    # npm's hidden lockfile names every dependency tarball's store path (dev ones too).
    rm -f node_modules/.package-lock.json

    app=$out/lib/blixard
    mkdir -p "$app" "$out/bin"
    cp -r bin dist node_modules "$app/"
    # The unpatched package.json (older importNpmLock hooks leave a copy naming store paths).
    if [ -f .package.json.orig ]; then
      cp .package.json.orig "$app/package.json"
    else
      cp package.json "$app/package.json"
    fi

    # `blixard` is bin/blixard.js run as a program (a shell script, see there): every command but
    # the daemon starts Node.js from the CLI's start-up snapshot, which `npm run build` built with
    # this same Node.js. The script names it and the tools it uses by their store paths.
    substituteInPlace "$app/bin/blixard.js" \
      --replace-fail 'node=node' 'node=${lib.getExe nodejs}' \
      --replace-fail 'readlink -f' '${coreutils}/bin/readlink -f' \
      --replace-fail 'stat -L' '${coreutils}/bin/stat -L'
    test -s "$app/dist/snapshot/cli.blob"
    ln -s "$app/bin/blixard.js" "$out/bin/blixard"

    # Shell completions, as the CLI itself writes them (@effect/cli's `--completions SHELL`).
    for shell in bash zsh fish; do
      HOME=$TMPDIR $out/bin/blixard --completions "$shell" > "blixard.$shell"
    done
    installShellCompletion --cmd blixard \
      --bash blixard.bash --zsh blixard.zsh --fish blixard.fish

    runHook postInstall
  '';

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    # The native addon loads in the Node.js the wrapper runs.
    ${lib.getExe nodejs} -e '
      const Database = require(process.argv[1])
      const row = new Database(":memory:").prepare("select 41 + 1 as answer").get()
      if (row.answer !== 42) throw new Error("better-sqlite3 answered " + JSON.stringify(row))
    ' "$out/lib/blixard/node_modules/better-sqlite3"
    # The CLI starts (help only; it starts no node), from its start-up snapshot: without the
    # ES module bundle it could not start otherwise.
    HOME=$TMPDIR $out/bin/blixard --help > /dev/null
    mv "$out/lib/blixard/dist/bundle" "$TMPDIR/bundle"
    HOME=$TMPDIR $out/bin/blixard --version | grep -qx '${packageJson.version}'
    mv "$TMPDIR/bundle" "$out/lib/blixard/dist/bundle"
    # Its completions are installed where bash, zsh and fish look for them.
    grep -q _blixard_bash_completions "$out/share/bash-completion/completions/blixard.bash"
    grep -q '#compdef blixard' "$out/share/zsh/site-functions/_blixard"
    grep -q 'complete -c blixard' "$out/share/fish/vendor_completions.d/blixard.fish"
    runHook postInstallCheck
  '';

  passthru = { inherit nodejs; };

  meta = {
    description = "Distributed microVM orchestrator for NixOS";
    license = lib.licenses.mit;
    mainProgram = "blixard";
    platforms = lib.platforms.linux;
  };
}
