/**
 * The cluster's certificate authority and its nodes' certificates.
 *
 * The node that founds a cluster makes the CA (ECDSA P-256, self-signed, 10 years) and a certificate
 * for itself; a joining node makes its own key and a certificate request (PKCS #10), which a member
 * signs (`TlsBootstrap.ts`). Every member keeps, in `DATA_DIR/tls/`:
 *
 *   ca.crt     the cluster CA                          ca.key     its private key (0600)
 *   node.crt   this node's certificate, from the CA    node.key   its private key (0600)
 *
 * A node certificate names its node by a URI SAN, `blixard://CLUSTER_ID/node/N` (what peers check),
 * plus the IP addresses and DNS names it serves on (for clients that check host names, e.g. curl),
 * and serves both sides of a connection (server and client auth). The CA's key is on every member,
 * as k3s keeps it on every server: any member can sign a joining node's request, so joins do not
 * depend on the founder being up. A member already holds the cluster secret, which grants as much.
 *
 * The CA is rotated by hand (`node/CaRotation.ts`): while a rotation lasts, `ca.crt` is a bundle of
 * both CAs, the one this node signs with (whose key `ca.key` is) first, and everything that verifies
 * a peer trusts both; `checkNodeTls` accepts a certificate issued by any CA of the bundle. A node
 * moving to the new CA replaces its four files at once (`writeRotated`: a directory written beside
 * `tls/` and swapped in), and finishing drops the old CA from `ca.crt` (`writeTrust`).
 *
 * X.509 generation is `@peculiar/x509` over Node's WebCrypto (Node's `crypto` parses and verifies
 * certificates but cannot make them; node-forge cannot make ECDSA certificates). Everything read
 * back — from disk or from the wire — is parsed and verified by Node's own `X509Certificate`
 * (`TlsIdentity.ts`, all of it re-exported here, which a CLI command loads without this generator).
 */
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import { Effect, Either, ParseResult, Schema } from "effect"
import { createHash, createPrivateKey, webcrypto, X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import { isIP } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { normalizeSerial } from "../domain/Certificate.js"
import { CertificateExpired, TlsInvalid, TlsUntrusted } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import {
  caFileName,
  caKeyFileName,
  CertificatePem,
  certFileName,
  clusterOfCa,
  fingerprintOf,
  identityOf,
  keyFileName,
  nodeUri,
  tlsDirName
} from "./TlsIdentity.js"

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

export * from "./TlsIdentity.js"

const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const
const day = 24 * 60 * 60 * 1000
/** The CA outlives its nodes' certificates, which are renewed (`CertRenewal.ts`); it is rotated by hand (`cluster ca rotate`). */
const caValidityMs = 10 * 365 * day
/** How long a node certificate lasts unless `certValidityDays` says otherwise. */
export const defaultCertValidityMs = 365 * day



/** A PEM private key (PKCS #8) that Node accepts. */
export const PrivateKeyPem = Schema.String.pipe(
  Schema.maxLength(64 * 1024),
  Schema.filter((text) => {
    try {
      createPrivateKey(text)
      return true
    } catch (e) {
      return `not a readable PEM private key (${e instanceof Error ? e.message : String(e)})`
    }
  })
)

/** A PKCS #10 request, PEM. */
export const CsrPem = Schema.String.pipe(
  Schema.maxLength(64 * 1024),
  Schema.filter((text) => {
    try {
      new x509.Pkcs10CertificateRequest(text)
      return true
    } catch (e) {
      return `not a readable PEM certificate request (${e instanceof Error ? e.message : String(e)})`
    }
  })
)

/** A cluster id as the founder draws it (a UUID). */
export const ClusterIdText = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/))

/** A name a certificate may carry besides its node URI: an IP address or a DNS name. */
export const HostName = Schema.String.pipe(
  Schema.maxLength(253),
  Schema.filter((name) => isIP(name) !== 0 || /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(name) || "an IP address or a DNS name")
)


