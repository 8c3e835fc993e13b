{
  description = "Blixard: a distributed microVM orchestrator for NixOS";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    microvm = {
      url = "github:microvm-nix/microvm.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      microvm,
    }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        blixard = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.blixard;
      });

      # pkgs.blixard, for configurations that take services.blixard.package from their own pkgs.
      overlays.default = final: _prev: { blixard = final.callPackage ./nix/package.nix { }; };

      # nix run .#blixard -- vm start web
      apps = forAllSystems (
        pkgs:
        let
          blixard = {
            type = "app";
            program = nixpkgs.lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.blixard;
            meta.description = "The Blixard CLI and daemon";
          };
        in
        {
          inherit blixard;
          default = blixard;
        }
      );

      # modules/blixard.nix with services.blixard.package defaulting to this flake's package.
      nixosModules = {
        blixard =
          { lib, pkgs, ... }:
          {
            imports = [ ./modules/blixard.nix ];
            services.blixard.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.blixard;
          };
        default = self.nixosModules.blixard;
      };

      checks = forAllSystems (pkgs: import ./nix/checks { inherit pkgs self nixpkgs microvm; });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_24
            pkgs.python3
            pkgs.gcc
            pkgs.nix
          ];
          # node-gyp (better-sqlite3) builds against the headers of the Node.js in the shell.
          npm_config_nodedir = pkgs.nodejs_24;
        };
      });

      # nixfmt-rfc-style (nixpkgs names it `nixfmt` since 25.05).
      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
