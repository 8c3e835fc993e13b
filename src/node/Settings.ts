/**
 * Resolving the daemon's settings from its three sources — the JSON config file, `BLIXARD_*`
 * environment variables and command-line flags, merged in that order of increasing precedence — and
 * validating the result with the one `NodeConfig` schema. Pure: no file or environment is read here.
 *
 * Every problem names where the bad value came from: `--bind "abc": …`, `BLIXARD_PEERS entry "x": …`,
 * `config file /etc/blixard.json: key "timeouts.fencingMs": …`.
 */
import { Effect, Either } from "effect"
import { ConfigInvalid } from "../domain/Errors.js"
import { parseLabelPair } from "../domain/Labels.js"
import { decodeNodeConfig, NodeConfig, parsePeer } from "./Config.js"
import { parseIssues } from "./ParseIssues.js"

/** The `node` command's flags, as given (absent when not given). */
export interface NodeFlags {
  readonly id?: number | undefined
  readonly bind?: string | undefined
  readonly advertise?: string | undefined
  /** `ID:HOST:PORT` each; when given, they replace the peers of the file and the environment. */
  readonly peers?: ReadonlyArray<string> | undefined
  readonly discovery?: string | undefined
  /** `--bootstrap` given (absent otherwise: a boolean flag cannot say false). */
  readonly bootstrap?: boolean | undefined
  readonly tailscaleTag?: string | undefined
  readonly tailscaleBinary?: string | undefined
  readonly dataDir?: string | undefined
  readonly clusterSecretFile?: string | undefined
  /** `HOST:PORT` each; when given, they replace the file's and the environment's. */
  readonly join?: ReadonlyArray<string> | undefined
  readonly joinToken?: string | undefined
  readonly joinTokenFile?: string | undefined
  readonly apiTokenFile?: string | undefined
  readonly insecurePlaintext?: boolean | undefined
  readonly insecurePlaintextNonLoopback?: boolean | undefined
  readonly tlsCaFile?: string | undefined
  readonly tlsCertFile?: string | undefined
  readonly tlsKeyFile?: string | undefined
  readonly vmBackend?: string | undefined
  readonly microvmStateDir?: string | undefined
  readonly vmUser?: string | undefined
  readonly vmGroup?: string | undefined
  readonly gcRootDir?: string | undefined
  /** `KEY=VALUE` each; merged key by key over the labels of the file and the environment. */
  readonly labels?: ReadonlyArray<string> | undefined
  /** When given, they replace the file's and the environment's. */
  readonly allowedRunnerPrefixes?: ReadonlyArray<string> | undefined
  readonly allowedFlakePrefixes?: ReadonlyArray<string> | undefined
  /** `HOST:PORT` each (a host that is not a Raft member); when given, they replace the file's and the environment's. */
  readonly servers?: ReadonlyArray<string> | undefined
  readonly logLevel?: string | undefined
  readonly logFormat?: string | undefined
}

/** The config file's path (for messages) and its text. */
export interface ConfigFileText {
  readonly path: string
  readonly contents: string
}

export type Environment = Readonly<Record<string, string | undefined>>

/** Where a hand-started node keeps its data when nothing says otherwise. */
export const defaultDataDir = (id: number): string => `./blixard-data/node-${id}`

/** The admin token file a node makes in its data directory when no `apiTokenFile` is configured. */
export const apiTokenFileName = "api-token"

/** The variable naming the config file, when `--config` is not given. */
export const configFileVariable = "BLIXARD_CONFIG"

type Key = keyof NodeFlags

