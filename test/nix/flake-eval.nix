# flake.nix's outputs function called with stand-in inputs (nixpkgs' real lib, a stub package set,
# a stub microvm.nix), since `builtins.getFlake` cannot fetch the inputs offline. Shows the outputs'
# shape — which packages, apps, modules, checks, shells and formatter each system gets — and that
# nixosModules.default sets services.blixard.package to the flake's own package.
#
#   nix-instantiate --eval --strict --json test/nix/flake-eval.nix --argstr nixpkgsLib PATH
{ nixpkgsLib }:

let
  lib = import (nixpkgsLib + "/lib");
  stubs = import ./stubs.nix { inherit lib; };
  flake = import ../../flake.nix;

  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  pkgsFor =
    system:
    let
      pkgs = stubs.pkgs // {
        inherit lib;
        stdenv.hostPlatform.system = system;
        nodejs_20 = fakeDrv "nodejs-20.19.5" // {
          meta.mainProgram = "node";
        };
        python3 = fakeDrv "python3";
        gcc = fakeDrv "gcc";
        nix = fakeDrv "nix";
        nixfmt = fakeDrv "nixfmt";
        makeWrapper = fakeDrv "make-wrapper";
        buildNpmPackage =
          args:
          fakeDrv "${args.pname}-${args.version}-${system}"
          // {
            inherit (args) meta;
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
        mkShell = args: fakeDrv "shell" // { inherit (args) packages; };
      };
    in
    pkgs;

  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];

  outputs = flake.outputs {
    self = outputs;
    nixpkgs = {
      lib = lib // {
        nixosSystem = _: throw "nixosSystem is not evaluated here";
      };
      legacyPackages = lib.genAttrs systems pkgsFor;
    };
    microvm.nixosModules = {
      host = stubs.microvmHost;
      microvm = { };
    };
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
  devShellPackages = lib.mapAttrs (_: s: map (p: p.name) s.default.packages) outputs.devShells;
  formatter = lib.mapAttrs (_: f: f.name) outputs.formatter;
  modulePackage = moduleConfig.services.blixard.package.name;
  moduleExecStart = moduleConfig.systemd.services.blixard.serviceConfig.ExecStart;
}
