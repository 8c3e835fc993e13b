# Just enough of NixOS (and of nixpkgs' `pkgs`) to evaluate modules/blixard.nix with nixpkgs' `lib`
# alone: declarations for the options the module reads or writes, with the merge behaviour NixOS
# gives them, and a `pkgs` whose `formats.json` renders with builtins.toJSON instead of building.
# The flake's module-eval check evaluates the same samples against the real NixOS modules.
{ lib }:

let
  inherit (lib) types mkOption;

  # A store-path-looking stand-in for a package or a generated file.
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

  serviceModule = {
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
    };
  };
in
{
  pkgs = {
    blixard = fakeDrv "blixard-0.1.0";
    formats.json =
      { }:
      {
        # As in nixpkgs' pkgs/pkgs-lib/formats.nix.
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
  };

  # The NixOS options the module touches.
  nixos =
    { ... }:
    {
      options = {
        assertions = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        warnings = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        environment.systemPackages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        environment.variables = mkOption {
          type = types.attrsOf types.str;
          default = { };
        };
        networking.firewall.allowedTCPPorts = mkOption {
          type = types.listOf types.port;
          default = [ ];
        };
        systemd.package = mkOption {
          type = types.package;
          default = fakeDrv "systemd";
        };
        systemd.tmpfiles.rules = listOfStr;
        systemd.services = mkOption {
          type = types.attrsOf (types.submodule serviceModule);
          default = { };
        };
        nix.package = mkOption {
          type = types.package;
          default = fakeDrv "nix";
        };
      };
    };

  # microvm.nix's host module, as far as Blixard reads it (nixos-modules/host/options.nix).
  microvmHost =
    { ... }:
    {
      options.microvm = {
        host.enable = mkOption {
          type = types.bool;
          default = true;
        };
        stateDir = mkOption {
          type = types.path;
          default = "/var/lib/microvms";
        };
      };
    };
}
