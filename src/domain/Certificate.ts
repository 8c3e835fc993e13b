/**
 * Node certificates as the replicated state knows them: the ones members issued (the signer records
 * each as part of signing it) and nodes report they hold (`CertificateRecord`, so that removing a
 * node revokes them all, even one it never reported) and the revocation list
 * (`RevokedCertificate`), which peers and the API check every client certificate against.
 *
 * A certificate is named by its serial number, lower-case hex without leading zeros
 * (`normalizeSerial`: Node prints serials in upper case, padded). Entries are forgotten once the
 * certificate they name has expired (an expired certificate is refused anyway), so the list stays
 * as small as the certificates still alive.
 */
import { Schema } from "effect"
import { NodeId } from "./NodeId.js"

/** A certificate serial number, lower-case hex without leading zeros (`normalizeSerial`). */
export const CertificateSerial = Schema.String.pipe(
  Schema.pattern(/^(0|[1-9a-f][0-9a-f]{0,63})$/, { message: () => "a certificate serial number is hex, as `blixard cluster cert status` shows it" }),
  Schema.brand("CertificateSerial")
)
export type CertificateSerial = typeof CertificateSerial.Type

/** Any hex spelling of a serial (upper case, leading zeros, colons) in its one form. */
export const normalizeSerial = (serial: string): string => serial.replace(/:/g, "").toLowerCase().replace(/^0+(?=.)/, "")

/** A certificate's SHA-256, lower-case hex. */
export const CertificateFingerprint = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))

/**
 * How a member issued a certificate it records itself, as part of signing it: to a node joining
 * (with a join token or the cluster secret), or renewing (then the node must still be a member when
 * the record applies). A node's own report of the certificate it holds names none.
 */
export const CertificateIssue = Schema.Literal("join", "renewal")
export type CertificateIssue = typeof CertificateIssue.Type

/** Why a certificate was revoked, as an admin or the cluster said it. */
export const RevocationReason = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200))

const EpochMs = Schema.Int.pipe(Schema.nonNegative())

/** A certificate a node reported holding; `recordedAt` is the proposing leader's clock. */
export class CertificateRecord extends Schema.Class<CertificateRecord>("CertificateRecord")({
  serial: CertificateSerial,
  node: NodeId,
  fingerprint: CertificateFingerprint,
  notAfter: EpochMs,
  recordedAt: EpochMs
}) {}

/** A revoked certificate. `node` and `notAfter` are absent when an admin revoked a serial nobody reported. */
export class RevokedCertificate extends Schema.Class<RevokedCertificate>("RevokedCertificate")({
  serial: CertificateSerial,
  node: Schema.optionalWith(NodeId, { exact: true }),
  fingerprint: Schema.optionalWith(CertificateFingerprint, { exact: true }),
  notAfter: Schema.optionalWith(EpochMs, { exact: true }),
  reason: RevocationReason,
  /** Absent when revoked by a membership change (which carries no clock). */
  revokedAt: Schema.optionalWith(EpochMs, { exact: true })
}) {}

/** `GET /v1/cluster/certificates`: what nodes hold and what is revoked. */
export class CertificateList extends Schema.Class<CertificateList>("CertificateList")({
  certificates: Schema.Array(CertificateRecord),
  revoked: Schema.Array(RevokedCertificate)
}) {}

/** What a node whose certificate is revoked does next. */
export const revokedAdvice = (node: number): string =>
  node === 0
    ? "if its node is to be a member again, remove it (blixard cluster leave --id N), empty its data directory and join it afresh with a join token (blixard cluster token create)"
    : `if node ${node} is to be a member again, remove it (blixard cluster leave --id ${node}), empty its data directory and join it afresh with a join token (blixard cluster token create)`
