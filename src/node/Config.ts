/**
 * The daemon's settings. One schema validates all three sources — the JSON config file (`--config`,
 * the file the NixOS module renders), `BLIXARD_*` environment variables and command-line flags —
 * merged in that order of increasing precedence.
 */
import { Schema } from "effect"
import { JoinTokenText } from "../domain/JoinToken.js"
import { Labels } from "../domain/Labels.js"
import { NodeId } from "../domain/NodeId.js"
import { HostPort } from "../domain/NodeInfo.js"
import { MemoryMiB, Vcpus } from "../domain/Resources.js"

export const Peer = Schema.Struct({ id: NodeId, address: HostPort })
export type Peer = typeof Peer.Type

/** `ID:HOST:PORT`, the `--peer` flag's form. */
export const parsePeer = (text: string): { id: string; address: string } | undefined => {
  const at = text.indexOf(":")
  return at <= 0 ? undefined : { id: text.slice(0, at), address: text.slice(at + 1) }
}

const Path = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(4096))
const AbsolutePath = Path.pipe(Schema.filter((p) => p.startsWith("/") || "must be an absolute path"))
/** A user or group name (`useradd`'s rules, loosely). */
const UnixName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/, { message: () => "a user or group name, e.g. microvm or kvm" })
)
const FlakePrefix = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(4096),
  Schema.filter((p) => !p.startsWith("-") || "a flake prefix must not start with '-'")
)
const Millis = (min: number) => Schema.Int.pipe(Schema.greaterThanOrEqualTo(min))

export const VmBackendKind = Schema.Literal("process", "systemd")
export type VmBackendKind = typeof VmBackendKind.Type

export const LogLevel = Schema.Literal("debug", "info", "warning", "error")
/** `text`: logfmt lines; `json`: one JSON object per line (for journald, Loki, …). */
export const LogFormat = Schema.Literal("text", "json")

/** `GET /v1/events`: how far back a client can resume, and how often an idle stream hears from the node. */
export const EventSettings = Schema.Struct({
  /** Entries (with events) kept for resuming; a client further behind is told to resync. */
  history: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 1_000_000)), { default: () => 16_384 }),
  /** A comment line on an idle stream this often, so proxies do not close it. */
  heartbeatMs: Schema.optionalWith(Millis(100), { default: () => 15_000 })
})

/** A node's event settings, its defaults filled in. */
export const eventSettings = (config: { readonly events?: typeof EventSettings.Type | undefined }): typeof EventSettings.Type =>
  config.events ?? Schema.decodeSync(EventSettings)({})

/** How a node finds the members it joins through: `peers` as configured, or the tailnet's tagged machines. */
export const DiscoveryKind = Schema.Literal("static", "tailscale")
export type DiscoveryKind = typeof DiscoveryKind.Type

/** A Tailscale ACL tag: `tag:` and a name of letters, digits and dashes. */
export const TailscaleTag = Schema.String.pipe(
  Schema.pattern(/^tag:[A-Za-z0-9][A-Za-z0-9-]{0,79}$/, { message: () => "a Tailscale tag, e.g. tag:blixard" })
)
export const DefaultTailscaleTag = "tag:blixard"
export const DefaultTailscaleBinary = "tailscale"

/**
 * Timing. The reschedule timeout must exceed the fencing timeout plus a margin, so a VM whose node
 * lost the quorum has stopped before the cluster starts it elsewhere (a VM never runs twice). The
 * fencing timeout must leave a follower room to prove its contact: it probes with a ReadIndex round
 * every election timeout, each given up after two (`QuorumContact.ts`), so its contact can trail by
 * up to about two election timeouts while the cluster is healthy (a probe lost, or sent to a leader
 * that just died); three leave a whole election timeout to spare.
 */
/**
 * The longest fencing timeout that `nodeDownMs` allows: a node marked down has its VMs started
 * elsewhere, so they must have stopped by then (two election timeouts to spare). The rule for a
 * member's own settings, and for the hosts that heartbeat to the leader.
 */
export const fencingLimitMs = (t: { readonly nodeDownMs: number; readonly tickMs: number }): number => t.nodeDownMs - 2 * t.tickMs * 10

