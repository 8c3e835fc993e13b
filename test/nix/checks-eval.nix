# nix/checks/module-eval.nix (the flake check that evaluates services.blixard inside real NixOS)
# run here against the stub NixOS of ./stubs.nix: all its evaluation-time comparisons with
# ./samples.nix run, and the shell script it would hand to the build comes back as text.
#
#   nix-instantiate --eval --strict --json test/nix/checks-eval.nix --argstr nixpkgsLib PATH
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
    jq = fakeDrv "jq";
    writeShellScriptBin = name: _text: fakeDrv name;
    writeText = name: _text: fakeDrv name;
    runCommand = name: _env: script: { inherit name script; };
  };

  # What the check reads from NixOS beyond the options the module touches.
  nixosExtras = {
    options = {
      nixpkgs.pkgs = lib.mkOption { type = lib.types.anything; };
      boot.isContainer = lib.mkOption { type = lib.types.bool; };
      system.stateVersion = lib.mkOption { type = lib.types.str; };
      systemd.units = lib.mkOption {
        type = lib.types.attrsOf lib.types.anything;
        default = { };
      };
    };
    config.systemd.units."blixard.service".unit = fakeDrv "unit-blixard.service";
  };

  check = import ../../nix/checks/module-eval.nix {
    inherit pkgs;
    nixosSystem =
      { modules }:
      lib.evalModules {
        specialArgs = { inherit pkgs; };
        modules = modules ++ [
          stubs.nixos
          nixosExtras
        ];
      };
    nixosModule = ../../modules/blixard.nix;
    microvmHostModule = stubs.microvmHost;
  };
in
{
  inherit (check) name script;
}
