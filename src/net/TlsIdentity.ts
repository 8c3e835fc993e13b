/**
 * What a Blixard certificate says and where a node keeps its TLS files: the node and cluster a
 * certificate names, its fingerprint, and the server check a client makes. Read with Node's own
 * `X509Certificate` only, apart from `Tls.ts` (which makes certificates with `@peculiar/x509`): a
 * CLI command that talks to a node loads this, not the certificate generator, which is most of a
 * command's start-up otherwise.
 */
import { Schema } from "effect"
import { createHash, X509Certificate } from "node:crypto"
import { normalizeSerial } from "../domain/Certificate.js"

export const tlsDirName = "tls"
export const caFileName = "ca.crt"
export const caKeyFileName = "ca.key"
export const certFileName = "node.crt"
export const keyFileName = "node.key"

/** A PEM certificate that Node's X509 parser accepts. */
export const CertificatePem = Schema.String.pipe(
  Schema.maxLength(64 * 1024),
  Schema.filter((text) => {
    try {
      new X509Certificate(text)
      return /^-----BEGIN CERTIFICATE-----/.test(text.trim()) || "a PEM certificate (-----BEGIN CERTIFICATE-----)"
    } catch (e) {
      return `not a readable PEM certificate (${e instanceof Error ? e.message : String(e)})`
    }
  })
)

export const nodeUri = (clusterId: string, node: number): string => `blixard://${clusterId}/node/${node}`

export interface Identity {
  readonly clusterId: string
  readonly node: number
}

const uriPattern = /^URI:blixard:\/\/([0-9a-f-]{36})\/node\/([1-9][0-9]{0,9})$/

/**
 * The node a certificate's subjectAltName (Node's text form) names, when it names exactly one
 * Blixard node; a certificate with two node URIs names none.
 */
export const identityOf = (subjectAltName: string | undefined): Identity | undefined => {
  if (subjectAltName === undefined) return undefined
  const found = subjectAltName
    .split(", ")
    .map((entry) => uriPattern.exec(entry))
    .filter((match) => match !== null)
  if (found.length !== 1) return undefined
  return { clusterId: found[0]![1]!, node: Number(found[0]![2]) }
}

/** The cluster a CA certificate is for (its URI SAN `blixard://CLUSTER_ID`). */
export const clusterOfCa = (caPem: string): string | undefined =>
  /(?:^|, )URI:blixard:\/\/([0-9a-f-]{36})(?:,|$)/.exec(new X509Certificate(caPem).subjectAltName ?? "")?.[1]

/** The SHA-256 of a certificate's DER, lower-case hex: what a join token pins. */
export const fingerprintOf = (certificatePem: string): string =>
  createHash("sha256").update(new X509Certificate(certificatePem).raw).digest("hex")

/**
 * A `checkServerIdentity` for `tls.connect`: the server's certificate (already verified against the
 * cluster CA) must name a node of `clusterId`, and node `node` when given. Host names are not
 * checked: peers are addressed by whatever address they advertise, and the CA signs only members.
 */
export const checkServerIdentity =
  (clusterId: string, node?: number, revoked?: RevokedCheck) =>
  (_host: string, cert: { readonly subjectaltname?: string | undefined; readonly serialNumber?: string | undefined }): Error | undefined => {
    const reason = cert.serialNumber === undefined ? undefined : revoked?.(normalizeSerial(cert.serialNumber))
    if (reason !== undefined) return new Error(`BLX_CERT_REVOKED: the server's certificate ${normalizeSerial(cert.serialNumber!)} is revoked (${reason})`)
    const identity = identityOf(cert.subjectaltname)
    if (identity === undefined) return new Error("BLX_TLS_UNTRUSTED: the server's certificate names no Blixard node")
    if (identity.clusterId !== clusterId) {
      return new Error(`BLX_TLS_UNTRUSTED: the server's certificate is of cluster ${identity.clusterId}, not ${clusterId}`)
    }
    if (node !== undefined && identity.node !== node) {
      return new Error(`BLX_TLS_UNTRUSTED: the server's certificate is node ${identity.node}'s, not node ${node}'s`)
    }
    return undefined
  }

/** Why the certificate with this serial (`normalizeSerial`) is revoked, if it is. */
export type RevokedCheck = (serial: string) => string | undefined
