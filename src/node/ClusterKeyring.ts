/**
 * The cluster secret as a keyring, and how it is rotated without downtime (as Consul's gossip
 * keyring is: install, use, remove).
 *
 * The cluster secret file (`clusterSecretFile`, or `DATA-DIR/cluster-secret` on a node that joined
 * with a join token) holds one to `MaxSecrets` secrets, one a line. The FIRST is the one this node
 * proves with (the `/raft` handshake it sends, its node credential, the CA proof it answers, what a
 * join token hands out first); EVERY one is accepted when this node checks a peer's handshake, a
 * node credential or a member's CA proof. A line is 16 to 512 printable ASCII characters without
 * spaces (`head -c 32 /dev/urandom | base64` makes one); blank lines are skipped; a secret may not
 * appear twice. A file that breaks this is refused at start with `BLX_CONFIG_INVALID` naming it,
 * except a file of one line, which is taken as it is, as earlier releases took it (with a warning:
 * a rotation starts by making it a keyring line).
 *
 * The file is read-only to the node (NixOS passes it through systemd `LoadCredential`), so the node
 * never writes it: it `follow`s it, reading it every `FollowMs` (off the hot path: every use reads
 * the keyring in memory) and taking the new keyring when it changed. A file that becomes
 * invalid (or unreadable) keeps the last good keyring in force and logs an error naming the file and
 * what to do, once per change. The limit: systemd copies a `LoadCredential=` file when the unit
 * starts and never refreshes the copy while it runs, so under the NixOS module a step takes a
 * restart of each node, one at a time (the steps are built so that this costs no downtime).
 *
 * Rotating, with NEW the new secret and OLD the one in use (`blixard cluster secret status` shows,
 * for every member, the fingerprints of the secrets it accepts and of the one it uses; for every
 * host, the secret its last node credential a member accepted was made from, `heardFrom`):
 *
 *   1. every node's file: OLD, then NEW on a second line; wait until status shows every member
 *      accepting NEW (all still use OLD, and accept both);
 *   2. every node's file: NEW first, then OLD; wait until status shows every member using NEW
 *      (a node on NEW,OLD and one on OLD,NEW accept each other's proofs);
 *   3. every node's file: NEW alone (after status shows every host using NEW); wait until status
 *      shows no member accepting OLD.
 *
 * Any two adjacent steps accept each other, so the cluster stays connected throughout. A peer
 * connection lives while the secret its handshake was made with stays in the keyring: one removed
 * (step 3) closes the connections made with it within a second, both ways (`PeerTransport`), and
 * they come back with the secret in use.
 *
 * A fingerprint is HMAC-SHA256(secret, `fingerprintLabel`), hex, its first 16 characters: the same
 * for the same secret on every node, and it does not give the secret away (HMAC is one-way; the label
 * is fixed and differs from every other use of the secret, so a fingerprint is no proof or
 * credential). Like any value derived from the secret it lets a guess be checked offline, which is
 * why status is an admin's and a secret is at least 16 characters long.
 *
 * Nodes that joined with a join token hold the keyring in `DATA-DIR/cluster-secret`, written by the
 * node itself: they fetch it from a member over mutual TLS with their node credential
 * (`KeyringSync.ts`), so they move as the members do; hosts read their own file like members.
 */
import { Duration, Effect, Either, ParseResult, Schedule, Schema } from "effect"
import { createHmac } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { CallerSecret, SecretFingerprint, SecretFingerprints } from "../domain/ClusterSecret.js"
import { trusted } from "../domain/Decode.js"
import { ConfigInvalid, StorageIo } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import type { NodeConfig } from "./Config.js"

/** Used when no cluster secret file is configured: peer traffic is then NOT protected. */
export const developmentSecret = "blixard-development-secret-do-not-use-in-production"

/** At most this many secrets in a keyring: the one in use, the next, and room for a mistake. */
export const MaxSecrets = 4

/** How often a node checks its secret file for a change (ms). */
export const FollowMs = 2000

/** One secret: what a line of the file may hold. */
export const Secret = Schema.String.pipe(
  Schema.minLength(16, { message: () => "a secret is at least 16 characters long (e.g. head -c 32 /dev/urandom | base64)" }),
  Schema.maxLength(512, { message: () => "a secret is at most 512 characters long" }),
  Schema.pattern(/^[\x21-\x7e]+$/, { message: () => "a secret is printable ASCII without spaces (e.g. base64)" })
)

