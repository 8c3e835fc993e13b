# Sample configurations of services.blixard and what each must produce. Shared by the local test
# (test/nix/eval.nix + module.test.ts: the module under nixpkgs' lib with stub NixOS options) and the
# flake check nix/checks/module-eval.nix (the module inside a real NixOS evaluation).
#
# Each sample:
#   microvmHost      import microvm.nix's host module (a stub locally, the real one in the check)
#   module           a NixOS module (attrset or function) setting services.blixard
#   expect.settings  the exact JSON the config file must hold (valid samples)
#   expect.assertions  substrings of the failing assertion messages, in order (inconsistent samples)
#   expect.evalError   a substring of the evaluation error (values an option's type must refuse)
#   expect.schemaAccepts  whether the daemon's decodeNodeConfig accepts the rendered file
#   expect.unit      facts about systemd.services.blixard (checked by both sides)
#   expect.microvm   what becomes of microvm.nix's units (samples importing its host module):
#                    `restart`, Restart= of each microvm@ unit; `template`, who the microvm@ template
#                    runs as and where
let
  defaultTimeouts = {
    tickMs = 50;
    fencingMs = 3000;
    nodeDownMs = 6000;
    requestMs = 5000;
  };
in
{
  minimal = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
      };
    };
    expect = {
      settings = {
        id = 1;
        bind = "0.0.0.0:7001";
        peers = [ ];
        dataDir = "/var/lib/blixard";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "127.0.0.1:7001";
        # Without microvm.nix's host module, the VMs' state root is created for the unit.
        tmpfiles = [ "d '/var/lib/microvms' 0755 root root - -" ];
        # microvm.nix's helpers (all allowed by default) can run inside the unit.
        deviceAllow = [
          "/dev/kvm rw"
          "/dev/net/tun rw"
          "/dev/vhost-net rw"
          "/dev/vhost-vsock rw"
          "char-macvtap rw"
          "/dev/vfio/vfio rw"
          "char-vfio rw"
        ];
        capabilities = [
          "CAP_CHOWN"
          "CAP_DAC_OVERRIDE"
          "CAP_FOWNER"
          "CAP_NET_ADMIN"
          "CAP_SYS_ADMIN"
          "CAP_SETUID"
          "CAP_SETGID"
          "CAP_FSETID"
          "CAP_MKNOD"
          "CAP_SETFCAP"
          "CAP_DAC_READ_SEARCH"
          "CAP_SYS_MODULE"
        ];
        sandbox = {
          RestrictNamespaces = "mnt pid net";
          ProtectKernelTunables = false;
          ProtectKernelModules = false;
          SystemCallFilter = [ "~@clock @cpu-emulation @debug @obsolete @reboot @swap" ];
        };
      };
    };
  };

  # Process backend whose VMs use none of microvm.nix's helpers: the tightest sandbox.
  process-without-helpers = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        vmHelpers = [ ];
      };
    };
    expect = {
      settings = {
        id = 1;
        bind = "0.0.0.0:7001";
        peers = [ ];
        dataDir = "/var/lib/blixard";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "127.0.0.1:7001";
        deviceAllow = [
          "/dev/kvm rw"
          "/dev/net/tun rw"
          "/dev/vhost-net rw"
          "/dev/vhost-vsock rw"
        ];
        capabilities = [
          "CAP_CHOWN"
          "CAP_DAC_OVERRIDE"
          "CAP_FOWNER"
          "CAP_NET_ADMIN"
        ];
        sandbox = {
          RestrictNamespaces = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          SystemCallFilter = [ "~@clock @cpu-emulation @debug @module @obsolete @reboot @swap" ];
        };
      };
    };
  };

  # One member of a three-node cluster, with secrets, capacity, labels and extra flags.
  cluster-member = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 2;
        bind = "10.0.0.2:7001";
        peers = [
          {
            id = 1;
            address = "10.0.0.1:7001";
          }
          {
            id = 3;
            address = "node3.example.org:7001";
          }
        ];
        openFirewall = true;
        clusterSecretFile = "/run/secrets/blixard-cluster";
        apiTokenFile = "/run/secrets/blixard-api-token";
        capacity = {
          vcpus = 16;
          memoryMiB = 65536;
        };
        labels = {
          zone = "rack-1";
          "blixard.io/gpu" = "none";
        };
        logLevel = "debug";
        logFormat = "json";
        extraFlags = [
          "--peer"
          "4:node 4:7001"
        ];
      };
    };
    expect = {
      settings = {
        id = 2;
        bind = "10.0.0.2:7001";
        peers = [
          {
            id = 1;
            address = "10.0.0.1:7001";
          }
          {
            id = 3;
            address = "node3.example.org:7001";
          }
        ];
        dataDir = "/var/lib/blixard";
        clusterSecretFile = "/run/credentials/blixard.service/cluster-secret";
        apiTokenFile = "/run/credentials/blixard.service/api-token";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        capacity = {
          vcpus = 16;
          memoryMiB = 65536;
        };
        labels = {
          zone = "rack-1";
          "blixard.io/gpu" = "none";
        };
        timeouts = defaultTimeouts;
        logLevel = "debug";
        logFormat = "json";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = " --peer '4:node 4:7001'";
        loadCredential = [
          "cluster-secret:/run/secrets/blixard-cluster"
          "api-token:/run/secrets/blixard-api-token"
        ];
        stateDirectory = "blixard";
        firewall = [ 7001 ];
        cliAddr = "10.0.0.2:7001";
        tmpfiles = [ "d '/var/lib/microvms' 0755 root root - -" ];
      };
    };
  };

  # The operator's own CA: the three TLS files handed over as credentials.
  operator-tls = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "127.0.0.1:7001";
        tlsCaFile = "/run/secrets/blixard-ca.crt";
        tlsCertFile = "/run/secrets/blixard-node.crt";
        tlsKeyFile = "/run/secrets/blixard-node.key";
      };
    };
    expect = {
      settings = {
        id = 1;
        bind = "127.0.0.1:7001";
        peers = [ ];
        dataDir = "/var/lib/blixard";
        tlsCaFile = "/run/credentials/blixard.service/tls-ca";
        tlsCertFile = "/run/credentials/blixard.service/tls-cert";
        tlsKeyFile = "/run/credentials/blixard.service/tls-key";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [
          "tls-ca:/run/secrets/blixard-ca.crt"
          "tls-cert:/run/secrets/blixard-node.crt"
          "tls-key:/run/secrets/blixard-node.key"
        ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "127.0.0.1:7001";
        tmpfiles = [ "d '/var/lib/microvms' 0755 root root - -" ];
      };
    };
  };

  # A node joining with a join token alone: the token file handed over as a credential.
  join-token = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 4;
        bind = "10.0.0.4:7001";
        join = [ "10.0.0.1:7001" ];
        joinTokenFile = "/run/secrets/blixard-join-token";
      };
    };
    expect = {
      settings = {
        id = 4;
        bind = "10.0.0.4:7001";
        peers = [ ];
        join = [ "10.0.0.1:7001" ];
        joinTokenFile = "/run/credentials/blixard.service/join-token";
        dataDir = "/var/lib/blixard";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ "join-token:/run/secrets/blixard-join-token" ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "10.0.0.4:7001";
        tmpfiles = [ "d '/var/lib/microvms' 0755 root root - -" ];
      };
    };
  };

  # A join token with nowhere to join, beside a cluster secret, or inline in the store.
  join-token-refused = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 4;
        joinTokenFile = "/run/secrets/blixard-join-token";
        clusterSecretFile = "/run/secrets/blixard-cluster";
        settings.joinToken = "K10${builtins.concatStringsSep "" (builtins.genList (_: "ab") 32)}::0123456789abcdef.${builtins.concatStringsSep "" (builtins.genList (_: "x") 43)}";
      };
    };
    expect = {
      assertions = [
        "settings.joinToken would put the join token in the Nix store"
        "joinTokenFile and clusterSecretFile"
        "joinTokenFile needs a member to join through"
      ];
      schemaAccepts = true;
    };
  };

  # microvm.nix's host module with its own state directory; a per-key override in `settings`.
  systemd-backend = {
    microvmHost = true;
    module = {
      microvm.stateDir = "/srv/microvms";
      services.blixard = {
        enable = true;
        nodeId = 3;
        bind = "[::]:7100";
        advertise = "[fd00::3]:7100";
        peers = [
          {
            id = 1;
            address = "[fd00::1]:7100";
          }
        ];
        vmBackend = "systemd";
        openFirewall = true;
        timeouts.tickMs = 100;
        settings.timeouts.requestMs = 10000;
      };
    };
    expect = {
      settings = {
        id = 3;
        bind = "[::]:7100";
        advertise = "[fd00::3]:7100";
        peers = [
          {
            id = 1;
            address = "[fd00::1]:7100";
          }
        ];
        dataDir = "/var/lib/blixard";
        vmBackend = "systemd";
        microvmStateDir = "/srv/microvms";
        labels = { };
        timeouts = {
          tickMs = 100;
          fencingMs = 3000;
          nodeDownMs = 6000;
          requestMs = 10000;
        };
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ ];
        stateDirectory = "blixard";
        firewall = [ 7100 ];
        cliAddr = "[::1]:7100";
        readWritePaths = [ "/srv/microvms" ];
        # microvm.nix's host module creates /srv/microvms.
        tmpfiles = [ ];
        capabilities = [
          "CAP_CHOWN"
          "CAP_DAC_OVERRIDE"
          "CAP_FOWNER"
        ];
      };
      # Blixard's restartPolicy decides, not microvm.nix's Restart=always; the units run as
      # microvm.nix's user in Blixard's state directories.
      microvm = {
        restart."microvm@" = "no";
        template = {
          User = "microvm";
          Group = "kvm";
          WorkingDirectory = "/srv/microvms/%i";
        };
      };
    };
  };

  # A host with its own declarative microvm.nix VM beside Blixard's: that VM's unit keeps
  # microvm.nix's Restart=always. (`evaluatedConfig` stands in for the guest's NixOS evaluation,
  # which needs full nixpkgs: only the attributes microvm.nix's host module reads.)
  systemd-with-declared-vm = {
    microvmHost = true;
    module = {
      microvm.vms.db.evaluatedConfig.config =
        let
          fake = name: {
            type = "derivation";
            inherit name;
            outPath = "/nix/store/00000000000000000000000000000000-${name}";
          };
        in
        {
          microvm.declaredRunner = fake "microvm-qemu-db" // {
            supportsNotifySocket = false;
            registerWithMachined = false;
          };
          microvm.shares = [ ];
          system.build.toplevel = fake "nixos-system-db";
        };
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "10.0.0.1:7001";
        vmBackend = "systemd";
      };
    };
    expect = {
      settings = {
        id = 1;
        bind = "10.0.0.1:7001";
        peers = [ ];
        dataDir = "/var/lib/blixard";
        vmBackend = "systemd";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "10.0.0.1:7001";
        tmpfiles = [ ];
      };
      microvm = {
        restart = {
          "microvm@" = "no";
          "microvm@db" = "always";
        };
        template = {
          User = "microvm";
          Group = "kvm";
          WorkingDirectory = "/var/lib/microvms/%i";
        };
      };
    };
  };

  # Process backend on a microvm.nix host: Blixard leaves microvm.nix's units as they are.
  process-on-microvm-host = {
    microvmHost = true;
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "10.0.0.1:7001";
      };
    };
    expect = {
      settings = {
        id = 1;
        bind = "10.0.0.1:7001";
        peers = [ ];
        dataDir = "/var/lib/blixard";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "10.0.0.1:7001";
        # microvm.nix's host module creates the state directory.
        tmpfiles = [ ];
      };
      microvm = {
        restart."microvm@" = "always";
        template = {
          User = "microvm";
          Group = "kvm";
          WorkingDirectory = "/var/lib/microvms/%i";
        };
      };
    };
  };

  # microvm.stateDir is a `types.path`: a path literal is legal there and must not break the module.
  # (microvm.nix's own units interpolate it, which would copy the directory into the store; only
  # Blixard's side is evaluated here.)
  microvm-state-dir-path-literal = {
    microvmHost = true;
    module = {
      microvm.stateDir = /srv/microvms;
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "10.0.0.1:7001";
        vmBackend = "systemd";
      };
    };
    expect = {
      settings = {
        id = 1;
        bind = "10.0.0.1:7001";
        peers = [ ];
        dataDir = "/var/lib/blixard";
        vmBackend = "systemd";
        microvmStateDir = "/srv/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "10.0.0.1:7001";
        readWritePaths = [ "/srv/microvms" ];
        tmpfiles = [ ];
      };
    };
  };

  # A data directory outside /var/lib (created by tmpfiles, made writable explicitly); port 700.
  custom-data-dir = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 7;
        bind = "127.0.0.1:700";
        dataDir = "/srv/blixard";
      };
    };
    expect = {
      settings = {
        id = 7;
        bind = "127.0.0.1:700";
        peers = [ ];
        dataDir = "/srv/blixard";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ ];
        stateDirectory = null;
        firewall = [ ];
        cliAddr = "127.0.0.1:700";
        readWritePaths = [
          "/var/lib/microvms"
          "/srv/blixard"
        ];
        tmpfiles = [
          "d '/srv/blixard' 0700 root root - -"
          "d '/var/lib/microvms' 0755 root root - -"
        ];
        # A privileged port.
        capabilities = [
          "CAP_CHOWN"
          "CAP_DAC_OVERRIDE"
          "CAP_FOWNER"
          "CAP_NET_ADMIN"
          "CAP_SYS_ADMIN"
          "CAP_SETUID"
          "CAP_SETGID"
          "CAP_FSETID"
          "CAP_MKNOD"
          "CAP_SETFCAP"
          "CAP_DAC_READ_SEARCH"
          "CAP_SYS_MODULE"
          "CAP_NET_BIND_SERVICE"
        ];
      };
    };
  };

  # --- inconsistent: the module's assertions must fire -------------------------------------------

  # Tailscale discovery: no peers, tailscaled's CLI on the unit's PATH, started after tailscaled.
  tailscale-member = {
    module = {
      services.tailscale.enable = true;
      services.blixard = {
        enable = true;
        nodeId = 2;
        tailscale.enable = true;
      };
    };
    expect = {
      settings = {
        id = 2;
        bind = "0.0.0.0:7001";
        peers = [ ];
        discovery = "tailscale";
        tailscaleTag = "tag:blixard";
        dataDir = "/var/lib/blixard";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "127.0.0.1:7001";
        tmpfiles = [ "d '/var/lib/microvms' 0755 root root - -" ];
      };
    };
  };

  # The node that founds the cluster, with a tag of its own.
  tailscale-bootstrap = {
    module = {
      services.tailscale.enable = true;
      services.blixard = {
        enable = true;
        nodeId = 1;
        tailscale = {
          enable = true;
          tag = "tag:vm-hosts";
          bootstrap = true;
        };
        clusterSecretFile = "/run/secrets/blixard-cluster";
      };
    };
    expect = {
      settings = {
        id = 1;
        bind = "0.0.0.0:7001";
        peers = [ ];
        discovery = "tailscale";
        tailscaleTag = "tag:vm-hosts";
        bootstrap = true;
        dataDir = "/var/lib/blixard";
        clusterSecretFile = "/run/credentials/blixard.service/cluster-secret";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ "cluster-secret:/run/secrets/blixard-cluster" ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "127.0.0.1:7001";
      };
    };
  };

  systemd-without-microvm = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        vmBackend = "systemd";
      };
    };
    expect = {
      assertions = [ ''vmBackend = "systemd" runs VMs as microvm.nix's microvm@NAME units'' ];
      # The file itself is fine: what is missing is on the host.
      schemaAccepts = true;
    };
  };

  microvm-state-dir-mismatch = {
    microvmHost = true;
    module = {
      microvm.stateDir = "/srv/microvms";
      services.blixard = {
        enable = true;
        nodeId = 1;
        vmBackend = "systemd";
        microvmStateDir = "/var/lib/microvms";
      };
    };
    expect = {
      assertions = [ "must equal microvm.stateDir (/srv/microvms)" ];
      schemaAccepts = true;
    };
  };

  # Only some of the operator's TLS files: the node would have none of them to use.
  tls-files-partial = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        tlsCertFile = "/run/secrets/blixard-node.crt";
      };
    };
    expect = {
      assertions = [ "tlsCaFile, tlsCertFile and tlsKeyFile go together" ];
      schemaAccepts = true;
    };
  };

  node-id-zero = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 0;
      };
    };
    expect = {
      assertions = [ "nodeId must be a whole number from 1 to 2147483647 (got 0)" ];
      schemaAccepts = false;
    };
  };

  peer-is-self = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "10.0.0.1:7001";
        peers = [
          {
            id = 1;
            address = "10.0.0.9:7001";
          }
        ];
      };
    };
    expect = {
      assertions = [ "peers lists this node's own id (1)" ];
      # The daemon's schema has no such rule (see the report): the module is the stricter side.
      schemaAccepts = true;
    };
  };

  duplicate-peers = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "10.0.0.1:7001";
        peers = [
          {
            id = 2;
            address = "10.0.0.2:7001";
          }
          {
            id = 2;
            address = "10.0.0.3:7001";
          }
        ];
      };
    };
    expect = {
      assertions = [ "peers names the same id more than once: 2" ];
      schemaAccepts = true;
    };
  };

  timeouts-too-tight = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        timeouts = {
          fencingMs = 5000;
          nodeDownMs = 5500;
        };
      };
    };
    expect = {
      assertions = [
        "timeouts.nodeDownMs (5500) must be at least timeouts.fencingMs (5000) plus two election timeouts (1000 ms)"
      ];
      schemaAccepts = false;
    };
  };

  # The rule holds for the effective (rendered) values, even when set through `settings`.
  settings-breaks-timeouts = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        settings.timeouts.nodeDownMs = 3100;
      };
    };
    expect = {
      assertions = [ "timeouts.nodeDownMs (3100) must be at least timeouts.fencingMs (3000)" ];
      schemaAccepts = false;
    };
  };

  wildcard-without-advertise = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        peers = [
          {
            id = 2;
            address = "10.0.0.2:7001";
          }
        ];
      };
    };
    expect = {
      assertions = [ "advertise must be set when bind (0.0.0.0:7001) is a wildcard address" ];
      schemaAccepts = true;
    };
  };

  unknown-setting = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        settings.listen = "0.0.0.0:7001";
        settings.timeouts.electionMs = 500;
      };
    };
    expect = {
      assertions = [
        "settings has keys the daemon does not know: listen"
        "settings.timeouts has keys the daemon does not know: electionMs"
      ];
      schemaAccepts = false;
    };
  };

  # `settings` overrides a typed option with a value that option would refuse.
  settings-bad-address = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        settings.bind = "localhost";
      };
    };
    expect = {
      assertions = [ "bind, advertise and every peer address must be HOST:PORT" ];
      schemaAccepts = false;
    };
  };

  relative-data-dir = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        dataDir = "blixard-data";
      };
    };
    expect = {
      assertions = [ ''dataDir must be an absolute path (got "blixard-data")'' ];
      # The daemon accepts a relative directory (a hand-started node's default is one).
      schemaAccepts = true;
    };
  };

  bad-label = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        labels = {
          "-zone" = "rack 1";
        };
      };
    };
    expect = {
      assertions = [ ''invalid label(s) -zone="rack 1"'' ];
      schemaAccepts = false;
    };
  };

  # Flags that would change, behind the assertions, what the unit is built for.
  extra-flags-behind-assertions = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        extraFlags = [
          "--vm-backend=systemd"
          "--microvm-state-dir"
          "/srv/elsewhere"
          "--log-level=debug"
        ];
      };
    };
    expect = {
      assertions = [ "extraFlags: --vm-backend=systemd, --microvm-state-dir would change" ];
      schemaAccepts = true;
    };
  };

  # A secret path set through `settings`: the credential the typed option loads would go unread
  # (clusterSecretFile), or the file would be read outside systemd's credentials (apiTokenFile).
  secret-through-settings = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        clusterSecretFile = "/run/secrets/blixard-cluster";
        settings.clusterSecretFile = "/run/secrets/other";
        settings.apiTokenFile = "/run/secrets/blixard-api-token";
      };
    };
    expect = {
      assertions = [ "settings: apiTokenFile, clusterSecretFile set there would leave the secret unread" ];
      schemaAccepts = true;
    };
  };

  tailscale-with-peers = {
    module = {
      services.tailscale.enable = true;
      services.blixard = {
        enable = true;
        nodeId = 1;
        tailscale.enable = true;
        advertise = "10.0.0.1:7001";
        peers = [
          {
            id = 2;
            address = "10.0.0.2:7001";
          }
        ];
      };
    };
    expect = {
      assertions = [ "services.blixard.peers must be empty with services.blixard.tailscale.enable" ];
      # The schema checks each key alone; the daemon refuses the pair when it resolves its settings.
      schemaAccepts = true;
    };
  };

  tailscale-without-tailscaled = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        tailscale.enable = true;
      };
    };
    expect = {
      assertions = [ "set services.tailscale.enable = true" ];
      schemaAccepts = true;
    };
  };

  # --- values the options' types refuse: evaluation fails, nothing is rendered ----------------------

  bad-bind = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "localhost";
      };
    };
    expect.evalError = "services.blixard.bind";
  };

  bad-port = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "10.0.0.1:70000";
      };
    };
    expect.evalError = "services.blixard.bind";
  };

  bad-peer-address = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        bind = "10.0.0.1:7001";
        peers = [
          {
            id = 2;
            address = "10.0.0.2";
          }
        ];
      };
    };
    expect.evalError = "address";
  };

  bad-log-format = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        logFormat = "yaml";
      };
    };
    expect.evalError = "services.blixard.logFormat";
  };

  secret-in-store = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        clusterSecretFile = "/nix/store/00000000000000000000000000000000-secret";
      };
    };
    expect.evalError = "services.blixard.clusterSecretFile";
  };

  # A path literal would be copied into the world-readable store: refused.
  secret-path-literal = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        apiTokenFile = ./samples.nix;
      };
    };
    expect.evalError = "services.blixard.apiTokenFile";
  };

  tailscale-bad-tag = {
    module = {
      services.tailscale.enable = true;
      services.blixard = {
        enable = true;
        nodeId = 1;
        tailscale = {
          enable = true;
          tag = "blixard";
        };
      };
    };
    expect.evalError = "services.blixard.tailscale.tag";
  };

  # Shorter node certificates: rendered only when set.
  cert-validity = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        certValidityDays = 90;
      };
    };
    expect = {
      settings = {
        id = 1;
        bind = "0.0.0.0:7001";
        peers = [ ];
        dataDir = "/var/lib/blixard";
        vmBackend = "process";
        microvmStateDir = "/var/lib/microvms";
        labels = { };
        timeouts = defaultTimeouts;
        logLevel = "info";
        logFormat = "text";
        certValidityDays = 90;
      };
      assertions = [ ];
      schemaAccepts = true;
      unit = {
        extraArgs = "";
        loadCredential = [ ];
        stateDirectory = "blixard";
        firewall = [ ];
        cliAddr = "127.0.0.1:7001";
        # Without microvm.nix's host module, the VMs' state root is created for the unit.
        tmpfiles = [ "d '/var/lib/microvms' 0755 root root - -" ];
        # microvm.nix's helpers (all allowed by default) can run inside the unit.
        deviceAllow = [
          "/dev/kvm rw"
          "/dev/net/tun rw"
          "/dev/vhost-net rw"
          "/dev/vhost-vsock rw"
          "char-macvtap rw"
          "/dev/vfio/vfio rw"
          "char-vfio rw"
        ];
        capabilities = [
          "CAP_CHOWN"
          "CAP_DAC_OVERRIDE"
          "CAP_FOWNER"
          "CAP_NET_ADMIN"
          "CAP_SYS_ADMIN"
          "CAP_SETUID"
          "CAP_SETGID"
          "CAP_FSETID"
          "CAP_MKNOD"
          "CAP_SETFCAP"
          "CAP_DAC_READ_SEARCH"
          "CAP_SYS_MODULE"
        ];
        sandbox = {
          RestrictNamespaces = "mnt pid net";
          ProtectKernelTunables = false;
          ProtectKernelModules = false;
          SystemCallFilter = [ "~@clock @cpu-emulation @debug @obsolete @reboot @swap" ];
        };
      };
    };
  };

  cert-validity-too-long = {
    module = {
      services.blixard = {
        enable = true;
        nodeId = 1;
        certValidityDays = 3651;
      };
    };
    expect.evalError = "services.blixard.certValidityDays";
  };
}
