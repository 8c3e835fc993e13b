# nix/package.nix evaluated with nixpkgs' lib and stand-ins for its package arguments: shows which
# Node.js the build, the native-addon hook and the wrapper use, and what npm dependencies it hands to
# importNpmLock — without building anything (the source fileset is never forced).
#
#   nix-instantiate --eval --strict --json test/nix/package-eval.nix --argstr nixpkgsLib PATH
{ nixpkgsLib, ... }:

let
  lib = import (nixpkgsLib + "/lib");

  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  # nixpkgs' Node.js 24 (the only Node.js offered here: a package asking for another, such as the
  # removed nodejs_20, fails this evaluation).
  nodejs_24 = fakeDrv "nodejs-24.13.0" // {
    meta.mainProgram = "node";
  };

  package = import ../../nix/package.nix {
    inherit lib nodejs_24;
    coreutils = fakeDrv "coreutils-9.5";
    installShellFiles = fakeDrv "install-shell-files";
    # Returns its arguments, so the test can read them.
    buildNpmPackage = args: args;
    importNpmLock = {
      __functor = _: args: { importNpmLockArgs = args; };
      npmConfigHook = {
        override = args: { npmConfigHookOverride = args; };
      };
    };
  };
  lock = package.npmDeps.importNpmLockArgs.packageLock;
in
{
  inherit (package) pname version;
  nodejs = package.nodejs.name;
  hookNodejs = package.npmConfigHook.npmConfigHookOverride.nodejs.name;
  inherit (package) env;
  installPhase = package.installPhase;
  installCheckPhase = package.installCheckPhase;
  doInstallCheck = package.doInstallCheck;
  meta = {
    inherit (package.meta) mainProgram;
  };
  npmDeps = {
    packageName = package.npmDeps.importNpmLockArgs.package.name;
    packages = builtins.length (builtins.attrNames lock.packages);
    withoutResolved = builtins.filter (p: p != "" && !(lock.packages.${p} ? resolved)) (
      builtins.attrNames lock.packages
    );
  };
}
