/**
 * What `blixard cluster secret status` shows of the cluster secret's rotation
 * (`node/ClusterKeyring.ts`): per member, fingerprints of the secret it uses and of every secret
 * it accepts, never a secret. A fingerprint is HMAC-SHA256(secret, a fixed label), its first 16
 * hex characters.
 */
import { Schema } from "effect"
import { NodeId } from "./NodeId.js"

export const SecretFingerprint = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{16}$/), Schema.brand("SecretFingerprint"))
export type SecretFingerprint = typeof SecretFingerprint.Type

/** A node that is not a member (a host) as a member saw it: the secret its node credential was made from, and when (ms). */
export class CallerSecret extends Schema.Class<CallerSecret>("CallerSecret")({
  node: NodeId,
  uses: SecretFingerprint,
  at: Schema.Int.pipe(Schema.nonNegative())
}) {}

/** One node's keyring, as fingerprints. */
export class SecretFingerprints extends Schema.Class<SecretFingerprints>("SecretFingerprints")({
  /** The secret it proves with (the first line of its file). */
  uses: SecretFingerprint,
  /** Every secret it accepts, in its file's order. */
  accepts: Schema.Array(SecretFingerprint).pipe(Schema.minItems(1)),
  /** Where its keyring comes from: its configured file, the copy a join token got it, or the public development secret. */
  source: Schema.Literal("file", "received", "development"),
  /** The nodes whose credentials this node accepted since it started, with the secret each was made from (the latest). */
  callers: Schema.optionalWith(Schema.Array(CallerSecret), { exact: true })
}) {}

/** A member's answer, or why it gave none. */
export class MemberSecret extends Schema.Class<MemberSecret>("MemberSecret")({
  node: NodeId,
  address: Schema.String,
  fingerprints: Schema.optionalWith(SecretFingerprints, { exact: true }),
  problem: Schema.optionalWith(Schema.String, { exact: true })
}) {}

export class SecretStatus extends Schema.Class<SecretStatus>("SecretStatus")({
  /** The node that asked the others. */
  askedBy: NodeId,
  members: Schema.Array(MemberSecret),
  /**
   * Hosts (nodes that are not members), by the secret of the last node credential any member
   * accepted from them: what they use, not what they accept (a host checks only the CA proof).
   */
  hosts: Schema.Array(CallerSecret)
}) {}