/** The secrets of a file, in order: the first is used, all are accepted. */
export const Keyring = Schema.Array(Secret).pipe(
  Schema.minItems(1, { message: () => "the file holds no secret" }),
  Schema.maxItems(MaxSecrets, { message: () => `a keyring holds at most ${MaxSecrets} secrets (the one in use and the next, during a rotation)` }),
  Schema.filter((secrets) => new Set(secrets).size === secrets.length || "a secret appears twice (each line must differ)")
)

const decodeKeyring = Schema.decodeUnknownEither(Keyring)

/** A lone secret that a keyring line could not be (shorter than 16 characters, or with spaces), which earlier releases took. */
const isLegacySecret = (line: string): boolean => Either.isLeft(Schema.decodeUnknownEither(Secret)(line))

/** The keyring in `text`, the contents of `file`; or why it is not one (never echoing a secret). */
export const parseKeyring = (text: string, file: string, node: NodeId): Either.Either<ReadonlyArray<string>, ConfigInvalid> => {
  const lines = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== "")
  const invalid = (why: string) =>
    new ConfigInvalid({
      node,
      subject: file,
      message: `node ${node}: the cluster secret file ${file} is not a valid keyring: ${why}; it holds 1 to ${MaxSecrets} secrets, one a line, the first in use (see "Rotating the cluster secret" in the README)`
    })
  // One line is one secret, taken as earlier releases took it (any length, spaces inside): the rules
  // below are for keyrings, so a node upgraded with its old file starts (`load` warns about it).
  if (lines.length === 1 && isLegacySecret(lines[0]!)) return Either.right(lines)
  // Line by line first, so the error says which line (and never what is on it).
  for (const [i, line] of lines.entries()) {
    const one = Schema.decodeUnknownEither(Secret)(line)
    if (Either.isLeft(one)) return Either.left(invalid(`secret ${i + 1}: ${ParseResult.ArrayFormatter.formatErrorSync(one.left).map((e) => e.message).join("; ")}`))
  }
  return Either.mapLeft(decodeKeyring(lines), (e) => invalid(ParseResult.ArrayFormatter.formatErrorSync(e).map((i) => i.message).join("; ")))
}

export const fingerprintLabel = "blixard cluster secret fingerprint"

/** A secret's fingerprint: what status shows of it (see the module comment). */
export const fingerprint = (secret: string): string => createHmac("sha256", secret).update(fingerprintLabel, "utf8").digest("hex").slice(0, 16)

/**
 * A node's keyring as its file says now (`follow`): read at each use (`primary`, `secrets`).
 * `version` grows at each change.
 */
export class LiveKeyring {
  private current: ReadonlyArray<string>
  version = 0
  constructor(
    secrets: ReadonlyArray<string>,
    /** The file it is read from (undefined: the development secret). */
    readonly file: string | undefined,
    readonly source: SecretFingerprints["source"]
  ) {
    if (secrets.length === 0) throw new Error("LiveKeyring: no secret")
    this.current = secrets
  }
  get primary(): string {
    return this.current[0]!
  }
  get secrets(): ReadonlyArray<string> {
    return this.current
  }
  /** Replaces the keyring (a re-read file, or one a member handed out). */
  set(secrets: ReadonlyArray<string>): void {
    if (secrets.length === 0) throw new Error("LiveKeyring: no secret")
    this.current = secrets
    this.version++
  }
  private readonly heard = new Map<number, { readonly uses: SecretFingerprint; readonly at: number }>()
  /** Records that `node`'s credential, made from `secret`, was accepted now (`Auth.nodeCredentialSeen`). */
  heardFrom(node: number, secret: string): void {
    this.heard.set(node, { uses: SecretFingerprint.make(fingerprint(secret)), at: Date.now() })
  }
  get isDevelopment(): boolean {
    return this.source === "development"
  }
  fingerprints(): SecretFingerprints {
    return new SecretFingerprints(
      {
        uses: SecretFingerprint.make(fingerprint(this.primary)),
        accepts: this.current.map((s) => SecretFingerprint.make(fingerprint(s))),
        source: this.source,
        callers: [...this.heard].map(([node, h]) => new CallerSecret({ node: NodeId.make(node), ...h }, trusted))
      },
      trusted
    )
  }
}

/** Where a node that joined with a join token keeps the keyring it received (mode 0600), in its data directory. */
export const receivedFileName = "cluster-secret"

/** Writes the keyring a join token (or a member, `KeyringSync.ts`) got this node, through a temporary file. */
export const writeReceived = (dataDir: string, secrets: ReadonlyArray<string>, node: NodeId) =>
  Effect.try({
    try: () => {
      const file = path.join(dataDir, receivedFileName)
      fs.writeFileSync(`${file}.tmp`, secrets.map((s) => `${s}\n`).join(""), { mode: 0o600 })
      fs.renameSync(`${file}.tmp`, file)
    },
    catch: (e) =>
      new StorageIo({
        node,
        subject: dataDir,
        message: `node ${node}: cannot write the cluster secret into ${dataDir}: ${e instanceof Error ? e.message : String(e)}; check the data directory's permissions`
      })
  })

