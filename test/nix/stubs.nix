# Stand-ins for what only full nixpkgs provides, so that modules/blixard.nix can be evaluated with
# nixpkgs' `lib` alone TOGETHER WITH microvm.nix's real host module (nixos-modules/host of the
# microvm.nix checkout the tests are given): NixOS' declarations of the options either module
# reads or writes, with the merge behaviour NixOS gives them, and a `pkgs` whose packages are
# store-path-looking names and whose `formats.json` renders with builtins.toJSON instead of building.
# Nothing of microvm.nix is stood in for. The flake's module-eval check evaluates the same samples
# inside real NixOS.
{ lib }:

let
  inherit (lib) types mkOption;

  # A store-path-looking stand-in for a package or a generated file (nothing is built).
  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  # NixOS' systemd unit option type (nixos/lib/systemd-types.nix): lists concatenate, other values
  # must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (def: lib.isList def.value) defs' then
        lib.concatMap (def: lib.toList def.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  listOfStr = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  anything = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };

  # NixOS' systemd unit submodules (nixos/lib/systemd-unit-options.nix), the options used here.
  unitModule = {
    options = {
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = listOfStr;
      wants = listOfStr;
      requires = listOfStr;
      after = listOfStr;
      before = listOfStr;
      partOf = listOfStr;
      unitConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      restartTriggers = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      overrideStrategy = mkOption {
        type = types.enum [
          "asDropinIfExists"
          "asDropin"
        ];
        default = "asDropinIfExists";
      };
    };
  };
  serviceModule = {
    imports = [ unitModule ];
    options = {
      path = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf (types.nullOr types.str);
        default = { };
      };
      serviceConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      script = mkOption {
        type = types.lines;
        default = "";
      };
      postStop = mkOption {
        type = types.lines;
        default = "";
      };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
    };
  };

  # nixpkgs' pkgs/pkgs-lib/formats.nix: the JSON value type, and a generator.
  jsonFormat = {
    type =
      let
        valueType =
          types.nullOr (
            types.oneOf [
              types.bool
              types.int
              types.float
              types.str
              types.path
              (types.attrsOf valueType)
              (types.listOf valueType)
            ]
          )
          // {
            description = "JSON value";
          };
      in
      valueType;
    # The real one runs `jq . > $out`; here the text travels with the fake derivation.
    generate =
      name: value:
      fakeDrv name
      // {
        text = builtins.toJSON value;
      };
  };
in
{
  inherit fakeDrv;

  # nixpkgs' package set, as far as the two modules use it.
  pkgs = {
    blixard = fakeDrv "blixard-0.1.0";
    git = fakeDrv "git";
    coreutils = fakeDrv "coreutils";
    qemu-utils = fakeDrv "qemu-utils";
    runtimeShell = "/nix/store/00000000000000000000000000000000-bash/bin/bash";
    formats.json = { }: jsonFormat;
    # callPackage: microvm.nix's host module builds its `microvm` command with it (not evaluated).
    callPackage = fn: _args: fakeDrv "callPackage-${baseNameOf (toString fn)}";
  };

  # NixOS' declarations of the options the two modules touch (nixos/modules/**).
  nixos =
    { ... }:
    {
      options = {
        assertions = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        warnings = listOfStr;
        environment.systemPackages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        environment.variables = mkOption {
          type = types.attrsOf types.str;
          default = { };
        };
        environment.etc = anything;
        networking.firewall.allowedTCPPorts = mkOption {
          type = types.listOf types.port;
          default = [ ];
        };
        boot.kernelModules = listOfStr;
        users.users = anything;
        security.pam.loginLimits = mkOption {
          type = types.listOf types.anything;
          default = [ ];
        };
        security.wrappers = anything;
        virtualisation.libvirtd.enable = mkOption {
          type = types.bool;
          default = false;
        };
        hardware.ksm.enable = mkOption {
          type = types.bool;
          default = false;
        };
        system.activationScripts = anything;
        systemd.package = mkOption {
          type = types.package;
          default = fakeDrv "systemd";
        };
        systemd.tmpfiles.rules = listOfStr;
        systemd.tmpfiles.settings = anything;
        systemd.services = mkOption {
          type = types.attrsOf (types.submodule serviceModule);
          default = { };
        };
        systemd.targets = mkOption {
          type = types.attrsOf (types.submodule unitModule);
          default = { };
        };
        # nixos/modules/services/networking/tailscale.nix: what services.blixard.tailscale reads.
        services.tailscale.enable = mkOption {
          type = types.bool;
          default = false;
        };
        services.tailscale.package = mkOption {
          type = types.package;
          default = fakeDrv "tailscale";
        };
        nix.package = mkOption {
          type = types.package;
          default = fakeDrv "nix";
        };
      };
    };

  # What the check reads from NixOS beyond the options the modules touch: nixosSystem's own
  # options, and the unit files NixOS renders (systemd.units, a stand-in file here).
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
}
