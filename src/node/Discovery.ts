/**
 * How a node finds the members it joins through, and the joining itself.
 *
 * - `static` (the default): the configured `peers`. A fresh node without peers founds a cluster.
 * - `tailscale`: the online machines of the tailnet tagged `tailscaleTag` (`Tailscale.ts`), each at
 *   its IPv4 tailnet address and the port of `bind` (one port for the whole cluster). The node
 *   advertises its own IPv4 tailnet address. The peers are read again at every attempt, so a node
 *   started before the others joins once they come.
 *
 * Who founds, with Tailscale: only a fresh node with `bootstrap` set, and only when none of the
 * peers it finds answers with a cluster (then it joins that one). Without `bootstrap` a fresh node
 * never founds; it waits for a peer in a cluster. So two clusters are founded at once only if two
 * nodes are given `bootstrap`; a rule without it (say, the lowest id founds) cannot be safe, since a
 * node does not know the ids, or even the presence, of machines whose daemon has not started yet.
 * Leaving `bootstrap` set after the first start is harmless: a node with data never founds again,
 * and one whose data was lost finds the running cluster and joins it (or is told it is an amnesiac
 * voter, `BLX_MEMBER_AMNESIA`).
 */
import { Duration, Effect, Either, Schedule } from "effect"
import type { ControlPlaneShape } from "../api/ControlPlane.js"
import type { ClusterStatus } from "../domain/ClusterStatus.js"
import { type DiscoveryFailed, formatError, WrongDataDir } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import { HostPort, splitHostPort } from "../domain/NodeInfo.js"
import type { RaftNodeShape } from "../raft/RaftNode.js"
import { DefaultTailscaleBinary, DefaultTailscaleTag, type NodeConfig } from "./Config.js"
import * as Tailscale from "./Tailscale.js"

/** A node to ask: where, and how to name it in logs. */
export interface SeedPeer {
  readonly address: string
  readonly name: string
}

export interface PeerDiscovery {
  /** The address this node gives the cluster. */
  readonly advertise: string
  /** Whether a fresh node may found a cluster (static: it has no peers; Tailscale: `bootstrap`). */
  readonly mayFound: boolean
  /** The peers to ask, as of now. */
  readonly peers: Effect.Effect<ReadonlyArray<SeedPeer>>
  /** For the transport and the membership sync: configured members (static discovery only). */
  readonly configured: ReadonlyArray<{ readonly id: number; readonly address: string }>
}

export const describePeer = (peer: SeedPeer): string => `${peer.name} (${peer.address})`

const staticDiscovery = (config: NodeConfig): PeerDiscovery => {
  const peers = [
    ...config.peers.map((p) => ({ address: p.address, name: `node ${p.id}` })),
    ...(config.join ?? []).map((address) => ({ address, name: "member" }))
  ]
  return { advertise: config.advertise ?? config.bind, mayFound: peers.length === 0, peers: Effect.succeed(peers), configured: config.peers }
}

/** Reads the status until this machine has its tailnet address; what waiting cannot cure fails at once. */
const awaitSelf = (settings: Tailscale.TailscaleSettings) => {
  let attempts = 0
  const attempt = Effect.flatMap(Tailscale.readStatus(settings), (status) =>
    Either.map(Tailscale.selfIp(status, settings), (ip) => ({ status, ip }))
  ).pipe(
    Effect.tapError((problem) =>
      problem.transient && attempts++ % 10 === 0
        ? Effect.logWarning(`node ${settings.node} is waiting for Tailscale: ${formatError(problem.error)}`)
        : Effect.void
    )
  )
  return Effect.retry(attempt, { while: (problem) => problem.transient, schedule: Schedule.spaced(Duration.seconds(1)) }).pipe(
    Effect.mapError((problem) => problem.error)
  )
}

const tailscaleDiscovery = (config: NodeConfig) =>
  Effect.gen(function* () {
    const node = NodeId.make(config.id)
    const tag = config.tailscaleTag ?? DefaultTailscaleTag
    const settings = { node, tag, binary: config.tailscaleBinary ?? DefaultTailscaleBinary, timeoutMs: config.timeouts.requestMs }
    const { port } = splitHostPort(config.bind)
    const { status, ip } = yield* awaitSelf(settings)
    if (!Tailscale.selfTagged(status, tag)) {
      yield* Effect.logWarning(
        `node ${node}: this machine does not carry the tag ${tag} on the tailnet, so other nodes will not find it (it can still join through them); tag it with \`tailscale up --advertise-tags=${tag}\``
      )
    }
    const advertise = config.advertise ?? `${ip}:${port}`
    yield* Effect.logInfo(`node ${node}: tailnet address ${ip}; advertising ${advertise}; peers are the online machines tagged ${tag}`)
    // A failing read keeps the node waiting (tailscaled may be restarting): logged when the problem changes.
    let lastProblem = ""
    let alone = false
    const peers = Tailscale.readStatus(settings).pipe(
      Effect.flatMap((current) => {
        lastProblem = ""
        const found = Tailscale.selectPeers(current, tag, ip).map((p) => ({ address: `${p.ip}:${port}`, name: p.name }))
        const wasAlone = alone
        alone = found.length === 0
        return alone && !wasAlone
          ? Effect.as(Effect.logInfo(`node ${node} found no online machine tagged ${tag} on the tailnet yet; it keeps looking`), found)
          : Effect.succeed(found)
      }),
      Effect.catchAll((problem) => {
        const text = formatError(problem.error)
        const log = text === lastProblem ? Effect.void : Effect.logWarning(`node ${node} cannot read its peers from Tailscale: ${text}`)
        lastProblem = text
        return Effect.as(log, [] as ReadonlyArray<SeedPeer>)
      })
    )
    return { advertise, mayFound: config.bootstrap === true, peers, configured: [] } satisfies PeerDiscovery
  })