/** The scalar settings: NodeConfig key, flag, environment variable. */
const scalars: ReadonlyArray<readonly [Key & keyof NodeConfig, string, string]> = [
  ["id", "--id", "BLIXARD_ID"],
  ["bind", "--bind", "BLIXARD_BIND"],
  ["advertise", "--advertise", "BLIXARD_ADVERTISE"],
  ["discovery", "--discovery", "BLIXARD_DISCOVERY"],
  ["bootstrap", "--bootstrap", "BLIXARD_BOOTSTRAP"],
  ["tailscaleTag", "--tailscale-tag", "BLIXARD_TAILSCALE_TAG"],
  ["tailscaleBinary", "--tailscale-binary", "BLIXARD_TAILSCALE_BINARY"],
  ["dataDir", "--data-dir", "BLIXARD_DATA_DIR"],
  ["clusterSecretFile", "--cluster-secret-file", "BLIXARD_CLUSTER_SECRET_FILE"],
  ["joinToken", "--join-token", "BLIXARD_JOIN_TOKEN"],
  ["joinTokenFile", "--join-token-file", "BLIXARD_JOIN_TOKEN_FILE"],
  ["apiTokenFile", "--api-token-file", "BLIXARD_API_TOKEN_FILE"],
  ["insecurePlaintext", "--insecure-plaintext", "BLIXARD_INSECURE_PLAINTEXT"],
  ["insecurePlaintextNonLoopback", "--i-know", "BLIXARD_INSECURE_PLAINTEXT_NON_LOOPBACK"],
  ["tlsCaFile", "--tls-ca-file", "BLIXARD_TLS_CA_FILE"],
  ["tlsCertFile", "--tls-cert-file", "BLIXARD_TLS_CERT_FILE"],
  ["tlsKeyFile", "--tls-key-file", "BLIXARD_TLS_KEY_FILE"],
  ["vmBackend", "--vm-backend", "BLIXARD_VM_BACKEND"],
  ["microvmStateDir", "--microvm-state-dir", "BLIXARD_MICROVM_STATE_DIR"],
  ["vmUser", "--vm-user", "BLIXARD_VM_USER"],
  ["vmGroup", "--vm-group", "BLIXARD_VM_GROUP"],
  ["gcRootDir", "--gc-root-dir", "BLIXARD_GC_ROOT_DIR"],
  ["logLevel", "--log-level", "BLIXARD_LOG_LEVEL"],
  ["logFormat", "--log-format", "BLIXARD_LOG_FORMAT"]
]

/** Settings that are on or off: a flag without a value, `true`/`false` (or 1/0) in the environment. */
const booleans: ReadonlySet<string> = new Set(["bootstrap", "insecurePlaintext", "insecurePlaintextNonLoopback"])

/** The list settings: NodeConfig key, flag (repeatable), environment variable (comma-separated). */
const lists: ReadonlyArray<readonly [Key & keyof NodeConfig, string, string]> = [
  ["join", "--join", "BLIXARD_JOIN"],
  ["allowedRunnerPrefixes", "--allowed-runner-prefix", "BLIXARD_ALLOWED_RUNNER_PREFIXES"],
  ["allowedFlakePrefixes", "--allowed-flake-prefix", "BLIXARD_ALLOWED_FLAKE_PREFIXES"],
  ["servers", "--server", "BLIXARD_SERVERS"]
]

/** Every environment variable the daemon reads. */
export const environmentVariables: ReadonlyArray<string> = [
  ...scalars.map(([, , variable]) => variable),
  ...lists.map(([, , variable]) => variable),
  "BLIXARD_PEERS",
  "BLIXARD_LABELS",
  configFileVariable
]

/** Says where a value at `path` (below its top-level key) came from. */
type Origin = (path: ReadonlyArray<PropertyKey>) => string

interface Source {
  readonly values: Record<string, unknown>
  readonly origins: Record<string, Origin>
  /** Keys whose value was rejected before the schema ran (so a "missing" report would be noise). */
  readonly rejected: Set<string>
  readonly problems: Array<string>
}

const emptySource = (): Source => ({ values: {}, origins: {}, rejected: new Set(), problems: [] })

const quote = (text: string): string => JSON.stringify(text)

/** Settings whose value is a secret: a problem names where it came from, never the value (logs keep messages). */
const secretKeys: ReadonlySet<string> = new Set(["joinToken"])

const shown = (key: string, value: string): string => (secretKeys.has(key) ? "(value not shown)" : quote(value))

