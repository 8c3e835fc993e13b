/**
 * `blixard node`: run a cluster member (the daemon, loaded with a dynamic `import()` only when a node
 * starts, so its layers — SQLite, HTTP, the peer transport — stay out of every other command's start-up), and
 * `blixard node list|cordon|uncordon|drain` to manage where VMs may be placed.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as FileSystem from "@effect/platform/FileSystem"
import { Console, Effect, FiberRef, Logger, LogLevel, Option, Schema } from "effect"
import { ConfigInvalid } from "../domain/Errors.js"
import { DefaultTailscaleTag, NodeConfig } from "../node/Config.js"
import { configFileVariable, type ConfigFileText, resolveNodeSettings } from "../node/Settings.js"
import { NodeId } from "../domain/NodeId.js"
import { NodeHealth, type NodeInfo, Schedulability } from "../domain/NodeInfo.js"
import { checkListArgs, DefaultPageSize, failOn, fetchList, listOptions } from "./ListOptions.js"
import { BlixardClient } from "./BlixardClient.js"
import { formatNodeChange, formatNodeList } from "./Format.js"
import { clientContext, clientOptions } from "./GlobalOptions.js"
import { ProcessEnv } from "./ProcessEnv.js"
import { check, invalidArgument } from "./Validate.js"

/**
 * @effect/cli has a built-in `--log-level` (it sets Effect's minimum log level and re-runs the
 * command) that takes the flag whenever it comes before the command's other options. `run` starts
 * every command at this sentinel level, so a level the built-in set is told apart from none given.
 */
export const unsetLogLevel = LogLevel.None

const text = (name: string, pseudo: string, description: string) =>
  Options.text(name).pipe(Options.withPseudoName(pseudo), Options.withDescription(description), Options.optional)

