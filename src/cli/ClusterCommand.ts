/**
 * `blixard cluster status|join|leave`, `cluster token …` (`JoinTokenCommand.ts`), `cluster cert …` and `cluster ca …` (`CertCommand.ts`).
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect } from "effect"
import { NodeId } from "../domain/NodeId.js"
import { HostPort } from "../domain/NodeInfo.js"
import { BlixardClient } from "./BlixardClient.js"
import { formatClusterStatus } from "./Format.js"
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

export const clusterCommand = Command.make("cluster").pipe(
  Command.withDescription("Inspect the cluster, change its membership, back it up and restore it."),
  Command.withSubcommands([status, join, leave, snapshotCommand, joinTokenCommand, certCommand, caCommand])
)
