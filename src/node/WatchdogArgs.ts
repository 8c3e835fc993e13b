/**
 * The command line of `blixard node watchdog`: the flags `HostFence` starts it with
 * (`watchdogArgs`), read back into its settings. Plain `--name value` pairs (or `--name=value`), each
 * checked with the schema of its `WatchdogConfig` field; a bad or missing one is
 * `BLX_INVALID_ARGUMENT`, every problem named at once, as the CLI reports bad flags.
 */
import { Either, type Schema } from "effect"
import { check, invalidArgument } from "../cli/Validate.js"
import type { InvalidArgument } from "../domain/Errors.js"
import { WatchdogConfig } from "./Config.js"

/** Each flag, the field it sets, whether its text is an integer, and what `--help` says of it. */
const flags = [
  { flag: "--id", field: "id", integer: true, value: "N", help: "The node's id." },
  { flag: "--data-dir", field: "dataDir", integer: false, value: "DIR", help: "The node's data directory (absolute): its lease is DIR/fencing/lease.json." },
  { flag: "--vm-backend", field: "vmBackend", integer: false, value: "process|systemd", help: "How the node runs its VMs, so the watchdog stops them the same way." },
  { flag: "--microvm-state-dir", field: "microvmStateDir", integer: false, value: "DIR", help: "Root of the VMs' state directories (absolute)." },
  { flag: "--fencing-ms", field: "fencingMs", integer: true, value: "MS", help: "The node's timeouts.fencingMs: without a lease file, the grace after the watchdog's start." },
  { flag: "--stop-timeout-ms", field: "stopTimeoutMs", integer: true, value: "MS", help: "Each VM's grace to stop before SIGKILL." }
] as const satisfies ReadonlyArray<{ readonly field: keyof WatchdogConfig } & Record<string, unknown>>

/** What `blixard node watchdog --help` prints. */
export const usage = [
  "blixard node watchdog --id N --data-dir DIR --vm-backend process|systemd --microvm-state-dir DIR --fencing-ms MS --stop-timeout-ms MS",
  "",
  "Run a node's fencing watchdog: it stops the node's VMs once the node's lease (renewed by its daemon while in contact with the quorum) has run out, also when the daemon has died. The daemon starts it; one per node.",
  "",
  ...flags.map((f) => `  ${f.flag} ${f.value}\n      ${f.help}`)
].join("\n")

const quote = (flag: string, text: string) => `${flag} ${JSON.stringify(text)}`

/** The settings `args` (what follows `node watchdog`) give, or every problem with them. */
export const parseWatchdogArgs = (args: ReadonlyArray<string>): Either.Either<WatchdogConfig, InvalidArgument> => {
  const problems: Array<string> = []
  const texts = new Map<string, string>()
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    const eq = arg.indexOf("=")
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg
    const flag = flags.find((f) => f.flag === name)
    if (flag === undefined) {
      problems.push(`${arg}: not a flag of blixard node watchdog (see blixard node watchdog --help)`)
      continue
    }
    const text = name === arg ? args[++i] : arg.slice(eq + 1)
    if (text === undefined) problems.push(`${flag.flag}: needs a value (${flag.value})`)
    else if (texts.has(flag.flag)) problems.push(`${quote(flag.flag, text)}: given twice`)
    else texts.set(flag.flag, text)
  }
  const config: Record<string, unknown> = {}
  for (const f of flags) {
    const text = texts.get(f.flag)
    if (text === undefined) {
      if (!problems.some((p) => p.startsWith(f.flag))) problems.push(`${f.flag}: missing (${f.value})`)
      continue
    }
    const value = f.integer && /^-?[0-9]+$/.test(text) ? Number(text) : text
    config[f.field] = check(WatchdogConfig.fields[f.field] as Schema.Schema<unknown, unknown>, value, f.flag, problems)
  }
  return problems.length > 0 ? Either.left(invalidArgument(problems)) : Either.right(config as WatchdogConfig)
}
