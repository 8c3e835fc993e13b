# The project's test suite (`npm test`: typecheck, build, vitest) as a derivation, offline in the
# build sandbox, with the same npm dependencies as the package.
#
# test/nix runs too, and must (BLIXARD_NIX_TESTS=required): nixpkgs' lib comes from the nixpkgs
# this flake is built with (copied out of the store, so evaluating it needs no store at all),
# microvm.nix is the flake's input, and `nix` only evaluates (`--store dummy://`).
{
  lib,
  blixard,
  nix,
  path,
  microvmSource,
}:

blixard.overrideAttrs (old: {
  pname = "blixard-test-suite";
  name = "blixard-test-suite-${old.version}";

  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.difference ../.. (
      lib.fileset.unions (
        map lib.fileset.maybeMissing [
          ../../.git
          ../../node_modules
          ../../dist
          ../../result
          ../../blixard-data
        ]
      )
    );
  };

  nativeBuildInputs = old.nativeBuildInputs ++ [ nix ];

  env = old.env // {
    CI = "true";
  };

  buildPhase = ''
    runHook preBuild
    mkdir -p "$TMPDIR/nixpkgs-lib"
    cp -rL ${path}/lib "$TMPDIR/nixpkgs-lib/"
    export BLIXARD_NIXPKGS_LIB="$TMPDIR/nixpkgs-lib"
    export BLIXARD_MICROVM_NIX=${microvmSource}
    export BLIXARD_NIX_TESTS=required
    npm test
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    touch $out
    runHook postInstall
  '';

  doInstallCheck = false;
})
