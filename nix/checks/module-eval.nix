# services.blixard evaluated inside real NixOS (with microvm.nix's real host module where a sample
# asks for it), for every sample of test/nix/samples.nix — the same samples the local test evaluates
# against stubs. Comparisons happen at evaluation time (a mismatch fails `nix flake check` with the
# sample's name and both values); the derivation then renders each config file with the real
# pkgs.formats.json and each unit file with NixOS' systemd library and checks their text.
{
  pkgs,
  nixosSystem,
  nixosModule,
  microvmHostModule,
}:

let
  inherit (pkgs) lib;
  samples = import ../../test/nix/samples.nix;

  # A stand-in package: the module is under test here, not the build.
  stubPackage = pkgs.writeShellScriptBin "blixard" "exit 0";

  evalSample =
    sample:
    nixosSystem {
      modules = [
        nixosModule
        sample.module
        {
          nixpkgs.pkgs = pkgs;
          boot.isContainer = true;
          system.stateVersion = lib.trivial.release;
          services.blixard.package = stubPackage;
        }
      ]
      ++ lib.optional (sample.microvmHost or false) microvmHostModule;
    };

  fail = name: what: want: got: throw ''
    module-eval: sample "${name}": ${what}
      expected: ${builtins.toJSON want}
      got:      ${builtins.toJSON got}
  '';
  same =
    name: what: want: got:
    if want == got then true else fail name what want got;

  blixardAssertions =
    config:
    map (a: a.message) (
      builtins.filter (a: !a.assertion && lib.hasPrefix "services.blixard" a.message) config.assertions
    );

  checkAssertions =
    name: expected: got:
    same name "number of failing assertions (${builtins.toJSON got})" (builtins.length expected) (
      builtins.length got
    )
    && lib.all lib.id (
      lib.zipListsWith (
        want: message:
        if lib.hasInfix want message then true else fail name "assertion message" want message
      ) expected got
    );

  checkUnit =
    name: config: unitExpect:
    let
      cfg = config.services.blixard;
      sc = config.systemd.services.blixard.serviceConfig;
      has = key: unitExpect ? ${key};
    in
    same name "ExecStart" "${stubPackage}/bin/blixard node --config ${cfg.configFile}${unitExpect.extraArgs}" sc.ExecStart
    && same name "LoadCredential" unitExpect.loadCredential (sc.LoadCredential or [ ])
    && same name "StateDirectory" unitExpect.stateDirectory (sc.StateDirectory or null)
    && same name "firewall" unitExpect.firewall config.networking.firewall.allowedTCPPorts
    && same name "BLIXARD_ADDR" unitExpect.cliAddr config.environment.variables.BLIXARD_ADDR
    && (!has "readWritePaths" || same name "ReadWritePaths" unitExpect.readWritePaths sc.ReadWritePaths)
    && (!has "deviceAllow" || same name "DeviceAllow" unitExpect.deviceAllow sc.DeviceAllow)
    && (
      !has "capabilities" || same name "CapabilityBoundingSet" unitExpect.capabilities sc.CapabilityBoundingSet
    )
    && (
      !has "sandbox"
      || lib.all lib.id (
        lib.mapAttrsToList (key: value: same name key value (sc.${key} or null)) unitExpect.sandbox
      )
    )
    && (
      !has "tmpfiles"
      || lib.all (rule: lib.elem rule config.systemd.tmpfiles.rules || fail name "tmpfiles rule" rule null) unitExpect.tmpfiles
    )
    && same name "package on PATH" true (lib.elem stubPackage config.environment.systemPackages)
    && same name "git on the unit's PATH" true (lib.elem pkgs.git config.systemd.services.blixard.path);

  # What becomes of microvm.nix's own units (samples that import its host module).
  checkMicrovm =
    name: config: microvmExpect:
    let
      units = lib.filterAttrs (n: _: lib.hasPrefix "microvm@" n) config.systemd.services;
      template = config.systemd.services."microvm@".serviceConfig;
    in
    same name "microvm@ units' Restart" microvmExpect.restart (
      lib.mapAttrs (_: u: u.serviceConfig.Restart or null) units
    )
    && (
      !(microvmExpect ? template)
      || same name "microvm@ template" microvmExpect.template {
        inherit (template) User Group WorkingDirectory;
      }
    );

  # Returns a shell fragment checking the rendered files, after checking everything at eval time.
  checkSample =
    name: sample:
    let
      expect = sample.expect;
      system = evalSample sample;
      inherit (system) config;
      cfg = config.services.blixard;
    in
    if expect ? evalError then
      # The refused value must stop evaluation of what the module renders.
      let
        attempt = builtins.tryEval (builtins.deepSeq cfg.settings cfg.settings);
      in
      if attempt.success then fail name "evaluation error" expect.evalError "success" else "# ${name}: refused\n"
    else
      assert checkAssertions name expect.assertions (blixardAssertions config);
      if expect ? settings then
        assert same name "settings" expect.settings cfg.settings;
        assert checkUnit name config expect.unit;
        assert !(expect ? microvm) || checkMicrovm name config expect.microvm;
        let
          unitFile = "${config.systemd.units."blixard.service".unit}/blixard.service";
          expected = pkgs.writeText "${name}-expected.json" (builtins.toJSON expect.settings);
        in
        ''
          echo "== ${name}"
          # The real pkgs.formats.json renders exactly the expected document.
          diff -u <(jq -S . ${expected}) <(jq -S . ${cfg.configFile})
          # NixOS' unit file starts the daemon on that file and hands it its credentials.
          grep -Fx ${lib.escapeShellArg "ExecStart=${config.systemd.services.blixard.serviceConfig.ExecStart}"} ${unitFile}
          ${lib.concatMapStrings (
            c: "grep -Fx ${lib.escapeShellArg "LoadCredential=${c}"} ${unitFile}\n"
          ) expect.unit.loadCredential}
          grep -Fx 'ProtectSystem=strict' ${unitFile}
          grep -Fx 'NoNewPrivileges=true' ${unitFile}
        ''
      else
        "# ${name}: assertions fire as expected\n";

  script = lib.concatStrings (lib.mapAttrsToList checkSample samples);
in
pkgs.runCommand "blixard-module-eval"
  {
    nativeBuildInputs = [ pkgs.jq ];
  }
  ''
    set -euo pipefail
    ${script}
    touch $out
  ''
