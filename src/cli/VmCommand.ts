/**
 * `blixard vm create|start|stop|delete|status|list`.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Option } from "effect"
import { MaxInlineConfigBytes, StartOnCreate, VmSpecDefaults } from "../domain/VmSpec.js"
import { VmName } from "../domain/VmName.js"
import { NodeId } from "../domain/NodeId.js"
import { VmPhase, type VmRecord } from "../domain/VmStatus.js"
import { checkListArgs, DefaultPageSize, failOn, fetchList, listOptions } from "./ListOptions.js"
import { BlixardClient } from "./BlixardClient.js"
import { listAndWatch } from "./EventsCommand.js"
import { formatVm, formatVmChange, formatVmDeleted, formatVmList } from "./Format.js"
import { clientContext, clientOptions } from "./GlobalOptions.js"
import { check, invalidArgument } from "./Validate.js"
import { buildVmSpec, readVmConfigFile } from "./VmSpecInput.js"
import { answerOrWait, logs, update, waitOption, waitTimeoutOption } from "./VmOpsCommand.js"

const nameArg = Args.text({ name: "NAME" }).pipe(
  Args.withDescription("The VM's name: a lowercase DNS label (a–z, 0–9, '-'; at most 63 characters).")
)

/** The NAME argument checked as a `VmName`. */
const vmName = (text: string) =>
  Effect.suspend(() => {
    const problems: Array<string> = []
    const name = check(VmName, text, "NAME", problems)
    return name === undefined ? Effect.fail(invalidArgument(problems)) : Effect.succeed(name)
  })

const create = Command.make(
  "create",
  {
    ...clientOptions,
    name: Options.text("name").pipe(
      Options.withPseudoName("NAME"),
      Options.withDescription("The VM's name: a lowercase DNS label (a–z, 0–9, '-'; at most 63 characters).")
    ),
    config: Options.text("config").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription(
        `A microvm.nix NixOS module for the VM; its text (at most ${MaxInlineConfigBytes} bytes) is replicated and built on the hosting node. One of --config, --flake, --runner.`
      ),
      Options.optional
    ),
    flake: Options.text("flake").pipe(
      Options.withPseudoName("REF"),
      Options.withDescription(
        "A flake output holding the VM, FLAKE#NAME (e.g. github:me/vms#web); the hosting node builds FLAKE#nixosConfigurations.NAME.config.microvm.declaredRunner."
      ),
      Options.optional
    ),
    runner: Options.text("runner").pipe(
      Options.withPseudoName("PATH"),
      Options.withDescription(
        "An absolute path to a runner already built on the hosting nodes (a directory with bin/microvm-run)."
      ),
      Options.optional
    ),
    vcpus: Options.integer("vcpus").pipe(
      Options.withPseudoName("N"),
      Options.withDescription(`Virtual CPUs, 1–1024 (default ${VmSpecDefaults.vcpus}).`),
      Options.optional
    ),
    memory: Options.integer("memory").pipe(
      Options.withPseudoName("MIB"),
      Options.withDescription(`Memory in MiB, at least 16 (default ${VmSpecDefaults.memoryMiB}).`),
      Options.optional
    ),
    labels: Options.text("label").pipe(
      Options.withPseudoName("KEY=VALUE"),
      Options.withDescription("A label on the VM, e.g. tier=web. Repeatable."),
      Options.repeated
    ),
    constraints: Options.text("constraint").pipe(
      Options.withPseudoName("KEY=VALUE|KEY!=VALUE"),
      Options.withDescription(
        "Place the VM only on nodes whose label KEY equals (=) or differs from (!=) VALUE, e.g. zone=eu-1. Repeatable."
      ),
      Options.repeated
    ),
    antiAffinity: Options.text("anti-affinity").pipe(
      Options.withPseudoName("GROUP"),
      Options.withDescription("VMs of the same group are placed on different nodes when possible."),
      Options.optional
    ),
    restart: Options.choice("restart", ["always", "on-failure", "never"]).pipe(
      Options.withDescription(`What the hosting node does when the VM exits (default ${VmSpecDefaults.restartPolicy}).`),
      Options.optional
    ),
    noStart: Options.boolean("no-start").pipe(
      Options.withDescription("Only declare the VM (desired stopped); start it later with `vm start`.")
    ),
    wait: waitOption,
    waitTimeout: waitTimeoutOption
  },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const config = Option.getOrUndefined(args.config)
      const file = config === undefined ? undefined : yield* readVmConfigFile(config)
      const spec = yield* buildVmSpec(
        {
          name: args.name,
          config,
          flake: Option.getOrUndefined(args.flake),
          runner: Option.getOrUndefined(args.runner),
          vcpus: Option.getOrUndefined(args.vcpus),
          memory: Option.getOrUndefined(args.memory),
          labels: args.labels,
          constraints: args.constraints,
          antiAffinity: Option.getOrUndefined(args.antiAffinity),
          restart: Option.getOrUndefined(args.restart)
        },
        file
      )
      const client = yield* BlixardClient
      const record = yield* client.createVm(context.target, spec, { start: args.noStart ? false : StartOnCreate })
      yield* answerOrWait("created", record, context, { wait: args.wait, timeout: args.waitTimeout })
    })
).pipe(
  Command.withDescription(
    "Declare a new VM. The cluster places it on a node (honouring --constraint and --anti-affinity) and starts it there, unless --no-start."
  )
)

