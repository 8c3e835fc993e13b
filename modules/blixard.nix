# services.blixard: one Blixard node per host.
#
# The typed options below are written into `settings` with `mkDefault`, and `settings` is rendered
# verbatim (pkgs.formats.json) into the file the daemon reads with `blixard node --config FILE`.
# That file's format is the daemon's `NodeConfig` schema (src/node/Config.ts), which rejects unknown
# keys; the assertions at the end mirror the schema's cross-field rules so a bad configuration fails
# at `nixos-rebuild` time rather than when the unit starts.
{
  config,
  lib,
  options,
  pkgs,
  ...
}:

let
  inherit (lib)
    types
    mkOption
    mkDefault
    mkIf
    ;

  cfg = config.services.blixard;
  settingsFormat = pkgs.formats.json { };

  # Where systemd places the files named by LoadCredential=. The daemon reads secrets from there;
  # the secrets themselves never enter the Nix store.
  credentialsDir = "/run/credentials/blixard.service";

  # `host:port`: a name, an IPv4 address or a bracketed IPv6 address (HostPort in the daemon).
  # (`[[]` and `[]]` are literal brackets in POSIX extended regular expressions.)
  hostPortRegex = "([[][0-9A-Fa-f:.]+[]]|[A-Za-z0-9.-]+):([0-9]{1,5})";
  parseHostPort =
    s:
    let
      m = if builtins.isString s then builtins.match hostPortRegex s else null;
    in
    if m == null then
      null
    else
      {
        host = builtins.elemAt m 0;
        port = lib.toIntBase10 (builtins.elemAt m 1);
      };
  isHostPort =
    s:
    let
      parsed = parseHostPort s;
    in
    parsed != null && parsed.port >= 1 && parsed.port <= 65535;
  hostPort = types.addCheck types.str isHostPort // {
    name = "hostPort";
    description = "HOST:PORT address (e.g. 10.0.0.1:7001 or [fd00::1]:7001)";
  };

  # Secrets are read at run time from a path on the host: a path literal (./secret) would be copied
  # into the world-readable store, so only absolute path strings outside the store are accepted.
  secretPath = types.addCheck types.str (
    s: lib.hasPrefix "/" s && !lib.hasPrefix "${builtins.storeDir}/" s
  ) // {
    name = "secretPath";
    description = "absolute path (as a string) outside the Nix store";
  };

  atLeast =
    min:
    types.addCheck types.int (v: v >= min)
    // {
      name = "intAtLeast${toString min}";
      description = "integer of at least ${toString min}";
    };

  maxNodeId = 2147483647;

  # The keys NodeConfig knows; the daemon rejects anything else.
  knownKeys = [
    "id"
    "bind"
    "advertise"
    "peers"
    "servers"
    "discovery"
    "bootstrap"
    "tailscaleTag"
    "tailscaleBinary"
    "dataDir"
    "clusterSecretFile"
    "join"
    "joinToken"
    "joinTokenFile"
    "apiTokenFile"
    "insecurePlaintext"
    "insecurePlaintextNonLoopback"
    "tlsCaFile"
    "tlsCertFile"
    "tlsKeyFile"
    "certValidityDays"
    "allowedRunnerPrefixes"
    "allowedFlakePrefixes"
    "vmBackend"
    "microvmStateDir"
    "vmUser"
    "vmGroup"
    "gcRootDir"
    "capacity"
    "labels"
    "timeouts"
    "events"
    "logLevel"
    "logFormat"
  ];
  knownTimeoutKeys = [
    "tickMs"
    "fencingMs"
    "nodeDownMs"
    "requestMs"
  ];
  knownCapacityKeys = [
    "vcpus"
    "memoryMiB"
  ];
  unknownIn = known: attrs: lib.subtractLists known (builtins.attrNames attrs);

  labelKeyRegex = "([a-z0-9]([a-z0-9.-]*[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?";
  labelValueRegex = "([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?";
  badLabels = lib.filterAttrs (
    k: v:
    !(
      builtins.isString v
      && builtins.stringLength k <= 128
      && builtins.match labelKeyRegex k != null
      && builtins.stringLength v <= 63
      && builtins.match labelValueRegex v != null
    )
  ) (s.labels or { });

  # The effective values are those in `settings` (a user may override a typed option there), so the
  # checks below read the rendered settings, as the daemon will.
  s = cfg.settings;
  # The effective bind address (null when `settings.bind` overrides it with something invalid,
  # which an assertion reports).
  bind = if isHostPort (s.bind or null) then parseHostPort s.bind else null;
  bindIsWildcard = bind != null && builtins.elem bind.host [
    "0.0.0.0"
    "[::]"
  ];
  t = {
    tickMs = 50;
    fencingMs = 3000;
    nodeDownMs = 6000;
    requestMs = 5000;
  }
  // (s.timeouts or { });
  electionMargin = 2 * t.tickMs * 10;
  peerIds = map (p: p.id or null) (s.peers or [ ]);
  duplicatePeerIds = lib.unique (
    builtins.filter (id: lib.count (x: x == id) peerIds > 1) peerIds
  );

  hasMicrovmHost = options ? microvm.host.enable && config.microvm.host.enable;
  # microvm.stateDir is a `types.path`: a path literal (/srv/microvms) is legal there. toString
  # gives its absolute path as a string without copying anything into the store.
  microvmHostStateDir = if options ? microvm.stateDir then toString config.microvm.stateDir else null;
  # The host's declarative microvm.nix VMs (microvm.vms): their microvm@NAME units are not Blixard's.
  declaredVms = if hasMicrovmHost && options ? microvm.vms then builtins.attrNames config.microvm.vms else [ ];

  isProcess = s.vmBackend == "process";
  isSystemd = s.vmBackend == "systemd";
  helper = name: isProcess && builtins.elem name cfg.vmHelpers;

  # `blixard node` flags that would change, behind the assertions and the sandbox below, what the
  # module derives from `settings`: the node's identity and address (firewall, capabilities), its
  # files (StateDirectory, ReadWritePaths, credentials) and how it runs VMs (the unit's sandbox).
  refusedFlags = [
    "--config"
    "--id"
    "--bind"
    "--advertise"
    "--data-dir"
    "--vm-backend"
    "--microvm-state-dir"
    "--cluster-secret-file"
    "--api-token-file"
    "--discovery"
  ];
  badExtraFlags = builtins.filter (
    flag: builtins.any (refused: flag == refused || lib.hasPrefix "${refused}=" flag) refusedFlags
  ) cfg.extraFlags;

  # Secrets reach the daemon only as the credentials LoadCredential= hands it (the typed options).
  secretKeys = {
    clusterSecretFile = "cluster-secret";
    joinTokenFile = "join-token";
    apiTokenFile = "api-token";
    tlsCaFile = "tls-ca";
    tlsCertFile = "tls-cert";
    tlsKeyFile = "tls-key";
  };
  tlsFiles = [
    cfg.tlsCaFile
    cfg.tlsCertFile
    cfg.tlsKeyFile
  ];
  strayCredentials = lib.filterAttrs (
    key: credential: s ? ${key} && (cfg.${key} == null || s.${key} != "${credentialsDir}/${credential}")
  ) secretKeys;

  # Process backend, at host power-off: `blixard.service` stops only the daemon (KillMode=process),
  # so this stop-post command shuts the node's VMs down cleanly (their `microvm-shutdown`, as
  # microvm.nix's own units do), only when the whole system is going down: a restart of the unit
  # (nixos-rebuild switch) leaves them running for the next daemon to adopt. It is the node's
  # fencing watchdog run in the foreground: it waits for the lease the daemon no longer renews,
  # stops every runner with a guest's grace and returns once none runs, within TimeoutStopSec.
  # The detached watchdog the daemon left (which would stop them with the fencing's short grace,
  # and while it lives makes a second one exit at once) is ended first: the pid its record names,
  # if that process is this node's watchdog.
  watchdogCommand = [
    "node"
    "watchdog"
    "--id"
    (toString s.id)
    "--data-dir"
    s.dataDir
  ];
  shutdownVms = ''
    state=$(systemctl is-system-running || true)
    if [ "$state" != stopping ]; then
      echo "blixard: system state '$state': leaving the VMs running for the next daemon"
      exit 0
    fi
    echo "blixard: the system is shutting down: stopping this node's VMs"
    record=${lib.escapeShellArg "${s.dataDir}/fencing/watchdog.json"}
    pid=$(grep -o '"pid":[0-9]*' "$record" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
    if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" \
        | grep -qF -- ${lib.escapeShellArg (lib.concatStringsSep " " watchdogCommand + " ")}; then
      kill "$pid" || true
      for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
    exec ${lib.escapeShellArgs (
      [ "${cfg.package}/bin/blixard" ]
      ++ watchdogCommand
      ++ [
        "--vm-backend"
        "process"
        "--microvm-state-dir"
        s.microvmStateDir
        "--fencing-ms"
        (toString t.fencingMs)
        "--stop-timeout-ms"
        (toString (vmStopTimeoutSec * 1000))
      ]
    )}
  '';
  # What microvm.nix gives a guest to shut down (microvm.host.startupTimeout, TimeoutSec= of its
  # microvm@ units); the unit's TimeoutStopSec adds the fencing wait.
  vmStopTimeoutSec = 150;

  configFile = settingsFormat.generate "blixard.json" cfg.settings;

  execStart = lib.concatStringsSep " " (
    [
      "${cfg.package}/bin/blixard"
      "node"
      "--config"
      "${configFile}"
    ]
    ++ map lib.escapeShellArg cfg.extraFlags
  );

  dataDirIsState = lib.hasPrefix "/var/lib/" s.dataDir;

  peerModule = {
    options = {
      id = mkOption {
        type = types.int;
        example = 2;
        description = "The peer's node id (its `services.blixard.nodeId`).";
      };
      address = mkOption {
        type = hostPort;
        example = "10.0.0.2:7001";
        description = "Where the peer serves Raft traffic and the API (its advertised address).";
      };
    };
  };
in
{
  options.services.blixard = {
    enable = lib.mkEnableOption "Blixard, the distributed microVM orchestrator (one cluster node)";

    package = lib.mkPackageOption pkgs "blixard" {
      extraDescription = "The project's flake module sets this to the flake's own package.";
    };

    nodeId = mkOption {
      type = types.int;
      example = 1;
      description = ''
        This node's id: a positive integer, unique in the cluster and fixed for the life of
        {option}`services.blixard.dataDir`.
      '';
    };

    bind = mkOption {
      type = hostPort;
      default = "0.0.0.0:7001";
      example = "10.0.0.1:7001";
      description = "Where the node serves peers and the API (one port for both).";
    };

    advertise = mkOption {
      type = types.nullOr hostPort;
      default = null;
      example = "node1.example.org:7001";
      description = ''
        The address peers should use to reach this node, when it differs from
        {option}`services.blixard.bind`. Required when `bind` is a wildcard address and the node has
        peers.
      '';
    };

    peers = mkOption {
      type = types.listOf (types.submodule peerModule);
      default = [ ];
      example = lib.literalExpression ''
        [
          { id = 2; address = "10.0.0.2:7001"; }
          { id = 3; address = "10.0.0.3:7001"; }
        ]
      '';
      description = ''
        The other members of the cluster. Empty: this node bootstraps a new single-node cluster.
      '';
    };

    tailscale = {
      enable = lib.mkEnableOption ''
        peer discovery through Tailscale: the node joins through the online machines of the tailnet
        tagged {option}`services.blixard.tailscale.tag` (read with `tailscale status --json`), at
        the port of {option}`services.blixard.bind`, and advertises its own IPv4 tailnet address,
        so {option}`services.blixard.peers` stays empty. Needs tailscaled
        ({option}`services.tailscale.enable`) with this machine logged in and tagged'';

      tag = mkOption {
        type = types.strMatching "tag:[A-Za-z0-9][A-Za-z0-9-]{0,79}";
        default = "tag:blixard";
        description = ''
          The ACL tag the cluster's machines carry (`tailscale up --advertise-tags=TAG`). Only
          tagged machines are asked; a tag can only be granted by the tailnet's admins.
        '';
      };

      bootstrap = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether this node founds a new cluster when, on its first start, none of the tagged
          machines answers as a member of one (it joins that one otherwise). Set it on one node
          only: nodes without it never found, they wait for a member to join through.
        '';
      };
    };

    dataDir = mkOption {
      type = types.str;
      default = "/var/lib/blixard";
      description = "The node's Raft log, snapshots and state-machine database.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of {option}`services.blixard.bind` in the firewall.";
    };

    clusterSecretFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/blixard-cluster";
      description = ''
        File holding the shared secret that authenticates peer traffic (the same on every node).
        It is handed to the unit with systemd's `LoadCredential=` and never copied into the store.
      '';
    };

    join = mkOption {
      type = types.listOf hostPort;
      default = [ ];
      example = [ "10.0.0.1:7001" ];
      description = ''
        Members to join through by address alone (`--join`): their ids are learned from the cluster.
        What a node joining with {option}`services.blixard.joinTokenFile` needs.
      '';
    };

    joinTokenFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/blixard-join-token";
      description = ''
        File holding a join token (`blixard cluster token create`, single-use, expiring): the node
        joins through {option}`services.blixard.join` with it alone, receiving its certificate and the
        cluster secret (kept in `dataDir`), so it needs no {option}`services.blixard.clusterSecretFile`.
        Read only at the first start; it may stay set (or be removed) afterwards. Handed to the unit
        with `LoadCredential=`, never copied into the store.
      '';
    };

    apiTokenFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/blixard-api-token";
      description = ''
        File holding the bearer token API clients must present. Handed to the unit with
        `LoadCredential=`, never copied into the store.
      '';
    };

    tlsCaFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/blixard-ca.crt";
      description = ''
        The cluster CA certificate (PEM), with {option}`services.blixard.tlsCertFile` and
        {option}`services.blixard.tlsKeyFile`: TLS from the operator's own CA instead of the one the
        founding node makes in its data directory. Handed over with `LoadCredential=`. Unset (all
        three): the node makes or fetches its own certificates in `dataDir/tls`.
      '';
    };

    tlsCertFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/blixard-node.crt";
      description = ''
        This node's certificate (PEM) from {option}`services.blixard.tlsCaFile`'s CA. It must name
        the node by the URI SAN `blixard://CLUSTER-ID/node/N`. Handed over with `LoadCredential=`.
      '';
    };

    tlsKeyFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/blixard-node.key";
      description = "This node's private key (PEM). Handed over with `LoadCredential=`, never copied into the store.";
    };

    certValidityDays = mkOption {
      type = types.nullOr (types.ints.between 1 3650);
      default = null;
      example = 90;
      description = ''
        How long this node's certificate lasts, in days (the daemon's `certValidityDays`): what it
        asks for when it renews, and the longest it signs for another node's renewal. A node renews
        its own certificate at two thirds of its lifetime, or at once when it lasts longer than this
        (e.g. the year-long one it joined with); `blixard cluster cert status` shows
        every node's expiry, the metric `blixard_tls_certificate_expiry_timestamp_seconds` this
        node's. Null: the daemon's default, 365 days.
      '';
    };

    vmBackend = mkOption {
      type = types.enum [
        "systemd"
        "process"
      ];
      default = "process";
      description = ''
        How VMs are run. `systemd`: through microvm.nix's `microvm@NAME` units (requires
        microvm.nix's host module, `microvm.nixosModules.host`); VMs survive a restart of Blixard.
        `process`: Blixard runs each runner's `bin/microvm-run` as its own child process.
      '';
    };

    microvmStateDir = mkOption {
      type = types.str;
      default = if microvmHostStateDir != null then microvmHostStateDir else "/var/lib/microvms";
      defaultText = lib.literalExpression ''config.microvm.stateDir or "/var/lib/microvms"'';
      description = "Root of the VMs' state directories (microvm.nix's layout: `NAME/current`).";
    };

    capacity = mkOption {
      type = types.nullOr (
        types.submodule {
          options = {
            vcpus = mkOption {
              type = types.ints.between 1 1024;
              description = "vCPUs VMs may use on this node.";
            };
            memoryMiB = mkOption {
              type = types.ints.between 16 16777216;
              description = "Memory (MiB) VMs may use on this node.";
            };
          };
        }
      );
      default = null;
      example = {
        vcpus = 8;
        memoryMiB = 16384;
      };
      description = "What VMs may use on this node; `null` lets the daemon detect it.";
    };

    labels = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        zone = "rack-1";
        "blixard.io/gpu" = "none";
      };
      description = "Node labels, matched by VM placement constraints.";
    };

    timeouts = {
      tickMs = mkOption {
        type = atLeast 5;
        default = 50;
        description = "Raft tick; elections after 10–20 ticks without a leader.";
      };
      fencingMs = mkOption {
        type = atLeast 100;
        default = 3000;
        description = "A node that cannot reach a quorum for this long stops its own VMs. At least three election timeouts (`3 * 10 * tickMs`).";
      };
      nodeDownMs = mkOption {
        type = atLeast 200;
        default = 6000;
        description = ''
          A node not heard from for this long is marked down and its VMs are rescheduled. Must be at
          least `fencingMs` plus two election timeouts (`2 * 10 * tickMs`), so a fenced VM has
          stopped before it is started elsewhere.
        '';
      };
      requestMs = mkOption {
        type = atLeast 10;
        default = 5000;
        description = "Client-facing request deadline, and how long a peer may take to acknowledge a frame of Raft messages.";
      };
    };

    logLevel = mkOption {
      type = types.enum [
        "debug"
        "info"
        "warning"
        "error"
      ];
      default = "info";
      description = "The daemon's log level.";
    };

    logFormat = mkOption {
      type = types.enum [
        "text"
        "json"
      ];
      default = "text";
      description = ''
        How the daemon writes its log lines to the journal (`--log-format`): `text`, one readable
        line each, or `json`, one JSON object per line (for Loki, Elasticsearch, journald's JSON
        export and other log pipelines).
      '';
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = {
        timeouts.requestMs = 10000;
      };
      description = ''
        The daemon's config file (`blixard node --config`), as JSON. The typed options above are
        set here with `mkDefault`; a value set here wins over them. Unknown keys are rejected.
      '';
    };

    extraFlags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--log-level=debug" ];
      description = ''
        Extra command-line flags for `blixard node` (they win over the config file). Flags for what
        the module derives the unit from (${lib.concatStringsSep ", " refusedFlags}) are refused: set
        the option instead.
      '';
    };

    vmHelpers = mkOption {
      type = types.listOf (
        types.enum [
          "virtiofsd"
          "macvtap"
          "pci-passthrough"
        ]
      );
      default = [
        "virtiofsd"
        "macvtap"
        "pci-passthrough"
      ];
      example = [ ];
      description = ''
        Process backend only: the microvm.nix helpers this node's VMs may use, which run inside
        `blixard.service` and so inside its sandbox. Each loosens the sandbox by what it needs:
        `virtiofsd` (virtiofs shares): mount, pid and network namespaces and the capabilities of a
        root file server (CAP_SYS_ADMIN among them); `macvtap` (macvtap interfaces): writes to
        /proc/sys and the /dev/tapN devices; `pci-passthrough` (microvm.devices): writes to /sys,
        loading vfio-pci and /dev/vfio. List only those your VMs use to keep the sandbox tighter. A
        writable share's source must lie under {option}`services.blixard.microvmStateDir` (relative
        sources do), the rest of the file system being read-only to the unit. (The systemd backend
        runs the helpers in microvm.nix's own units.)
      '';
    };

    configFile = mkOption {
      type = types.package;
      readOnly = true;
      internal = true;
      default = configFile;
      defaultText = lib.literalMD "the rendered {option}`services.blixard.settings`";
      description = "The rendered config file (read-only; for tests and tooling).";
    };
  };

  config = mkIf cfg.enable (lib.mkMerge [ {
    services.blixard.settings = {
      id = mkDefault cfg.nodeId;
      bind = mkDefault cfg.bind;
      advertise = mkIf (cfg.advertise != null) (mkDefault cfg.advertise);
      peers = mkDefault (
        map (p: {
          inherit (p) id address;
        }) cfg.peers
      );
      discovery = mkIf cfg.tailscale.enable (mkDefault "tailscale");
      tailscaleTag = mkIf cfg.tailscale.enable (mkDefault cfg.tailscale.tag);
      bootstrap = mkIf (cfg.tailscale.enable && cfg.tailscale.bootstrap) (mkDefault true);
      dataDir = mkDefault cfg.dataDir;
      clusterSecretFile = mkIf (cfg.clusterSecretFile != null) (
        mkDefault "${credentialsDir}/cluster-secret"
      );
      join = mkIf (cfg.join != [ ]) (mkDefault cfg.join);
      joinTokenFile = mkIf (cfg.joinTokenFile != null) (mkDefault "${credentialsDir}/join-token");
      apiTokenFile = mkIf (cfg.apiTokenFile != null) (mkDefault "${credentialsDir}/api-token");
      tlsCaFile = mkIf (cfg.tlsCaFile != null) (mkDefault "${credentialsDir}/tls-ca");
      tlsCertFile = mkIf (cfg.tlsCertFile != null) (mkDefault "${credentialsDir}/tls-cert");
      tlsKeyFile = mkIf (cfg.tlsKeyFile != null) (mkDefault "${credentialsDir}/tls-key");
      certValidityDays = mkIf (cfg.certValidityDays != null) (mkDefault cfg.certValidityDays);
      vmBackend = mkDefault cfg.vmBackend;
      microvmStateDir = mkDefault cfg.microvmStateDir;
      capacity = mkIf (cfg.capacity != null) {
        vcpus = mkDefault cfg.capacity.vcpus;
        memoryMiB = mkDefault cfg.capacity.memoryMiB;
      };
      labels = mkDefault cfg.labels;
      timeouts = {
        tickMs = mkDefault cfg.timeouts.tickMs;
        fencingMs = mkDefault cfg.timeouts.fencingMs;
        nodeDownMs = mkDefault cfg.timeouts.nodeDownMs;
        requestMs = mkDefault cfg.timeouts.requestMs;
      };
      logLevel = mkDefault cfg.logLevel;
      logFormat = mkDefault cfg.logFormat;
    };

    assertions = [
      {
        assertion = builtins.isString s.dataDir && lib.hasPrefix "/" s.dataDir;
        message = "services.blixard.dataDir must be an absolute path (got ${builtins.toJSON s.dataDir}).";
      }
      {
        # The typed options check this; `settings` can override them with anything.
        assertion =
          isHostPort (s.bind or null)
          && (s ? advertise -> isHostPort s.advertise)
          && builtins.all (p: isHostPort (p.address or null)) (s.peers or [ ]);
        message = "services.blixard.settings: bind, advertise and every peer address must be HOST:PORT with a port from 1 to 65535 (e.g. 10.0.0.1:7001 or [fd00::1]:7001).";
      }
      {
        assertion = builtins.isInt s.id && s.id >= 1 && s.id <= maxNodeId;
        message = "services.blixard.nodeId must be a whole number from 1 to ${toString maxNodeId} (got ${builtins.toJSON s.id}).";
      }
      {
        assertion = !(builtins.elem s.id peerIds);
        message = "services.blixard.peers lists this node's own id (${builtins.toJSON s.id}); list only the other members.";
      }
      {
        assertion = duplicatePeerIds == [ ];
        message = "services.blixard.peers names the same id more than once: ${lib.concatMapStringsSep ", " builtins.toJSON duplicatePeerIds}.";
      }
      {
        assertion = builtins.all (id: builtins.isInt id && id >= 1 && id <= maxNodeId) peerIds;
        message = "services.blixard.peers: every peer id must be a whole number from 1 to ${toString maxNodeId}.";
      }
      {
        assertion = !(bindIsWildcard && (s.peers or [ ]) != [ ] && !(s ? advertise));
        message = "services.blixard.advertise must be set when bind (${s.bind}) is a wildcard address and the node has peers: peers cannot reach ${bind.host}.";
      }
      {
        # Mirrors the daemon's rule (src/node/Settings.ts): peers come from the tailnet.
        assertion = !((s.discovery or "static") == "tailscale" && (s.peers or [ ]) != [ ]);
        message = "services.blixard.peers must be empty with services.blixard.tailscale.enable: the peers are the tailnet's machines tagged ${cfg.tailscale.tag}.";
      }
      {
        assertion = cfg.tailscale.enable -> config.services.tailscale.enable;
        message = "services.blixard.tailscale.enable finds peers through tailscaled: set services.tailscale.enable = true (and log the machine in with the tag ${cfg.tailscale.tag}).";
      }
      {
        # Mirrors the daemon's Timeouts rules (src/node/Config.ts).
        assertion = t.fencingMs >= 3 * t.tickMs * 10;
        message = "services.blixard.timeouts.fencingMs (${toString t.fencingMs}) must be at least three election timeouts (${toString (3 * t.tickMs * 10)} ms): a follower proves its contact with a ReadIndex round every election timeout, giving each up after two, so a shorter fencing timeout can stop the VMs of nodes whose leader is alive.";
      }
      {
        assertion = t.nodeDownMs >= t.fencingMs + electionMargin;
        message = "services.blixard.timeouts.nodeDownMs (${toString t.nodeDownMs}) must be at least timeouts.fencingMs (${toString t.fencingMs}) plus two election timeouts (${toString electionMargin} ms), so a fenced VM has stopped before it is rescheduled.";
      }
      {
        assertion = !isSystemd || hasMicrovmHost;
        message = ''services.blixard.vmBackend = "systemd" runs VMs as microvm.nix's microvm@NAME units: import microvm.nix's host module (microvm.nixosModules.host) and keep microvm.host.enable = true, or use vmBackend = "process".'';
      }
      {
        assertion = !isSystemd || microvmHostStateDir == null || s.microvmStateDir == microvmHostStateDir;
        message = "services.blixard.microvmStateDir (${s.microvmStateDir}) must equal microvm.stateDir (${toString microvmHostStateDir}): the microvm@NAME units look for VMs there.";
      }
      {
        assertion = badExtraFlags == [ ];
        message = "services.blixard.extraFlags: ${lib.concatStringsSep ", " badExtraFlags} would change, behind the module's checks and the unit's sandbox, what the module sets from services.blixard.settings; set the corresponding option instead.";
      }
      {
        assertion = strayCredentials == { };
        message = "services.blixard.settings: ${lib.concatStringsSep ", " (builtins.attrNames strayCredentials)} set there would leave the secret unread, or read outside systemd's credentials: set services.blixard.${lib.concatStringsSep " / services.blixard." (builtins.attrNames strayCredentials)} (an absolute path outside the store), which hands the file over with LoadCredential=.";
      }
      {
        assertion = !(s ? joinToken);
        message = "services.blixard.settings.joinToken would put the join token in the Nix store: set services.blixard.joinTokenFile instead, which hands the file over with LoadCredential=.";
      }
      {
        assertion = cfg.joinTokenFile == null || cfg.clusterSecretFile == null;
        message = "services.blixard.joinTokenFile and clusterSecretFile: a node joining with a join token receives the cluster secret from the cluster; set one of them.";
      }
      {
        assertion = cfg.joinTokenFile == null || cfg.tailscale.enable || cfg.join != [ ] || cfg.peers != [ ];
        message = "services.blixard.joinTokenFile needs a member to join through: set services.blixard.join (any member's address).";
      }
      {
        assertion = builtins.all (f: f == null) tlsFiles || builtins.all (f: f != null) tlsFiles;
        message = "services.blixard.tlsCaFile, tlsCertFile and tlsKeyFile go together: set all three (the operator's own CA), or none (the node makes or fetches its certificates in dataDir/tls).";
      }
      {
        assertion = unknownIn knownKeys s == [ ];
        message = "services.blixard.settings has keys the daemon does not know: ${lib.concatStringsSep ", " (unknownIn knownKeys s)} (known: ${lib.concatStringsSep ", " knownKeys}).";
      }
      {
        assertion = unknownIn knownTimeoutKeys (s.timeouts or { }) == [ ];
        message = "services.blixard.settings.timeouts has keys the daemon does not know: ${lib.concatStringsSep ", " (unknownIn knownTimeoutKeys (s.timeouts or { }))}.";
      }
      {
        assertion = unknownIn knownCapacityKeys (s.capacity or { }) == [ ];
        message = "services.blixard.settings.capacity has keys the daemon does not know: ${lib.concatStringsSep ", " (unknownIn knownCapacityKeys (s.capacity or { }))}.";
      }
      {
        assertion = badLabels == { };
        message = "services.blixard.labels: invalid label(s) ${lib.concatStringsSep ", " (lib.mapAttrsToList (k: v: "${k}=${builtins.toJSON v}") badLabels)}; a key is letters, digits, '.', '_', '-' (optionally prefixed by 'domain/'), at most 128 characters; a value is at most 63 such characters, starting and ending with a letter or digit.";
      }
    ];

    environment.systemPackages = [ cfg.package ];
    # The CLI's default address is 127.0.0.1:7001; point it at this node's port.
    environment.variables.BLIXARD_ADDR = mkIf (bind != null) (
      mkDefault (
        if bindIsWildcard then
          (if bind.host == "[::]" then "[::1]" else "127.0.0.1") + ":${toString bind.port}"
        else
          s.bind
      )
    );

    networking.firewall.allowedTCPPorts = mkIf (cfg.openFirewall && bind != null) [ bind.port ];

    # Directories the unit needs before it starts (ReadWritePaths= fails on a missing path):
    # a data directory outside /var/lib, and the VMs' state root unless microvm.nix's host module
    # creates it (its activation script does, owned by its `microvm` user).
    systemd.tmpfiles.rules =
      lib.optional (!dataDirIsState) "d '${s.dataDir}' 0700 root root - -"
      ++ lib.optional (s.microvmStateDir != microvmHostStateDir) "d '${s.microvmStateDir}' 0755 root root - -";

    systemd.services.blixard = {
      description = "Blixard node ${toString s.id}";
      wantedBy = [ "multi-user.target" ];
      # With Tailscale discovery the node reads its address and its peers from tailscaled.
      wants = [ "network-online.target" ] ++ lib.optional cfg.tailscale.enable "tailscaled.service";
      after = [ "network-online.target" ] ++ lib.optional cfg.tailscale.enable "tailscaled.service";
      # `nix` builds runners (through nix-daemon) and fetches flake references, some through
      # `git` (git+https:, a local repository); `systemctl` drives microvm@NAME units.
      # `tailscale` (discovery) is the CLI of the tailscaled the host runs.
      path = [
        config.nix.package
        pkgs.git
        config.systemd.package
      ]
      ++ lib.optional cfg.tailscale.enable config.services.tailscale.package;
      environment = {
        # Builds go through nix-daemon, so they run in its sandbox and this unit needs no write
        # access to /nix/var/nix (the daemon also records the out-links' GC roots).
        NIX_REMOTE = "daemon";
        HOME = s.dataDir;
        XDG_CACHE_HOME = "/var/cache/blixard";
      };
      postStop = mkIf isProcess shutdownVms;

      serviceConfig = lib.mkMerge [
        {
          Type = "simple";
          ExecStart = execStart;
          Restart = "on-failure";
          RestartSec = "2s";
          # Only the daemon (the main process) is signalled when the unit stops or restarts. The
          # rest of the cgroup must outlive it:
          # - the node's fencing watchdog (`blixard node watchdog`, one small process the daemon
          #   starts detached and a restarted daemon reuses): if the daemon dies (kill -9, crash,
          #   OOM) or hangs while its VMs run on, it stops them once the node's lease runs out, before
          #   the cluster starts them elsewhere. It is not a unit of its own on purpose: started by
          #   the daemon, it always has the daemon's settings (data directory, fencing timeout, VM
          #   backend) and exactly its sandbox and capabilities below, and the daemon starts it again
          #   within a second should it die; a second unit would have to repeat all of that and keep
          #   it in step with `settings` and `extraFlags`.
          # - process backend: the VM runners, detached process groups the next daemon adopts.
          #   (The systemd backend's VMs live in their own microvm@NAME units.)
          KillMode = "process";
          # Runs as root: it starts VMs (systemd: microvm@NAME over D-Bus; process: hypervisors with
          # taps and /dev/kvm) and writes VM state directories owned by microvm.nix's user. The
          # capabilities and paths it may use are bounded below.
          User = "root";
          UMask = "0077";
          StateDirectory = mkIf dataDirIsState (lib.removePrefix "/var/lib/" s.dataDir);
          StateDirectoryMode = "0700";
          CacheDirectory = "blixard";
          CacheDirectoryMode = "0700";
          RuntimeDirectory = "blixard";
          # Kept across a restart of the daemon: the watchdog (which outlives it) keeps its memory of
          # the systemd units' marker verdicts there (tmpfs), read back by the next watchdog.
          RuntimeDirectoryPreserve = "restart";
          LoadCredential =
            lib.optional (cfg.clusterSecretFile != null) "cluster-secret:${cfg.clusterSecretFile}"
            ++ lib.optional (cfg.joinTokenFile != null) "join-token:${cfg.joinTokenFile}"
            ++ lib.optional (cfg.apiTokenFile != null) "api-token:${cfg.apiTokenFile}"
            ++ lib.optional (cfg.tlsCaFile != null) "tls-ca:${cfg.tlsCaFile}"
            ++ lib.optional (cfg.tlsCertFile != null) "tls-cert:${cfg.tlsCertFile}"
            ++ lib.optional (cfg.tlsKeyFile != null) "tls-key:${cfg.tlsKeyFile}";

          # Hardening.
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          NoNewPrivileges = true;
          # macvtap-up writes /proc/sys/net/ipv6/conf/*; pci-setup rebinds devices through /sys.
          ProtectKernelTunables = !(helper "macvtap" || helper "pci-passthrough");
          # pci-setup loads vfio-pci.
          ProtectKernelModules = !(helper "pci-passthrough");
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          ProtectHostname = true;
          ProtectProc = "invisible";
          LockPersonality = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          # virtiofsd sandboxes itself in new mount, pid and network namespaces.
          RestrictNamespaces = if helper "virtiofsd" then "mnt pid net" else true;
          SystemCallArchitectures = "native";
          RemoveIPC = true;
          # A filtered system call fails with EPERM instead of killing the daemon.
          SystemCallErrorNumber = "EPERM";
          # Node.js JITs JavaScript into writable+executable memory.
          MemoryDenyWriteExecute = false;
          # The VM state directories (the `current` runner out-link, VM disks): both backends write
          # them, everything else stays read-only under ProtectSystem=strict.
          ReadWritePaths = [ s.microvmStateDir ] ++ lib.optional (!dataDirIsState) s.dataDir;
          # CAP_CHOWN/CAP_DAC_OVERRIDE/CAP_FOWNER: create and hand VM state directories to
          # microvm.nix's `microvm` user, as its own `microvm` command does.
          CapabilityBoundingSet = [
            "CAP_CHOWN"
            "CAP_DAC_OVERRIDE"
            "CAP_FOWNER"
          ]
          ++ lib.optionals isProcess [
            # process backend: runners' tap-up/tap-down create and configure tap interfaces.
            "CAP_NET_ADMIN"
          ]
          # virtiofsd as root: its namespace sandbox (pivot_root, mounts) and serving files as any
          # guest user (credential switches, file handles, device nodes, set-id bits).
          ++ lib.optionals (helper "virtiofsd") [
            "CAP_SYS_ADMIN"
            "CAP_SETUID"
            "CAP_SETGID"
            "CAP_FSETID"
            "CAP_MKNOD"
            "CAP_SETFCAP"
            "CAP_DAC_READ_SEARCH"
          ]
          ++ lib.optional (helper "pci-passthrough") "CAP_SYS_MODULE"
          # A port below 1024.
          ++ lib.optional (bind != null && bind.port < 1024) "CAP_NET_BIND_SERVICE";
        }

        (mkIf isSystemd {
          # systemd backend: VMs run in microvm.nix's microvm@NAME units, outside this unit;
          # Blixard only talks to systemd over D-Bus (AF_UNIX) and to peers (AF_INET*).
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          PrivateDevices = true;
          SystemCallFilter = [
            "@system-service"
            "~@privileged"
            # chown of VM state directories to microvm.nix's user.
            "@chown"
          ];
        })

        (mkIf isProcess {
          # process backend: hypervisors run as children of this unit and inherit its sandbox.
          # AF_NETLINK: tap-up/tap-down configure links with `ip` (rtnetlink).
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
            "AF_NETLINK"
          ];
          # Hypervisors need /dev/kvm and tap devices (/dev/net/tun, vhost-net, vhost-vsock), so the
          # unit keeps the host's /dev but may open only these devices.
          PrivateDevices = false;
          DevicePolicy = "closed";
          DeviceAllow = [
            "/dev/kvm rw"
            "/dev/net/tun rw"
            "/dev/vhost-net rw"
            "/dev/vhost-vsock rw"
          ]
          # macvtap-up chowns the interface's /dev/tapN, which the hypervisor opens.
          ++ lib.optional (helper "macvtap") "char-macvtap rw"
          ++ lib.optionals (helper "pci-passthrough") [
            "/dev/vfio/vfio rw"
            "char-vfio rw"
          ];
          # Hypervisors use a broad set of system calls (KVM ioctls, io_uring, seccomp of their
          # own): deny only what no VM needs rather than allow-listing @system-service.
          SystemCallFilter = [
            "~@clock @cpu-emulation @debug ${lib.optionalString (!helper "pci-passthrough") "@module "}@obsolete @reboot @swap"
          ];
          # At host power-off the unit's postStop (shutdownVms) stops the VMs cleanly, in the time
          # of the fencing wait plus a guest's shutdown; VMs stop one after the other, so on a host
          # with many slow guests the last ones are killed when this runs out.
          TimeoutStopSec = vmStopTimeoutSec + (t.fencingMs + 999) / 1000 + 30;
          # Hypervisors lock guest memory.
          LimitMEMLOCK = "infinity";
          LimitNOFILE = 1048576;
        })
      ];
    };
  }

  {
    # systemd backend: Blixard decides whether a VM that went down runs again (its restartPolicy),
    # so microvm.nix's template must not restart it on its own (it sets Restart=always, which would
    # start a VM whose policy is `never`, or one the cluster has meanwhile placed elsewhere). The
    # host's declarative VMs (microvm.vms) keep microvm.nix's behaviour through their own drop-ins;
    # VMs made by hand with `microvm -c` on such a host are no longer restarted by systemd.
    systemd.services = mkIf (isSystemd && hasMicrovmHost) (
      {
        "microvm@".serviceConfig.Restart = lib.mkForce "no";
      }
      // lib.genAttrs (map (name: "microvm@${name}") declaredVms) (_: {
        serviceConfig.Restart = "always";
      })
    );
  } ]);
}
