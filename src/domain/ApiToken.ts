/**
 * API tokens kept in the replicated state: each has an id (shown by `token list`, used to revoke
 * it), an optional name, a role and the SHA-256 of its secret. The secret itself is shown once, to
 * whoever created it, and is never stored or replicated.
 *
 * Roles, from least to most: `read-only` (every read but VMs' logs), `operator` (also VMs' logs,
 * which may hold secrets a guest printed, and the VMs' lifecycle: create, start, stop, update,
 * delete, labels), `admin` (everything, including nodes, membership, snapshots and tokens).
 */
import { Schema } from "effect"

export const Role = Schema.Literal("read-only", "operator", "admin")
export type Role = typeof Role.Type

/** 16 lowercase hex digits, chosen at random by the node that creates the token. */
export const TokenId = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{16}$/, { message: () => "a token id is 16 lowercase hex digits (see `blixard token list`)" }),
  Schema.brand("TokenId")
)
export type TokenId = typeof TokenId.Type

export const TokenName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/, {
    message: () => "a token name is 1 to 63 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
  })
)

/** A SHA-256 digest, hex. */
export const TokenHash = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))

/** What anyone with `admin` may see of a token. */
export class ApiTokenInfo extends Schema.Class<ApiTokenInfo>("ApiTokenInfo")({
  id: TokenId,
  name: Schema.optionalWith(TokenName, { exact: true }),
  role: Role,
  /** The leader's clock when the token was created, epoch ms. */
  createdAt: Schema.Int.pipe(Schema.nonNegative())
}) {}

/** A token as the state machine keeps it: its info and the hash of its secret. */
export class ApiTokenRecord extends Schema.Class<ApiTokenRecord>("ApiTokenRecord")({
  ...ApiTokenInfo.fields,
  hash: TokenHash
}) {}

/** The answer to creating a token: its info and, this once, the token itself. */
export class CreatedApiToken extends Schema.Class<CreatedApiToken>("CreatedApiToken")({
  ...ApiTokenInfo.fields,
  token: Schema.String
}) {}