/** The node's discovery; Tailscale's fails with `BLX_DISCOVERY_FAILED` when it cannot work at all. */
export const make = (config: NodeConfig): Effect.Effect<PeerDiscovery, DiscoveryFailed> =>
  config.discovery === "tailscale" ? tailscaleDiscovery(config) : Effect.succeed(staticDiscovery(config))

/** The first peer that answers with a cluster id, and its answer. */
export const findCluster = (
  peers: ReadonlyArray<SeedPeer>,
  remote: (address: string) => ControlPlaneShape
): Effect.Effect<{ readonly peer: SeedPeer; readonly status: ClusterStatus } | undefined> =>
  Effect.gen(function* () {
    for (const peer of peers) {
      const answer = yield* Effect.either(remote(peer.address).clusterStatus)
      if (answer._tag === "Right" && answer.right.clusterId !== undefined && answer.right.clusterId !== "") {
        return { peer, status: answer.right }
      }
    }
    return undefined
  })

/**
 * A node with data pointed at peers of another cluster stops before it talks to them. Over TLS a
 * member of another cluster is not even trusted (`TlsUntrusted`): `offered` asks which cluster's CA
 * it offers.
 */
export const refuseOtherCluster = (options: {
  readonly node: number
  readonly dataDir: string
  readonly knownCluster: string
  readonly peers: ReadonlyArray<SeedPeer>
  readonly remote: (address: string) => ControlPlaneShape
  readonly offered: (address: string) => Effect.Effect<string | undefined>
}): Effect.Effect<void, WrongDataDir> =>
  Effect.gen(function* () {
    for (const peer of options.peers) {
      const answer = yield* Effect.either(options.remote(peer.address).clusterStatus)
      const theirs =
        answer._tag === "Right" ? answer.right.clusterId : answer.left._tag === "TlsUntrusted" ? yield* options.offered(peer.address) : undefined
      if (theirs === undefined || theirs === "") continue
      if (theirs === options.knownCluster) return
      return yield* new WrongDataDir({
        node: NodeId.make(options.node),
        subject: options.dataDir,
        message: `the data directory ${options.dataDir} belongs to cluster ${options.knownCluster}, but ${describePeer(peer)} is in cluster ${theirs}; point the node at members of its own cluster (--peer, or the tailnet tag), or give it an empty --data-dir to join the other one`
      })
    }
  })

/**
 * Asks to join (as a learner, promoted once caught up) through the discovered peers, every second
 * until one accepts; peers are discovered anew at each attempt.
 */
export const joinLoop = (options: {
  readonly node: number
  readonly advertise: string
  readonly peers: Effect.Effect<ReadonlyArray<SeedPeer>>
  readonly remote: (address: string) => ControlPlaneShape
  readonly raft: RaftNodeShape
  /** Tells the transport where a member is. */
  readonly setPeer: (id: number, address: string) => Effect.Effect<void>
}): Effect.Effect<void> => {
  const attempt = Effect.gen(function* () {
    // Promoted already (a join whose answer was lost): nothing left to ask.
    if ((yield* options.raft.status).confState.voters.includes(options.node)) return
    const peers = yield* options.peers
    for (const peer of peers) {
      const plane = options.remote(peer.address)
      const status = yield* Effect.either(plane.clusterStatus)
      // A fresh node waiting like this one is in no cluster yet: it cannot take a join.
      if (status._tag === "Right" && status.right.clusterId === undefined) continue
      if (status._tag === "Right") {
        for (const m of status.right.members) {
          if (m.id !== options.node && m.address !== "") yield* options.setPeer(m.id, m.address)
        }
      }
      const joined = yield* Effect.either(plane.join(NodeId.make(options.node), HostPort.make(options.advertise)))
      if (joined._tag === "Right") {
        yield* Effect.logInfo(`node ${options.node} joined the cluster through ${describePeer(peer)}`)
        return
      }
      yield* Effect.logWarning(`node ${options.node} could not join through ${describePeer(peer)}: ${joined.left.message}; retrying`)
    }
    return yield* Effect.fail("retry" as const)
  })
  return Effect.retry(attempt, Schedule.spaced(Duration.seconds(1))).pipe(Effect.ignore)
}
