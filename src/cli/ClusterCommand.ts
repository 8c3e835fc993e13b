/**
 * `blixard cluster status|join|leave`, `cluster token …` (`JoinTokenCommand.ts`), `cluster cert …` and `cluster ca …` (`CertCommand.ts`),
 * `cluster secret status` (the cluster secret's rotation, `node/ClusterKeyring.ts`).
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Schema } from "effect"
import { SecretStatus } from "../domain/ClusterSecret.js"
import { NodeId } from "../domain/NodeId.js"
import { HostPort } from "../domain/NodeInfo.js"
import { BlixardClient } from "./BlixardClient.js"
import { formatClusterStatus, renderTable } from "./Format.js"
import { clientContext, clientOptions } from "./GlobalOptions.js"
import { caCommand, certCommand } from "./CertCommand.js"
import { joinTokenCommand } from "./JoinTokenCommand.js"
import { snapshotCommand } from "./SnapshotCommand.js"
import { check, invalidArgument } from "./Validate.js"

const idOption = (what: string) =>
  Options.integer("id").pipe(Options.withPseudoName("N"), Options.withDescription(what))

const status = Command.make("status", { ...clientOptions }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const answer = yield* (yield* BlixardClient).clusterStatus(context.target)
    yield* Console.log(formatClusterStatus(answer, context.json))
  })
).pipe(Command.withDescription("Show the leader, the term and every member with its state and health."))

const join = Command.make(
  "join",
  {
    ...clientOptions,
    id: idOption("The new member's node id (a positive integer, unique in the cluster)."),
    address: Options.text("address").pipe(
      Options.withPseudoName("HOST:PORT"),
      Options.withDescription("Where the new member serves peers and the API.")
    )
  },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const problems: Array<string> = []
      const id = check(NodeId, args.id, "--id", problems)
      const address = check(HostPort, args.address, "--address", problems)
      if (id === undefined || address === undefined) return yield* invalidArgument(problems)
      const answer = yield* (yield* BlixardClient).joinCluster(context.target, id, address)
      yield* Console.log(
        context.json ? formatClusterStatus(answer, true) : `node ${id} (${address}) joined the cluster`
      )
    })
).pipe(
  Command.withDescription(
    "Add a member to the cluster's configuration. Start that node with `blixard node --id N --peer …` pointing at a member."
  )
)

const leave = Command.make(
  "leave",
  { ...clientOptions, id: idOption("The member to remove.") },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const problems: Array<string> = []
      const id = check(NodeId, args.id, "--id", problems)
      if (id === undefined) return yield* invalidArgument(problems)
      const answer = yield* (yield* BlixardClient).leaveCluster(context.target, id)
      yield* Console.log(context.json ? formatClusterStatus(answer, true) : `node ${id} left the cluster`)
    })
).pipe(Command.withDescription("Remove a member from the cluster's configuration; its VMs are rescheduled."))

const nodesOf = (ids: ReadonlyArray<number>) => `${ids.length === 1 ? "node" : "nodes"} ${ids.join(", ")}`

/**
 * `cluster secret status`: per member, the fingerprints of the secret it uses and of those it
 * accepts; then where the members stand, the line that says whether a rotation's step has reached
 * them all (`node/ClusterKeyring.ts` lists the steps).
 */
export const formatSecretStatus = (status: SecretStatus, asJson: boolean): string => {
  if (asJson) return JSON.stringify(Schema.encodeSync(SecretStatus)(status), null, 2)
  const rows = status.members.map((m) =>
    m.fingerprints === undefined
      ? [String(m.node), m.address, "?", `no answer: ${m.problem ?? "unknown"}`, ""]
      : [String(m.node), m.address, m.fingerprints.uses, m.fingerprints.accepts.join(", "), m.fingerprints.source]
  )
  const answered = status.members.filter((m) => m.fingerprints !== undefined)
  const uses = new Map<string, Array<number>>()
  const accepts = new Map<string, Array<number>>()
  for (const m of answered) {
    uses.set(m.fingerprints!.uses, [...(uses.get(m.fingerprints!.uses) ?? []), m.node])
    for (const f of m.fingerprints!.accepts) accepts.set(f, [...(accepts.get(f) ?? []), m.node])
  }
  const every = (ids: ReadonlyArray<number>) => ids.length === status.members.length
  const lines = [
    renderTable(["NODE", "ADDRESS", "USES", "ACCEPTS", "FROM"], rows),
    "",
    ...[...uses].map(([f, ids]) => `uses ${f}: ${every(ids) ? "every member" : nodesOf(ids)}`),
    ...[...accepts].map(([f, ids]) => `accepts ${f}: ${every(ids) ? "every member" : nodesOf(ids)}`)
  ]
  const silent = status.members.length - answered.length
  if (silent > 0) lines.push(`${silent} member(s) did not answer: a step of a rotation has reached every member only once they answer with it`)
  else if (uses.size === 1 && [...accepts.values()].every(every)) lines.push("Every member uses the same secret and accepts the same ones.")
  if (status.hosts.length === 0) lines.push("No host (a node that is not a member) has called a member since it started.")
  else {
    lines.push("", "Hosts, by the secret their last call to a member was made with (what they use; check their files for what they accept):")
    lines.push(renderTable(["HOST", "USES", "LAST SEEN"], status.hosts.map((h) => [String(h.node), h.uses, new Date(h.at).toISOString()])))
  }
  return lines.join("\n")
}

const secretStatus = Command.make("status", { ...clientOptions }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    yield* Console.log(formatSecretStatus(yield* (yield* BlixardClient).secretStatus(context.target), context.json))
  })
).pipe(
  Command.withDescription(
    "Every member's cluster secret keyring, as fingerprints (never the secrets): the one it uses and those it accepts. Run it between the steps of a rotation (README, \"Rotating the cluster secret\"). Admin only."
  )
)

const secretCommand = Command.make("secret").pipe(
  Command.withDescription("The cluster secret's keyring on every member (status), for rotating it without downtime."),
  Command.withSubcommands([secretStatus])
)

export const clusterCommand = Command.make("cluster").pipe(
  Command.withDescription("Inspect the cluster, change its membership, back it up and restore it."),
  Command.withSubcommands([status, join, leave, snapshotCommand, joinTokenCommand, certCommand, caCommand, secretCommand])
)