const pemKey = async (key: webcrypto.CryptoKey): Promise<string> =>
  x509.PemConverter.encode(await webcrypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY")

const importSigningKey = (pem: string): Promise<webcrypto.CryptoKey> =>
  webcrypto.subtle.importKey("pkcs8", createPrivateKey(pem).export({ format: "der", type: "pkcs8" }), algorithm, false, ["sign"])

const newKeys = () => webcrypto.subtle.generateKey(algorithm, true, ["sign", "verify"])

export interface CaFiles {
  readonly ca: string
  readonly caKey: string
}

/**
 * A new cluster CA. A rotated one (`rotated`: when) names the same cluster (its URI SAN) under a
 * subject of its own, so the old and the new CA are told apart wherever both are trusted.
 */
export const createCa = (clusterId: string, rotated?: Date): Effect.Effect<CaFiles> =>
  Effect.promise(async () => {
    const keys = await newKeys()
    const now = Date.now()
    const since = rotated === undefined ? "" : `, OU=rotated ${rotated.toISOString().replace(/\.\d+Z$/, "Z")}`
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      name: `CN=Blixard cluster CA ${clusterId}${since}`,
      keys,
      signingAlgorithm: algorithm,
      notBefore: new Date(now - day),
      notAfter: new Date(now + caValidityMs),
      extensions: [
        // Path length 1: it may certify one CA below it, the next rotation's (`crossSign`).
        new x509.BasicConstraintsExtension(true, 1, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: `blixard://${clusterId}` }]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)
      ]
    })
    return { ca: cert.toString("pem"), caKey: await pemKey(keys.privateKey) }
  })

/**
 * The new CA of a rotation, certified by the old one (`old`): same subject, key and key identifier as
 * `newCa`, issued and signed by the old CA, valid no longer than either. A member on the new CA
 * serves it after its own certificate while the rotation lasts, so a client that still trusts only
 * the old CA (a copied `ca.crt`, a host between two fetches) verifies it through this link; one that
 * trusts the new CA takes the new CA itself as the anchor. Undefined when the old CA may certify no
 * CA (path length 0: CAs made before this link existed), whose clients must take the new `ca.crt`
 * before the members move.
 */
export const crossSign = (newCa: string, old: CaFiles): Effect.Effect<string | undefined, TlsInvalid> =>
  Effect.tryPromise({
    try: async () => {
      const fresh = new x509.X509Certificate(newCa)
      const issuer = new x509.X509Certificate(splitPem(old.ca)[0] ?? old.ca)
      if (issuer.getExtension(x509.BasicConstraintsExtension)?.pathLength === 0) return undefined
      const cross = await x509.X509CertificateGenerator.create({
        subject: fresh.subject,
        issuer: issuer.subject,
        publicKey: fresh.publicKey,
        signingKey: await importSigningKey(old.caKey),
        signingAlgorithm: algorithm,
        notBefore: new Date(Math.max(fresh.notBefore.getTime(), issuer.notBefore.getTime())),
        notAfter: new Date(Math.min(fresh.notAfter.getTime(), issuer.notAfter.getTime())),
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          // Its cluster URI and key identifier, as the new CA has them (subjectAltName, subjectKeyIdentifier).
          ...fresh.extensions.filter((e) => e.type === "2.5.29.17" || e.type === "2.5.29.14"),
          await x509.AuthorityKeyIdentifierExtension.create(issuer.publicKey)
        ]
      })
      return cross.toString("pem")
    },
    catch: (e) => new TlsInvalid({ subject: "CA", message: `cannot certify the new CA with the old one: ${e instanceof Error ? e.message : String(e)}` })
  })

export interface KeyAndRequest {
  readonly key: string
  readonly csr: string
}

