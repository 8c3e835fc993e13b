/**
 * Join tokens: what a new node needs to become a member, and nothing else (`blixard cluster token
 * create`, as k3s and Incus do it). The text has k3s's shape,
 *
 *   K10<SHA-256 of the cluster CA certificate's DER, hex>::<id>.<secret>
 *
 * The fingerprint lets the joining node check the CA a member offers before it trusts anything (a
 * machine in the middle cannot offer the real CA and hold its key); `<id>.<secret>` is what it
 * presents, once (again only by the same node with the same key, until it expires: its answer may
 * have been lost). The replicated state keeps only the token's id, the SHA-256 of `<id>.<secret>`,
 * when it was made, when it expires and who used it with which key (`JoinTokenRecord`). A token is consumed by a
 * replicated command, so two nodes racing with one token cannot both get in.
 */
import { Either, Schema } from "effect"
import { NodeId } from "./NodeId.js"

/** 16 lowercase hex digits, chosen at random by the node that creates the token. */
export const JoinTokenId = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{16}$/, { message: () => "a join token id is 16 lowercase hex digits (see `blixard cluster token list`)" }),
  Schema.brand("JoinTokenId")
)
export type JoinTokenId = typeof JoinTokenId.Type

/** A SHA-256 digest, hex. */
export const JoinTokenHash = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))

/** How long a new token is valid when `--ttl` is not given: one hour. */
export const DefaultJoinTokenTtlMs = 60 * 60 * 1000
/** Bounds of `--ttl`: a second (tests) to 30 days. */
export const JoinTokenTtlMs = Schema.Int.pipe(
  Schema.between(1000, 30 * 24 * 60 * 60 * 1000, { message: () => "a join token lives between 1 second and 30 days" })
)

/** Used or expired tokens are forgotten this long after they expire (at the next token made). */
export const JoinTokenRetentionMs = 24 * 60 * 60 * 1000

/** What an admin may see of a join token. Times are the proposing leader's clock, epoch ms. */
export class JoinTokenInfo extends Schema.Class<JoinTokenInfo>("JoinTokenInfo")({
  id: JoinTokenId,
  createdAt: Schema.Int.pipe(Schema.nonNegative()),
  expiresAt: Schema.Int.pipe(Schema.nonNegative()),
  /** The node that joined with it: the token is used up. */
  usedBy: Schema.optionalWith(NodeId, { exact: true }),
  usedAt: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { exact: true })
}) {}

/**
 * A join token as the state machine keeps it: its info, the hash of `<id>.<secret>` and, once used,
 * the SHA-256 of the public key (SubjectPublicKeyInfo DER) of the node that used it: that node,
 * with that key, may present it again until it expires (its answer may have been lost), no other.
 * Records from before `usedKey` have none, and admit no retry.
 */
export class JoinTokenRecord extends Schema.Class<JoinTokenRecord>("JoinTokenRecord")({
  ...JoinTokenInfo.fields,
  hash: JoinTokenHash,
  usedKey: Schema.optionalWith(JoinTokenHash, { exact: true })
}) {}

/** The answer to creating a join token: its info and, this once, the token itself. */
export class CreatedJoinToken extends Schema.Class<CreatedJoinToken>("CreatedJoinToken")({
  ...JoinTokenInfo.fields,
  token: Schema.String
}) {}

/** The parts of a join token's text. */
export interface JoinTokenParts {
  /** The cluster CA's SHA-256, lower-case hex. */
  readonly fingerprint: string
  readonly id: JoinTokenId
  readonly secret: string
}

const tokenPattern = /^K10([0-9a-f]{64})::([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/

export const formatJoinToken = (parts: JoinTokenParts): string => `K10${parts.fingerprint}::${parts.id}.${parts.secret}`

/** The parts of `text`, or what is wrong with it (never echoing the secret). */
export const parseJoinToken = (text: string): Either.Either<JoinTokenParts, string> => {
  const match = tokenPattern.exec(text.trim())
  if (match === null) {
    return Either.left(
      "a join token is K10<64 hex digits>::<16 hex digits>.<43 characters>, as `blixard cluster token create` prints it (was it cut short, or copied with extra characters?)"
    )
  }
  return Either.right({ fingerprint: match[1]!, id: JoinTokenId.make(match[2]!), secret: match[3]! })
}

/** A join token's text, checked for its shape (a config file's `joinToken`, `--join-token`). */
export const JoinTokenText = Schema.String.pipe(
  Schema.filter((text) => Either.match(parseJoinToken(text), { onLeft: (problem) => problem, onRight: () => true }))
)

/** What a joining node presents to a member: `<id>.<secret>` (the fingerprint stays with it). */
export const presented = (parts: Pick<JoinTokenParts, "id" | "secret">): string => `${parts.id}.${parts.secret}`

const presentedPattern = /^([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/

/** `<id>.<secret>` as a joining node sends it. */
export const PresentedJoinToken = Schema.String.pipe(
  Schema.pattern(presentedPattern, { message: () => "a presented join token is <16 hex digits>.<43 characters>" })
)

/** The id of a presented token (its shape already checked by `PresentedJoinToken`). */
export const idOfPresented = (text: string): JoinTokenId => JoinTokenId.make(text.slice(0, 16))
