/**
 * A node's TLS at start-up: the files in its data directory when it has them; else, for the node
 * founding a cluster, a new cluster CA and its own certificate; else, for a node joining, a
 * certificate from a member (`TlsBootstrap.obtain`, or `obtainWithToken` with a join token, which
 * also gets the cluster's keyring, `ClusterKeyring.ts`; retried while no member answers). Or none, in
 * plain mode (`insecurePlaintext`), which is refused on a non-loopback bind address unless
 * `insecurePlaintextNonLoopback` says the operator knows, and warned about at every start.
 */
import { Duration, Effect, ParseResult, Schedule, Schema } from "effect"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Auth from "../api/Auth.js"
import { ConfigInvalid, PlaintextRefused, StorageIo, TlsInvalid } from "../domain/Errors.js"
import type { JoinTokenParts } from "../domain/JoinToken.js"
import { NodeId } from "../domain/NodeId.js"
import { splitHostPort } from "../domain/NodeInfo.js"
import * as Tls from "../net/Tls.js"
import * as ClusterKeyring from "./ClusterKeyring.js"
import type { NodeConfig } from "./Config.js"
import * as TlsBootstrap from "./TlsBootstrap.js"

export interface StartOptions {
  readonly config: NodeConfig
  /** The node has no Raft state yet, and founds the cluster (no peers). */
  readonly fresh: boolean
  readonly founding: boolean
  /** The cluster its data directory belongs to, once known. */
  readonly knownCluster: string | undefined
  /** The node's keyring (`ClusterKeyring.ts`): the first secret proves, all are trusted. */
  readonly clusterSecret: ReadonlyArray<string>
  /** The peers a joining node asks for its certificate (discovery's: looked up again at each attempt). */
  readonly peers: Effect.Effect<ReadonlyArray<{ readonly address: string }>>
  /** A fresh node's join token: it joins with it instead of the cluster secret. */
  readonly joinToken?: JoinTokenParts | undefined
}

/**
 * Where a node joining with a join token keeps its key and certificate request (mode 0600) from
 * before its first attempt until it has joined: a retry after a lost answer (the node killed, the
 * connection reset) must present the same key to be admitted again with the same token.
 */
export const joinRequestFileName = "join-request.json"

const JoinRequestFile = Schema.parseJson(Schema.Struct({ node: NodeId, key: Tls.PrivateKeyPem, csr: Tls.CsrPem }))

/** The key and request node `config.id` joins with: the kept ones, else new ones, kept before they are sent. */
const joinRequest = (config: NodeConfig) =>
  Effect.gen(function* () {
    const node = NodeId.make(config.id)
    const file = path.join(config.dataDir, joinRequestFileName)
    const io = (doing: string) => (e: unknown) =>
      new StorageIo({ node, subject: file, message: `cannot ${doing} ${file}: ${e instanceof Error ? e.message : String(e)}; check the data directory's permissions` })
    if (fs.existsSync(file)) {
      const text = yield* Effect.try({ try: () => fs.readFileSync(file, "utf8"), catch: io("read") })
      const kept = yield* Schema.decodeUnknown(JoinRequestFile)(text).pipe(
        Effect.mapError(
          (e) =>
            new ConfigInvalid({
              node,
              subject: file,
              message: `${file} (the key node ${config.id} joins with) is unreadable: ${ParseResult.TreeFormatter.formatErrorSync(e)}; remove it and start the node with a new join token`
            })
        )
      )
      // The data directory is claimed for one node id, so another id here is a file put there by hand.
      if (kept.node === config.id) return { key: kept.key, csr: kept.csr }
    }
    const request = yield* Tls.createRequest(config.id)
    yield* Effect.try({
      try: () => {
        fs.writeFileSync(`${file}.tmp`, JSON.stringify({ node: config.id, ...request }), { mode: 0o600 })
        fs.renameSync(`${file}.tmp`, file)
      },
      catch: io("write")
    })
    return request
  })

const isLoopbackBind = (bind: string): boolean => {
  const { host } = splitHostPort(bind as never)
  return host === "localhost" || Auth.isLoopback(host)
}

/** Plain mode: refused off loopback without the second switch; a warning every start. */
const plaintext = (config: NodeConfig) =>
  Effect.gen(function* () {
    const node = NodeId.make(config.id)
    if (!isLoopbackBind(config.bind) && config.insecurePlaintextNonLoopback !== true) {
      return yield* new PlaintextRefused({
        node,
        subject: config.bind,
        message: `node ${config.id} refuses --insecure-plaintext on ${config.bind}, which is not a loopback address: peers' Raft traffic and every API token would cross the network in clear; drop --insecure-plaintext (TLS is the default), or add --i-know (insecurePlaintextNonLoopback) if the network is otherwise protected`
      })
    }
    yield* Effect.logWarning(
      `node ${config.id}: --insecure-plaintext: peers and the API are served WITHOUT TLS on ${config.bind}; anyone on the path can read and alter the traffic, API tokens included`
    )
    return undefined
  })

/**
 * A new cluster's CA and the founding node's certificate, written into `dataDir`'s tls directory:
 * what a founding node makes at its first start, and what a restore makes for the cluster it seeds.
 */
export const writeNewCluster = (options: { readonly dataDir: string; readonly clusterId: string; readonly node: number; readonly names: ReadonlyArray<string> }) =>
  Effect.gen(function* () {
    const ca = yield* Tls.createCa(options.clusterId)
    const request = yield* Tls.createRequest(options.node)
    const cert = yield* Tls.signRequest({ ...ca, clusterId: options.clusterId, node: options.node, csr: request.csr, names: [...options.names] })
    yield* Tls.writeNodeTls(options.dataDir, { ...ca, cert, key: request.key }, options.node)
  })

