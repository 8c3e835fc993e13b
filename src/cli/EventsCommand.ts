/**
 * `blixard events [--since N] [--fallback HOST:PORT]... [--json]`: follows the cluster's event
 * stream, one line per event (`--json`: one line per applied entry, its `EventBatch`, or
 * `{"resync":…}`), reconnecting through dropped connections (`EventFollow.ts`). And the watch of
 * `vm list --watch`: the list, printed again whenever an event may have changed it.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Duration, Effect, Option, Ref } from "effect"
import type { ClusterEvent, EventBatch, Resync } from "../domain/ClusterEvent.js"
import { HostPort } from "../domain/NodeInfo.js"
import type { VmRecord } from "../domain/VmStatus.js"
import { BlixardClient } from "./BlixardClient.js"
import { type FollowMessage, type FollowTarget, follow } from "./EventFollow.js"
import { formatVmList } from "./Format.js"
import { type ClientContext, clientContext, clientOptions } from "./GlobalOptions.js"
import { check, invalidArgument } from "./Validate.js"

/** `12  vm.placed  web  node=1 revision=2` */
export const formatEvent = (batch: EventBatch, event: ClusterEvent): string => {
  const { type, ...fields } = event
  const subject =
    "vm" in fields ? fields.vm : "node" in fields && type.startsWith("node.") ? `node ${fields.node}` : "id" in fields ? `${type.startsWith("joinToken.") ? "join token" : "token"} ${fields.id}` : ""
  const rest = Object.entries(fields)
    .filter(([key]) => !(key === "vm" || (key === "node" && type.startsWith("node.")) || (key === "id" && /^(token|joinToken)\./.test(type))))
    .map(([key, value]) => `${key}=${typeof value === "string" && /\s/.test(value) ? JSON.stringify(value) : String(value)}`)
  return [String(batch.index), type, subject, ...rest].filter((part) => part !== "").join("  ")
}

export const formatResync = (resync: Resync): string => `${resync.index}  resync  (${resync.reason}): ${resync.message}`

/** The lines `blixard events` prints for one message. */
export const formatMessage = (message: FollowMessage, asJson: boolean): string =>
  message._tag === "Resync"
    ? asJson
      ? JSON.stringify({ resync: message.resync })
      : formatResync(message.resync)
    : asJson
      ? JSON.stringify(message.batch)
      : message.batch.events.map((event) => formatEvent(message.batch, event)).join("\n")

/** The addresses to follow, `--addr` first, each with how to find its token. */
const targetsOf = (context: ClientContext, fallbacks: ReadonlyArray<HostPort>) =>
  Effect.map(BlixardClient, (client) =>
    [context.target.addr, ...fallbacks].map((addr, i): FollowTarget => {
      // A node's admin token (its data directory) is good on that node only; the CA is the cluster's.
      const { dataDir, ...shared } = context.target
      const target = { ...shared, addr, ...(i === 0 && dataDir !== undefined ? { dataDir } : {}) }
      return { addr, open: (lastEventId) => client.events(target, lastEventId) }
    })
  )

/** A note on stderr, written directly: under `--json` the CLI holds back what goes through `Console.error`. */
const reconnecting = (addr: string, after: number | undefined, why: string) =>
  Effect.sync(() => void process.stderr.write(`blixard: ${why}; reconnecting to ${addr}${after !== undefined ? ` after index ${after}` : ""}\n`))

const since = Options.integer("since").pipe(
  Options.withPseudoName("INDEX"),
  Options.withDescription("Replay the events after this Raft index (the index of the last event seen) before following; default: from now on."),
  Options.optional
)

const fallback = Options.text("fallback").pipe(
  Options.withPseudoName("HOST:PORT"),
  Options.withDescription("Another node to reconnect to when the connection drops (tried in turn after --addr). Repeatable."),
  Options.repeated
)

export const eventsCommand = Command.make("events", { ...clientOptions, since, fallback }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const problems: Array<string> = []
    const fallbacks = args.fallback.map((text) => check(HostPort, text, "--fallback", problems))
    const from = Option.getOrUndefined(args.since)
    if (from !== undefined && from < 0) problems.push(`--since ${from}: an index is a whole number ≥ 0`)
    if (problems.length > 0) return yield* Effect.fail(invalidArgument(problems))
    return yield* follow({
      targets: yield* targetsOf(context, fallbacks as Array<HostPort>),
      since: from,
      onMessage: (message) => Console.log(formatMessage(message, context.json)),
      onReconnect: reconnecting
    })
  })
).pipe(
  Command.withDescription(
    "Follow the cluster's events (VMs created, placed, started, moved, their phases; nodes joining, down, cordoned; leader changes) as they are applied. Reconnects, without losing or repeating an event, when the connection drops."
  )
)

/** Events that may change the VM list (everything but tokens and membership). */
const touchesVms = (message: FollowMessage): boolean =>
  message._tag === "Resync" || message.batch.events.some((event) => event.type.startsWith("vm.") || event.type.startsWith("node."))

/**
 * `vm list --watch`: prints `records` (the list as of the node's applied index `from`), then the
 * list again after changes, at most every 200 ms, until interrupted.
 */
export const watchVmList = <E, R>(
  context: ClientContext,
  from: number,
  fetch: Effect.Effect<ReadonlyArray<VmRecord>, E, R>,
  print: (records: ReadonlyArray<VmRecord>) => string
) =>
  Effect.gen(function* () {
    const dirty = yield* Ref.make(false)
    const refresh = Effect.gen(function* () {
      if (!(yield* Ref.getAndSet(dirty, false))) return
      const records = yield* fetch
      yield* Console.log(`${context.json ? "" : "\n"}${print(records)}`)
    })
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.sleep(Duration.millis(200)), refresh)))
    return yield* follow({
      targets: yield* targetsOf(context, []),
      since: from,
      onMessage: (message) => (touchesVms(message) ? Ref.set(dirty, true) : Effect.void),
      onReconnect: reconnecting
    })
  }).pipe(Effect.scoped)

/**
 * The `vm list` of `--watch`: the node's applied index, then the list (`fetch`: the page or pages
 * the options ask for) as of at least that index, again whenever the events touch a VM.
 */
export const listAndWatch = <E, R>(context: ClientContext, fetch: Effect.Effect<ReadonlyArray<VmRecord>, E, R>) =>
  Effect.gen(function* () {
    const client = yield* BlixardClient
    const status = yield* client.clusterStatus(context.target)
    const records = yield* fetch
    const print = (list: ReadonlyArray<VmRecord>) => (context.json ? JSON.stringify(JSON.parse(formatVmList(list, true))) : formatVmList(list, false))
    yield* Console.log(print(records))
    return yield* watchVmList(context, status.applied, fetch, print)
  })