const options = {
  id: Options.integer("id").pipe(
    Options.withPseudoName("N"),
    Options.withDescription("This node's id, a positive integer fixed for the life of its data directory. [$BLIXARD_ID]"),
    Options.optional
  ),
  bind: text("bind", "HOST:PORT", "Where this node serves peers and the API (one port for both). [$BLIXARD_BIND]"),
  advertise: text(
    "advertise",
    "HOST:PORT",
    "The address peers should dial, when it differs from --bind (e.g. bind 0.0.0.0). [$BLIXARD_ADVERTISE]"
  ),
  peers: Options.text("peer").pipe(
    Options.withPseudoName("ID:HOST:PORT"),
    Options.withDescription(
      "A member to join through. Repeatable; none: bootstrap a new single-node cluster. [$BLIXARD_PEERS, comma-separated]"
    ),
    Options.repeated
  ),
  join: Options.text("join").pipe(
    Options.withPseudoName("HOST:PORT"),
    Options.withDescription(
      "A member to join through, by address alone (its id is learned from the cluster). Repeatable. [$BLIXARD_JOIN, comma-separated]"
    ),
    Options.repeated
  ),
  joinToken: text(
    "join-token",
    "TOKEN",
    "A join token (blixard cluster token create): join with it instead of the cluster secret; prefer --join-token-file, as a flag shows in the process list. [$BLIXARD_JOIN_TOKEN]"
  ),
  joinTokenFile: text("join-token-file", "FILE", "A file holding a join token. [$BLIXARD_JOIN_TOKEN_FILE]"),
  servers: Options.text("server").pipe(
    Options.withPseudoName("HOST:PORT"),
    Options.withDescription(
      "A member's API address. Given: this node is a host that runs VMs without being a Raft member, and talks to the members given, in turn (no --peer). Repeatable. [$BLIXARD_SERVERS, comma-separated]"
    ),
    Options.repeated
  ),
  discovery: Options.choice("discovery", ["static", "tailscale"]).pipe(
    Options.withDescription(
      "How peers are found: static (--peer, the default) or tailscale (online tailnet machines tagged --tailscale-tag, at the port of --bind). [$BLIXARD_DISCOVERY]"
    ),
    Options.optional
  ),
  bootstrap: Options.boolean("bootstrap").pipe(
    Options.withDescription(
      "Tailscale discovery: found a new cluster when no discovered peer is in one. Give it to one node only. [$BLIXARD_BOOTSTRAP]"
    )
  ),
  tailscaleTag: text("tailscale-tag", "TAG", "Tailscale discovery: the tag the cluster's machines carry (default tag:blixard). [$BLIXARD_TAILSCALE_TAG]"),
  tailscaleBinary: text(
    "tailscale-binary",
    "PATH",
    "Tailscale discovery: the tailscale CLI (default: tailscale, found on PATH). [$BLIXARD_TAILSCALE_BINARY]"
  ),
  dataDir: text(
    "data-dir",
    "DIR",
    "Where the Raft log and state live (default ./blixard-data/node-ID). [$BLIXARD_DATA_DIR]"
  ),
  config: text(
    "config",
    "FILE",
    "A JSON file of settings (the keys of NodeConfig, as the NixOS module writes them); environment and flags override it. [$BLIXARD_CONFIG]"
  ),
  clusterSecretFile: text(
    "cluster-secret-file",
    "FILE",
    "A file holding the secret that authenticates peer traffic. [$BLIXARD_CLUSTER_SECRET_FILE]"
  ),
  insecurePlaintext: Options.boolean("insecure-plaintext").pipe(
    Options.withDescription(
      "Serve peers and the API without TLS (ws://, http://): anyone on the path reads and can alter the traffic, tokens included. Refused on a non-loopback --bind unless --i-know is given too; warned about at every start. [$BLIXARD_INSECURE_PLAINTEXT]"
    )
  ),
  iKnow: Options.boolean("i-know").pipe(
    Options.withDescription("With --insecure-plaintext: allow it on a non-loopback --bind. [$BLIXARD_INSECURE_PLAINTEXT_NON_LOOPBACK]")
  ),
  tlsCaFile: text("tls-ca-file", "FILE", "The cluster CA certificate (PEM), with --tls-cert-file and --tls-key-file: operator-supplied TLS instead of the node's own in DATA-DIR/tls. [$BLIXARD_TLS_CA_FILE]"),
  tlsCertFile: text("tls-cert-file", "FILE", "This node's certificate (PEM) from that CA, naming it by the URI SAN blixard://CLUSTER-ID/node/N. [$BLIXARD_TLS_CERT_FILE]"),
  tlsKeyFile: text("tls-key-file", "FILE", "This node's private key (PEM). [$BLIXARD_TLS_KEY_FILE]"),
  apiTokenFile: text(
    "api-token-file",
    "FILE",
    "A file holding this node's admin API token (default: DATA-DIR/api-token, made on first start, mode 0600). [$BLIXARD_API_TOKEN_FILE]"
  ),
  allowedRunnerPrefixes: Options.text("allowed-runner-prefix").pipe(
    Options.withPseudoName("DIR"),
    Options.withDescription(
      "A directory VM runners (--runner) may come from, symlinks resolved. Repeatable; default /nix/store. [$BLIXARD_ALLOWED_RUNNER_PREFIXES, comma-separated]"
    ),
    Options.repeated
  ),
  allowedFlakePrefixes: Options.text("allowed-flake-prefix").pipe(
    Options.withPseudoName("PREFIX"),
    Options.withDescription(
      "When given, VM flake references must start with one of these (e.g. github:my-org/). Repeatable. [$BLIXARD_ALLOWED_FLAKE_PREFIXES, comma-separated]"
    ),
    Options.repeated
  ),
  vmBackend: Options.choice("vm-backend", ["process", "systemd"]).pipe(
    Options.withDescription(
      "How VMs run: microvm.nix runners as child processes, or microvm@NAME systemd units (default process). [$BLIXARD_VM_BACKEND]"
    ),
    Options.optional
  ),
  microvmStateDir: text(
    "microvm-state-dir",
    "DIR",
    "Root of the VMs' state directories, microvm.nix's layout (default /var/lib/microvms). [$BLIXARD_MICROVM_STATE_DIR]"
  ),
  vmUser: text(
    "vm-user",
    "USER",
    "systemd mode: the user microvm.nix's microvm@NAME runs VMs as; VM directories are handed to it (default microvm). [$BLIXARD_VM_USER]"
  ),
  vmGroup: text(
    "vm-group",
    "GROUP",
    "systemd mode: the group microvm.nix's microvm@NAME runs VMs as (default kvm). [$BLIXARD_VM_GROUP]"
  ),
  gcRootDir: text(
    "gc-root-dir",
    "DIR",
    "Where the runners' Nix GC roots go, microvm.nix's layout (default /nix/var/nix/gcroots/microvm). [$BLIXARD_GC_ROOT_DIR]"
  ),
  labels: Options.text("label").pipe(
    Options.withPseudoName("KEY=VALUE"),
    Options.withDescription("A label on this node, matched by VMs' --constraint. Repeatable. [$BLIXARD_LABELS, comma-separated]"),
    Options.repeated
  ),
  logLevel: Options.choice("log-level", ["debug", "info", "warning", "error"]).pipe(
    Options.withDescription("The daemon's log level (default info). [$BLIXARD_LOG_LEVEL]"),
    Options.optional
  ),
  logFormat: Options.choice("log-format", ["text", "json"]).pipe(
    Options.withDescription("How the daemon writes its log: text (logfmt) or json, one object per line (default text). [$BLIXARD_LOG_FORMAT]"),
    Options.optional
  ),
  checkConfig: Options.boolean("check-config").pipe(
    Options.withDescription("Only resolve and validate the settings, print them as JSON and exit.")
  )
}