/** A new node key and a request for its certificate (the signer decides what the certificate names). */
export const createRequest = (node: number): Effect.Effect<KeyAndRequest> =>
  Effect.promise(async () => {
    const keys = await newKeys()
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=blixard node ${node}`, keys, signingAlgorithm: algorithm })
    return { key: await pemKey(keys.privateKey), csr: csr.toString("pem") }
  })

export interface SignOptions extends CaFiles {
  readonly clusterId: string
  readonly node: number
  /** The request's PEM: its signature is checked, only its public key is used. */
  readonly csr: string
  readonly names: ReadonlyArray<string>
  /** How long it lasts (default `defaultCertValidityMs`). */
  readonly validityMs?: number | undefined
}

/** The certificate of node `node`, for the key in `csr`; fails when the request's signature is wrong. */
export const signRequest = (options: SignOptions): Effect.Effect<string, TlsInvalid> =>
  Effect.tryPromise({
    try: async () => {
      const request = new x509.Pkcs10CertificateRequest(options.csr)
      if (!(await request.verify())) throw new Error("the certificate request's signature does not match its key")
      const ca = new x509.X509Certificate(splitPem(options.ca)[0] ?? options.ca)
      const now = Date.now()
      const cert = await x509.X509CertificateGenerator.create({
        subject: `CN=blixard node ${options.node}`,
        issuer: ca.subject,
        publicKey: request.publicKey,
        signingKey: await importSigningKey(options.caKey),
        signingAlgorithm: algorithm,
        notBefore: new Date(now - day),
        notAfter: new Date(now + (options.validityMs ?? defaultCertValidityMs)),
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          new x509.SubjectAlternativeNameExtension([
            { type: "url", value: nodeUri(options.clusterId, options.node) },
            ...[...new Set(options.names)].map((name) => ({ type: isIP(name) !== 0 ? ("ip" as const) : ("dns" as const), value: name }))
          ]),
          await x509.AuthorityKeyIdentifierExtension.create(ca.publicKey)
        ]
      })
      return cert.toString("pem")
    },
    catch: (e) =>
      new TlsInvalid({
        node: NodeId.make(options.node),
        subject: `node ${options.node}`,
        message: `cannot sign node ${options.node}'s certificate request: ${e instanceof Error ? e.message : String(e)}`
      })
  })

