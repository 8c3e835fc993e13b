/**
 * Rotating the cluster CA (`blixard cluster ca rotate`), as the replicated state knows it.
 *
 * A rotation has two phases. `StartCaRotation` carries the new CA certificate and its private key,
 * sealed once per current member to that member's certificate key (`SealedKey`, see
 * `net/KeySeal.ts`): the key is never in the log in clear, and only the members of that moment can
 * open it. While it lasts (`CaRotation`), every node trusts both CAs; each member opens its copy,
 * moves to a certificate of the new CA and reports it (`CaRotationMoved`). `FinishCaRotation` is
 * refused (`CaRotationIncomplete`, naming them) until every current member has moved; applied, it
 * makes every node drop the old CA.
 */
import { Schema } from "effect"
import { CertificateFingerprint } from "./Certificate.js"
import { NodeId } from "./NodeId.js"

const EpochMs = Schema.Int.pipe(Schema.nonNegative())
const Base64 = (max: number) => Schema.String.pipe(Schema.maxLength(max), Schema.pattern(/^[A-Za-z0-9+/]*={0,2}$/))

/** A CA certificate, PEM (parsed and checked by the node that uses it: `net/Tls.ts`). */
export const CaCertificatePem = Schema.String.pipe(
  Schema.maxLength(16 * 1024),
  Schema.pattern(/^-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?$/, {
    message: () => "one PEM certificate (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)"
  })
)

/**
 * The new CA's private key sealed to node `node`: ECDH (P-256) between an ephemeral key
 * (`ephemeralKey`, SubjectPublicKeyInfo DER) and the node's certificate key, HKDF-SHA256, AES-256-GCM.
 */
export class SealedKey extends Schema.Class<SealedKey>("SealedKey")({
  node: NodeId,
  ephemeralKey: Base64(256),
  iv: Base64(24),
  ciphertext: Base64(8 * 1024),
  tag: Base64(24)
}) {}

/** A rotation in progress: the new CA, the CA it replaces, the sealed keys and who has moved. */
export class CaRotation extends Schema.Class<CaRotation>("CaRotation")({
  ca: CaCertificatePem,
  fingerprint: CertificateFingerprint,
  previous: CertificateFingerprint,
  keys: Schema.Array(SealedKey),
  /**
   * The new CA certified by the old one: members on the new CA serve it after their certificate,
   * so clients trusting only the old CA verify them until the rotation finishes. Absent in
   * rotations started by an older version.
   */
  cross: Schema.optionalWith(CaCertificatePem, { exact: true }),
  startedAt: EpochMs,
  /** Members that reported a certificate of the new CA, in id order. */
  moved: Schema.Array(NodeId)
}) {}

/** `GET /v1/cluster/ca`: the CA in force and the rotation in progress, if any. */
export class CaStatus extends Schema.Class<CaStatus>("CaStatus")({
  phase: Schema.Literal("steady", "rotating"),
  /** The CA every node signs with and trusts ("" when no rotation has finished and none was started). */
  fingerprint: Schema.String,
  /** During a rotation: the new CA, the old one, when it started, and the members still on the old CA. */
  rotation: Schema.optionalWith(
    Schema.Struct({
      fingerprint: CertificateFingerprint,
      previous: CertificateFingerprint,
      startedAt: EpochMs,
      moved: Schema.Array(NodeId),
      waiting: Schema.Array(NodeId)
    }),
    { exact: true }
  )
}) {}