export const Timeouts = Schema.Struct({
  /** Raft tick; elections after 10–20 ticks without a leader, heartbeats every tick. */
  tickMs: Schema.optionalWith(Millis(5), { default: () => 50 }),
  /** A node that cannot reach a quorum for this long stops its own VMs. */
  fencingMs: Schema.optionalWith(Millis(100), { default: () => 3000 }),
  /** A node not heard from for this long is marked down and its VMs rescheduled. */
  nodeDownMs: Schema.optionalWith(Millis(200), { default: () => 6000 }),
  /** Client-facing request deadline, and how long a peer may take to acknowledge a frame of Raft messages. */
  requestMs: Schema.optionalWith(Millis(10), { default: () => 5000 })
}).pipe(
  Schema.filter((t) =>
    t.fencingMs >= 3 * t.tickMs * 10 ||
    `timeouts.fencingMs (${t.fencingMs}) must be at least three election timeouts (${3 * t.tickMs * 10} ms): a follower's contact, proven by its leader's heartbeats or else by a ReadIndex round every election timeout (each given up after two), ages that long through a failover, so a shorter fencing timeout can stop the VMs of nodes whose leader is alive`
  ),
  Schema.filter((t) =>
    t.fencingMs <= fencingLimitMs(t) ||
    `timeouts.nodeDownMs (${t.nodeDownMs}) must be at least timeouts.fencingMs (${t.fencingMs}) plus two election timeouts (${2 * t.tickMs * 10} ms), so a fenced VM has stopped before it is rescheduled`
  )
)

export const NodeConfig = Schema.Struct({
  id: NodeId,
  /** Where this node serves peers and the API (one port for both). */
  bind: HostPort,
  /** The address peers should use, when it differs from `bind` (e.g. bind 0.0.0.0). */
  advertise: Schema.optionalWith(HostPort, { exact: true }),
  /** Other members to join through. Empty: bootstrap a new single-node cluster. */
  peers: Schema.optionalWith(Schema.Array(Peer), { default: () => [] }),
  /**
   * The members' API addresses. When given, this node is a HOST that is not a Raft member
   * (`HostDaemon.ts`): it runs the VMs the cluster places on it and talks to the members through
   * their API, trying them in turn; it keeps no Raft log and serves nothing yet (`bind`, or
   * `advertise`, is the address it registers). `peers`, `discovery` and `bootstrap` do not apply.
   */
  servers: Schema.optionalWith(Schema.Array(HostPort).pipe(Schema.minItems(1), Schema.maxItems(64)), { exact: true }),
  /**
   * Unset or `static`: join through `peers`. `tailscale`: join through the online machines of the
   * tailnet tagged `tailscaleTag` (`tailscale status --json`), at the port of `bind`, and advertise
   * this machine's IPv4 tailnet address (unless `advertise` says otherwise). `peers` must then be
   * empty. (Optional without a schema default, so a rendered config file reads back unchanged.)
   */
  discovery: Schema.optionalWith(DiscoveryKind, { exact: true }),
  /**
   * Tailscale discovery only: a fresh node founds a new cluster when no discovered peer belongs to
   * one. Only nodes with this set ever found, so set it on one node (see `Discovery.ts`).
   */
  bootstrap: Schema.optionalWith(Schema.Boolean, { exact: true }),
  /** The tag the cluster's machines carry (default `DefaultTailscaleTag`). */
  tailscaleTag: Schema.optionalWith(TailscaleTag, { exact: true }),
  /** The `tailscale` CLI (default `DefaultTailscaleBinary`, looked up on PATH). */
  tailscaleBinary: Schema.optionalWith(Path, { exact: true }),
  dataDir: Path,
  /** File holding the shared secret that authenticates peer traffic. */
  clusterSecretFile: Schema.optionalWith(Path, { exact: true }),
  /**
   * Members to join through, by address alone (`--join HOST:PORT`): their ids are learned from the
   * cluster. Static discovery only, beside `peers`.
   */
  join: Schema.optionalWith(Schema.Array(HostPort), { exact: true }),
  /**
   * A join token (`blixard cluster token create`): a fresh node gets its certificate and the
   * cluster secret with it, instead of holding the secret. Ignored once the node has joined.
   * `joinTokenFile` keeps it out of the process list and the config file.
   */
  joinToken: Schema.optionalWith(JoinTokenText, { exact: true }),
  joinTokenFile: Schema.optionalWith(Path, { exact: true }),
  /**
   * Serve peers and the API without TLS (`ws://`, `http://`). Refused on a bind address that is not
   * loopback unless `insecurePlaintextNonLoopback` is set too; a warning is logged at every start.
   */
  insecurePlaintext: Schema.optionalWith(Schema.Boolean, { exact: true }),
  /** With `insecurePlaintext`: allow it on a non-loopback bind address (`--i-know`). */
  insecurePlaintextNonLoopback: Schema.optionalWith(Schema.Boolean, { exact: true }),
  /**
   * Operator-supplied TLS files (all three or none): the cluster CA, this node's certificate (with the
   * URI SAN `blixard://CLUSTER_ID/node/N`) and its key. Absent: the node's own in `DATA_DIR/tls/`.
   */
  tlsCaFile: Schema.optionalWith(Path, { exact: true }),
  tlsCertFile: Schema.optionalWith(Path, { exact: true }),
  tlsKeyFile: Schema.optionalWith(Path, { exact: true }),
  /**
   * How long this node's certificate lasts, in days (default 365): what it asks for when it renews,
   * and the longest it signs for another node's renewal. A node renews its own at two thirds of its
   * lifetime, or at once when it lasts longer than this, e.g. the year-long one it joined with
   * (`CertRenewal.ts`).
   */
  certValidityDays: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 3650)), { exact: true }),
  /**
   * File holding this node's admin API token. Absent: the node makes one in `dataDir/api-token`
   * (mode 0600) on first start and uses it from then on.
   */
  apiTokenFile: Schema.optionalWith(Path, { exact: true }),
  /**
   * The directories runners (`--runner`) may come from, symlinks resolved; checked by the node that
   * takes the request and again by the hosting node right before it runs one. Unset: `/nix/store`
   * (`RunnerPolicy.defaultAllowedRunnerPrefixes`), applied where the policy is checked, so a
   * rendered config file reads back unchanged.
   */
  allowedRunnerPrefixes: Schema.optionalWith(Schema.Array(AbsolutePath), { exact: true }),
  /** When set, VMs' flake references must start with one of these (e.g. `github:my-org/`). */
  allowedFlakePrefixes: Schema.optionalWith(Schema.Array(FlakePrefix), { exact: true }),
  vmBackend: Schema.optionalWith(VmBackendKind, { default: () => "process" as const }),
  /** Root of the VMs' state directories (microvm.nix's layout). */
  microvmStateDir: Schema.optionalWith(Path, { default: () => "/var/lib/microvms" }),
  /**
   * systemd mode: the user and group microvm.nix's `microvm@NAME` runs VMs as (default its host
   * module's `microvm` and `kvm`). The daemon resolves them at start-up and hands each VM directory
   * it makes to them, as microvm.nix's `install-microvm-NAME` does. Unused in process mode.
   * (Optional without a schema default, so a rendered config file reads back unchanged: the
   * defaults are `DefaultVmUser` and `DefaultVmGroup`.)
   */
  vmUser: Schema.optionalWith(UnixName, { exact: true }),
  vmGroup: Schema.optionalWith(UnixName, { exact: true }),
  /**
   * Where the runners' Nix GC roots go, in microvm.nix's layout (`NAME` → the VM's `current`,
   * `booted-NAME` → its `booted`; default `DefaultGcRootDir`). None are made when the directory
   * above it does not exist.
   */
  gcRootDir: Schema.optionalWith(AbsolutePath, { exact: true }),
  /** What VMs may use on this node; detected from the machine when absent. */
  capacity: Schema.optionalWith(Schema.Struct({ vcpus: Vcpus, memoryMiB: MemoryMiB }), { exact: true }),
  labels: Schema.optionalWith(Labels, { default: () => ({}) }),
  timeouts: Schema.optionalWith(Timeouts, { default: () => Schema.decodeSync(Timeouts)({}) }),
  /** Absent: `EventSettings`' defaults (`eventSettings`). No schema default, so a rendered config file reads back unchanged. */
  events: Schema.optionalWith(EventSettings, { exact: true }),
  logLevel: Schema.optionalWith(LogLevel, { default: () => "info" as const }),
  /** Absent: text. (No schema default, so a rendered config file reads back unchanged.) */
  logFormat: Schema.optionalWith(LogFormat, { exact: true })
}).annotations({ identifier: "NodeConfig" })
export type NodeConfig = typeof NodeConfig.Type

