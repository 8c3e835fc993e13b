/**
 * `blixard events [--since N] [--fallback HOST:PORT]... [--json]`: follows the cluster's event
 * stream, one line per event (`--json`: one line per applied entry, its `EventBatch`, or
 * `{"resync":…}`), reconnecting through dropped connections (`EventFollow.ts`). And the watch of
 * `vm list --watch`: the list, kept current by the events (`VmListView.ts`) and printed again
 * whenever it changed.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Duration, Effect, Option, Ref } from "effect"
import type { ClusterEvent, EventBatch, Resync } from "../domain/ClusterEvent.js"
import type { BlixardError } from "../domain/Errors.js"
import type { VmQuery } from "../domain/ListQuery.js"
import type { VmName } from "../domain/VmName.js"
import { HostPort } from "../domain/NodeInfo.js"
import type { VmRecord } from "../domain/VmStatus.js"
import { BlixardClient } from "./BlixardClient.js"
import { type FollowMessage, type FollowOptions, type FollowTarget, follow } from "./EventFollow.js"
import { formatVmList } from "./Format.js"
import { type ClientContext, clientContext, clientOptions } from "./GlobalOptions.js"
import { check, invalidArgument } from "./Validate.js"
import { VmListView } from "./VmListView.js"

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

export interface WatchVmListOptions {
  readonly targets: ReadonlyArray<FollowTarget>
  /** The index the first list is as of (at least). */
  readonly from: number
  readonly view: VmListView
  /** Every VM the query selects, all pages: after a resync. */
  readonly fetchAll: Effect.Effect<ReadonlyArray<VmRecord>, BlixardError>
  /** One VM (`undefined`: it does not exist). */
  readonly read: (name: VmName) => Effect.Effect<VmRecord | undefined, BlixardError>
  /** Shows the list (once per change, at most every `intervalMs`). */
  readonly show: (records: ReadonlyArray<VmRecord>) => Effect.Effect<void>
  readonly onReconnect?: FollowOptions["onReconnect"]
  /** How often the VMs the events named are read and the list shown again (default 200 ms). */
  readonly intervalMs?: number | undefined
}

/**
 * Follows the events from `from` into `view` until interrupted: every `intervalMs`, the VMs the
 * events named are read (a few at a time) and, if anything changed, the list is shown again.
 * A resync replaces the view with a whole list.
 */
export const watchVmList = (options: WatchVmListOptions): Effect.Effect<never, BlixardError> =>
  Effect.gen(function* () {
    const { view } = options
    const dirty = yield* Ref.make(false)
    const refresh = Effect.gen(function* () {
      const reads = yield* Effect.forEach(view.toRead(), ([name, ticket]) => Effect.map(options.read(name), (record) => ({ name, ticket, record })), {
        concurrency: 8
      })
      let changed = yield* Ref.getAndSet(dirty, false)
      for (const { name, ticket, record } of reads) changed = view.settle(name, ticket, record) || changed
      if (changed) yield* options.show(view.visible())
    })
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.sleep(Duration.millis(options.intervalMs ?? 200)), refresh)))
    return yield* follow({
      targets: options.targets,
      since: options.from,
      onMessage: (message) =>
        message._tag === "Resync"
          ? Effect.flatMap(options.fetchAll, (records) => {
              view.reset(records)
              return Ref.set(dirty, true)
            })
          : view.apply(message.batch)
            ? Ref.set(dirty, true)
            : Effect.void,
      onReconnect: options.onReconnect
    })
  }).pipe(Effect.scoped)

/**
 * `vm list --watch`: the node's applied index, then every VM the query selects (`fetchAll`) as of
 * at least that index, shown as `vm list` would show it (`query`'s filters and page), then followed.
 */
export const listAndWatch = (
  context: ClientContext,
  query: VmQuery,
  fetchAll: Effect.Effect<ReadonlyArray<VmRecord>, BlixardError>
) =>
  Effect.gen(function* () {
    const client = yield* BlixardClient
    const status = yield* client.clusterStatus(context.target)
    const view = new VmListView(query)
    view.reset(yield* fetchAll)
    const print = (list: ReadonlyArray<VmRecord>) => (context.json ? JSON.stringify(JSON.parse(formatVmList(list, true))) : formatVmList(list, false))
    yield* Console.log(print(view.visible()))
    return yield* watchVmList({
      targets: yield* targetsOf(context, []),
      from: status.applied,
      view,
      fetchAll,
      read: (name) =>
        client.vmStatus(context.target, name).pipe(
          Effect.map((record): VmRecord | undefined => record),
          Effect.catchIf((error) => error._tag === "VmNotFound", () => Effect.succeed(undefined))
        ),
      show: (list) => Console.log(`${context.json ? "" : "\n"}${print(list)}`),
      onReconnect: reconnecting
    })
  })