const found = (config: NodeConfig) =>
  Effect.gen(function* () {
    const clusterId = randomUUID()
    yield* writeNewCluster({ dataDir: config.dataDir, clusterId, node: config.id, names: Tls.namesFor(config.bind, config.advertise) })
    yield* Effect.logInfo(`node ${config.id}: made the cluster CA of cluster ${clusterId} and its own certificate in ${Tls.tlsDir(config.dataDir)}`)
    return yield* Tls.readNodeTls(config.dataDir, config.id)
  })

const retryUnavailable = <A, E extends { readonly _tag: string; readonly message: string }>(config: NodeConfig, effect: Effect.Effect<A, E>) =>
  effect.pipe(
    Effect.tapError((e) =>
      e._tag === "Unavailable" ? Effect.logWarning(`node ${config.id} could not get its certificate yet: ${e.message}; retrying`) : Effect.void
    ),
    Effect.retry({ while: (e) => e._tag === "Unavailable", schedule: Schedule.spaced(Duration.seconds(1)) })
  )

/**
 * With a join token: the certificate and the cluster's keyring from a member. The keyring is written
 * before the certificates, whose presence says the node has joined; the kept request goes last.
 */
const joinWithToken = (options: StartOptions, token: JoinTokenParts) =>
  Effect.gen(function* () {
    const config = options.config
    const request = yield* joinRequest(config)
    const admitted = yield* retryUnavailable(
      config,
      Effect.flatMap(options.peers, (peers) =>
        TlsBootstrap.obtainWithToken({
          node: config.id,
          addresses: peers.map((peer) => peer.address),
          token,
          request,
          names: Tls.namesFor(config.bind, config.advertise),
          timeoutMs: config.timeouts.requestMs
        })
      )
    )
    yield* ClusterKeyring.writeReceived(config.dataDir, admitted.clusterKeyring, NodeId.make(config.id))
    yield* Tls.writeNodeTls(config.dataDir, admitted, config.id)
    // Its key is in the tls directory now; nothing is lost if this fails.
    yield* Effect.try(() => fs.rmSync(path.join(config.dataDir, joinRequestFileName), { force: true })).pipe(Effect.ignore)
    yield* Effect.logInfo(
      `node ${config.id}: joined cluster ${admitted.clusterId} with join token ${token.id} (CA sha256 ${admitted.fingerprint}, as the token pins): its certificate is in ${Tls.tlsDir(config.dataDir)}, the cluster secret in ${path.join(config.dataDir, ClusterKeyring.receivedFileName)}`
    )
    const { clusterKeyring: _, ...tls } = admitted
    return tls
  })

const join = (options: StartOptions) =>
  Effect.gen(function* () {
    const config = options.config
    if (options.joinToken !== undefined) return yield* joinWithToken(options, options.joinToken)
    const obtained = yield* retryUnavailable(
      config,
      Effect.flatMap(options.peers, (peers) =>
        TlsBootstrap.obtain({
          node: config.id,
          addresses: peers.map((peer) => peer.address),
          clusterSecret: options.clusterSecret,
          credential: Auth.nodeCredential(options.clusterSecret[0]!, config.id),
          names: Tls.namesFor(config.bind, config.advertise),
          timeoutMs: config.timeouts.requestMs
        })
      )
    )
    yield* Tls.writeNodeTls(config.dataDir, obtained, config.id)
    yield* Effect.logInfo(`node ${config.id}: got its certificate of cluster ${obtained.clusterId} (CA sha256 ${obtained.fingerprint}) into ${Tls.tlsDir(config.dataDir)}`)
    return obtained
  })

/** This node's TLS, or undefined in plain mode (see the module comment). */
export const prepare = (options: StartOptions) =>
  Effect.gen(function* () {
    const config = options.config
    if (config.insecurePlaintext === true) return yield* plaintext(config)
    const configured = [config.tlsCaFile, config.tlsCertFile, config.tlsKeyFile]
    if (config.tlsCaFile !== undefined && config.tlsCertFile !== undefined && config.tlsKeyFile !== undefined) {
      return yield* Tls.readConfiguredTls({ caFile: config.tlsCaFile, certFile: config.tlsCertFile, keyFile: config.tlsKeyFile }, config.id)
    }
    if (configured.some((file) => file !== undefined)) {
      return yield* new ConfigInvalid({
        node: NodeId.make(config.id),
        subject: "tlsCertFile",
        message: "tlsCaFile, tlsCertFile and tlsKeyFile (--tls-ca-file, --tls-cert-file, --tls-key-file) go together: give all three, or none (the node makes its own in DATA-DIR/tls)"
      })
    }
    if (Tls.hasTlsFiles(config.dataDir)) {
      const tls = yield* Tls.readNodeTls(config.dataDir, config.id)
      if (options.knownCluster !== undefined && tls.clusterId !== options.knownCluster) {
        return yield* new TlsInvalid({
          node: NodeId.make(config.id),
          subject: Tls.tlsDir(config.dataDir),
          message: `${Tls.tlsDir(config.dataDir)} holds a certificate of cluster ${tls.clusterId}, but the data directory belongs to cluster ${options.knownCluster}; restore this node's own tls directory`
        })
      }
      return tls
    }
    if (options.founding) return yield* found(config)
    if (options.fresh) return yield* join(options)
    return yield* new TlsInvalid({
      node: NodeId.make(config.id),
      subject: Tls.tlsDir(config.dataDir),
      message: `node ${config.id} has Raft state but no certificates in ${Tls.tlsDir(config.dataDir)} (was it run with --insecure-plaintext?); start it with --insecure-plaintext again, or remove it from the cluster (blixard cluster leave --id ${config.id}) and let it join afresh on an empty data directory`
    })
  })
