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
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { InvalidArgument } from "../domain/Errors.js"
import { apiTokenFileName, defaultDataDir } from "../node/Settings.js"

export const tokenVariable = "BLIXARD_API_TOKEN"
export const dataDirVariable = "BLIXARD_DATA_DIR"

/** Where the NixOS module keeps a node's data. */
export const moduleDataDir = "/var/lib/blixard"

export interface TokenSources {
  readonly addr: string
  readonly tokenFile?: string | undefined
  readonly dataDir?: string | undefined
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