/** microvm.nix's host module: `users.users.microvm`, group `kvm`; its `microvm -c` roots runners here. */
export const DefaultVmUser = "microvm"
export const DefaultVmGroup = "kvm"
export const DefaultGcRootDir = "/nix/var/nix/gcroots/microvm"
/** The config file's JSON shape (what the NixOS module writes). */
export type NodeConfigFile = typeof NodeConfig.Encoded


/**
 * `blixard node watchdog`, the node's fencing watchdog (`agent/Watchdog.ts`): what it needs of the
 * node's settings. The daemon starts it with its own (`HostFence.ts`), so both always agree on the
 * data directory (the lease), the VMs' state and backend, and the fencing deadline.
 */
export const WatchdogConfig = Schema.Struct({
  id: NodeId,
  dataDir: AbsolutePath,
  vmBackend: VmBackendKind,
  microvmStateDir: AbsolutePath,
  fencingMs: Millis(100),
  /** Each VM's grace before SIGKILL: the agent's fencing stop timeout. */
  stopTimeoutMs: Millis(1)
})
export type WatchdogConfig = typeof WatchdogConfig.Type

/** The config file must name only keys the schema knows: a typo is an error, not a silent default. */
export const decodeNodeConfig = Schema.decodeUnknown(NodeConfig, { errors: "all", onExcessProperty: "error" })
