# `nix flake check` runs all of these; each is also `nix build .#checks.<system>.<name>`.
{
  pkgs,
  self,
  nixpkgs,
  microvm,
}:

let
  system = pkgs.stdenv.hostPlatform.system;
  blixard = self.packages.${system}.blixard;
  nixosModule = self.nixosModules.blixard;
  inherit (nixpkgs.lib) nixosSystem;
in
{
  # The package builds, its native addon loads and the CLI starts (its installCheckPhase).
  package = blixard;

  # `npm test` (typecheck, build, vitest) offline in the sandbox.
  test-suite = pkgs.callPackage ./test-suite.nix {
    inherit blixard;
    microvmSource = microvm;
  };

  # services.blixard inside real NixOS, for every sample of test/nix/samples.nix.
  module-eval = import ./module-eval.nix {
    inherit pkgs nixosSystem nixosModule;
    microvmHostModule = microvm.nixosModules.host;
  };

  # NixOS VM tests (need KVM on the builder).
  vm-cluster = import ../tests/cluster.nix { inherit pkgs nixosModule; };
  vm-microvm = import ../tests/microvm.nix {
    inherit
      pkgs
      nixosSystem
      nixosModule
      microvm
      ;
  };
}
