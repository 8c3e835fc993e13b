# Blixard runs a real microVM through microvm.nix: a host with microvm.nix's host module and
# services.blixard.vmBackend = "systemd". `blixard vm create --runner` hands Blixard a runner built
# by microvm.nix (`config.microvm.declaredRunner` of a small NixOS guest); Blixard links it into
# microvm.nix's state-directory layout and starts it as the `microvm@web` unit; the guest boots and
# says so on its console. Stop, start and delete go through the CLI too. Beside it, a VM made the
# way `microvm -c` makes one (its directory, a volume, GC roots) exists before Blixard starts: it is
# not Blixard's, and must come through untouched.
#
# The guest runs under QEMU's TCG (microvm.cpu is set), so the test needs no nested virtualisation;
# it is slow (minutes), not flaky.
#
#   nix build .#checks.x86_64-linux.vm-microvm -L
{
  pkgs,
  nixosSystem,
  nixosModule,
  microvm,
}:

let
  inherit (pkgs) lib;
  port = 7001;
  marker = "blixard-guest-up";

  guest = nixosSystem {
    modules = [
      microvm.nixosModules.microvm
      {
        nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
        networking.hostName = "web";
        system.stateVersion = lib.trivial.release;
        microvm = {
          hypervisor = "qemu";
          # Emulated CPU (TCG): no /dev/kvm needed inside the test VM.
          cpu = "max";
          vcpu = 1;
          mem = 512;
          interfaces = [ ];
          shares = [ ];
        };
        # The guest announces itself on its console, which microvm@web logs to the host's journal.
        systemd.services.blixard-guest-up = {
          wantedBy = [ "multi-user.target" ];
          serviceConfig = {
            Type = "oneshot";
            StandardOutput = "journal+console";
          };
          script = "echo ${marker}";
        };
      }
    ];
  };
  runner = guest.config.microvm.declaredRunner;

  # The foreign VM's runner: never started, only linked.
  foreignRunner = pkgs.runCommand "foreign-microvm-runner" { } ''
    mkdir -p $out/bin
    printf '#!${pkgs.runtimeShell}\nexec ${pkgs.coreutils}/bin/sleep infinity\n' > $out/bin/microvm-run
    chmod +x $out/bin/microvm-run
  '';