const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (acc, key) => (typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`),
    ""
  )

const integerText = /^-?[0-9]+$/

/** The peers of a list of `ID:HOST:PORT`; a malformed entry is reported through `origin(index)`. */
const peersOf = (
  source: Source,
  key: string,
  entries: ReadonlyArray<string>,
  origin: (index: number) => string
): void => {
  const peers: Array<{ id: unknown; address: string }> = []
  const origins: Array<string> = []
  entries.forEach((entry, index) => {
    const peer = parsePeer(entry)
    if (peer === undefined || !integerText.test(peer.id)) {
      source.problems.push(`${origin(index)}: a peer is ID:HOST:PORT, e.g. 2:10.0.0.2:7001`)
      source.rejected.add(key)
      return
    }
    peers.push({ id: Number(peer.id), address: peer.address })
    origins.push(origin(index))
  })
  source.values[key] = peers
  source.origins[key] = (path) => {
    const index = path[0]
    return typeof index === "number" && origins[index] !== undefined ? origins[index] : origin(-1)
  }
}

/** The labels of a list of `KEY=VALUE`; later entries of the same key win. */
const labelsOf = (
  source: Source,
  entries: ReadonlyArray<string>,
  origin: (entry: string) => string
): void => {
  const labels: Record<string, string> = {}
  const origins: Record<string, string> = {}
  for (const entry of entries) {
    const pair = parseLabelPair(entry)
    if (pair === undefined) {
      source.problems.push(`${origin(entry)}: a label is KEY=VALUE, e.g. zone=eu-1`)
      source.rejected.add("labels")
      continue
    }
    labels[pair[0]] = pair[1]
    origins[pair[0]] = origin(entry)
  }
  source.values.labels = labels
  source.origins.labels = (path) => {
    const key = path[0]
    return typeof key === "string" && origins[key] !== undefined ? origins[key] : origin("")
  }
}

const fileSource = (file: ConfigFileText): Source => {
  const source = emptySource()
  const where = `config file ${file.path}`
  let parsed: unknown
  try {
    parsed = JSON.parse(file.contents)
  } catch (error) {
    source.problems.push(`${where}: not valid JSON (${error instanceof Error ? error.message : String(error)})`)
    return source
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    source.problems.push(`${where}: must hold a JSON object of settings, e.g. {"id": 1, "bind": "0.0.0.0:7001"}`)
    return source
  }
  for (const [key, value] of Object.entries(parsed)) {
    source.values[key] = value
    source.origins[key] = (path) => `${where}: key ${quote(formatPath([key, ...path]))}`
  }
  return source
}

const environmentSource = (env: Environment): Source => {
  const source = emptySource()
  const given = (name: string): string | undefined => {
    const value = env[name]
    return value === undefined || value === "" ? undefined : value
  }
  for (const [key, , variable] of scalars) {
    const value = given(variable)
    if (value === undefined) continue
    if (key === "id") {
      if (!integerText.test(value.trim())) {
        source.problems.push(`${variable} ${quote(value)}: a node id is a positive integer (1, 2, 3, …)`)
        source.rejected.add(key)
        continue
      }
      source.values[key] = Number(value.trim())
    } else if (booleans.has(key)) {
      const text = value.trim().toLowerCase()
      if (!["true", "false", "1", "0"].includes(text)) {
        source.problems.push(`${variable} ${quote(value)}: true or false`)
        source.rejected.add(key)
        continue
      }
      source.values[key] = text === "true" || text === "1"
    } else {
      source.values[key] = value
    }
    source.origins[key] = () => `${variable} ${shown(key, value)}`
  }
  for (const [key, , variable] of lists) {
    const value = given(variable)
    if (value === undefined) continue
    const entries = value.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "")
    source.values[key] = entries
    source.origins[key] = (path) =>
      typeof path[0] === "number" ? `${variable} entry ${quote(entries[path[0]] ?? "")}` : `${variable} ${quote(value)}`
  }
  const peers = given("BLIXARD_PEERS")
  if (peers !== undefined) {
    const entries = peers.split(",").map((entry) => entry.trim())
    peersOf(source, "peers", entries, (index) =>
      index < 0 ? `BLIXARD_PEERS ${quote(peers)}` : `BLIXARD_PEERS entry ${quote(entries[index] ?? "")}`
    )
  }
  const labels = given("BLIXARD_LABELS")
  if (labels !== undefined) {
    const entries = labels.split(",").map((entry) => entry.trim())
    labelsOf(source, entries, (entry) =>
      entry === "" ? `BLIXARD_LABELS ${quote(labels)}` : `BLIXARD_LABELS entry ${quote(entry)}`
    )
  }
  return source
}

const flagSource = (flags: NodeFlags): Source => {
  const source = emptySource()
  for (const [key, flag] of scalars) {
    const value = flags[key]
    // A boolean flag not given is `false` from the CLI: it must not override the file or the environment.
    if (value === undefined || (booleans.has(key) && value === false)) continue
    source.values[key] = value
    source.origins[key] = () => `${flag} ${typeof value === "string" ? shown(key, value) : String(value)}`
  }
  for (const [key, flag] of lists) {
    const entries = flags[key] as ReadonlyArray<string> | undefined
    if (entries === undefined || entries.length === 0) continue
    source.values[key] = entries
    source.origins[key] = (path) => (typeof path[0] === "number" ? `${flag} ${quote(entries[path[0]] ?? "")}` : flag)
  }
  if (flags.peers !== undefined && flags.peers.length > 0) {
    const entries = flags.peers
    peersOf(source, "peers", entries, (index) => (index < 0 ? "--peer" : `--peer ${quote(entries[index] ?? "")}`))
  }
  if (flags.labels !== undefined && flags.labels.length > 0) {
    labelsOf(source, flags.labels, (entry) => (entry === "" ? "--label" : `--label ${quote(entry)}`))
  }
  return source
}

const howToGive: Partial<Record<string, string>> = {
  id: "the node id is required: pass --id N, set BLIXARD_ID or put \"id\" in the config file",
  bind: "the bind address is required: pass --bind HOST:PORT, set BLIXARD_BIND or put \"bind\" in the config file"
}

/**
 * Merges the sources (file < environment < flags; labels merge key by key, peers are replaced as a
 * whole), fills in the default data directory and validates the result with `NodeConfig`.
 */
export const resolveNodeSettings = (
  file: ConfigFileText | undefined,
  env: Environment,
  flags: NodeFlags
): Either.Either<NodeConfig, ConfigInvalid> => {
  const sources = [file === undefined ? emptySource() : fileSource(file), environmentSource(env), flagSource(flags)]
  const problems = sources.flatMap((source) => source.problems)
  const rejected = new Set(sources.flatMap((source) => [...source.rejected]))

  const merged: Record<string, unknown> = {}
  const origins: Record<string, Origin> = {}
  const labels: Record<string, unknown> = {}
  const labelOrigins: Record<string, Origin> = {}
  let anyLabels = false
  for (const source of sources) {
    for (const [key, value] of Object.entries(source.values)) {
      const origin = source.origins[key]
      if (key === "labels" && typeof value === "object" && value !== null && !Array.isArray(value)) {
        anyLabels = true
        for (const [label, text] of Object.entries(value)) {
          labels[label] = text
          if (origin !== undefined) labelOrigins[label] = (path) => origin([label, ...path])
        }
        continue
      }
      merged[key] = value
      if (origin !== undefined) origins[key] = origin
    }
  }
  if (anyLabels) {
    merged.labels = labels
    origins.labels = (path) => {
      const label = path[0]
      const origin = typeof label === "string" ? labelOrigins[label] : undefined
      return origin !== undefined ? origin(path.slice(1)) : "labels"
    }
  }
  if (merged.dataDir === undefined) {
    const id = merged.id
    if (typeof id === "number") {
      merged.dataDir = defaultDataDir(id)
      origins.dataDir = () => `the default data directory ${quote(defaultDataDir(id))}`
    } else {
      // It would default from the id, which is itself missing or bad: that is the problem to report.
      rejected.add("dataDir")
    }
  }

  const decoded = Effect.runSync(Effect.either(decodeNodeConfig(merged)))
  if (Either.isLeft(decoded)) {
    for (const issue of parseIssues(decoded.left)) {
      const [key, ...rest] = issue.path
      if (key === undefined) {
        problems.push(issue.message)
        continue
      }
      const name = String(key)
      if (issue._tag === "Missing") {
        if (rejected.has(name)) continue
        problems.push(howToGive[name] ?? `the setting ${quote(name)} is required`)
      } else if (issue._tag === "Unexpected") {
        const where = origins[name]?.(rest) ?? `key ${quote(name)}`
        problems.push(`${where}: unknown setting (known: ${Object.keys(NodeConfig.fields).join(", ")})`)
      } else {
        const where = origins[name]?.(rest) ?? `key ${quote(formatPath(issue.path))}`
        problems.push(`${where}: ${issue.message}`)
      }
    }
  }
  const unique = [...new Set(problems)]
  if (unique.length > 0) {
    const subject = subjectOf(unique[0] ?? "")
    return Either.left(new ConfigInvalid({ message: unique.join("; "), ...(subject !== undefined ? { subject } : {}) }))
  }
  if (Either.isLeft(decoded)) {
    return Either.left(new ConfigInvalid({ message: "the node's settings are invalid" }))
  }
  const conflict = discoveryConflict(decoded.right, origins) ?? joinTokenConflict(decoded.right, origins)
  if (conflict !== undefined) return Either.left(new ConfigInvalid({ message: conflict, subject: subjectOf(conflict) ?? "discovery" }))
  return Either.right(decoded.right)
}

/** Discovery's settings that contradict each other (the schema checks each key alone). */
const discoveryConflict = (config: NodeConfig, origins: Record<string, Origin>): string | undefined => {
  const where = (key: string) => origins[key]?.([]) ?? key
  if (config.discovery === "tailscale" && config.peers.length > 0) {
    return `${where("peers")}: peers are found on the tailnet when discovery is "tailscale" (${where("discovery")}); give no peers, or use discovery "static"`
  }
  if (config.servers !== undefined) {
    const memberOnly = (["peers", "join", "joinToken", "joinTokenFile", "discovery", "bootstrap", "tlsCertFile", "tlsKeyFile"] as const).filter((key) =>
      key === "peers" ? config.peers.length > 0 : key === "join" ? (config.join?.length ?? 0) > 0 : config[key] !== undefined
    )
    if (memberOnly.length > 0) {
      return `${where(memberOnly[0]!)}: a node given servers (${where("servers")}) is a host that is not a Raft member, and ${memberOnly.join(", ")} apply to members only (a host verifies the members with tlsCaFile alone); drop them, or drop servers to run a member`
    }
  }
  if (config.bootstrap === true && config.discovery !== "tailscale") {
    return `${where("bootstrap")}: bootstrap applies to tailscale discovery only; with static peers, a node given no peers founds the cluster`
  }
  return undefined
}

/** Join tokens' settings that contradict each other or the rest. */
const joinTokenConflict = (config: NodeConfig, origins: Record<string, Origin>): string | undefined => {
  const where = (key: string) => origins[key]?.([]) ?? key
  if (config.joinToken !== undefined && config.joinTokenFile !== undefined) {
    return `${where("joinToken")}: give the join token or a file holding it (${where("joinTokenFile")}), not both`
  }
  if (config.join !== undefined && config.join.length > 0 && config.discovery === "tailscale") {
    return `${where("join")}: members are found on the tailnet when discovery is "tailscale" (${where("discovery")}), so drop --join`
  }
  const token = config.joinToken !== undefined ? "joinToken" : config.joinTokenFile !== undefined ? "joinTokenFile" : undefined
  if (token === undefined) return undefined
  if (config.clusterSecretFile !== undefined) {
    return `${where(token)}: a node joining with a join token receives the cluster secret from the cluster (and keeps it in its data directory): drop the cluster secret file (${where("clusterSecretFile")}), or join with the secret and no token`
  }
  if (config.insecurePlaintext === true) {
    return `${where(token)}: a join token pins the cluster's CA, so it needs TLS: drop --insecure-plaintext (${where("insecurePlaintext")}), or join with the cluster secret`
  }
  if (config.discovery !== "tailscale" && config.peers.length === 0 && (config.join ?? []).length === 0) {
    return `${where(token)}: a join token needs a member to join through: add --join HOST:PORT (any member's address)`
  }
  return undefined
}

/** The flag, variable or file a problem is about: its first word (`--bind`, `BLIXARD_ID`, the file). */
const subjectOf = (problem: string): string | undefined => {
  const file = /^config file (.*?): /.exec(problem)
  if (file?.[1] !== undefined) return file[1]
  const word = /^(--[a-z-]+|BLIXARD_[A-Z_]+)/.exec(problem)
  return word?.[1]
}
