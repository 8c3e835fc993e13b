# The NixOS VM tests (nix/tests/*.nix) evaluated as far as nixpkgs' lib and microvm.nix allow: each
# test file with a stand-in `pkgs` (runNixOSTest returns its arguments), each node's configuration
# through modules/blixard.nix and microvm.nix's real host module with the stand-in NixOS options of
# ./stubs.nix, and each test script as text. It cannot boot anything; it shows the nodes'
# services.blixard settings pass the module's assertions and render files the daemon accepts, and
# hands the scripts to a Python parser.
#
#   nix-instantiate --eval --strict --json test/nix/vm-tests.nix #       --argstr nixpkgsLib LIB --argstr microvmNix MICROVM
{ nixpkgsLib, microvmNix }:

let
  lib = import (nixpkgsLib + "/lib");
  stubs = import ./stubs.nix { inherit lib; };

  inherit (stubs) fakeDrv;

  pkgs = stubs.pkgs // {
    inherit lib;
    runtimeShell = "/bin/sh";
    coreutils = fakeDrv "coreutils";
    stdenv.hostPlatform.system = "x86_64-linux";
    runCommand = name: _env: _script: fakeDrv name;
    testers.runNixOSTest = test: test;
    writeShellScript = name: _text: fakeDrv name;
    writeText = name: _text: fakeDrv name;
  };

  # NixOS' test-VM options the test nodes set (nixos/modules/virtualisation/qemu-vm.nix).
  testNodeOptions = {
    options.virtualisation = {
      additionalPaths = lib.mkOption {
        type = lib.types.listOf lib.types.anything;
        default = [ ];
      };
      memorySize = lib.mkOption { type = lib.types.int; };
      cores = lib.mkOption { type = lib.types.int; };
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
    # microvm.nix's real host module; its guest module is not evaluated (the guest is nixosSystem's).
    microvm = {
      nixosModules.microvm = { };
      nixosModules.host = /. + microvmNix + "/nixos-modules/host";
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