/** Reads the config file; a file that cannot be read is a config error naming it. */
const readConfigFile = (path: string) =>
  Effect.flatMap(FileSystem.FileSystem, (fs) => fs.readFileString(path, "utf8")).pipe(
    Effect.map((contents): ConfigFileText => ({ path, contents })),
    Effect.mapError(
      (error) =>
        new ConfigInvalid({ message: `config file ${path}: cannot be read (${error.message})`, subject: path })
    )
  )

const logLevelOf = (level: NodeConfig["logLevel"]): LogLevel.LogLevel =>
  level === "debug" ? LogLevel.Debug : level === "warning" ? LogLevel.Warning : level === "error" ? LogLevel.Error : LogLevel.Info

const describeJoining = (config: NodeConfig): string =>
  config.discovery === "tailscale"
    ? `finding peers on the tailnet (machines tagged ${config.tailscaleTag ?? DefaultTailscaleTag})${config.bootstrap === true ? ", founding a new cluster if none is there" : ""}`
    : config.peers.length === 0 && (config.join ?? []).length === 0
      ? "bootstrapping a new cluster"
      : `joining through ${[...config.peers.map((p) => `${p.id}@${p.address}`), ...(config.join ?? [])].join(", ")}`

/** What the daemon starts, for its first log line. */
export const describeNode = (config: NodeConfig): string =>
  config.servers !== undefined
    ? `host ${config.id} (not a Raft member) registered as ${config.advertise ?? config.bind}, data dir ${config.dataDir}, servers ${config.servers.join(", ")}, ${config.vmBackend} VM backend`
    : `node ${config.id} on ${config.bind}${config.advertise !== undefined ? ` (advertised as ${config.advertise})` : ""}, ` +
  `data dir ${config.dataDir}, ${describeJoining(config)}, ${config.vmBackend} VM backend`

const list = Command.make(
  "list",
  {
    ...clientOptions,
    ...listOptions("nodes"),
    after: Options.integer("after").pipe(
      Options.withPseudoName("ID"),
      Options.withDescription("Start after this node id (the last of the page before): nodes are listed by id."),
      Options.optional
    ),
    state: Options.choice("state", Schedulability.literals).pipe(Options.withDescription("Only the nodes in this state."), Options.optional),
    health: Options.choice("health", NodeHealth.literals).pipe(Options.withDescription("Only the nodes up, or down."), Options.optional)
  },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const problems: Array<string> = []
      const { limit, all, ...filter } = checkListArgs(args, problems)
      const after = Option.isSome(args.after) ? check(NodeId, args.after.value, "--after", problems) : undefined
      yield* failOn(problems)
      const client = yield* BlixardClient
      const query = {
        ...filter,
        ...(Option.isSome(args.state) ? { state: args.state.value } : {}),
        ...(Option.isSome(args.health) ? { health: args.health.value } : {})
      }
      const nodes = yield* fetchList({
        what: "nodes",
        limit,
        all,
        after,
        keyOf: (node: NodeInfo) => node.id,
        fetch: (limit, after) => client.listNodes(context.target, { ...query, limit, ...(after !== undefined ? { after } : {}) })
      })
      yield* Console.log(formatNodeList(nodes, context.json))
    })
).pipe(
  Command.withDescription(
    `List the registered nodes (by id): address, schedulability, health, capacity, labels. The first ${DefaultPageSize} unless --limit or --all.`
  )
)

const nodeIdArg = Args.integer({ name: "ID" }).pipe(Args.withDescription("The node's id."))

