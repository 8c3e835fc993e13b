# nix/checks/module-eval.nix (the flake check that evaluates services.blixard inside real NixOS)
# run here with the stand-in NixOS of ./stubs.nix and microvm.nix's real host module: all its
# evaluation-time comparisons with ./samples.nix run, and the shell script it would hand to the
# build comes back as text.
#
#   nix-instantiate --eval --strict --json test/nix/checks-eval.nix \
#       --argstr nixpkgsLib LIB --argstr microvmNix MICROVM
{ nixpkgsLib, microvmNix }:

let
  lib = import (nixpkgsLib + "/lib");
  stubs = import ./stubs.nix { inherit lib; };
  inherit (stubs) fakeDrv;

  pkgs = stubs.pkgs // {
    inherit lib;
    jq = fakeDrv "jq";
    writeShellScriptBin = name: _text: fakeDrv name;
    writeText = name: _text: fakeDrv name;
    runCommand = name: _env: script: { inherit name script; };
  };

  check = import ../../nix/checks/module-eval.nix {
    inherit pkgs;
    # nixpkgs' lib.nixosSystem, with the stand-in NixOS.
    nixosSystem =
      { modules }:
      lib.evalModules {
        specialArgs = { inherit pkgs; };
        modules = modules ++ [
          stubs.nixos
          stubs.nixosExtras
        ];
      };
    nixosModule = ../../modules/blixard.nix;
    microvmHostModule = /. + microvmNix + "/nixos-modules/host";
  };
in
{
  inherit (check) name script;
}
