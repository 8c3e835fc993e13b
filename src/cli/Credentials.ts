/**
 * Which API token the CLI sends, first found wins:
 *
 * 1. `--token-file FILE`;
 * 2. `BLIXARD_API_TOKEN` (the token itself);
 * 3. the admin token of the node whose data directory `--data-dir DIR` gives (`DIR/api-token`);
 * 4. for a node on this host (a loopback `--addr`) only: `BLIXARD_DATA_DIR/api-token`, else its id,
 *    asked of its open `/v1/health`, then `./blixard-data/node-ID/api-token` (a hand-started node's
 *    default data directory) and `/var/lib/blixard/api-token` (the NixOS module's), the first that
 *    can be read.
 *
 * A guess (or a daemon's `BLIXARD_DATA_DIR` left in the environment) never sends a local file's
 * token to another host. With no token the request goes without
 * one, and the node's 401 says where its token is.
 *
 * The cluster CA that the node's HTTPS certificate must chain to is found the same way (`resolveCa`):
 * `--ca-file`, `BLIXARD_CA_FILE` (a file), `DIR/tls/ca.crt` of the data directory, or the same
 * guesses for a node on this host. With no CA the CLI talks plain HTTP (a node started with
 * `--insecure-plaintext`).
 */
import { Effect, ParseResult, Schema } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import * as path from "node:path"
import { InvalidArgument } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import { caFileName, CertificatePem, tlsDirName } from "../net/TlsIdentity.js"
import { apiTokenFileName, defaultDataDir } from "../node/Settings.js"

export const tokenVariable = "BLIXARD_API_TOKEN"
export const dataDirVariable = "BLIXARD_DATA_DIR"
export const caFileVariable = "BLIXARD_CA_FILE"

/** Where a node keeps the cluster CA, relative to its data directory. */
const caInDataDir = path.join(tlsDirName, caFileName)

/** Where the NixOS module keeps a node's data. */
export const moduleDataDir = "/var/lib/blixard"

export interface TokenSources {
  readonly addr: string
  readonly tokenFile?: string | undefined
  readonly dataDir?: string | undefined
  readonly caFile?: string | undefined
}

const readToken = (file: string, origin: string) =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8").trim(),
    catch: (e) =>
      new InvalidArgument({
        subject: file,
        message: `${origin}: cannot read the API token file ${file}: ${e instanceof Error ? e.message : String(e)}`
      })
  }).pipe(
    Effect.filterOrFail(
      (token) => token !== "",
      () => new InvalidArgument({ subject: file, message: `${origin}: the API token file ${file} is empty` })
    )
  )

/** The host part of `HOST:PORT` (`[::1]:7001` too) is a loopback address or `localhost`. */
export const isLoopbackAddr = (addr: string): boolean => {
  const host = addr.startsWith("[") ? addr.slice(1, addr.indexOf("]")) : addr.slice(0, addr.lastIndexOf(":"))
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host)
}

/**
 * The token for `sources` (see the module comment); `nodeId` asks the node its id (only called for a
 * loopback address with nothing else given).
 */
export const resolveToken = (
  sources: TokenSources,
  env: Readonly<Record<string, string | undefined>>,
  nodeId: Effect.Effect<number | undefined>
): Effect.Effect<string | undefined, InvalidArgument> =>
  Effect.gen(function* () {
    if (sources.tokenFile !== undefined) return yield* readToken(sources.tokenFile, `--token-file ${JSON.stringify(sources.tokenFile)}`)
    const fromEnv = env[tokenVariable]?.trim()
    if (fromEnv !== undefined && fromEnv !== "") return fromEnv
    if (sources.dataDir !== undefined) {
      return yield* readToken(path.join(sources.dataDir, apiTokenFileName), `the data directory ${JSON.stringify(sources.dataDir)}`)
    }
    if (!isLoopbackAddr(sources.addr)) return undefined
    const fromDataDir = env[dataDirVariable]
    if (fromDataDir !== undefined && fromDataDir !== "") {
      return yield* readToken(path.join(fromDataDir, apiTokenFileName), `${dataDirVariable} ${JSON.stringify(fromDataDir)}`)
    }
    const id = yield* nodeId
    const candidates = [...(id !== undefined ? [path.join(defaultDataDir(id), apiTokenFileName)] : []), path.join(moduleDataDir, apiTokenFileName)]
    for (const file of candidates) {
      const token = yield* Effect.option(readToken(file, "guess"))
      if (token._tag === "Some") return token.value
    }
    return undefined
  })