/** Reads and checks the keyring in `file`. */
export const readKeyring = (file: string, node: NodeId): Effect.Effect<ReadonlyArray<string>, ConfigInvalid> =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8"),
    catch: (e) =>
      new ConfigInvalid({
        node,
        subject: file,
        message: `node ${node}: cannot read the cluster secret file ${file}: ${e instanceof Error ? e.message : String(e)}; check that it exists and that the node may read it`
      })
  }).pipe(Effect.flatMap((text) => parseKeyring(text, file, node)))

/** Where `config`'s keyring comes from: its configured file, a join token's copy, or none. */
export const keyringFileOf = (config: NodeConfig): { readonly file: string; readonly source: "file" | "received" } | undefined => {
  if (config.clusterSecretFile !== undefined) return { file: config.clusterSecretFile, source: "file" }
  const received = path.join(config.dataDir, receivedFileName)
  return fs.existsSync(received) ? { file: received, source: "received" } : undefined
}

/**
 * The node's keyring: the configured file's; else the one a join token got this node
 * (`DATA-DIR/cluster-secret`); else the public development secret (`warnIfDevelopmentSecret`).
 */
export const load = (config: NodeConfig): Effect.Effect<LiveKeyring, ConfigInvalid> =>
  Effect.suspend(() => {
    const where = keyringFileOf(config)
    if (where === undefined) return Effect.succeed(new LiveKeyring([developmentSecret], undefined, "development"))
    return readKeyring(where.file, NodeId.make(config.id)).pipe(
      Effect.tap((secrets) =>
        secrets.length === 1 && isLegacySecret(secrets[0]!)
          ? Effect.logWarning(
              `node ${config.id}: the cluster secret in ${where.file} is shorter than 16 characters or holds spaces; it is used as earlier releases did, but a rotation needs keyring lines (16 to 512 printable ASCII characters without spaces): rotate to one (head -c 32 /dev/urandom | base64), see "Rotating the cluster secret" in the README`
            )
          : Effect.void
      ),
      Effect.map((secrets) => new LiveKeyring(secrets, where.file, where.source))
    )
  })

const textOf = (file: string): string => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch (e) {
    return `unreadable: ${e instanceof Error ? e.message : String(e)}`
  }
}

/**
 * Re-reads `live`'s file every `everyMs` (a file of a few lines: cheaper than any doubt about
 * mtimes), for as long as the calling scope lasts, and takes its keyring when it changed. An
 * invalid file keeps the last good keyring, with an error in the log (once per change).
 */
export const follow = (live: LiveKeyring, node: NodeId, everyMs: number = FollowMs): Effect.Effect<void> => {
  const file = live.file
  if (file === undefined) return Effect.void
  // Compared at the first check too: a change between `load` and now is not missed.
  let seen: string | undefined
  const check = Effect.suspend(() => {
    const now = textOf(file)
    if (now === seen) return Effect.void
    seen = now
    return readKeyring(file, node).pipe(
      Effect.flatMap((secrets) => {
        if (secrets.length === live.secrets.length && secrets.every((s, i) => s === live.secrets[i])) return Effect.void
        const before = live.fingerprints()
        live.set(secrets)
        const after = live.fingerprints()
        return Effect.logInfo(
          `node ${node}: the cluster secret file ${file} changed: now uses ${after.uses} and accepts ${after.accepts.join(", ")} (before: uses ${before.uses}, accepts ${before.accepts.join(", ")})`
        )
      }),
      Effect.catchAll((e) =>
        Effect.logError(
          `${e.message}. The node keeps its last good keyring (uses ${live.fingerprints().uses}, accepts ${live.fingerprints().accepts.join(", ")}) until the file is fixed; no restart is needed once it is`
        )
      )
    )
  })
  return Effect.repeat(check, Schedule.spaced(Duration.millis(everyMs))).pipe(Effect.asVoid)
}

/** Logs, at every start, that a node runs with the public development secret. */
export const warnIfDevelopmentSecret = (node: number, keyring: LiveKeyring) =>
  !keyring.isDevelopment
    ? Effect.void
    : Effect.logWarning(
        `node ${node}: no cluster secret file is configured, so peer traffic is NOT authenticated and other nodes' credentials are accepted from loopback only; set clusterSecretFile (--cluster-secret-file) on every node`
      )
