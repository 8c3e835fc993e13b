# Evaluates modules/blixard.nix for the samples in ./samples.nix with nixpkgs' `lib` only (no
# nixpkgs package set): NixOS' option declarations and `pkgs` are stubbed by ./stubs.nix.
#
#   nix-instantiate --eval --strict --json test/nix/eval.nix --argstr nixpkgsLib PATH
#       all samples; a sample whose options are refused reports `refused = true`
#   ... --argstr sample NAME
#       one sample, evaluated without catching errors (to read the refusal's message)
#
# PATH is a checkout of nixpkgs' lib (nix-community/nixpkgs.lib, or nixpkgs itself): it must hold
# lib/default.nix.
{
  nixpkgsLib,
  sample ? null,
}:

let
  lib = import (nixpkgsLib + "/lib");
  stubs = import ./stubs.nix { inherit lib; };
  samples = import ./samples.nix;

  evalSample =
    name: s:
    let
      evaluated = lib.evalModules {
        specialArgs = {
          inherit (stubs) pkgs;
        };
        modules = [
          stubs.nixos
          ../../modules/blixard.nix
          s.module
        ]
        ++ lib.optional (s.microvmHost or false) stubs.microvmHost;
      };
      inherit (evaluated) config;
      unit = config.systemd.services.blixard;
    in
    {
      rendered = config.services.blixard.configFile.text;
      configFilePath = config.services.blixard.configFile.outPath;
      packagePath = config.services.blixard.package.outPath;
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
      inherit (unit)
        serviceConfig
        environment
        wantedBy
        after
        ;
      path = map (p: p.name) unit.path;
      firewall = config.networking.firewall.allowedTCPPorts;
      tmpfiles = config.systemd.tmpfiles.rules;
      cliAddr = config.environment.variables.BLIXARD_ADDR or null;
      systemPackages = map (p: p.name) config.environment.systemPackages;
    };

  # A refused value makes the module system `throw`, which tryEval catches (without its message).
  safely =
    name: s:
    let
      result = evalSample name s;
      attempt = builtins.tryEval (builtins.deepSeq result result);
    in
    {
      inherit (s) expect;
      refused = !attempt.success;
    }
    // lib.optionalAttrs attempt.success { result = attempt.value; };

  # Disabled: the module must define nothing at all.
  disabled =
    let
      evaluated = lib.evalModules {
        specialArgs = {
          inherit (stubs) pkgs;
        };
        modules = [
          stubs.nixos
          ../../modules/blixard.nix
          { services.blixard.nodeId = 1; }
        ];
      };
    in
    {
      services = builtins.attrNames evaluated.config.systemd.services;
      assertions = builtins.length evaluated.config.assertions;
      firewall = evaluated.config.networking.firewall.allowedTCPPorts;
      systemPackages = builtins.length evaluated.config.environment.systemPackages;
    };
in
if sample == null then
  {
    samples = lib.mapAttrs safely samples;
    inherit disabled;
  }
else
  evalSample sample samples.${sample}
