# flake.nix's outputs function called with its inputs as far as they exist without full nixpkgs
# (`builtins.getFlake` cannot fetch them offline): nixpkgs' real lib (its package set and
# lib.nixosSystem stood in for, see below) and microvm.nix's real flake outputs (its nixosModules
# are the real modules). Shows the outputs' shape — which packages, apps, modules, checks, shells
# and formatter each system gets — that nixosModules.default sets services.blixard.package to the
# flake's own package, and runs the module-eval check's evaluation-time comparisons through the
# flake's own wiring (microvm.nixosModules.host included).
#
#   nix-instantiate --eval --strict --json test/nix/flake-eval.nix \
#       --argstr nixpkgsLib LIB --argstr microvmNix MICROVM
{ nixpkgsLib, microvmNix }:

let
  lib = import (nixpkgsLib + "/lib");
  stubs = import ./stubs.nix { inherit lib; };
  inherit (stubs) fakeDrv;
  flake = import ../../flake.nix;

  # nixpkgs' legacyPackages.${system}: only the packages the flake names (a Node.js it no longer
  # names, such as nodejs_20, is absent, so using it fails this evaluation), with builders that
  # return store-path-looking names instead of building.
  pkgsFor =
    system:
    let
      pkgs = stubs.pkgs // {
        inherit lib;
        stdenv.hostPlatform.system = system;
        nodejs_24 = fakeDrv "nodejs-24.13.0" // {
          meta.mainProgram = "node";
        };
        python3 = fakeDrv "python3";
        gcc = fakeDrv "gcc";
        nix = fakeDrv "nix";
        nixfmt = fakeDrv "nixfmt";
        jq = fakeDrv "jq";
        makeWrapper = fakeDrv "make-wrapper";
        installShellFiles = fakeDrv "install-shell-files";
        writeShellScriptBin = name: _text: fakeDrv name;
        writeText = name: _text: fakeDrv name;
        runCommand = name: _env: script: fakeDrv name // { inherit script; };
        buildNpmPackage =
          args:
          fakeDrv "${args.pname}-${args.version}-${system}"
          // {
            inherit (args) meta nodejs;
          };
        importNpmLock = {
          __functor = _: _args: fakeDrv "npm-deps";
          npmConfigHook.override = _: fakeDrv "npm-config-hook";
        };
        callPackage =
          fn: overrides:
          let
            f = import fn;
          in
          f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // overrides);
        mkShell = args: fakeDrv "shell" // { inherit (args) packages npm_config_nodedir; };
      };
    in
    pkgs;

  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];

  # nixpkgs' lib.nixosSystem: the modules with the stand-in NixOS of ./stubs.nix, plus what the
  # module-eval check reads beyond it (nixosSystem's own options, the rendered unit files).
  nixosSystem =
    { modules, ... }:
    lib.evalModules {
      # The modules see the stand-in package set of ./stubs.nix (its callPackage builds nothing).
      specialArgs.pkgs = stubs.pkgs;
      modules = modules ++ [
        stubs.nixos
        stubs.nixosExtras
      ];
    };

  nixpkgs = {
    lib = lib // {
      inherit nixosSystem;
    };
    legacyPackages = lib.genAttrs systems pkgsFor;
  };

  # microvm.nix's own flake outputs, from its flake.nix (its `spectrum` input is never used here).
  microvm =
    let
      outputs = (import (microvmNix + "/flake.nix")).outputs {
        self = microvm;
        inherit nixpkgs;
        spectrum = throw "microvm.nix's spectrum input is not available here";
      };
    in
    outputs // { outPath = microvmNix; };

  outputs = flake.outputs {
    self = outputs;
    inherit nixpkgs microvm;
  };

  names = lib.mapAttrs (_: builtins.attrNames);

  moduleConfig =
    (lib.evalModules {
      specialArgs.pkgs = pkgsFor "aarch64-linux";
      modules = [
        stubs.nixos
        outputs.nixosModules.default
        {
          services.blixard = {
            enable = true;
            nodeId = 1;
          };
        }
      ];
    }).config;
in
{
  inherit (flake) description inputs;
  packages = names outputs.packages;
  packageName = lib.mapAttrs (_: p: p.default.name) outputs.packages;
  packageNodejs = lib.mapAttrs (_: p: p.default.nodejs.name) outputs.packages;
  apps = lib.mapAttrs (
    _:
    lib.mapAttrs (
      _: app: {
        inherit (app) type program;
      }
    )
  ) outputs.apps;
  nixosModules = builtins.attrNames outputs.nixosModules;
  overlayPackage =
    let
      pkgs = pkgsFor "x86_64-linux";
    in
    (outputs.overlays.default pkgs pkgs).blixard.name;
  checks = names outputs.checks;
  # The module-eval check, through the flake's wiring: its comparisons ran if this is a script.
  moduleEvalScript = outputs.checks.x86_64-linux.module-eval.script;
  microvmHostModule = toString microvm.nixosModules.host;
  devShellPackages = lib.mapAttrs (_: s: map (p: p.name) s.default.packages) outputs.devShells;
  devShellNodedir = lib.mapAttrs (_: s: s.default.npm_config_nodedir.name) outputs.devShells;
  formatter = lib.mapAttrs (_: f: f.name) outputs.formatter;
  modulePackage = moduleConfig.services.blixard.package.name;
  moduleExecStart = moduleConfig.systemd.services.blixard.serviceConfig.ExecStart;
}
