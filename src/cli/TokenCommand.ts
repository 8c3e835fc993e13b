/**
 * `blixard token create|list|revoke`: the cluster's replicated API tokens (admin only). A token's
 * secret is printed once, by `create`; the cluster keeps only its hash.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Option, Schema } from "effect"
import { ApiTokenInfo, CreatedApiToken, TokenId, TokenName } from "../domain/ApiToken.js"
import { BlixardClient } from "./BlixardClient.js"
import { renderTable } from "./Format.js"
import { clientContext, clientOptions } from "./GlobalOptions.js"
import { check, invalidArgument } from "./Validate.js"

const roleOption = Options.choice("role", ["read-only", "operator", "admin"]).pipe(
  Options.withDescription("What the token may do: read-only (every read), operator (also create, start, stop, delete VMs), admin (everything).")
)

const nameOption = Options.text("name").pipe(
  Options.withPseudoName("NAME"),
  Options.withDescription("A name to recognise the token by in `token list` (e.g. ci, alice)."),
  Options.optional
)

const create = Command.make("create", { ...clientOptions, role: roleOption, name: nameOption }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const problems: Array<string> = []
    const name = Option.isSome(args.name) ? check(TokenName, args.name.value, "--name", problems) : undefined
    if (problems.length > 0) return yield* invalidArgument(problems)
    const created = yield* (yield* BlixardClient).createToken(context.target, args.role, name)
    yield* Console.log(
      context.json
        ? JSON.stringify(Schema.encodeSync(CreatedApiToken)(created), null, 2)
        : `${created.token}\n(token ${created.id}, role ${created.role}${created.name !== undefined ? `, name ${created.name}` : ""}; shown once: the cluster keeps only its hash. Revoke it with: blixard token revoke ${created.id})`
    )
  })
).pipe(Command.withDescription("Make a token every node accepts, with a role; prints the token once."))

/** `token list`: one row per token, by id; `--json`: the tokens' info as an array. */
export const formatTokenList = (tokens: ReadonlyArray<ApiTokenInfo>, asJson: boolean): string => {
  if (asJson) return JSON.stringify(Schema.encodeSync(Schema.Array(ApiTokenInfo))(tokens), null, 2)
  if (tokens.length === 0) return "No API tokens (each node's own admin token is in its data directory, api-token)."
  return renderTable(
    ["ID", "ROLE", "NAME", "CREATED"],
    tokens.map((token) => [token.id, token.role, token.name ?? "-", new Date(token.createdAt).toISOString()])
  )
}

const list = Command.make("list", { ...clientOptions }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const tokens = yield* (yield* BlixardClient).listTokens(context.target)
    yield* Console.log(formatTokenList(tokens, context.json))
  })
).pipe(Command.withDescription("List the cluster's tokens: id, role, name, when made (never the secrets)."))

const revoke = Command.make(
  "revoke",
  { ...clientOptions, id: Args.text({ name: "ID" }).pipe(Args.withDescription("The token's id (see `token list`).")) },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const problems: Array<string> = []
      const id = check(TokenId, args.id, "ID", problems)
      if (id === undefined) return yield* invalidArgument(problems)
      const revoked = yield* (yield* BlixardClient).revokeToken(context.target, id)
      yield* Console.log(
        context.json ? JSON.stringify(Schema.encodeSync(ApiTokenInfo)(revoked), null, 2) : `token ${revoked.id} (${revoked.role}) revoked`
      )
    })
).pipe(Command.withDescription("Revoke a token: no node accepts it any more."))

export const tokenCommand = Command.make("token").pipe(
  Command.withDescription("Manage the cluster's API tokens and their roles (admin only)."),
  Command.withSubcommands([create, list, revoke])
)