const start = Command.make("start", { ...clientOptions, name: nameArg, wait: waitOption, waitTimeout: waitTimeoutOption }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const name = yield* vmName(args.name)
    const record = yield* (yield* BlixardClient).startVm(context.target, name)
    yield* answerOrWait("started", record, context, { wait: args.wait, timeout: args.waitTimeout })
  })
).pipe(Command.withDescription("Set a VM's desired state to running; its hosting node starts it."))

const stop = Command.make("stop", { ...clientOptions, name: nameArg }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const name = yield* vmName(args.name)
    const record = yield* (yield* BlixardClient).stopVm(context.target, name)
    yield* Console.log(formatVmChange("stopped", record, context.json))
  })
).pipe(
  Command.withDescription(
    "Set a VM's desired state to stopped. It stays managed and listed (as stopped); use delete to remove it."
  )
)

const del = Command.make("delete", { ...clientOptions, name: nameArg }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const name = yield* vmName(args.name)
    yield* (yield* BlixardClient).deleteVm(context.target, name)
    yield* Console.log(formatVmDeleted(name, context.json))
  })
).pipe(Command.withDescription("Stop a VM and remove it from the cluster."))

const status = Command.make("status", { ...clientOptions, name: nameArg }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const name = yield* vmName(args.name)
    const record = yield* (yield* BlixardClient).vmStatus(context.target, name)
    yield* Console.log(formatVm(record, context.json))
  })
).pipe(Command.withDescription("Show one VM: desired and observed state, hosting node, spec."))

const list = Command.make(
  "list",
  {
    ...clientOptions,
    ...listOptions("VMs"),
    after: Options.text("after").pipe(
      Options.withPseudoName("NAME"),
      Options.withDescription("Start after this VM (the last of the page before): VMs are listed by name."),
      Options.optional
    ),
    node: Options.integer("node").pipe(Options.withPseudoName("ID"), Options.withDescription("Only the VMs placed on node ID."), Options.optional),
    phase: Options.choice("phase", VmPhase.literals).pipe(Options.withDescription("Only the VMs in this phase."), Options.optional),
    watch: Options.boolean("watch").pipe(
      Options.withDescription("Keep printing the list as it changes (following the cluster's events) until interrupted; with --json, one line per list.")
    )
  },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const problems: Array<string> = []
      const { limit, all, ...filter } = checkListArgs(args, problems)
      const after = Option.isSome(args.after) ? check(VmName, args.after.value, "--after", problems) : undefined
      const node = Option.isSome(args.node) ? check(NodeId, args.node.value, "--node", problems) : undefined
      yield* failOn(problems)
      const client = yield* BlixardClient
      const query = { ...filter, ...(node !== undefined ? { node } : {}), ...(Option.isSome(args.phase) ? { phase: args.phase.value } : {}) }
      const fetch = (all: boolean) =>
        fetchList({
          what: "VMs",
          limit,
          all,
          after,
          keyOf: (vm: VmRecord) => vm.spec.name,
          fetch: (limit, after) => client.listVms(context.target, { ...query, limit, ...(after !== undefined ? { after } : {}) })
        })
      // The watch keeps every VM past --after that the filters select, and shows the page of them.
      if (args.watch) return yield* listAndWatch(context, { ...query, ...(after !== undefined ? { after } : {}), ...(all ? {} : { limit }) }, fetch(true))
      yield* Console.log(formatVmList(yield* fetch(all), context.json))
    })
).pipe(
  Command.withDescription(
    `List the cluster's VMs (by name) with their state and hosting node: the first ${DefaultPageSize} unless --limit or --all, filtered on the server by --node, --phase and --label; --watch: and follow the changes.`
  )
)

export const vmCommand = Command.make("vm").pipe(
  Command.withDescription("Create, start, stop, delete and inspect microVMs."),
  Command.withSubcommands([create, start, stop, del, status, list, update, logs])
)