in
pkgs.testers.runNixOSTest {
  name = "blixard-microvm";

  nodes.host =
    { ... }:
    {
      imports = [
        nixosModule
        microvm.nixosModules.host
      ];
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "0.0.0.0:${toString port}";
        vmBackend = "systemd";
        capacity = {
          vcpus = 4;
          memoryMiB = 4096;
        };
      };
      # A `microvm -c`-shaped VM of the host's own, there before Blixard's first start: its
      # directory (root:kvm, group-writable), `current`, `flake`, a volume, and its GC root.
      systemd.tmpfiles.rules = [
        "d /var/lib/microvms/foreign 0775 root kvm - -"
        "L+ /var/lib/microvms/foreign/current - - - - ${foreignRunner}"
        "f /var/lib/microvms/foreign/flake 0644 root kvm - git+file:///etc/nixos"
        "f /var/lib/microvms/foreign/var.img 0644 root kvm - foreign-volume"
        "d /nix/var/nix/gcroots/microvm 0755 root root - -"
        "L+ /nix/var/nix/gcroots/microvm/foreign - - - - /var/lib/microvms/foreign/current"
      ];
      virtualisation.additionalPaths = [
        runner
        foreignRunner
      ];
      virtualisation.memorySize = 2048;
      virtualisation.cores = 2;
    };

  testScript =
    "PORT = ${toString port}\n"
    + builtins.readFile ./cli.py
    + ''
      runner = "${runner}"

      def unit_state():
          return host.execute("systemctl is-active microvm@web.service")[1].strip()

      def foreign_intact():
          host.succeed("test \"$(cat /var/lib/microvms/foreign/var.img)\" = foreign-volume")
          host.succeed("test \"$(readlink -f /var/lib/microvms/foreign/current)\" = ${foreignRunner}")
          host.succeed("test \"$(stat -c %U:%G /var/lib/microvms/foreign)\" = root:kvm")
          host.succeed("test -f /var/lib/microvms/foreign/flake")
          host.succeed("test \"$(readlink /nix/var/nix/gcroots/microvm/foreign)\" = /var/lib/microvms/foreign/current")
          host.fail("systemctl is-active microvm@foreign.service")

      host.wait_for_unit("blixard.service")
      host.wait_for_open_port(${toString port})

      with subtest("a single node bootstraps its own cluster"):
          eventually(lambda: leader(host) == 1, 120)

      with subtest("vm create starts the runner as microvm.nix's microvm@web unit"):
          cli(host, f"vm create --name web --runner {runner}")
          host.wait_until_succeeds("systemctl is-active microvm@web.service", timeout=300)
          # microvm.nix's layout: the unit runs STATE/web/current/bin/microvm-run.
          host.succeed(f"test \"$(readlink -f /var/lib/microvms/web/current)\" = {runner}")
          host.succeed("systemctl show -P ExecStart microvm@web.service | grep -q /var/lib/microvms/web/current/bin/microvm-run")
          # The VM runs under microvm.nix's unit, not inside blixard.service.
          host.succeed("systemctl show -P ControlGroup microvm@web.service | grep -q 'microvm@web'")

      with subtest("the VM's directory is microvm.nix's user's, as its own tools make it"):
          host.succeed("test \"$(stat -c %U:%G /var/lib/microvms/web)\" = microvm:kvm")
          # The unit (User=microvm) replaced `booted` in it.
          host.succeed(f"test \"$(readlink -f /var/lib/microvms/web/booted)\" = {runner}")
          # Blixard's restart policy decides, not microvm.nix's Restart=always.
          host.succeed("test \"$(systemctl show -P Restart microvm@web.service)\" = no")

      with subtest("the running VM's runner is protected from garbage collection"):
          host.succeed(f"test \"$(readlink -f /nix/var/nix/gcroots/microvm/web)\" = {runner}")
          host.succeed(f"test \"$(readlink -f /nix/var/nix/gcroots/microvm/booted-web)\" = {runner}")
          host.succeed("nix-collect-garbage")
          host.succeed(f"test -x {runner}/bin/microvm-run")

      with subtest("the guest boots"):
          host.wait_until_succeeds("journalctl -u microvm@web.service -o cat | grep -q ${marker}", timeout=900)
          eventually(lambda: vm(host, "web")["phase"] == "running", 300)
          assert vm(host, "web")["node"] == 1

      with subtest("a VM that is not Blixard's survives the node's start and its reconciliations"):
          # By now the node has reconciled its state directory many times (it started web there).
          foreign_intact()
          assert "foreign" not in vms(host)

      with subtest("the VM outlives a restart of Blixard (systemd backend)"):
          pid = host.succeed("systemctl show -P MainPID microvm@web.service").strip()
          host.succeed("systemctl restart blixard.service")
          host.wait_for_unit("blixard.service")
          eventually(lambda: vm(host, "web")["phase"] == "running", 120)
          assert host.succeed("systemctl show -P MainPID microvm@web.service").strip() == pid

      with subtest("vm stop stops the unit and keeps the VM listed as stopped"):
          cli(host, "vm stop web")
          host.wait_until_fails("systemctl is-active microvm@web.service", timeout=300)
          eventually(lambda: vm(host, "web")["phase"] == "stopped", 120)
          assert vm(host, "web")["desired"] == "stopped"
          assert "web" in vms(host)

      with subtest("vm start starts it again"):
          cli(host, "vm start web")
          host.wait_until_succeeds("systemctl is-active microvm@web.service", timeout=300)
          eventually(lambda: vm(host, "web")["phase"] == "running", 600)

      with subtest("vm delete stops it and forgets it"):
          cli(host, "vm delete web")
          host.wait_until_fails("systemctl is-active microvm@web.service", timeout=300)
          eventually(lambda: "web" not in vms(host), 60)
          assert unit_state() != "active"
          host.fail("test -e /nix/var/nix/gcroots/microvm/web")

      with subtest("the foreign VM came through all of it untouched"):
          foreign_intact()
    '';
}
