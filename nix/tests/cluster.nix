# Three NixOS hosts form a Blixard cluster through services.blixard, run a VM, lose the host that
# runs it, and keep working: the survivors elect a leader, accept writes, reschedule the VM, and the
# lost host catches up when it returns — the VM never runs twice.
#
# The VMs are fake runners (a `bin/microvm-run` that only sleeps, under a recognisable process
# name): the test is about the cluster, not the hypervisor (see ./microvm.nix for a real microVM).
#
#   nix build .#checks.x86_64-linux.vm-cluster   (add -L to follow the log)
{
  pkgs,
  nixosModule,
}:

let
  # The runner contract: `bin/microvm-run` runs the VM in the foreground from the VM's state
  # directory. This one names itself after that directory so the test can find which host runs it.
  fakeRunner = pkgs.runCommand "blixard-fake-runner" { } ''
    mkdir -p $out/bin
    cat > $out/bin/microvm-run <<'EOF'
    #!${pkgs.runtimeShell}
    vm=$(${pkgs.coreutils}/bin/basename "$PWD")
    exec -a "blixard-fake-hypervisor-$vm" ${pkgs.coreutils}/bin/sleep infinity
    EOF
    chmod +x $out/bin/microvm-run
  '';

  port = 7001;
  ids = {
    node1 = 1;
    node2 = 2;
    node3 = 3;
  };

  nodeConfig =
    name:
    { ... }:
    {
      imports = [ nixosModule ];
      services.blixard = {
        enable = true;
        nodeId = ids.${name};
        bind = "0.0.0.0:${toString port}";
        advertise = "${name}:${toString port}";
        peers = pkgs.lib.mapAttrsToList (peer: id: {
          inherit id;
          address = "${peer}:${toString port}";
        }) (removeAttrs ids [ name ]);
        openFirewall = true;
        vmBackend = "process";
        # Fixed, so placement does not depend on the test VMs' size.
        capacity = {
          vcpus = 8;
          memoryMiB = 8192;
        };
        labels.rack = name;
        # Secrets come from a file; in a real deployment use agenix/sops-nix, not the store.
        clusterSecretFile = "/etc/blixard-test/cluster-secret";
      };
      environment.etc."blixard-test/cluster-secret".text = "not-a-real-secret-only-for-this-test";
      virtualisation.additionalPaths = [ fakeRunner ];
      virtualisation.memorySize = 1024;
    };
in
pkgs.testers.runNixOSTest {
  name = "blixard-cluster";

  nodes = pkgs.lib.mapAttrs (name: _: nodeConfig name) ids;

  # ./cli.py: the CLI helpers both VM tests share (it expects PORT).
  testScript =
    "PORT = ${toString port}\n"
    + builtins.readFile ./cli.py
    + ''
    nodes = {1: node1, 2: node2, 3: node3}
    runner = "${fakeRunner}"

    def hypervisors(name, machines):
        """The machines on which the fake hypervisor of VM `name` runs."""
        return [
            m for m in machines
            if m.execute(f"pgrep -f '[b]lixard-fake-hypervisor-{name}'")[0] == 0
        ]

    # --- the cluster forms -----------------------------------------------------------------------

    start_all()
    for m in nodes.values():
        m.wait_for_unit("blixard.service")
        m.wait_for_open_port(${toString port})

    def formed():
        return leader(node1) is not None and health(node1) == {1: "up", 2: "up", 3: "up"}

    with subtest("three nodes form one cluster"):
        eventually(formed, 120)
        # Every node names the same leader.
        eventually(lambda: len({leader(m) for m in nodes.values()}) == 1, 30)

    with subtest("secrets reach the unit as credentials, not through the store"):
        # The rendered config names the credential, and systemd placed the file's content there.
        node1.succeed(
            "systemctl show -P ExecStart blixard | grep -o '/nix/store/[^ ]*-blixard.json' | head -n 1"
            " | xargs grep -q /run/credentials/blixard.service/cluster-secret"
        )
        node1.succeed("test \"$(cat /run/credentials/blixard.service/cluster-secret)\" = not-a-real-secret-only-for-this-test")

    # --- a VM runs on one node -------------------------------------------------------------------

    with subtest("a VM created through a follower runs on exactly one node"):
        follower = next(m for i, m in nodes.items() if i != leader(node1))
        cli(follower, f"vm create --name web --runner {runner}")
        eventually(lambda: vm(node1, "web")["phase"] == "running", 120)
        host_id = vm(node1, "web")["node"]
        assert host_id in nodes, f"web is placed on {host_id!r}"
        assert hypervisors("web", nodes.values()) == [nodes[host_id]]
        # Reads agree on every node.
        for m in nodes.values():
            assert "web" in vms(m)

    # --- lose the node that runs it --------------------------------------------------------------

    lost = nodes[host_id]
    survivors = {i: m for i, m in nodes.items() if i != host_id}
    a_survivor = next(iter(survivors.values()))

    with subtest("losing a node keeps the cluster working"):
        lost.crash()
        eventually(lambda: leader(a_survivor) in survivors and health(a_survivor).get(host_id) == "down", 120)
        # Writes still commit with two of three nodes.
        cli(a_survivor, f"vm create --name db --runner {runner}")
        eventually(lambda: vm(a_survivor, "db")["phase"] == "running", 120)
        assert vm(a_survivor, "db")["node"] in survivors

    with subtest("the lost node's VM is rescheduled on a survivor"):
        eventually(lambda: vm(a_survivor, "web")["node"] in survivors and vm(a_survivor, "web")["phase"] == "running", 180)
        assert len(hypervisors("web", survivors.values())) == 1

    with subtest("stop keeps the VM listed as stopped"):
        cli(a_survivor, "vm stop db")
        eventually(lambda: vm(a_survivor, "db")["phase"] == "stopped", 60)
        assert vm(a_survivor, "db")["desired"] == "stopped"
        assert "db" in vms(a_survivor)
        assert hypervisors("db", survivors.values()) == []

    # --- the lost node returns -------------------------------------------------------------------

    with subtest("the returning node catches up and the VM still runs once"):
        lost.start()
        lost.wait_for_unit("blixard.service")
        eventually(lambda: set(vms(lost)) >= {"web", "db"} and health(lost).get(host_id) == "up", 180)
        assert vm(lost, "db")["desired"] == "stopped"
        assert len(hypervisors("web", nodes.values())) == 1
        assert hypervisors("web", [lost]) == []

    with subtest("delete removes the VM everywhere"):
        cli(lost, "vm delete web")
        eventually(lambda: all("web" not in vms(m) for m in nodes.values()), 60)
        eventually(lambda: hypervisors("web", nodes.values()) == [], 60)
  '';
}