const setState = (name: string, state: Schedulability, description: string) =>
  Command.make(name, { ...clientOptions, id: nodeIdArg }, (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const problems: Array<string> = []
      const id = check(NodeId, args.id, "ID", problems)
      if (id === undefined) return yield* Effect.fail(invalidArgument(problems))
      yield* Console.log(formatNodeChange(yield* (yield* BlixardClient).setNodeState(context.target, id, state), context.json))
    })
  ).pipe(Command.withDescription(description))

const daemon = Command.make("node", options, (args) =>
  Effect.gen(function* () {
    const env = yield* ProcessEnv
    const builtInLevel = yield* FiberRef.get(FiberRef.currentMinimumLogLevel)
    const logLevel = Option.getOrUndefined(args.logLevel) ??
      (builtInLevel === unsetLogLevel ? undefined : builtInLevel._tag.toLowerCase())
    const configPath = Option.getOrUndefined(args.config) ?? (env[configFileVariable] || undefined)
    const file = configPath === undefined ? undefined : yield* readConfigFile(configPath)
    const config = yield* resolveNodeSettings(file, env, {
      id: Option.getOrUndefined(args.id),
      bind: Option.getOrUndefined(args.bind),
      advertise: Option.getOrUndefined(args.advertise),
      peers: args.peers,
      join: args.join,
      joinToken: Option.getOrUndefined(args.joinToken),
      joinTokenFile: Option.getOrUndefined(args.joinTokenFile),
      servers: args.servers,
      discovery: Option.getOrUndefined(args.discovery),
      bootstrap: args.bootstrap ? true : undefined,
      tailscaleTag: Option.getOrUndefined(args.tailscaleTag),
      tailscaleBinary: Option.getOrUndefined(args.tailscaleBinary),
      dataDir: Option.getOrUndefined(args.dataDir),
      clusterSecretFile: Option.getOrUndefined(args.clusterSecretFile),
      apiTokenFile: Option.getOrUndefined(args.apiTokenFile),
      insecurePlaintext: args.insecurePlaintext,
      insecurePlaintextNonLoopback: args.iKnow,
      tlsCaFile: Option.getOrUndefined(args.tlsCaFile),
      tlsCertFile: Option.getOrUndefined(args.tlsCertFile),
      tlsKeyFile: Option.getOrUndefined(args.tlsKeyFile),
      vmBackend: Option.getOrUndefined(args.vmBackend),
      microvmStateDir: Option.getOrUndefined(args.microvmStateDir),
      vmUser: Option.getOrUndefined(args.vmUser),
      vmGroup: Option.getOrUndefined(args.vmGroup),
      gcRootDir: Option.getOrUndefined(args.gcRootDir),
      labels: args.labels,
      allowedRunnerPrefixes: args.allowedRunnerPrefixes,
      allowedFlakePrefixes: args.allowedFlakePrefixes,
      logLevel,
      logFormat: Option.getOrUndefined(args.logFormat)
    })
    if (args.checkConfig) {
      // A join token is a secret: say that one is set, not what it is.
      const shown = { ...Schema.encodeSync(NodeConfig)(config), ...(config.joinToken !== undefined ? { joinToken: "(set, not shown)" } : {}) }
      yield* Console.log(JSON.stringify(shown, null, 2))
      return
    }
    // The daemon's import graph (SQLite, HTTP, the peer transport) loads only when a node actually starts.
    const daemon = config.servers !== undefined
      ? Effect.flatMap(Effect.promise(() => import("../node/HostDaemon.js")), (HostDaemon) => HostDaemon.run(config))
      : Effect.flatMap(Effect.promise(() => import("../node/Daemon.js")), (Daemon) => Daemon.run(config))
    return yield* Effect.logInfo(`starting ${describeNode(config)}`).pipe(
      Effect.zipRight(daemon),
      Logger.withMinimumLogLevel(logLevelOf(config.logLevel)),
      config.logFormat === "json" ? Effect.provide(Logger.json) : (effect) => effect
    )
  })
).pipe(
  Command.withDescription(
    "Run a cluster member: Raft replication, the REST API and the agent that runs this node's VMs; with --server, a host that runs VMs without being a member. Settings: --config file < BLIXARD_* environment < flags."
  )
)

export const nodeCommand = daemon.pipe(
  Command.withSubcommands([
    list,
    setState("cordon", "cordoned", "Place no new VMs on node ID (its VMs stay)."),
    setState("uncordon", "active", "Let the scheduler place VMs on node ID again."),
    setState("drain", "draining", "Place no new VMs on node ID and move its VMs to other nodes.")
  ])
)
