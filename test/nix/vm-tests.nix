# The NixOS VM tests (nix/tests/*.nix) evaluated as far as nixpkgs' lib allows: each test file with
# a stub `pkgs` (runNixOSTest returns its arguments), each node's configuration through
# modules/blixard.nix with the stub NixOS options of ./stubs.nix, and each test script as text.
# It cannot boot anything; it shows the nodes' services.blixard settings pass the module's
# assertions and render files the daemon accepts, and hands the scripts to a Python parser.
#
#   nix-instantiate --eval --strict --json test/nix/vm-tests.nix --argstr nixpkgsLib PATH
{ nixpkgsLib }:

let
  lib = import (nixpkgsLib + "/lib");
  stubs = import ./stubs.nix { inherit lib; };

  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  pkgs = stubs.pkgs // {
    inherit lib;
    runtimeShell = "/bin/sh";
    coreutils = fakeDrv "coreutils";
    stdenv.hostPlatform.system = "x86_64-linux";
    runCommand = name: _env: _script: fakeDrv name;
    testers.runNixOSTest = test: test;
  };

  # Options the test nodes set beyond what the module touches.
  testNodeOptions = {
    options = {
      environment.etc = lib.mkOption {
        type = lib.types.attrsOf lib.types.anything;
        default = { };
      };
      virtualisation = lib.mkOption {
        type = lib.types.attrsOf lib.types.anything;
        default = { };
      };
    };
  };

  nixosModule = {
    imports = [ ../../modules/blixard.nix ];
  };

  evalNode =
    extraModules: node:
    let
      config =
        (lib.evalModules {
          specialArgs = { inherit pkgs; };
          modules = [
            stubs.nixos
            testNodeOptions
            node
          ]
          ++ extraModules;
        }).config;
    in
    {
      rendered = config.services.blixard.configFile.text;
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
      firewall = config.networking.firewall.allowedTCPPorts;
    };

  cluster = import ../../nix/tests/cluster.nix { inherit pkgs nixosModule; };

  microvm = import ../../nix/tests/microvm.nix {
    inherit pkgs nixosModule;
    nixosSystem = _: {
      config.microvm.declaredRunner = fakeDrv "microvm-qemu-web";
    };
    microvm = {
      nixosModules.microvm = { };
      nixosModules.host = stubs.microvmHost;
    };
  };
in
{
  cluster = {
    inherit (cluster) name testScript;
    nodes = lib.mapAttrs (_: evalNode [ ]) cluster.nodes;
  };
  microvm = {
    inherit (microvm) name testScript;
    nodes = lib.mapAttrs (_: evalNode [ ]) microvm.nodes;
  };
}
