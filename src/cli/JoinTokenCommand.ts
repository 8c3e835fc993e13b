/**
 * `blixard cluster token create|list|revoke`: join tokens (admin only). A token is printed once, by
 * `create`; the cluster keeps only its hash. A new node joins with it alone:
 * `blixard node --id N --join HOST:PORT --join-token-file FILE`.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Option, Schema } from "effect"
import { CreatedJoinToken, JoinTokenId, JoinTokenInfo, JoinTokenTtlMs } from "../domain/JoinToken.js"
import { BlixardClient } from "./BlixardClient.js"
import { renderTable } from "./Format.js"
import { clientContext, clientOptions } from "./GlobalOptions.js"
import { check, describe, invalidArgument } from "./Validate.js"

const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** `90s`, `30m`, `1h`, `7d` (or a sum such as `1h30m`) in milliseconds; undefined if it is not one. */
export const parseDuration = (text: string): number | undefined => {
  const trimmed = text.trim()
  if (!/^([0-9]+(ms|s|m|h|d))+$/.test(trimmed)) return undefined
  let total = 0
  for (const [, amount, unit] of trimmed.matchAll(/([0-9]+)(ms|s|m|h|d)/g)) total += Number(amount) * unitMs[unit!]!
  return total
}

const ttlOption = Options.text("ttl").pipe(
  Options.withPseudoName("DURATION"),
  Options.withDescription("How long the token may be used: 90s, 30m, 1h, 7d (default 1h; at most 30d)."),
  Options.optional
)

const create = Command.make("create", { ...clientOptions, ttl: ttlOption }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const problems: Array<string> = []
    let ttlMs: number | undefined
    if (Option.isSome(args.ttl)) {
      const parsed = parseDuration(args.ttl.value)
      if (parsed === undefined) problems.push(`${describe("--ttl", args.ttl.value)}: a duration such as 90s, 30m, 1h or 7d`)
      else ttlMs = check(JoinTokenTtlMs, parsed, "--ttl", problems)
    }
    if (problems.length > 0) return yield* invalidArgument(problems)
    const created = yield* (yield* BlixardClient).createJoinToken(context.target, ttlMs)
    yield* Console.log(
      context.json
        ? JSON.stringify(Schema.encodeSync(CreatedJoinToken)(created), null, 2)
        : `${created.token}\n(join token ${created.id}, valid until ${new Date(created.expiresAt).toISOString()}, for one node; shown once. ` +
            `Start the new node with: blixard node --id N --bind HOST:PORT --join MEMBER --join-token-file FILE, MEMBER being any member's address (e.g. ${context.target.addr}). Revoke it with: blixard cluster token revoke ${created.id})`
    )
  })
).pipe(Command.withDescription("Make a join token: a new node joins the cluster with it alone, once, before it expires. Prints it once."))

const stateOf = (token: JoinTokenInfo, now: number): string =>
  token.usedBy !== undefined ? `used by node ${token.usedBy}` : token.expiresAt <= now ? "expired" : "unused"

/** `cluster token list`: one row per token, by id; `--json`: the tokens' info as an array. */
export const formatJoinTokenList = (tokens: ReadonlyArray<JoinTokenInfo>, asJson: boolean, now: number): string => {
  if (asJson) return JSON.stringify(Schema.encodeSync(Schema.Array(JoinTokenInfo))(tokens), null, 2)
  if (tokens.length === 0) return "No join tokens (make one with: blixard cluster token create)."
  return renderTable(
    ["ID", "STATE", "CREATED", "EXPIRES"],
    tokens.map((token) => [token.id, stateOf(token, now), new Date(token.createdAt).toISOString(), new Date(token.expiresAt).toISOString()])
  )
}

const list = Command.make("list", { ...clientOptions }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const tokens = yield* (yield* BlixardClient).listJoinTokens(context.target)
    yield* Console.log(formatJoinTokenList(tokens, context.json, Date.now()))
  })
).pipe(Command.withDescription("List the join tokens: id, unused, used (by which node) or expired, when made, when they expire (never the secrets)."))

const revoke = Command.make(
  "revoke",
  { ...clientOptions, id: Args.text({ name: "ID" }).pipe(Args.withDescription("The join token's id (see `cluster token list`).")) },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const problems: Array<string> = []
      const id = check(JoinTokenId, args.id, "ID", problems)
      if (id === undefined) return yield* invalidArgument(problems)
      const revoked = yield* (yield* BlixardClient).revokeJoinToken(context.target, id)
      yield* Console.log(context.json ? JSON.stringify(Schema.encodeSync(JoinTokenInfo)(revoked), null, 2) : `join token ${revoked.id} revoked`)
    })
).pipe(Command.withDescription("Revoke a join token: no node can join with it any more."))

export const joinTokenCommand = Command.make("token").pipe(
  Command.withDescription("Manage join tokens, with which a new node joins the cluster alone (admin only)."),
  Command.withSubcommands([create, list, revoke])
)
