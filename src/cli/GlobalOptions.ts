/**
 * `--addr HOST:PORT` and `--json`, accepted by every client command in either place:
 * `blixard vm list --json --addr 10.0.0.2:7001` or `blixard --json --addr 10.0.0.2:7001 vm list`.
 *
 * @effect/cli 0.77 parses a parent's options before the subcommand's name; after it, it only
 * re-parses what the subcommand left over against the parent, which breaks as soon as an option
 * comes before the subcommand's own argument (`vm start --json web`). And a subcommand's help shows
 * only its own options. So both the root command and every client subcommand declare them; the
 * subcommand's value wins, then the root's, then `BLIXARD_ADDR`, then the default. So do
 * `--token-file` and `--data-dir`, which say where the API token is (`Credentials.ts`).
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Effect, Either, Option } from "effect"
import type { InvalidArgument } from "../domain/Errors.js"
import { HostPort } from "../domain/NodeInfo.js"
import type { Target } from "./BlixardClient.js"
import { ProcessEnv } from "./ProcessEnv.js"
import { check, invalidArgument } from "./Validate.js"

export const defaultAddr = "127.0.0.1:7001"
export const addrVariable = "BLIXARD_ADDR"

const addr = Options.text("addr").pipe(
  Options.withPseudoName("HOST:PORT"),
  Options.withDescription(
    `The Blixard node to talk to (any member; followers forward to the leader). Default: $${addrVariable}, else ${defaultAddr}.`
  ),
  Options.optional
)

const json = Options.boolean("json").pipe(
  Options.withDescription("Print the answer as JSON (the API's encoding) instead of a table or text.")
)

const tokenFile = Options.text("token-file").pipe(
  Options.withPseudoName("FILE"),
  Options.withDescription(
    "A file holding the API token to send. Default: $BLIXARD_API_TOKEN, else the api-token file in the node's data directory (--data-dir, $BLIXARD_DATA_DIR, or for a node on this host ./blixard-data/node-N or /var/lib/blixard)."
  ),
  Options.optional
)

const dataDir = Options.text("data-dir").pipe(
  Options.withPseudoName("DIR"),
  Options.withDescription(
    "The data directory of the node whose admin token (DIR/api-token) to send. [$BLIXARD_DATA_DIR, for a node on this host only]"
  ),
  Options.optional
)

const caFile = Options.text("ca-file").pipe(
  Options.withPseudoName("FILE"),
  Options.withDescription(
    "The cluster's CA certificate, to verify the node's HTTPS certificate. Default: $BLIXARD_CA_FILE, else tls/ca.crt in the node's data directory (as for the token). Without one the CLI talks plain HTTP."
  ),
  Options.optional
)

/** Spread into a client command's config: `Command.make("list", { ...clientOptions }, …)`. */
export const clientOptions = { addr, json, tokenFile, dataDir, caFile } as const

export interface ClientOptions {
  readonly addr: Option.Option<string>
  readonly json: boolean
  readonly tokenFile?: Option.Option<string>
  readonly dataDir?: Option.Option<string>
  readonly caFile?: Option.Option<string>
}

/** The root command, holding the global options; `Cli.ts` adds the subcommands. */
export const rootCommand = Command.make("blixard", clientOptions)

/** What a client command needs besides its own flags: where to send the request, how to print. */
export interface ClientContext {
  readonly target: Target
  readonly json: boolean
}

/** Pure: the subcommand's options, then the root's, then the environment, then the default. */
export const resolveClientContext = (
  local: ClientOptions,
  global: ClientOptions,
  env: Readonly<Record<string, string | undefined>>
): Either.Either<ClientContext, InvalidArgument> => {
  const fromFlag = Option.orElse(local.addr, () => global.addr)
  const fromEnv = env[addrVariable]
  const [text, origin] = Option.isSome(fromFlag)
    ? [fromFlag.value, "--addr"]
    : fromEnv !== undefined && fromEnv !== ""
      ? [fromEnv, addrVariable]
      : [defaultAddr, "the default address"]
  const problems: Array<string> = []
  const address = check(HostPort, text, origin, problems)
  const given = (key: "tokenFile" | "dataDir" | "caFile") => Option.getOrUndefined(Option.orElse(local[key] ?? Option.none(), () => global[key] ?? Option.none()))
  const tokenFile = given("tokenFile")
  const dataDir = given("dataDir")
  const caFile = given("caFile")
  return address === undefined
    ? Either.left(invalidArgument(problems))
    : Either.right({
        target: {
          addr: address,
          ...(tokenFile !== undefined ? { tokenFile } : {}),
          ...(dataDir !== undefined ? { dataDir } : {}),
          ...(caFile !== undefined ? { caFile } : {})
        },
        json: local.json || global.json
      })
}

/** Inside a client command's handler: its context, from its own options and the root's. */
export const clientContext = (local: ClientOptions) =>
  Effect.gen(function* () {
    const global = yield* rootCommand
    const env = yield* ProcessEnv
    return yield* resolveClientContext(local, global, env)
  })