/** The certificates of a PEM bundle, each as its own PEM, in order. */
export const splitPem = (bundle: string): Array<string> =>
  [...bundle.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((match) => `${match[0]}\n`)

/** One PEM bundle of the certificates of `pems` (each a certificate or a bundle), in order, each on its own lines. */
export const bundleOf = (...pems: ReadonlyArray<string>): string => pems.flatMap(splitPem).join("")

/**
 * The SHA-256 of a CA bundle: of the one certificate's DER (`fingerprintOf`), or of every
 * certificate's DER in order when it holds several (during a CA rotation): what a proof binds.
 */
export const bundleFingerprint = (bundle: string): string => {
  const pems = splitPem(bundle)
  if (pems.length <= 1) return fingerprintOf(bundle)
  const hash = createHash("sha256")
  for (const pem of pems) hash.update(new X509Certificate(pem).raw)
  return hash.digest("hex")
}

/** The CA of `trust` (a bundle) that issued and signed `cert`, if one did. */
export const issuerIn = (cert: X509Certificate, trust: string): X509Certificate | undefined =>
  splitPem(trust)
    .map((pem) => new X509Certificate(pem))
    .find((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey))

/**
 * What a node needs for TLS: the CA, its own certificate and key, and who it is. During a CA
 * rotation `ca` is a bundle: the CA this node signs with first, then the other one it trusts.
 */
export interface NodeTls {
  readonly ca: string
  /** The CA's key, on every member (see the module comment); absent with operator-supplied files. */
  readonly caKey?: string | undefined
  readonly cert: string
  readonly key: string
  readonly clusterId: string
  readonly node: number
  /** The (signing) CA certificate's SHA-256 (hex). */
  readonly fingerprint: string
}

const NodeTlsFiles = Schema.Struct({ ca: CertificatePem, caKey: Schema.optional(PrivateKeyPem), cert: CertificatePem, key: PrivateKeyPem })

export const tlsDir = (dataDir: string): string => path.join(dataDir, tlsDirName)

const fileOf: Record<keyof typeof NodeTlsFiles.Type, string> = { ca: caFileName, caKey: caKeyFileName, cert: certFileName, key: keyFileName }

/** Whether `dataDir` holds any TLS file (a node that has one must have them all). */
export const hasTlsFiles = (dataDir: string): boolean =>
  Object.values(fileOf).some((name) => fs.existsSync(path.join(tlsDir(dataDir), name)))

/**
 * Checks that the files fit together and fit node `node`: the certificate is issued and signed by the
 * CA, the key is the certificate's, the CA is a CA, and the certificate names node `node` of the
 * CA's cluster. `where` says where they came from, for the message.
 */
export const checkNodeTls = (files: typeof NodeTlsFiles.Type, node: number, where: string): Either.Either<NodeTls, TlsInvalid> => {
  const invalid = (problem: string) => Either.left(new TlsInvalid({ node: NodeId.make(node), subject: where, message: `${where}: ${problem}` }))
  const trust = splitPem(files.ca).map((pem) => new X509Certificate(pem))
  const ca = trust[0] ?? new X509Certificate(files.ca)
  const cert = new X509Certificate(files.cert)
  if (!trust.every((each) => each.ca)) return invalid("ca.crt holds a certificate that is not a CA certificate")
  if (files.caKey !== undefined && !ca.checkPrivateKey(createPrivateKey(files.caKey))) return invalid("ca.key is not the key of ca.crt (its first certificate)")
  if (issuerIn(cert, files.ca) === undefined) return invalid("node.crt was not issued by ca.crt")
  if (!cert.checkPrivateKey(createPrivateKey(files.key))) return invalid("node.key is not the key of node.crt")
  const identity = identityOf(cert.subjectAltName)
  if (identity === undefined) return invalid("node.crt names no Blixard node (no URI blixard://CLUSTER/node/N)")
  if (identity.node !== node) return invalid(`node.crt is node ${identity.node}'s certificate, not node ${node}'s; start node ${identity.node} on this data directory`)
  // An operator's own CA need not name the cluster; ours does, and must name the same one.
  for (const each of trust) {
    const caCluster = clusterOfCa(each.toString())
    if (caCluster !== undefined && caCluster !== identity.clusterId) return invalid(`node.crt names cluster ${identity.clusterId}, the CA is cluster ${caCluster}'s`)
  }
  if (Date.parse(cert.validTo) < Date.now()) return invalid(`node.crt expired on ${cert.validTo}`)
  return Either.right({ ...files, clusterId: identity.clusterId, node, fingerprint: fingerprintOf(files.ca) })
}

/** What a node whose own certificate expired does next. */
export const expiredAdvice = (node: number): string =>
  `To bring node ${node} back: remove it from the cluster (blixard cluster leave --id ${node}, against any member), empty its data directory and start it with a join token (blixard cluster token create)`

/** Fails when `certificatePem` (node `node`'s, read from `file`) has expired: said before any other check. */
export const refuseExpired = (certificatePem: string, node: number, file: string): Effect.Effect<void, CertificateExpired> => {
  const validTo = new X509Certificate(certificatePem).validTo
  if (Date.parse(validTo) >= Date.now()) return Effect.void
  return Effect.fail(
    new CertificateExpired({
      node: NodeId.make(node),
      subject: file,
      message: `node ${node}'s certificate ${file} expired on ${validTo}: its peers refuse it. A running node renews its certificate at two thirds of its lifetime; this one was stopped (or no member answered) too long. ${expiredAdvice(node)}`
    })
  )
}

/** Reads and checks `dataDir/tls/` for node `node` (finishing a renewal a crash interrupted first). */
export const readNodeTls = (dataDir: string, node: number): Effect.Effect<NodeTls, TlsInvalid | CertificateExpired> =>
  Effect.gen(function* () {
    const dir = tlsDir(dataDir)
    yield* finishRotation(dataDir, node)
    yield* finishRenewal(dataDir, node)
    const raw: Record<string, string> = {}
    for (const [field, name] of Object.entries(fileOf)) {
      const file = path.join(dir, name)
      raw[field] = yield* Effect.try({
        try: () => fs.readFileSync(file, "utf8"),
        catch: (e) =>
          new TlsInvalid({
            node: NodeId.make(node),
            subject: file,
            message: `cannot read ${file}: ${e instanceof Error ? e.message : String(e)}; a member keeps the cluster CA and its certificate in ${dir} (made when it founded or joined the cluster)`
          })
      })
    }
    const files = yield* Schema.decodeUnknown(NodeTlsFiles)(raw).pipe(
      Effect.mapError(
        (e) => new TlsInvalid({ node: NodeId.make(node), subject: dir, message: `${dir}: ${ParseResult.TreeFormatter.formatErrorSync(e)}` })
      )
    )
    yield* refuseExpired(files.cert, node, path.join(dir, certFileName))
    return yield* checkNodeTls(files, node, dir)
  })

export interface ConfiguredFiles {
  readonly caFile: string
  readonly certFile: string
  readonly keyFile: string
}

/**
 * Operator-supplied files (`tlsCaFile`, `tlsCertFile`, `tlsKeyFile`), checked as `readNodeTls`
 * checks the node's own. The certificate must carry the URI SAN `blixard://CLUSTER_ID/node/N`.
 * Without the CA's key this node cannot sign a joining node's certificate.
 */
export const readConfiguredTls = (files: ConfiguredFiles, node: number): Effect.Effect<NodeTls, TlsInvalid | CertificateExpired> =>
  Effect.gen(function* () {
    const raw: Record<string, string> = {}
    for (const [field, file] of [["ca", files.caFile], ["cert", files.certFile], ["key", files.keyFile]] as const) {
      raw[field] = yield* Effect.try({
        try: () => fs.readFileSync(file, "utf8"),
        catch: (e) => new TlsInvalid({ node: NodeId.make(node), subject: file, message: `cannot read ${file}: ${e instanceof Error ? e.message : String(e)}` })
      })
    }
    const where = `${files.caFile}, ${files.certFile}, ${files.keyFile}`
    const decoded = yield* Schema.decodeUnknown(NodeTlsFiles)(raw).pipe(
      Effect.mapError((e) => new TlsInvalid({ node: NodeId.make(node), subject: files.certFile, message: `${where}: ${ParseResult.TreeFormatter.formatErrorSync(e)}` }))
    )
    yield* refuseExpired(decoded.cert, node, files.certFile)
    return yield* checkNodeTls(decoded, node, where)
  })

/** Writes the node's TLS files (keys 0600), each through a temporary file, so none is ever half-written. */
export const writeNodeTls = (dataDir: string, tls: { readonly ca: string; readonly caKey: string; readonly cert: string; readonly key: string }, node: number): Effect.Effect<void, TlsInvalid> =>
  Effect.try({
    try: () => {
      const dir = tlsDir(dataDir)
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
      for (const [field, name] of Object.entries(fileOf)) {
        const file = path.join(dir, name)
        const temporary = `${file}.tmp`
        fs.writeFileSync(temporary, tls[field as keyof typeof fileOf], { mode: field === "caKey" || field === "key" ? 0o600 : 0o644 })
        fs.renameSync(temporary, file)
      }
    },
    catch: (e) =>
      new TlsInvalid({
        node: NodeId.make(node),
        subject: tlsDir(dataDir),
        message: `cannot write the TLS files in ${tlsDir(dataDir)}: ${e instanceof Error ? e.message : String(e)}; check the data directory's permissions`
      })
  })

const hostOf = (address: string): string => {
  const host = address.startsWith("[") ? address.slice(1, address.indexOf("]")) : address.slice(0, address.lastIndexOf(":"))
  return host
}

/**
 * The names a node's certificate carries: loopback, the host name, the bind and advertise hosts, and
 * for a wildcard bind (0.0.0.0, ::) every address of the machine's interfaces.
 */
export const namesFor = (bind: string, advertise: string | undefined): Array<string> => {
  const names = new Set(["localhost", "127.0.0.1", "::1"])
  const hostname = os.hostname()
  if (Schema.is(HostName)(hostname)) names.add(hostname)
  for (const address of [bind, advertise]) {
    if (address === undefined) continue
    const host = hostOf(address)
    if (host === "0.0.0.0" || host === "::" || host === "") {
      for (const entries of Object.values(os.networkInterfaces())) for (const entry of entries ?? []) names.add(entry.address.replace(/%.*$/, ""))
    } else if (Schema.is(HostName)(host)) {
      names.add(host)
    }
  }
  return [...names].filter(Schema.is(HostName))
}


export const untrusted = (subject: string, message: string): TlsUntrusted => new TlsUntrusted({ subject, message })


export interface CertificateFacts {
  readonly serial: string
  readonly fingerprint: string
  readonly notBefore: number
  readonly notAfter: number
}

/** A certificate's serial (`normalizeSerial`), SHA-256 and validity, epoch ms. */
export const factsOf = (certificatePem: string): CertificateFacts => {
  const cert = new X509Certificate(certificatePem)
  return {
    serial: normalizeSerial(cert.serialNumber),
    fingerprint: createHash("sha256").update(cert.raw).digest("hex"),
    notBefore: Date.parse(cert.validFrom),
    notAfter: Date.parse(cert.validTo)
  }
}

/**
 * When a node renews its certificate: at two thirds of its lifetime, as kubelet does (k3s renews
 * within 90 days of expiry), so a third of it is left to retry in; or at once when it lasts longer
 * than `validityMs` allows (a certificate of an earlier release, or a shorter `certValidityDays`).
 */
export const renewalDue = (facts: CertificateFacts, validityMs: number): number =>
  facts.notAfter - facts.notBefore > validityMs + 2 * day ? facts.notBefore : facts.notBefore + Math.floor(((facts.notAfter - facts.notBefore) * 2) / 3)

const renewedCert = "node.next.crt"
const renewedKey = "node.next.key"

/**
 * Writes a renewed certificate and its key in place of `node.crt` and `node.key`. Both are written
 * (and synced) beside the old ones first, then renamed, the key first: a crash between the two
 * renames leaves `node.next.crt` and a `node.key` that is its key, which `finishRenewal` completes.
 */
export const writeRenewed = (dataDir: string, renewed: { readonly cert: string; readonly key: string }, node: number): Effect.Effect<void, TlsInvalid> =>
  Effect.try({
    try: () => {
      const dir = tlsDir(dataDir)
      const write = (name: string, text: string, mode: number) => {
        const fd = fs.openSync(path.join(dir, name), "w", mode)
        try {
          fs.writeSync(fd, text)
          fs.fsyncSync(fd)
        } finally {
          fs.closeSync(fd)
        }
      }
      write(renewedCert, renewed.cert, 0o644)
      write(renewedKey, renewed.key, 0o600)
      fs.renameSync(path.join(dir, renewedKey), path.join(dir, keyFileName))
      fs.renameSync(path.join(dir, renewedCert), path.join(dir, certFileName))
      const dirFd = fs.openSync(dir, "r")
      try {
        fs.fsyncSync(dirFd)
      } finally {
        fs.closeSync(dirFd)
      }
    },
    catch: (e) =>
      new TlsInvalid({
        node: NodeId.make(node),
        subject: tlsDir(dataDir),
        message: `node ${node} cannot write its renewed certificate into ${tlsDir(dataDir)}: ${e instanceof Error ? e.message : String(e)}; check the directory's permissions (the old certificate stays in use)`
      })
  })

/** Completes (or drops) a renewal a crash interrupted (see `writeRenewed`). */
export const finishRenewal = (dataDir: string, node: number): Effect.Effect<void, TlsInvalid> =>
  Effect.try({
    try: () => {
      const dir = tlsDir(dataDir)
      const next = path.join(dir, renewedCert)
      if (!fs.existsSync(next)) return
      const key = fs.existsSync(path.join(dir, renewedKey)) ? undefined : fs.readFileSync(path.join(dir, keyFileName), "utf8")
      // The key was renamed already: the new certificate belongs with it. Else the old pair is whole.
      if (key !== undefined && new X509Certificate(fs.readFileSync(next, "utf8")).checkPrivateKey(createPrivateKey(key))) {
        fs.renameSync(next, path.join(dir, certFileName))
      } else {
        fs.rmSync(next, { force: true })
        fs.rmSync(path.join(dir, renewedKey), { force: true })
      }
    },
    catch: (e) =>
      new TlsInvalid({
        node: NodeId.make(node),
        subject: tlsDir(dataDir),
        message: `node ${node} cannot complete an interrupted certificate renewal in ${tlsDir(dataDir)}: ${e instanceof Error ? e.message : String(e)}`
      })
  })

const syncWrite = (file: string, text: string, mode: number): void => {
  const fd = fs.openSync(file, "w", mode)
  try {
    fs.writeSync(fd, text)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

const syncDir = (dir: string): void => {
  const fd = fs.openSync(dir, "r")
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

const rotatedDir = (dataDir: string): string => `${tlsDir(dataDir)}.next`
const replacedDir = (dataDir: string): string => `${tlsDir(dataDir)}.old`

/**
 * Replaces all four TLS files at once, for a CA rotation (new CA bundle, its key, a certificate of
 * it and that certificate's key): they are written and synced into `tls.next/`, then the
 * directories are swapped (`tls` → `tls.old`, `tls.next` → `tls`) and `tls.old` removed. A crash
 * leaves either the old directory whole (`tls.next` is dropped) or no `tls` beside a whole
 * `tls.next`, which `finishRotation` renames in.
 */
export const writeRotated = (dataDir: string, files: { readonly ca: string; readonly caKey: string; readonly cert: string; readonly key: string }, node: number): Effect.Effect<void, TlsInvalid> =>
  Effect.try({
    try: () => {
      const next = rotatedDir(dataDir)
      fs.rmSync(next, { recursive: true, force: true })
      fs.mkdirSync(next, { mode: 0o700 })
      for (const [field, name] of Object.entries(fileOf)) {
        syncWrite(path.join(next, name), files[field as keyof typeof fileOf], field === "caKey" || field === "key" ? 0o600 : 0o644)
      }
      syncDir(next)
      fs.rmSync(replacedDir(dataDir), { recursive: true, force: true })
      fs.renameSync(tlsDir(dataDir), replacedDir(dataDir))
      fs.renameSync(next, tlsDir(dataDir))
      syncDir(dataDir)
      fs.rmSync(replacedDir(dataDir), { recursive: true, force: true })
    },
    catch: (e) =>
      new TlsInvalid({
        node: NodeId.make(node),
        subject: tlsDir(dataDir),
        message: `node ${node} cannot write its files of the new CA into ${tlsDir(dataDir)}: ${e instanceof Error ? e.message : String(e)}; check the data directory's permissions (it keeps using the old ones, and tries again)`
      })
  })

/** Completes (or drops) a CA rotation's file swap a crash interrupted (see `writeRotated`). */
export const finishRotation = (dataDir: string, node: number): Effect.Effect<void, TlsInvalid> =>
  Effect.try({
    try: () => {
      const dir = tlsDir(dataDir)
      const next = rotatedDir(dataDir)
      if (!fs.existsSync(dir) && fs.existsSync(next)) fs.renameSync(next, dir)
      fs.rmSync(next, { recursive: true, force: true })
      if (fs.existsSync(dir)) fs.rmSync(replacedDir(dataDir), { recursive: true, force: true })
    },
    catch: (e) =>
      new TlsInvalid({
        node: NodeId.make(node),
        subject: tlsDir(dataDir),
        message: `node ${node} cannot complete an interrupted CA rotation in ${tlsDir(dataDir)}: ${e instanceof Error ? e.message : String(e)}`
      })
  })

/** Replaces `ca.crt` alone (the end of a rotation drops the old CA from it), written beside it and renamed in. */
export const writeTrust = (dataDir: string, ca: string, node: number): Effect.Effect<void, TlsInvalid> =>
  Effect.try({
    try: () => {
      const file = path.join(tlsDir(dataDir), caFileName)
      syncWrite(`${file}.tmp`, ca, 0o644)
      fs.renameSync(`${file}.tmp`, file)
      syncDir(tlsDir(dataDir))
    },
    catch: (e) =>
      new TlsInvalid({
        node: NodeId.make(node),
        subject: tlsDir(dataDir),
        message: `node ${node} cannot rewrite ${path.join(tlsDir(dataDir), caFileName)}: ${e instanceof Error ? e.message : String(e)}; check the directory's permissions`
      })
  })

/**
 * A node's CA trust, certificate and key as they are now: renewal replaces the certificate and key
 * while the node runs, a CA rotation the CA (a bundle of both CAs while it lasts, then the new one)
 * and its key too. Readers read them at each use (a connection made later uses what is current);
 * a server listening with them is told through `onChange` (`setSecureContext`).
 */
export class LiveTls {
  private listeners: Array<() => void> = []
  /** Served after the node's certificate: a rotation's new CA certified by the old one (`crossSign`), or nothing. */
  private intermediate: string | undefined = undefined
  private current: { readonly ca: string; readonly caKey: string | undefined; readonly cert: string; readonly key: string }

  constructor(
    ca: string,
    cert: string,
    key: string,
    readonly clusterId: string,
    caKey?: string | undefined
  ) {
    this.current = { ca, caKey, cert, key }
  }

  /** The CAs this node trusts (PEM bundle), the one it signs with first. */
  get ca(): string {
    return this.current.ca
  }

  /** The key of the first CA of `ca`; absent with operator-supplied files. */
  get caKey(): string | undefined {
    return this.current.caKey
  }

  /** The SHA-256 of the CA this node signs with (what join tokens pin). */
  get fingerprint(): string {
    return fingerprintOf(this.current.ca)
  }

  get cert(): string {
    return this.current.cert
  }

  get key(): string {
    return this.current.key
  }

  /** What a server of this node presents: its certificate, then what `serveAfter` said. */
  get chain(): string {
    return this.intermediate === undefined ? this.current.cert : `${this.current.cert.trimEnd()}\n${this.intermediate}`
  }

  /** Serves `intermediate` (PEM) after the node's certificate from now on; undefined: nothing. */
  serveAfter(intermediate: string | undefined): void {
    if (intermediate === this.intermediate) return
    this.intermediate = intermediate
    this.changed()
  }

  replace(cert: string, key: string): void {
    this.current = { ...this.current, cert, key }
    this.changed()
  }

  /** A CA rotation: new trust (and CA key), certificate and key at once. */
  rotate(files: { readonly ca: string; readonly caKey: string; readonly cert: string; readonly key: string }): void {
    this.current = { ...files }
    this.changed()
  }

  /** Trusts `ca` (a bundle) from now on: the end of a rotation drops the old CA. */
  trust(ca: string): void {
    this.current = { ...this.current, ca }
    this.changed()
  }

  private changed(): void {
    for (const listener of this.listeners) listener()
  }

  /** Calls `listener` after each change; the answer stops that. */
  onChange(listener: () => void): () => void {
    this.listeners.push(listener)
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener)
    }
  }
}