const readCa = (file: string, origin: string) =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8"),
    catch: (e) =>
      new InvalidArgument({ subject: file, message: `${origin}: cannot read the CA file ${file}: ${e instanceof Error ? e.message : String(e)}` })
  }).pipe(
    Effect.flatMap((text) =>
      Schema.decodeUnknown(CertificatePem)(text).pipe(
        Effect.mapError(
          (e) => new InvalidArgument({ subject: file, message: `${origin}: the CA file ${file} is not a PEM certificate: ${ParseResult.TreeFormatter.formatErrorSync(e)}` })
        )
      )
    ),
    Effect.map((pem) => ({ file, pem }))
  )

/**
 * The cluster CA for `sources` (see the module comment), or undefined: talk plain HTTP. A file
 * named by a flag or variable must be readable; a guessed one is skipped when absent.
 */
export const resolveCa = (
  sources: TokenSources,
  env: Readonly<Record<string, string | undefined>>,
  nodeId: Effect.Effect<number | undefined>
): Effect.Effect<{ readonly file: string; readonly pem: string } | undefined, InvalidArgument> =>
  Effect.gen(function* () {
    if (sources.caFile !== undefined) return yield* readCa(sources.caFile, `--ca-file ${JSON.stringify(sources.caFile)}`)
    const fromEnv = env[caFileVariable]
    if (fromEnv !== undefined && fromEnv !== "") return yield* readCa(fromEnv, `${caFileVariable} ${JSON.stringify(fromEnv)}`)
    const candidates: Array<string> = []
    if (sources.dataDir !== undefined) candidates.push(path.join(sources.dataDir, caInDataDir))
    else if (isLoopbackAddr(sources.addr)) {
      const fromDataDir = env[dataDirVariable]
      if (fromDataDir !== undefined && fromDataDir !== "") candidates.push(path.join(fromDataDir, caInDataDir))
      else {
        const id = yield* nodeId
        if (id !== undefined) candidates.push(path.join(defaultDataDir(id), caInDataDir))
        candidates.push(path.join(moduleDataDir, caInDataDir))
      }
    }
    for (const file of candidates) {
      if (fs.existsSync(file)) return yield* readCa(file, "the node's data directory")
    }
    return undefined
  })

const HealthNode = Schema.Struct({ node: Schema.optional(NodeId) })

/** GET /v1/health without a token over `scheme`, its certificate unchecked: the node's id, if it says. */
const healthOf = (addr: string, scheme: "http" | "https"): Promise<number | undefined> =>
  new Promise((resolve) => {
    const get = scheme === "https" ? https.get : http.get
    // Over HTTPS the certificate is not checked (see probeNodeId), so no CA is given either: an empty
    // list, which keeps Node.js from loading its bundled root certificates (~10 ms of a CLI run).
    const request = get(`${scheme}://${addr}/v1/health`, { timeout: 2000, ...(scheme === "https" ? { rejectUnauthorized: false, ca: [] } : {}) }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("end", () => {
        try {
          const decoded = Schema.decodeUnknownOption(HealthNode)(JSON.parse(Buffer.concat(chunks).toString("utf8")))
          resolve(decoded._tag === "Some" ? decoded.value.node : undefined)
        } catch {
          resolve(undefined)
        }
      })
      response.on("error", () => resolve(undefined))
    })
    request.on("timeout", () => request.destroy())
    request.on("error", () => resolve(undefined))
  })

/**
 * The id of the node at `addr` (loopback only), asked of its open `/v1/health` over HTTPS, then HTTP.
 * Used only to guess where its files are on this host: nothing secret is sent, and what is read
 * there (the CA) then checks the node.
 */
export const probeNodeId = (addr: string): Effect.Effect<number | undefined> =>
  isLoopbackAddr(addr)
    ? Effect.promise(async () => (await healthOf(addr, "https")) ?? (await healthOf(addr, "http")))
    : Effect.succeed(undefined)
