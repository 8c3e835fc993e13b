# Evaluates modules/blixard.nix for the samples in ./samples.nix with nixpkgs' `lib` and, where a
# sample asks for it, microvm.nix's real host module (nixos-modules/host); what only full nixpkgs
# provides (NixOS' option declarations, `pkgs`) is stood in for by ./stubs.nix.
#
#   nix-instantiate --eval --strict --json test/nix/eval.nix \
#       --argstr nixpkgsLib LIB --argstr microvmNix MICROVM
#       all samples; a sample whose options are refused reports `refused = true`
#   ... --argstr sample NAME
#       one sample, evaluated without catching errors (to read the refusal's message)
#
# LIB is a checkout of nixpkgs' lib (nix-community/nixpkgs.lib, or nixpkgs itself: it must hold
# lib/default.nix); MICROVM a checkout of microvm.nix (it must hold nixos-modules/host).
{
  nixpkgsLib,
  microvmNix,
  sample ? null,
}:

let
  lib = import (nixpkgsLib + "/lib");
  stubs = import ./stubs.nix { inherit lib; };
  samples = import ./samples.nix;
  microvmHost = /. + microvmNix + "/nixos-modules/host";

  evaluate =
    s:
    (lib.evalModules {
      specialArgs = {
        inherit (stubs) pkgs;
      };
      modules = [
        stubs.nixos
        ../../modules/blixard.nix
        s.module
      ]
      ++ lib.optional (s.microvmHost or false) microvmHost;
    }).config;

  evalSample =
    name: s:
    let
      config = evaluate s;
      unit = config.systemd.services.blixard;
      microvmUnits = lib.filterAttrs (n: _: lib.hasPrefix "microvm@" n) config.systemd.services;
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
        postStop
        ;
      path = map (p: p.name) unit.path;
      firewall = config.networking.firewall.allowedTCPPorts;
      tmpfiles = config.systemd.tmpfiles.rules;
      cliAddr = config.environment.variables.BLIXARD_ADDR or null;
      systemPackages = map (p: p.name) config.environment.systemPackages;
      # What microvm.nix's host module makes of the host, where the sample asks: its units' restart
      # setting and, for the template, who it runs as and where.
      microvm = lib.optionalAttrs (s.expect ? microvm) {
        restart = lib.mapAttrs (_: u: u.serviceConfig.Restart or null) microvmUnits;
        template = {
          inherit (config.systemd.services."microvm@".serviceConfig) User Group WorkingDirectory;
        };
        stateDirTmpfiles = config.systemd.tmpfiles.settings."10-microvm" or { };
      };
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

  # Disabled (with and without microvm.nix's host module): the module must define nothing at all.
  disabled =
    microvmHostToo:
    let
      config = evaluate {
        microvmHost = microvmHostToo;
        module.services.blixard.nodeId = 1;
      };
    in
    {
      services = builtins.filter (n: !(lib.hasPrefix "microvm" n) && !(lib.hasPrefix "install-microvm" n)) (
        builtins.attrNames config.systemd.services
      );
      microvmRestart = config.systemd.services."microvm@".serviceConfig.Restart or null;
      assertions = builtins.length (builtins.filter (a: lib.hasPrefix "services.blixard" a.message) config.assertions);
      firewall = config.networking.firewall.allowedTCPPorts;
      systemPackages = builtins.filter (n: lib.hasPrefix "blixard" n) (
        map (p: p.name) config.environment.systemPackages
      );
    };
in
if sample == null then
  {
    samples = lib.mapAttrs safely samples;
    disabled = disabled false;
    disabledWithMicrovmHost = disabled true;
  }
else
  evalSample sample samples.${sample}
